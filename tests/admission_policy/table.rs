//! Request fixtures against the rendered policy: what is allowed, what is
//! denied (by which validation, with a message naming the node) and what is
//! not matched, the same for the chart's and the kustomize rendering.

use std::path::Path;

use local_pv_provisioner::objects::naming::node_label_value;
use serde_json::{Value, json};

use super::support::fake_api::{AdmissionPolicy, Operation, Review, UserInfo};
use super::{ANNOTATION, LABEL, NODE, OTHER, marked, on, pv, unbound, upstream_pv, with};

/// Validation 0: a token without the node name (fail closed).
const NO_NODE: usize = 0;
/// Validation 1: UPDATE or DELETE of another node's PV.
const NOT_YOURS: usize = 1;
/// Validation 2: CREATE of a PV that is not of the requester's node.
const CREATE: usize = 2;
/// Validation 3: UPDATE that moves a PV to another node.
const MOVE: usize = 3;
/// Validation 4: a LocalDisk whose status names another node.
const STATUS_NODE: usize = 4;

/// What the policy must decide about a fixture.
enum Expect {
    /// Matched and let through.
    Allowed,
    /// Not matched (another user, another resource).
    NotMatched,
    /// Denied by this validation, with a message containing these.
    Denied(usize, &'static [&'static str]),
}

/// One request fixture.
struct Case {
    what: &'static str,
    user: UserInfo,
    operation: Operation,
    object: Option<Value>,
    old: Option<Value>,
    expect: Expect,
}

/// A fixture; the operation follows from which objects there are (no stored
/// object: CREATE; no new object: DELETE; both: UPDATE).
fn case(
    what: &'static str,
    user: UserInfo,
    old: Option<Value>,
    object: Option<Value>,
    expect: Expect,
) -> Case {
    let operation = match (&old, &object) {
        (None, _) => Operation::Create,
        (Some(_), Some(_)) => Operation::Update,
        (Some(_), None) => Operation::Delete,
    };
    Case {
        what,
        user,
        operation,
        object,
        old,
        expect,
    }
}

/// A node name of 70 characters: its label value is hashed.
const LONG: &str = "node-with-a-very-long-name-0123456789.rack-17.zone-b.example.internal";
/// Another one sharing its first 54 characters.
const LONG_TWIN: &str = "node-with-a-very-long-name-0123456789.rack-17.zone-b.e.other.internal";
/// Another one that differs early.
const LONG_OTHER: &str = "node-with-a-very-long-name-9876543210.rack-17.zone-b.example.internal";

