//! node-cleanup's restriction: the second `ValidatingAdmissionPolicy` the
//! chart and `config/policy` ship, for node-cleanup's ServiceAccount. It may
//! delete this program's PVs, remove their cleanup finalizer and set this
//! program's annotations; nothing else. Request fixtures against the chart's
//! and the kustomize rendering, and the real `node-cleanup` binary through a
//! release under the enforced policies (no write denied).

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::support::fake_api::{
    AdmissionPolicy, FakeApiServer, NODE_CLEANUP_SERVICE_ACCOUNT, Operation, Review, UserInfo,
};
use super::support::provisioner::ProvisionerProcess;
use super::support::world::waits::eventually;
use super::{ANNOTATION, NODE, OTHER, live_pv, on, pv, with};

/// Validation 0: a create.
const CREATE: usize = 0;
/// Validation 1: a PV that is not this program's.
const NOT_OURS: usize = 1;
/// Validation 2: a spec change.
const SPEC: usize = 2;
/// Validation 3: a label or ownerReference change.
const LABELS: usize = 3;
/// Validation 4: a finalizer other than the cleanup one.
const FINALIZERS: usize = 4;
/// Validation 5: an annotation not under `local-pv-provisioner.cybozu.io/`.
const ANNOTATIONS: usize = 5;

const CLEANUP: &str = "local-pv-provisioner.cybozu.io/cleanup";
const PROTECTION: &str = "kubernetes.io/pv-protection";

/// node-cleanup's ServiceAccount, its token bound to a pod on some node.
fn cleanup_user() -> UserInfo {
    let (namespace, name) = NODE_CLEANUP_SERVICE_ACCOUNT;
    UserInfo::service_account(namespace, name).on_node("node-z")
}

/// What the policy must decide.
enum Expect {
    Allowed,
    NotMatched,
    Denied(usize, &'static [&'static str]),
}

struct Case {
    what: &'static str,
    user: UserInfo,
    old: Option<Value>,
    object: Option<Value>,
    expect: Expect,
}

fn case(
    what: &'static str,
    user: UserInfo,
    old: Option<Value>,
    object: Option<Value>,
    expect: Expect,
) -> Case {
    Case {
        what,
        user,
        old,
        object,
        expect,
    }
}

