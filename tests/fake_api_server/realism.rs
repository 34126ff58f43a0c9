//! What `tests/clean_offer` relies on the fake for, checked through kube's
//! real client: a fault rule aimed at one object by name (a create is
//! matched by the name in its body, as a policy webhook judges the object,
//! not the URL) with the `Status` message a webhook would give; the garbage
//! collector deleting the PVs of a Node that went away the way the real one
//! does — the DELETE only sets `deletionTimestamp` while a finalizer
//! remains, the phase is left as it was, and the PV disappears once the
//! last finalizer is removed with kube-runtime's JSON patch; and a watch
//! that delivers changes late, in order, while reads are current.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, PersistentVolume};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

use crate::client::{
    create_cm, eventually, is_apply, is_init_done, local_pv, merge, node, pv_phase, raw, status,
    watch_until,
};
use crate::support::fake_api::{FakeApiServer, FaultRule};

/// The finalizer a provisioner would put on its PVs.
const OURS: &str = "example.com/cleanup";

#[tokio::test]
async fn a_rule_aimed_at_one_object_refuses_only_that_object() {
    let server = FakeApiServer::start().await;
    let pvs: Api<PersistentVolume> = Api::all(server.client().await);
    let denial = "admission webhook \"pv-policy.example.com\" denied the request: no";
    server.fail_requests(
        FaultRule::new(403, usize::MAX)
            .verb("create")
            .object_name("refused")
            .message(denial),
    );
    for _ in 0..2 {
        let refused = status(
            pvs.create(&PostParams::default(), &local_pv("refused", "n1"))
                .await,
        );
        assert_eq!((refused.code, refused.reason.as_str()), (403, "Forbidden"));
        assert_eq!(refused.message, denial);
    }
    pvs.create(&PostParams::default(), &local_pv("accepted", "n1"))
        .await
        .expect("another name is served");
    assert!(
        server
            .object("persistentvolumes", None, "refused")
            .is_none()
    );

    // By the name in the path for every other verb; the default message.
    server.fail_requests(FaultRule::new(422, 1).object_name("accepted"));
    let invalid = status(pvs.get("accepted").await);
    assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));
    assert!(invalid.message.contains("HTTP 422"), "{}", invalid.message);
    pvs.get("accepted").await.expect("the rule is used up");

    let logged: Vec<(String, Option<String>, u16)> = server
        .requests()
        .iter()
        .map(|r| (r.verb.clone(), r.object_name().map(String::from), r.status))
        .collect();
    let name = |n: &str| Some(n.to_string());
    assert_eq!(
        logged,
        vec![
            ("create".into(), name("refused"), 403),
            ("create".into(), name("refused"), 403),
            ("create".into(), name("accepted"), 201),
            ("get".into(), name("accepted"), 422),
            ("get".into(), name("accepted"), 200),
        ]
    );
}

/// A PV owned by Node `owner` (its UID, as the controller reference) that
/// carries [`OURS`].
fn owned_pv(name: &str, owner: &Node) -> PersistentVolume {
    let mut pv = local_pv(name, "n1");
    pv.metadata.finalizers = Some(vec![OURS.to_string()]);
    pv.metadata.owner_references = Some(
        serde_json::from_value(json!([{
            "apiVersion": "v1", "kind": "Node", "name": owner.metadata.name,
            "uid": owner.metadata.uid, "controller": true, "blockOwnerDeletion": true,
        }]))
        .unwrap(),
    );
    pv
}

/// Removes finalizer `index` as kube-runtime's finalizer helper does: a
/// JSON patch with a `test` of the entry, then its `remove`.
async fn remove_finalizer(client: &kube::Client, pv: &str, index: usize) {
    let path = format!("/metadata/finalizers/{index}");
    let body = json!([
        {"op": "test", "path": path, "value": OURS},
        {"op": "remove", "path": path},
    ]);
    let url = format!("/api/v1/persistentvolumes/{pv}");
    raw(
        client,
        "PATCH",
        &url,
        "application/json-patch+json",
        &body.to_string(),
    )
    .await
    .expect("finalizer removed");
}

#[tokio::test]
async fn collected_pvs_stay_while_a_finalizer_remains_with_their_phase() {
    let server = FakeApiServer::start().await;
    let client = server.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let owner = nodes
        .create(&PostParams::default(), &node("n1"))
        .await
        .unwrap();
    for name in ["idle", "bound"] {
        pvs.create(&PostParams::default(), &owned_pv(name, &owner))
            .await
            .unwrap();
    }
    eventually("both Available", || {
        ["idle", "bound"].map(|n| pv_phase(&server, n))
            == [Some("Available".to_string()), Some("Available".to_string())]
    })
    .await;
    server.bind_pv("bound", "default", "gone-claim");
    nodes.delete("n1", &DeleteParams::default()).await.unwrap();

    let terminating = |name: &str| {
        server
            .object("persistentvolumes", None, name)
            .is_some_and(|pv| pv["metadata"]["deletionTimestamp"].is_string())
    };
    eventually("both collected", || {
        terminating("idle") && terminating("bound")
    })
    .await;
    assert_eq!(pv_phase(&server, "idle").as_deref(), Some("Available"));
    assert_eq!(pv_phase(&server, "bound").as_deref(), Some("Bound"));
    let finalizers = |name: &str| {
        server.object("persistentvolumes", None, name).unwrap()["metadata"]["finalizers"].clone()
    };
    eventually("pv-protection dropped from the unbound PV", || {
        finalizers("idle") == json!([OURS])
    })
    .await;
    assert_eq!(
        finalizers("bound"),
        json!([OURS, "kubernetes.io/pv-protection"]),
        "a bound PV keeps its protection"
    );

    remove_finalizer(&client, "idle", 0).await;
    assert!(
        server.object("persistentvolumes", None, "idle").is_none(),
        "gone at once"
    );
    remove_finalizer(&client, "bound", 0).await;
    assert!(
        terminating("bound"),
        "still held by pv-protection while Bound"
    );
    server.set_pv_phase("bound", "Released");
    eventually("the released PV gone", || {
        server.object("persistentvolumes", None, "bound").is_none()
    })
    .await;
}

#[tokio::test]
async fn a_lagging_watch_delivers_changes_late_and_in_order() {
    let server = FakeApiServer::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    create_cm(&cms, "first", json!({})).await;
    let mut stream = watcher(cms.clone(), watcher::Config::default()).boxed();
    watch_until(&mut stream, is_init_done).await;
    let lag = Duration::from_millis(400);
    server.set_watch_lag("configmaps", lag);

    let written = Instant::now();
    merge(&cms, "first", json!({"data": {"k": "changed"}})).await;
    create_cm(&cms, "second", json!({})).await;
    let read = cms.get("first").await.unwrap();
    assert_eq!(read.data.unwrap()["k"], "changed", "reads are current");
    let seen = watch_until(&mut stream, |e| is_apply(e, "second")).await;
    assert!(written.elapsed() >= lag, "delivered after the lag");
    assert_eq!(seen, vec!["apply first", "apply second"], "in order");

    // A change held back by a long lag comes once the lag is switched off
    // (watch_until gives up long before the minute is over).
    server.set_watch_lag("configmaps", Duration::from_secs(60));
    create_cm(&cms, "third", json!({})).await;
    server.set_watch_lag("configmaps", Duration::ZERO);
    watch_until(&mut stream, |e| is_apply(e, "third")).await;
}