// One fixture a line reads best as a table.
#[rustfmt::skip]
fn cases() -> Vec<Case> {
    use Expect::{Allowed, Denied, NotMatched};
    let mine = pv("local-node-a-disk0", NODE, NODE);
    let theirs = pv("local-node-b-disk0", OTHER, OTHER);
    let upstream = upstream_pv("local-node-a-sdb", NODE);
    let terminating = with(marked(mine.clone(), NODE), &["metadata", "deletionTimestamp"], json!("2026-01-01T00:00:00Z"));
    let released = with(terminating.clone(), &["metadata", "finalizers"], json!(["kubernetes.io/pv-protection"]));
    let long = pv("local-long-disk0", LONG, LONG);
    let admin = UserInfo::user("kubernetes-admin");
    let gc = UserInfo::service_account("kube-system", "generic-garbage-collector");
    let binder = UserInfo::service_account("kube-system", "persistent-volume-binder");
    let namesake = UserInfo::service_account("other-team", "local-pv-provisioner").on_node(NODE);
    let two_nodes = { let mut u = on(NODE); u.extra.get_mut("authentication.kubernetes.io/node-name").unwrap().push(OTHER.into()); u };
    let set = |pv: &Value, keys: &[&str], v: Value| with(pv.clone(), keys, v);
    let affinity = ["spec", "nodeAffinity", "required", "nodeSelectorTerms"];
    let hostname_terms = |h: &str| json!([{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [h]}]}]);
    vec![
        case("own node: create", on(NODE), None, Some(mine.clone()), Allowed),
        case("own node: wipe mark, finalizer (patch)", on(NODE), Some(mine.clone()), Some(marked(mine.clone(), NODE)), Allowed),
        case("own node: finalizer removed from a terminating PV", on(NODE), Some(terminating.clone()), Some(released), Allowed),
        case("own node: delete", on(NODE), Some(marked(mine.clone(), NODE)), None, Allowed),
        case("own node: create, hostname label = first DNS label", on("n1.example.com"), None, Some(pv("local-n1", "n1.example.com", "n1")), Allowed),
        case("upstream PV of this node: adopt (patch)", on(NODE), Some(upstream.clone()), Some(marked(upstream.clone(), NODE)), Allowed),
        case("upstream PV of this node: delete", on(NODE), Some(upstream.clone()), None, Allowed),
        case("long node name: create (hashed label)", on(LONG), None, Some(long.clone()), Allowed),
        case("long node name: patch", on(LONG), Some(long.clone()), Some(marked(long.clone(), LONG)), Allowed),
        case("long node name: delete", on(LONG), Some(long.clone()), None, Allowed),
        case("other node: create", on(NODE), None, Some(theirs.clone()), Denied(CREATE, &[NODE])),
        case("other node: patch", on(NODE), Some(theirs.clone()), Some(marked(theirs.clone(), OTHER)), Denied(NOT_YOURS, &[NODE, OTHER])),
        case("other node: delete", on(NODE), Some(theirs.clone()), None, Denied(NOT_YOURS, &[NODE, OTHER])),
        case("other node's upstream PV: delete", on(NODE), Some(upstream_pv("local-node-b-sdb", OTHER)), None, Denied(NOT_YOURS, &[NODE, OTHER])),
        case("PV of no node: delete", on(NODE), Some(set(&theirs, &["metadata"], json!({"name": "by-hand"}))), None, Denied(NOT_YOURS, &[NODE, "no node"])),
        case("create: own annotation, other's ownerReference", on(NODE), None, Some(set(&mine, &["metadata", "ownerReferences"], theirs["metadata"]["ownerReferences"].clone())), Denied(CREATE, &[NODE])),
        case("create: own markers, other's label", on(NODE), None, Some(set(&mine, &["metadata", "labels", LABEL], json!(OTHER))), Denied(CREATE, &[NODE])),
        case("create: own markers, affinity to another host", on(NODE), None, Some(set(&mine, &affinity, hostname_terms(OTHER))), Denied(CREATE, &[NODE])),
        case("create: own markers, hostname n1 from node n1.x.y isn't n1.z", on("n1.x.y"), None, Some(pv("local-n1", "n1.x.y", "n1.z")), Denied(CREATE, &["n1.x.y"])),
        case("create: own markers, no nodeAffinity", on(NODE), None, Some(set(&mine, &["spec", "nodeAffinity"], Value::Null)), Denied(CREATE, &[NODE])),
        case("create: own markers, not a local volume", on(NODE), None, Some(set(&set(&mine, &["spec", "local"], Value::Null), &["spec", "nfs"], json!({"server": "x", "path": "/"}))), Denied(CREATE, &[NODE])),
        case("create: no marker at all", on(NODE), None, Some(set(&mine, &["metadata"], json!({"name": "bare"}))), Denied(CREATE, &[NODE])),
        case("long node name: twin's create", on(LONG_TWIN), None, Some(long.clone()), Denied(CREATE, &[LONG_TWIN])),
        case("long node name: hashed label of another long node", on(LONG), None, Some(set(&long, &["metadata", "labels", LABEL], json!(node_label_value(LONG_OTHER)))), Denied(CREATE, &[LONG])),
        // The label cannot tell nodes sharing their first 54 characters apart
        // (no SHA-256 in CEL); the annotation and ownerReference still do.
        case("long node name: hashed label of a node sharing 54 characters", on(LONG), None, Some(set(&long, &["metadata", "labels", LABEL], json!(node_label_value(LONG_TWIN)))), Allowed),
        case("node change: annotation", on(NODE), Some(mine.clone()), Some(set(&mine, &["metadata", "annotations", ANNOTATION], json!(OTHER))), Denied(MOVE, &[NODE])),
        case("node change: nodeAffinity", on(NODE), Some(mine.clone()), Some(set(&mine, &affinity, hostname_terms(OTHER))), Denied(MOVE, &[NODE])),
        case("node change: every marker removed", on(NODE), Some(mine.clone()), Some(set(&mine, &["metadata"], json!({"name": "local-node-a-disk0"}))), Denied(MOVE, &[NODE])),
        case("no node-name extra: create", unbound(), None, Some(mine.clone()), Denied(NO_NODE, &["node-name", "fail closed"])),
        case("no node-name extra: patch", unbound(), Some(mine.clone()), Some(marked(mine.clone(), NODE)), Denied(NO_NODE, &["node-name", "fail closed"])),
        case("no node-name extra: delete", unbound(), Some(mine.clone()), None, Denied(NO_NODE, &["node-name", "fail closed"])),
        case("two node names in the token", two_nodes, Some(mine.clone()), None, Denied(NO_NODE, &["node-name", "fail closed"])),
        case("admin: create another node's PV", admin.clone(), None, Some(theirs.clone()), NotMatched),
        case("admin: delete another node's PV", admin, Some(theirs.clone()), None, NotMatched),
        case("garbage collector: delete", gc, Some(theirs.clone()), None, NotMatched),
        case("PV controller: update", binder, Some(theirs.clone()), Some(set(&theirs, &["spec", "claimRef"], json!({"name": "c"}))), NotMatched),
        case("same ServiceAccount name, other namespace", namesake, Some(theirs.clone()), None, NotMatched),
    ]
}

