//! RBAC proof: the permissions the manifests grant equal the API calls the
//! controller makes. The controller runs a whole lifecycle against the fake
//! API server (provisioning, a PV name taken by someone else's PV, an
//! invalid spec and its repeated Event, a claim recorded, a wipe through
//! the finalizer, a lost device released without a wipe, each disk's
//! LocalDisk created, its status patched and the lost one's deleted) while the test
//! only touches the server's store directly, so every recorded request is
//! the controller's. The recorded (group, resource, verb, scope) set must
//! equal the rules of `config/rbac` (which `.ci/check_deploy.py` proves
//! identical to the Helm chart's).
//!
//! The same for `node-cleanup`: the mode runs alone through its whole
//! work (the Lease taken and handed back, a Node gone for good, its PV
//! marked, recorded, reported, its claim and the PV deleted, the finalizer
//! removed), and the calls it made must equal its rows (`component`
//! `node-cleanup`) of `target/deploy-rbac.json`, which `.ci/check_deploy.py
//! --dump-rbac` writes after proving chart and `config/node-cleanup` equal.

mod support;

use std::collections::BTreeSet;

use serde_yaml_ng::Value;
use support::world::inspect::phase;
use support::world::waits::{WAIT, eventually};
use support::world::{Data, World, polling};

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

/// A PV nobody's provisioner made, named `name`.
fn foreign_pv(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": "/srv/someone-else"},
        },
    })
}

