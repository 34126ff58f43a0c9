//! RBAC proof: the permissions the manifests grant equal the API calls the
//! controller makes. The controller runs a whole lifecycle against the fake
//! API server (provisioning, an invalid spec and its repeated Event, a wipe,
//! a lost device) while the test only touches the server's store directly,
//! so every recorded request is the controller's. The recorded (group,
//! resource, verb, scope) set must equal the rules of `config/rbac` (which
//! `.ci/check_deploy.py` proves identical to the Helm chart's).

mod support;

use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::time::Duration;

use serde_json::json;
use serde_yaml_ng::Value;
use support::fake_api::FakeApiServer;
use support::loop_device::LoopDevice;
use support::provisioner::{ProvisionerOptions, ProvisionerProcess, eventually};

const NAMESPACE: &str = "lpp-system";
const WAIT: Duration = Duration::from_secs(30);

/// (API group, resource, verb, granted in the provisioner's namespace only).
type Permission = (String, String, String, bool);

fn granted(path: &str, namespaced: bool) -> BTreeSet<Permission> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let role: Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut permissions = BTreeSet::new();
    for rule in role["rules"].as_sequence().expect("rules") {
        let strings = |key: &str| -> Vec<String> {
            rule[key]
                .as_sequence()
                .unwrap_or_else(|| panic!("{path}: rule without {key}"))
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        for group in strings("apiGroups") {
            for resource in strings("resources") {
                for verb in strings("verbs") {
                    permissions.insert((group.clone(), resource.clone(), verb, namespaced));
                }
            }
        }
    }
    permissions
}

fn configmap(data: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "spec", "namespace": NAMESPACE}, "data": data})
}

fn replace_configmap(server: &FakeApiServer, data: serde_json::Value) {
    // Through the store, so the request log holds only the controller's calls.
    let mut current = server
        .object("configmaps", Some(NAMESPACE), "spec")
        .unwrap();
    current["data"] = data;
    server.replace_object("configmaps", current);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_permissions_equal_the_calls_the_controller_makes() {
    support::loop_device::require_root();
    let server = FakeApiServer::start().await;
    let work = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let kept = LoopDevice::filled(8 * 1024 * 1024);
    let wiped = LoopDevice::filled(8 * 1024 * 1024);
    symlink(&kept.path, devices.path().join("kept")).unwrap();
    symlink(&wiped.path, devices.path().join("wiped")).unwrap();
    let dir = devices.path().to_str().unwrap();
    let valid = json!({"deviceDir": dir, "deviceNameFilter": ".*", "volumeMode": "Block"});
    let invalid = json!({"deviceDir": dir, "deviceNameFilter": ".*", "volumeMode": "Sideways"});

    server.create_object(
        "namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
    );
    server.create_object("configmaps", configmap(invalid.clone()));
    server.create_object(
        "nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": "node-r",
            "annotations": {"local-pv-provisioner.cybozu.io/pv-spec-configmap": "spec"},
        }}),
    );
    let process = ProvisionerProcess::start(ProvisionerOptions {
        kubeconfig: &server.write_kubeconfig(work.path()),
        node: "node-r",
        namespace: NAMESPACE,
        env: vec![
            ("LP_DEVICE_LOSS_GRACE", "0s".into()),
            ("LP_POLLING_INTERVAL", "1s".into()),
        ],
        log_dir: work.path(),
    });
    let events_with = |reason: &'static str| {
        let server = &server;
        move || async move {
            let count = server
                .objects("events.events.k8s.io")
                .iter()
                .filter(|event| event["reason"] == reason)
                .count();
            (count > 0).then_some(count)
        }
    };
    eventually("a PVSpecInvalid Event", WAIT, events_with("PVSpecInvalid")).await;

    // Valid, then the same invalid spec again: the repeated Event is patched as a series.
    replace_configmap(&server, valid.clone());
    eventually("two PVs", WAIT, || async {
        (server.objects("persistentvolumes").len() == 2).then_some(())
    })
    .await;
    replace_configmap(&server, invalid);
    eventually("the repeated Event patched", WAIT, || async {
        server
            .requests()
            .iter()
            .any(|r| r.verb == "patch" && r.resource == "events")
            .then_some(())
    })
    .await;
    replace_configmap(&server, valid);

    // A wipe: get, patch (the mark), delete.
    eventually("the PVs Available", WAIT, || async {
        server
            .objects("persistentvolumes")
            .iter()
            .all(|pv| pv["status"]["phase"] == "Available")
            .then_some(())
    })
    .await;
    server.set_pv_phase("local-node-r-wiped", "Released");
    eventually("the wiped PV deleted", WAIT, || async {
        server
            .requests()
            .iter()
            .any(|r| r.verb == "delete" && r.name.as_deref() == Some("local-node-r-wiped"))
            .then_some(())
    })
    .await;
    // A lost device: the Available PV of a vanished disk is deleted.
    std::fs::remove_file(devices.path().join("kept")).unwrap();
    eventually("the lost device's PV deleted", WAIT, || async {
        server
            .requests()
            .iter()
            .any(|r| r.verb == "delete" && r.name.as_deref() == Some("local-node-r-kept"))
            .then_some(())
    })
    .await;
    drop(process);

    let used: BTreeSet<Permission> = server
        .requests()
        .iter()
        .filter(|r| !r.resource.is_empty())
        .map(|r| {
            let namespaced =
                r.namespace.as_deref() == Some(NAMESPACE) && r.resource == "configmaps";
            (
                r.group.clone(),
                r.resource.clone(),
                r.verb.clone(),
                namespaced,
            )
        })
        .collect();
    let mut rules = granted("config/rbac/cluster_role.yaml", false);
    rules.extend(granted("config/rbac/role.yaml", true));
    let unused: Vec<_> = rules.difference(&used).collect();
    let missing: Vec<_> = used.difference(&rules).collect();
    assert!(
        unused.is_empty() && missing.is_empty(),
        "RBAC differs from the calls made.\n granted but never used: {unused:?}\n used but not granted: {missing:?}"
    );
}