fn read(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}\nIt is written by `python3 .ci/check_deploy.py` (which .ci/run runs before \
             `cargo test`); run that first (pip install -r .ci/requirements-deploy.txt)",
            path.display()
        )
    });
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The chart's and the kustomize rendering, checked equal to `config/policy`.
fn renderings() -> Vec<(&'static str, AdmissionPolicy)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dump = read(&root.join("target/deploy-policy.json"));
    let config = read(&root.join("config/policy/validating_admission_policy.yaml"));
    let mut out = Vec::new();
    for source in ["chart", "kustomize"] {
        let (policy, binding) = (&dump[source]["policy"], &dump[source]["binding"]);
        assert_eq!(
            policy["spec"], config["spec"],
            "the {source} rendering in target/deploy-policy.json differs from config/policy: \
             rerun python3 .ci/check_deploy.py (a stale dump), or bring them in step"
        );
        let compiled = AdmissionPolicy::from_documents(policy, binding)
            .unwrap_or_else(|e| panic!("{source}: {e}"));
        out.push((source, compiled));
    }
    out
}

#[test]
fn chart_and_kustomize_policies_decide_every_fixture_as_expected() {
    let policies = renderings();
    let cases = cases();
    let mut problems = Vec::new();
    for (source, policy) in &policies {
        for c in &cases {
            let review =
                Review::persistent_volume(c.operation, &c.user, c.object.as_ref(), c.old.as_ref());
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
    // Every validation denies something, so none is dead.
    for index in [NO_NODE, NOT_YOURS, CREATE, MOVE] {
        assert!(
            cases
                .iter()
                .any(|c| matches!(c.expect, Expect::Denied(i, _) if i == index)),
            "no fixture is denied by validation {index}"
        );
    }
}

#[test]
fn status_updates_are_not_matched() {
    for (_, policy) in renderings() {
        let (theirs, user) = (pv("local-node-b-disk0", OTHER, OTHER), on(NODE));
        let mut review =
            Review::persistent_volume(Operation::Update, &user, Some(&theirs), Some(&theirs));
        review.subresource = Some("status");
        assert!(!policy.review(&review).matched);
    }
}

#[test]
fn every_expression_compiles_and_messages_fit_on_one_line() {
    for (source, policy) in renderings() {
        // 1 match condition, the variables, 4 validations, 3 message expressions.
        assert!(
            policy.expression_count() >= 8,
            "{source}: {} expressions",
            policy.expression_count()
        );
        let user = on(NODE);
        let theirs = pv("local-node-b-disk0", OTHER, OTHER);
        let review = Review::persistent_volume(Operation::Delete, &user, None, Some(&theirs));
        let message = &policy.review(&review).failures[0].message;
        assert!(
            message.contains("is of node node-b") && !message.contains('\n'),
            "{source}: {message}"
        );
    }
}

/// A LocalDisk of `node` as its provisioner writes it.
fn disk(name: &str, node: &str) -> Value {
    json!({
        "apiVersion": "local-pv-provisioner.cybozu.io/v1alpha1",
        "kind": "LocalDisk",
        "metadata": {
            "name": name,
            "labels": {LABEL: node_label_value(node)},
            "annotations": {ANNOTATION: node},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": "u"}],
        },
        "status": {"node": node, "path": "/dev/disk/by-id/x", "state": "Available", "reason": "offered"},
    })
}

/// A write to a LocalDisk (`status`: through its status subresource).
fn disk_review<'a>(
    operation: Operation,
    user: &'a UserInfo,
    object: Option<&'a Value>,
    old: Option<&'a Value>,
    status: bool,
) -> Review<'a> {
    let mut review = Review::persistent_volume(operation, user, object, old);
    review.group = "local-pv-provisioner.cybozu.io";
    review.version = "v1alpha1";
    review.resource = "localdisks";
    review.kind = "LocalDisk";
    review.subresource = status.then_some("status");
    review
}