/// The spec ConfigMap's data with `volumeMode` set to `mode`.
fn spec_with_mode(world: &World, mode: &str) -> Data {
    let mut spec = world.block_spec(".*");
    spec.insert("volumeMode".into(), mode.into());
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_permissions_equal_the_calls_the_controller_makes() {
    // The world writes and reads the fake server's store directly, so the
    // request log holds only the controller's calls.
    let world = World::fake().await;
    world.attach_linked("kept", 8 * 1024 * 1024);
    world.attach_linked("wiped", 8 * 1024 * 1024);
    world.attach_linked("taken", 8 * 1024 * 1024);
    let namespace = world.namespace().to_string();
    // Someone else's PV holds the name of the taken device's PV: the create
    // gets 409 and the holder is read (get).
    world.create_foreign_pv(foreign_pv("local-node-r-taken"));
    world
        .put_configmap("spec", spec_with_mode(&world, "Sideways"))
        .await;
    world.add_node("node-r", Some("spec")).await;
    let grace = ("LP_DEVICE_LOSS_GRACE", "0s".to_string());
    let process = world.start("node-r", vec![grace, polling("1s")]);
    world.wait_for_event("PVSpecInvalid").await;

    // Valid, then the same invalid spec again: its Event is created anew
    // (Events are never patched as series).
    world.put_configmap("spec", world.block_spec(".*")).await;
    world
        .wait_for_pv_names(&[
            "local-node-r-kept",
            "local-node-r-taken",
            "local-node-r-wiped",
        ])
        .await;
    world.wait_for_event("InvalidVolume").await;
    assert!(world.pv_requests("get", Some("local-node-r-taken")) >= 1);
    let created = world.requests("create", "events").len();
    world
        .put_configmap("spec", spec_with_mode(&world, "Sideways"))
        .await;
    eventually(
        "the repeated invalid spec's Event created",
        WAIT,
        || async { (world.requests("create", "events").len() > created).then_some(()) },
    )
    .await;
    world.put_configmap("spec", world.block_spec(".*")).await;

    // A claim recorded (patch), then a wipe: delete, then the finalizer
    // removed (patch).
    eventually("the PVs Available", WAIT, || async {
        let pvs = world.pvs_of("node-r").await;
        pvs.iter().all(|pv| phase(pv) == "Available").then_some(())
    })
    .await;
    world.server().bind_pv("local-node-r-wiped", "apps", "data");
    world
        .server()
        .set_pv_phase("local-node-r-wiped", "Released");
    eventually("the wiped PV released", WAIT, || async {
        (world.finalizer_removals(Some("local-node-r-wiped")) > 0).then_some(())
    })
    .await;
    // A lost device: the Available PV of a vanished disk is deleted and,
    // never claimed, released without a wipe.
    world.unlink("kept");
    eventually("the lost device's PV released", WAIT, || async {
        (world.finalizer_removals(Some("local-node-r-kept")) > 0).then_some(())
    })
    .await;
    // The disk inventory: each disk's LocalDisk created, its status
    // patched, and the lost device's deleted once its PV went.
    eventually("the lost device's LocalDisk deleted", WAIT, || async {
        (!world.requests("delete", "localdisks").is_empty()).then_some(())
    })
    .await;
    drop(process);

    let used = used_permissions(&world, &namespace);
    let mut rules = granted("config/rbac/cluster_role.yaml", false);
    rules.extend(granted("config/rbac/role.yaml", true));
    let unused: Vec<_> = rules.difference(&used).collect();
    let missing: Vec<_> = used.difference(&rules).collect();
    assert!(
        unused.is_empty() && missing.is_empty(),
        "RBAC differs from the calls made.\n granted but never used: {unused:?}\n used but not granted: {missing:?}"
    );
}

/// The permissions the requests in the fake server's log needed; a
/// ConfigMap request in `namespace` needs the namespaced Role only.
fn used_permissions(world: &World, namespace: &str) -> BTreeSet<Permission> {
    world
        .server()
        .requests()
        .iter()
        .filter(|r| !r.resource.is_empty())
        .map(|r| {
            let namespaced =
                r.namespace.as_deref() == Some(namespace) && r.resource == "configmaps";
            let resource = match &r.subresource {
                Some(sub) => format!("{}/{sub}", r.resource),
                None => r.resource.clone(),
            };
            (r.group.clone(), resource, r.verb.clone(), namespaced)
        })
        .collect()
}

/// node-cleanup's rules from the dump of `.ci/check_deploy.py --dump-rbac
/// target/deploy-rbac.json` (rows of component `node-cleanup`).
fn node_cleanup_granted() -> BTreeSet<Permission> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/deploy-rbac.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}\nIt is written by `python3 .ci/check_deploy.py --dump-rbac target/deploy-rbac.json` \
             (which .ci/prepare runs before `cargo test`); run that first",
            path.display()
        )
    });
    let rows: Vec<serde_json::Value> = serde_json::from_str(&text).expect("a JSON list of rules");
    let mut permissions = BTreeSet::new();
    for row in rows.iter().filter(|row| row["component"] == "node-cleanup") {
        for verb in row["verbs"].as_array().expect("verbs") {
            permissions.insert((
                row["apiGroup"].as_str().expect("apiGroup").to_string(),
                row["resource"].as_str().expect("resource").to_string(),
                verb.as_str().expect("a verb").to_string(),
                row["namespaced"].as_bool().expect("namespaced"),
            ));
        }
    }
    assert!(
        !permissions.is_empty(),
        "{}: no rule of component node-cleanup (a stale dump?)",
        path.display()
    );
    permissions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_cleanup_is_granted_exactly_the_calls_it_makes() {
    let world = World::fake().await;
    let namespace = world.namespace().to_string();
    let node = world.add_node("node-gone", None).await;
    world.add_node("node-alive", None).await;
    let pv = serde_json::json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": "local-node-gone-disk0",
            "labels": {"local-pv-provisioner.cybozu.io/node": "node-gone"},
            "annotations": {
                "local-pv-provisioner.cybozu.io/node-name": "node-gone",
                "local-pv-provisioner.cybozu.io/delete-claims-on-node-gone": "true",
            },
            "finalizers": ["local-pv-provisioner.cybozu.io/cleanup"],
        },
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "local": {"path": "/dev/disk/by-path/disk0"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-gone"]},
            ]}]}},
        },
    });
    world.create_foreign_pv(pv);
    world
        .create_claim("data", "1Gi", Some("local-node-gone-disk0"))
        .await;
    world
        .server()
        .bind_pv("local-node-gone-disk0", &namespace, "data");
    let mut process =
        world.start_node_cleanup("cleanup-0", vec![("LP_NODE_GONE_GRACE", "1s".into())]);
    eventually("node-cleanup leading", WAIT, || async {
        (process
            .metric("local_pv_provisioner_node_cleanup_leader ")
            .await
            == Some(1.0))
        .then_some(())
    })
    .await;
    world.delete_node(&node).await;
    eventually("the PV released", WAIT, || async {
        let pv = world.pv("local-node-gone-disk0").await;
        let held = pv.is_some_and(|pv| {
            let finalizers = pv.metadata.finalizers.unwrap_or_default();
            finalizers
                .iter()
                .any(|f| f == "local-pv-provisioner.cybozu.io/cleanup")
        });
        (!held).then_some(())
    })
    .await;
    world.wait_for_event("NodeGone").await;
    eventually("the claim deleted", WAIT, || async {
        world.claim("data").await.is_none().then_some(())
    })
    .await;
    // Stopped, it hands the Lease back (a patch).
    let status = process.stop_with(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{status:?}");

    let used: BTreeSet<Permission> = world
        .server()
        .requests()
        .iter()
        .filter(|r| !r.resource.is_empty())
        // The test's own deletion of the Node (a world deletes through its client).
        .filter(|r| !(r.resource == "nodes" && r.verb == "delete"))
        .map(|r| {
            let namespaced =
                r.namespace.as_deref() == Some(namespace.as_str()) && r.resource == "leases";
            (
                r.group.clone(),
                r.resource.clone(),
                r.verb.clone(),
                namespaced,
            )
        })
        .collect();
    let rules = node_cleanup_granted();
    let unused: Vec<_> = rules.difference(&used).collect();
    let missing: Vec<_> = used.difference(&rules).collect();
    assert!(
        unused.is_empty() && missing.is_empty(),
        "node-cleanup's RBAC differs from the calls it made.\n granted but never used: {unused:?}\n used but not granted: {missing:?}"
    );
}