// One fixture a line reads best as a table.
#[rustfmt::skip]
fn cases() -> Vec<Case> {
    use Expect::{Allowed, Denied, NotMatched};
    let held = with(pv("local-node-gone-disk0", OTHER, OTHER), &["metadata", "finalizers"], json!([PROTECTION, CLEANUP]));
    let set = |pv: &Value, keys: &[&str], v: Value| with(pv.clone(), keys, v);
    let ann = |key: &str| ["metadata", "annotations", key].map(String::from);
    let annotate = |pv: &Value, key: &str, v: Value| { let keys = ann(key); let keys: Vec<&str> = keys.iter().map(String::as_str).collect(); with(pv.clone(), &keys, v) };
    let marked = annotate(&held, "local-pv-provisioner.cybozu.io/node-gone-since", json!("2026-11-02T10:00:00Z"));
    let recorded = annotate(&annotate(&marked, "local-pv-provisioner.cybozu.io/wipe-skipped", json!("2026-11-02T10:10:00Z: node gone, released without a wipe")), "local-pv-provisioner.cybozu.io/history", json!("{\"wipes\":0,\"claims\":[]}"));
    let terminating = set(&recorded, &["metadata", "deletionTimestamp"], json!("2026-11-02T10:10:01Z"));
    let released = set(&terminating, &["metadata", "finalizers"], json!([PROTECTION]));
    let foreign = set(&held, &["metadata"], json!({"name": "by-hand", "finalizers": [CLEANUP]}));
    let provisioner = on(NODE);
    let admin = UserInfo::user("kubernetes-admin");
    vec![
        case("mark the Node gone (annotation)", cleanup_user(), Some(held.clone()), Some(marked.clone()), Allowed),
        case("remove the mark (Node back)", cleanup_user(), Some(marked.clone()), Some(held.clone()), Allowed),
        case("record wipe-skipped and history", cleanup_user(), Some(marked.clone()), Some(recorded.clone()), Allowed),
        case("delete its PV", cleanup_user(), Some(recorded.clone()), None, Allowed),
        case("remove the cleanup finalizer", cleanup_user(), Some(terminating.clone()), Some(released.clone()), Allowed),
        case("remove the cleanup finalizer, not deleting", cleanup_user(), Some(recorded.clone()), Some(set(&recorded, &["metadata", "finalizers"], json!([PROTECTION]))), Allowed),
        case("create a PV", cleanup_user(), None, Some(held.clone()), Denied(CREATE, &["may not create"])),
        case("change a spec: claimRef", cleanup_user(), Some(held.clone()), Some(set(&held, &["spec", "claimRef"], json!({"name": "other"}))), Denied(SPEC, &["spec"])),
        case("change a spec: capacity", cleanup_user(), Some(held.clone()), Some(set(&held, &["spec", "capacity", "storage"], json!("1Ti"))), Denied(SPEC, &["spec"])),
        case("change a label", cleanup_user(), Some(held.clone()), Some(set(&held, &["metadata", "labels", "tier"], json!("fast"))), Denied(LABELS, &["labels"])),
        case("drop the ownerReferences", cleanup_user(), Some(held.clone()), Some(set(&held, &["metadata", "ownerReferences"], Value::Null)), Denied(LABELS, &["ownerReferences"])),
        case("remove pv-protection", cleanup_user(), Some(held.clone()), Some(set(&held, &["metadata", "finalizers"], json!([CLEANUP]))), Denied(FINALIZERS, &["finalizer"])),
        case("add a finalizer", cleanup_user(), Some(held.clone()), Some(set(&held, &["metadata", "finalizers"], json!([PROTECTION, CLEANUP, "x.example.com/f"]))), Denied(FINALIZERS, &["finalizer"])),
        case("add a foreign annotation", cleanup_user(), Some(held.clone()), Some(annotate(&held, "example.com/owner", json!("me"))), Denied(ANNOTATIONS, &["annotations"])),
        case("remove a foreign annotation", cleanup_user(), Some(annotate(&held, "example.com/owner", json!("me"))), Some(held.clone()), Denied(ANNOTATIONS, &["annotations"])),
        case("change the node-name annotation only", cleanup_user(), Some(held.clone()), Some(annotate(&held, ANNOTATION, json!(NODE))), Allowed),
        case("delete a PV not of this program", cleanup_user(), Some(foreign.clone()), None, Denied(NOT_OURS, &["by-hand"])),
        case("remove the finalizer of a PV not of this program", cleanup_user(), Some(foreign.clone()), Some(set(&foreign, &["metadata", "finalizers"], json!([]))), Denied(NOT_OURS, &["by-hand"])),
        case("the provisioner's ServiceAccount", provisioner, Some(held.clone()), None, NotMatched),
        case("an admin", admin, None, Some(held.clone()), NotMatched),
    ]
}

fn read(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}\nIt is written by `python3 .ci/check_deploy.py`; run that first",
            path.display()
        )
    });
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// node-cleanup's restriction as the chart and kustomize render it,
/// checked equal to `config/policy`.
fn renderings() -> Vec<(&'static str, AdmissionPolicy)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dump = read(&root.join("target/deploy-policy.json"));
    let config = read(&root.join("config/policy/node_cleanup_admission_policy.yaml"));
    let mut out = Vec::new();
    for source in ["chart", "kustomize"] {
        let rendered = &dump[source]["nodeCleanup"];
        assert_eq!(
            rendered["policy"]["spec"], config["spec"],
            "the {source} rendering of node-cleanup's restriction in target/deploy-policy.json \
             differs from config/policy: rerun python3 .ci/check_deploy.py, or bring them in step"
        );
        let compiled = AdmissionPolicy::from_documents(&rendered["policy"], &rendered["binding"])
            .unwrap_or_else(|e| panic!("{source}: {e}"));
        out.push((source, compiled));
    }
    out
}

