//! The node restriction (issue 11): the `ValidatingAdmissionPolicy` the chart
//! and `config/policy` ship, evaluated as data. The fake API server does not
//! run admission plugins, so every `matchConditions`, `variables` and
//! `validations` expression (and each `messageExpression`) is compiled and
//! evaluated with the `cel` crate (standard CEL plus the strings extension,
//! which Kubernetes provides too; no function is stubbed), the way
//! kube-apiserver evaluates them (`tests/support/fake_api/admission`).
//!
//! - `table`: request fixtures against the chart's and the kustomize
//!   rendering (read from `target/deploy-policy.json`, which
//!   `.ci/check_deploy.py` writes; both must equal `config/policy`);
//! - `fake`: the fake API server enforcing the policy for a bearer token;
//! - `program`: the real binary through a lifecycle with a node-bound token
//!   (no request denied) and with a token that names no node (every PV write
//!   denied, fail closed);
//! - `node_cleanup`: node-cleanup's restriction (the second policy): its
//!   fixtures against both renderings (it may remove the cleanup finalizer,
//!   set this program's annotations and delete this program's PVs; never
//!   create a PV, change a spec, a label or a foreign annotation), and the
//!   real `node-cleanup` binary through a release with no write denied.
//!
//! Not emulated: type checking against the OpenAPI schema and the CEL cost;
//! the expressions iterate only over lists inside the one object (no list
//! look-ups), so their cost grows with that object's size alone.

mod support;

#[path = "admission_policy/fake.rs"]
mod fake;
#[path = "admission_policy/node_cleanup.rs"]
mod node_cleanup;
#[path = "admission_policy/program.rs"]
mod program;
#[path = "admission_policy/table.rs"]
mod table;

use local_pv_provisioner::objects::naming::node_label_value;
use serde_json::{Value, json};
use support::fake_api::{FakeApiServer, UserInfo};

/// The requester's node.
const NODE: &str = "node-a";
/// Another node.
const OTHER: &str = "node-b";
const ANNOTATION: &str = "local-pv-provisioner.cybozu.io/node-name";
const LABEL: &str = "local-pv-provisioner.cybozu.io/node";
const LEGACY_LABEL: &str = "local-pv-provisioner.cybozu.com/node";

/// The provisioner's ServiceAccount with a token bound to a pod on `node`.
fn on(node: &str) -> UserInfo {
    let (namespace, name) = support::fake_api::PROVISIONER_SERVICE_ACCOUNT;
    UserInfo::service_account(namespace, name).on_node(node)
}

/// The provisioner's ServiceAccount with a token that names no node.
fn unbound() -> UserInfo {
    let (namespace, name) = support::fake_api::PROVISIONER_SERVICE_ACCOUNT;
    UserInfo::service_account(namespace, name)
}

/// A PV as this program makes it on `node`, with affinity on `hostname`.
fn pv(name: &str, node: &str, hostname: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": name,
            "labels": {LABEL: node_label_value(node)},
            "annotations": {ANNOTATION: node, "local-pv-provisioner.cybozu.io/device-dir": "/dev/disk/by-path"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": format!("uid-of-{node}")}],
        },
        "spec": {
            "capacity": {"storage": "8388608"},
            "volumeMode": "Block",
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "local-storage",
            "local": {"path": "/dev/disk/by-path/disk0"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [hostname]},
            ]}]}},
        },
    })
}

/// [`pv`] owned by the live Node `node` of `server` (created when missing,
/// hostname label = its name), so the emulated garbage collector keeps it.
fn live_pv(server: &FakeApiServer, name: &str, node: &str) -> Value {
    let node_object = server.object("nodes", None, node).unwrap_or_else(|| {
        server.create_object(
            "nodes",
            json!({"apiVersion": "v1", "kind": "Node",
                   "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}}}),
        )
    });
    let mut pv = pv(name, node, node);
    pv["metadata"]["ownerReferences"][0]["uid"] = node_object["metadata"]["uid"].clone();
    pv
}

/// A PV as the Go local-pv-provisioner made it on `node`: both node labels,
/// camelCase annotations, a controller ownerReference, no node-name
/// annotation.
fn upstream_pv(name: &str, node: &str) -> Value {
    let mut pv = pv(name, node, node);
    pv["metadata"]["labels"] = json!({LEGACY_LABEL: node, LABEL: node});
    pv["metadata"]["annotations"] = json!({
        "local-pv-provisioner.cybozu.io/deviceDir": "/dev/disk/by-path/",
        "local-pv-provisioner.cybozu.io/deviceNameFilter": ".*",
        "local-pv-provisioner.cybozu.io/volumeMode": "Block",
    });
    pv["metadata"]["ownerReferences"][0]["controller"] = json!(true);
    pv["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] = json!(true);
    pv
}

/// `pv` with `value` at the path `keys` (objects created on the way; `null`
/// removes the key).
fn with(mut pv: Value, keys: &[&str], value: Value) -> Value {
    let (last, parents) = keys.split_last().expect("a path");
    let mut at = &mut pv;
    for key in parents {
        at = at
            .as_object_mut()
            .expect("an object")
            .entry(key.to_string())
            .or_insert(json!({}));
    }
    let object = at.as_object_mut().expect("an object");
    if value.is_null() {
        object.remove(*last);
    } else {
        object.insert(last.to_string(), value);
    }
    pv
}

/// `pv` as the program's writes leave it: a wipe mark, the finalizer, the
/// annotations it adds when it adopts an upstream PV.
fn marked(pv: Value, node: &str) -> Value {
    let pv = with(
        pv,
        &[
            "metadata",
            "annotations",
            "local-pv-provisioner.cybozu.io/wipe-started-by",
        ],
        json!(format!("local-pv-provisioner-{node}")),
    );
    let pv = with(pv, &["metadata", "annotations", ANNOTATION], json!(node));
    with(
        pv,
        &["metadata", "finalizers"],
        json!([
            "kubernetes.io/pv-protection",
            "local-pv-provisioner.cybozu.io/cleanup"
        ]),
    )
}
