//! The fake API server's opt-in authentication and policy enforcement: it
//! answers as kube-apiserver would, through kube's real client.

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::support::fake_api::{FakeApiServer, UserInfo, node_policy_from_config};
use super::{NODE, OTHER, live_pv, on, unbound};

/// The status code and message of a refused request, or panics.
fn refused<T: std::fmt::Debug>(result: kube::Result<T>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn typed(value: Value) -> PersistentVolume {
    serde_json::from_value(value).expect("a PersistentVolume")
}

/// PersistentVolumes through a client that sends `token`, registered for `user`.
async fn pvs_as(server: &FakeApiServer, token: &str, user: UserInfo) -> Api<PersistentVolume> {
    server.add_token(token, user);
    Api::all(server.client_with_token(token).await)
}

#[tokio::test]
async fn tokens_name_the_user_and_unknown_tokens_are_refused() {
    let server = FakeApiServer::start().await;
    let known = pvs_as(&server, "admin", UserInfo::user("kubernetes-admin")).await;
    assert!(known.list(&Default::default()).await.is_ok());
    let anonymous: Api<PersistentVolume> = Api::all(server.client().await);
    assert!(anonymous.list(&Default::default()).await.is_ok());
    let unknown: Api<PersistentVolume> = Api::all(server.client_with_token("nobody").await);
    let (code, _) = refused(unknown.list(&Default::default()).await);
    assert_eq!(code, 401);
}

/// A server enforcing the policy, holding node-b's PV, and PVs through the
/// token of the provisioner on node-a.
async fn enforcing() -> (FakeApiServer, Api<PersistentVolume>) {
    let server = FakeApiServer::start().await;
    server.enforce_node_policy();
    let theirs = live_pv(&server, "local-node-b-disk0", OTHER);
    server.create_object("persistentvolumes", theirs);
    let token = server.provisioner_token(NODE);
    let api = Api::all(server.client_with_token(&token).await);
    (server, api)
}

fn merge(value: Value) -> Patch<Value> {
    Patch::Merge(value)
}

const MARK: &str = "local-pv-provisioner.cybozu.io/wipe-started-by";

#[tokio::test]
async fn enforced_policy_lets_writes_to_its_own_node_pass() {
    let (server, api) = enforcing().await;
    let name = "local-node-a-disk0";
    let mine = typed(live_pv(&server, name, NODE));
    api.create(&PostParams::default(), &mine)
        .await
        .expect("create");
    let mark = merge(json!({"metadata": {"annotations": {MARK: "x"}}}));
    api.patch(name, &PatchParams::default(), &mark)
        .await
        .expect("mark");
    let finalizer =
        merge(json!({"metadata": {"finalizers": ["local-pv-provisioner.cybozu.io/cleanup"]}}));
    api.patch(name, &PatchParams::default(), &finalizer)
        .await
        .expect("finalizer");
    api.delete(name, &DeleteParams::default())
        .await
        .expect("delete");
    let decisions = server.admission_decisions();
    let operations: Vec<(&str, bool)> = decisions
        .iter()
        .map(|d| (d.operation.as_str(), d.allowed))
        .collect();
    assert_eq!(
        operations,
        [
            ("CREATE", true),
            ("UPDATE", true),
            ("UPDATE", true),
            ("DELETE", true)
        ]
    );
}

#[tokio::test]
async fn enforced_policy_denies_writes_to_another_nodes_pvs_like_an_api_server() {
    let (server, api) = enforcing().await;
    let theirs = typed(live_pv(&server, "local-node-b-disk1", OTHER));
    let (code, message) = refused(api.create(&PostParams::default(), &theirs).await);
    let prefix = "persistentvolumes \"local-node-b-disk1\" is forbidden: ValidatingAdmissionPolicy \
        'local-pv-provisioner-node-restriction' with binding 'local-pv-provisioner-node-restriction' denied request: ";
    assert!(
        code == 403 && message.starts_with(prefix) && message.contains(NODE),
        "{message}"
    );
    let mark = merge(json!({"metadata": {"annotations": {MARK: "x"}}}));
    let (code, message) = refused(
        api.patch("local-node-b-disk0", &PatchParams::default(), &mark)
            .await,
    );
    assert!(
        code == 403 && message.contains("is of node node-b"),
        "{message}"
    );
    let (code, _) = refused(
        api.delete("local-node-b-disk0", &DeleteParams::default())
            .await,
    );
    assert_eq!(code, 403);
    assert!(
        server
            .object("persistentvolumes", None, "local-node-b-disk0")
            .is_some()
    );
    assert!(
        server
            .object("persistentvolumes", None, "local-node-b-disk1")
            .is_none()
    );

    // Others are not matched: an admin (a client without a token) writes anything.
    let admin = Api::<PersistentVolume>::all(server.client().await);
    admin
        .delete("local-node-b-disk0", &DeleteParams::default())
        .await
        .expect("an admin deletes");
    let denials = server.admission_denials();
    let names: Vec<(&str, &str)> = denials
        .iter()
        .map(|d| (d.operation.as_str(), d.name.as_str()))
        .collect();
    let expected = [
        ("CREATE", "local-node-b-disk1"),
        ("UPDATE", "local-node-b-disk0"),
        ("DELETE", "local-node-b-disk0"),
    ];
    assert_eq!(names, expected);
    assert_eq!(
        server.admission_decisions().len(),
        3,
        "the admin's delete is not matched"
    );
}

#[tokio::test]
async fn a_token_without_a_node_is_denied_and_audit_mode_only_lists() {
    let server = FakeApiServer::start().await;
    server.enforce_node_policy();
    let api = pvs_as(&server, "unbound", unbound()).await;
    let (code, message) = refused(
        api.create(
            &PostParams::default(),
            &typed(live_pv(&server, "local-node-a-disk0", NODE)),
        )
        .await,
    );
    assert!(
        code == 403 && message.contains("node-name") && message.contains("fail closed"),
        "{message}"
    );

    server.set_admission_policy(node_policy_from_config(), false);
    let api = pvs_as(&server, "on-node-a", on(NODE)).await;
    api.create(
        &PostParams::default(),
        &typed(live_pv(&server, "local-node-b-disk0", OTHER)),
    )
    .await
    .expect("audit only");
    let denials = server.admission_denials();
    assert_eq!(denials.len(), 2);
    assert!(denials[1].message.contains(NODE) && denials[1].code == 403);
}