#[test]
fn node_cleanup_policy_decides_every_fixture_as_expected() {
    let policies = renderings();
    let cases = cases();
    let mut problems = Vec::new();
    for (source, policy) in &policies {
        for c in &cases {
            let operation = match (&c.old, &c.object) {
                (None, _) => Operation::Create,
                (Some(_), Some(_)) => Operation::Update,
                (Some(_), None) => Operation::Delete,
            };
            let review =
                Review::persistent_volume(operation, &c.user, c.object.as_ref(), c.old.as_ref());
            let outcome = policy.review(&review);
            let failure = outcome.failures.first();
            let ok = match (&c.expect, failure) {
                (Expect::NotMatched, None) => !outcome.matched,
                (Expect::Allowed, None) => outcome.matched,
                (Expect::Denied(index, words), Some(f)) => {
                    f.validation == Some(*index)
                        && f.code == 403
                        && f.error.is_none()
                        && words.iter().all(|w| f.message.contains(w))
                }
                _ => false,
            };
            if !ok {
                problems.push(format!("[{source}] {}: got {outcome:?}", c.what));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} decisions are wrong:\n{}",
        problems.len(),
        cases.len() * 2,
        problems.join("\n")
    );
    for index in [CREATE, NOT_OURS, SPEC, LABELS, FINALIZERS, ANNOTATIONS] {
        assert!(
            cases
                .iter()
                .any(|c| matches!(c.expect, Expect::Denied(i, _) if i == index)),
            "no fixture is denied by validation {index}"
        );
    }
}

#[test]
fn the_node_restriction_does_not_match_node_cleanup() {
    let user = cleanup_user();
    let theirs = pv("local-node-b-disk0", OTHER, OTHER);
    let review = Review::persistent_volume(Operation::Delete, &user, None, Some(&theirs));
    let policy = super::support::fake_api::node_policy_from_config();
    assert!(!policy.review(&review).matched);
}

const NAMESPACE: &str = "lpp-system";
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_cleanup_program_passes_its_policy_through_a_release() {
    let work = tempfile::tempdir().unwrap();
    let server = FakeApiServer::start().await;
    server.enforce_node_policy();
    server.create_object(
        "namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
    );
    let mut gone = live_pv(&server, "local-node-gone-disk0", "node-gone");
    gone["metadata"]["finalizers"] = json!([CLEANUP]);
    gone["metadata"]["annotations"]["local-pv-provisioner.cybozu.io/delete-claims-on-node-gone"] =
        json!("true");
    server.create_object("persistentvolumes", gone);
    // Another node's PV, alive: never touched.
    let mut alive = live_pv(&server, "local-node-alive-disk0", "node-alive");
    alive["metadata"]["finalizers"] = json!([CLEANUP]);
    server.create_object("persistentvolumes", alive);
    server.create_object(
        "persistentvolumeclaims",
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": "data", "namespace": NAMESPACE},
               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
    );
    server.bind_pv("local-node-gone-disk0", NAMESPACE, "data");
    let token = server.node_cleanup_token("node-alive");
    let kubeconfig = server.write_kubeconfig_with_token(work.path(), &token);
    let process = ProvisionerProcess::start_node_cleanup(
        &kubeconfig,
        NAMESPACE,
        "cleanup-0",
        vec![("LP_NODE_GONE_GRACE", "1s".into())],
        work.path(),
    );
    eventually("node-cleanup leading", WAIT, || async {
        (process
            .metric("local_pv_provisioner_node_cleanup_leader ")
            .await
            == Some(1.0))
        .then_some(())
    })
    .await;
    // The Node goes: the garbage collector deletes its PV (owned by it), and
    // node-cleanup releases it.
    let node = server.object("nodes", None, "node-gone").expect("the Node");
    let admin = kube::Api::<k8s_openapi::api::core::v1::Node>::all(server.client().await);
    let uid = node["metadata"]["uid"].as_str().map(String::from);
    admin
        .delete(
            "node-gone",
            &kube::api::DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid,
                    resource_version: None,
                }),
                ..Default::default()
            },
        )
        .await
        .expect("the Node deleted");
    eventually("the PV released", WAIT, || async {
        (process
            .metric("local_pv_provisioner_node_gone_pvs_released_total ")
            .await
            == Some(1.0))
        .then_some(())
    })
    .await;
    drop(process);

    assert_eq!(
        server.admission_denials(),
        [],
        "the policy denied a write of node-cleanup"
    );
    let decisions = server.admission_decisions();
    let (namespace, name) = NODE_CLEANUP_SERVICE_ACCOUNT;
    let user = UserInfo::service_account(namespace, name).username;
    let updates = decisions
        .iter()
        .filter(|d| {
            d.username == user && d.operation == "UPDATE" && d.name == "local-node-gone-disk0"
        })
        .count();
    assert!(
        updates >= 3,
        "the mark, the record and the finalizer's removal reached the policy: {decisions:?}"
    );
    // Every PV write that went through reached the policy (a write refused
    // before admission, such as a JSON patch whose test failed, never did).
    let done = server
        .requests()
        .into_iter()
        .filter(|r| {
            r.resource == "persistentvolumes"
                && ["create", "update", "patch", "delete"].contains(&r.verb.as_str())
                && (200..300).contains(&r.status)
        })
        .count();
    let admitted = decisions.iter().filter(|d| d.username == user).count();
    assert!(
        done > 0 && done <= admitted,
        "{done} PV writes of node-cleanup went through, {admitted} were admitted by its policy"
    );
    assert!(
        !decisions.iter().any(|d| d.name == "local-node-alive-disk0"),
        "the live Node's PV was not written"
    );
}