/// One LocalDisk fixture: what, the operation, the object written, the
/// stored one, whether through the status subresource, the validation
/// that denies it (none: allowed).
type DiskCase<'a> = (
    &'static str,
    Operation,
    Option<&'a Value>,
    Option<&'a Value>,
    bool,
    Option<usize>,
);

/// The policy covers LocalDisks as it covers PVs: a pod writes its own
/// node's objects and their status, never another node's.
#[test]
fn a_pod_of_one_node_cannot_write_another_nodes_local_disks() {
    let mine = disk("local-node-a-disk0", NODE);
    let theirs = disk("local-node-b-disk0", OTHER);
    let user = on(NODE);
    let mut restated = mine.clone();
    restated["status"]["state"] = json!("Bound");
    let moved = with(
        mine.clone(),
        &["metadata", "annotations", ANNOTATION],
        json!(OTHER),
    );
    let mut elsewhere = mine.clone();
    elsewhere["status"]["node"] = json!(OTHER);
    // (what, operation, object, stored, status subresource, denied by)
    let cases: Vec<DiskCase<'_>> = vec![
        (
            "own: create",
            Operation::Create,
            Some(&mine),
            None,
            false,
            None,
        ),
        (
            "own: status",
            Operation::Update,
            Some(&restated),
            Some(&mine),
            true,
            None,
        ),
        (
            "own: labels",
            Operation::Update,
            Some(&restated),
            Some(&mine),
            false,
            None,
        ),
        (
            "own: delete",
            Operation::Delete,
            None,
            Some(&mine),
            false,
            None,
        ),
        (
            "other's: create",
            Operation::Create,
            Some(&theirs),
            None,
            false,
            Some(CREATE),
        ),
        (
            "other's: status",
            Operation::Update,
            Some(&theirs),
            Some(&theirs),
            true,
            Some(NOT_YOURS),
        ),
        (
            "other's: delete",
            Operation::Delete,
            None,
            Some(&theirs),
            false,
            Some(NOT_YOURS),
        ),
        (
            "own: status naming another node",
            Operation::Update,
            Some(&elsewhere),
            Some(&mine),
            true,
            Some(STATUS_NODE),
        ),
        (
            "own: created naming another node in its status",
            Operation::Create,
            Some(&elsewhere),
            None,
            false,
            Some(STATUS_NODE),
        ),
        (
            "own: moved to another node",
            Operation::Update,
            Some(&moved),
            Some(&mine),
            false,
            Some(MOVE),
        ),
    ];
    for (source, policy) in renderings() {
        for (what, operation, object, old, status, denied) in &cases {
            let review = disk_review(*operation, &user, *object, *old, *status);
            let outcome = policy.review(&review);
            assert!(outcome.matched, "[{source}] {what}: not matched");
            let failure = outcome.failures.first();
            match (denied, failure) {
                (None, None) => {}
                (Some(index), Some(f)) if f.validation == Some(*index) && f.code == 403 => {
                    assert!(
                        f.message.contains("LocalDisk") && !f.message.contains('\n'),
                        "[{source}] {what}: {}",
                        f.message
                    );
                }
                _ => panic!("[{source}] {what}: got {outcome:?}"),
            }
        }
    }
}
