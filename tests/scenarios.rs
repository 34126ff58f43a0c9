//! Whole scenarios: the real binary against the fake API server over HTTP
//! (through a kubeconfig) and real loop devices. Needs root, as in CI.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node, PersistentVolume};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use support::fake_api::FakeApiServer;
use support::loop_device::{FILL_BYTE, LoopDevice};
use support::provisioner::{ProvisionerOptions, ProvisionerProcess, eventually};
use tempfile::TempDir;

const NAMESPACE: &str = "lpp-system";
const ANNOTATION: &str = "local-pv-provisioner.cybozu.io/pv-spec-configmap";
const MIB: u64 = 1024 * 1024;
const WAIT: Duration = Duration::from_secs(30);

/// One test's world: a fake API server, a node, a device directory.
struct World {
    server: FakeApiServer,
    client: Client,
    work: TempDir,
    device_dir: TempDir,
}

impl World {
    async fn new() -> World {
        support::loop_device::require_root();
        let server = FakeApiServer::start().await;
        let client = server.client().await;
        server.create_object(
            "namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
        );
        World {
            server,
            client,
            work: tempfile::tempdir().unwrap(),
            device_dir: tempfile::tempdir().unwrap(),
        }
    }

    async fn add_node(&self, name: &str, annotation: Option<&str>) -> Node {
        let mut node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": format!("{name}.host")}},
        });
        if let Some(configmap) = annotation {
            node["metadata"]["annotations"] = json!({ ANNOTATION: configmap });
        }
        Api::<Node>::all(self.client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(node).unwrap(),
            )
            .await
            .unwrap()
    }

    async fn put_configmap(&self, name: &str, data: &[(&str, &str)]) {
        let data: BTreeMap<String, String> = data
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let api = Api::<ConfigMap>::namespaced(self.client.clone(), NAMESPACE);
        let configmap = ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(NAMESPACE.into()),
                ..Default::default()
            },
            data: Some(data.clone()),
            ..Default::default()
        };
        if api.get_opt(name).await.unwrap().is_some() {
            api.patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"data": data})),
            )
            .await
            .unwrap();
        } else {
            api.create(&PostParams::default(), &configmap)
                .await
                .unwrap();
        }
    }

    /// A Block-mode PV spec over this world's device directory.
    async fn put_block_spec(&self, name: &str, filter: &str) {
        self.put_configmap(
            name,
            &[
                ("deviceDir", self.dir()),
                ("deviceNameFilter", filter),
                ("volumeMode", "Block"),
            ],
        )
        .await;
    }

    fn link(&self, name: &str, device: &LoopDevice) {
        symlink(&device.path, self.device_dir.path().join(name)).unwrap();
    }

    fn dir(&self) -> &str {
        self.device_dir.path().to_str().unwrap()
    }

    fn start(&self, node: &str, env: Vec<(&'static str, String)>) -> ProvisionerProcess {
        ProvisionerProcess::start(ProvisionerOptions {
            kubeconfig: &self.server.write_kubeconfig(self.work.path()),
            node,
            namespace: NAMESPACE,
            env,
            log_dir: self.work.path(),
        })
    }

    async fn pvs(&self) -> Vec<PersistentVolume> {
        Api::<PersistentVolume>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
    }

    async fn pv_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .pvs()
            .await
            .into_iter()
            .filter_map(|pv| pv.metadata.name)
            .collect();
        names.sort();
        names
    }

    async fn events(&self) -> Vec<Event> {
        Api::<Event>::namespaced(self.client.clone(), "default")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
    }

    async fn wait_for_event(&self, reason: &str) -> Event {
        eventually(&format!("an Event with reason {reason}"), WAIT, || async {
            self.events()
                .await
                .into_iter()
                .find(|e| e.reason.as_deref() == Some(reason))
        })
        .await
    }

    fn pv_creations(&self) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.verb == "create" && r.resource == "persistentvolumes")
            .count()
    }
}

fn metric(name: &str, node: &str) -> String {
    format!("local_pv_provisioner_{name}{{node=\"{node}\"}}")
}

async fn wait_ready(process: &ProvisionerProcess) {
    eventually("/readyz to answer 200", WAIT, || async {
        process.is_ready().await.then_some(())
    })
    .await;
}

async fn wait_metric(process: &ProvisionerProcess, sample: &str, value: f64) {
    eventually(&format!("{sample} == {value}"), WAIT, || async {
        (process.metric(sample).await == Some(value)).then_some(())
    })
    .await;
}

/// Removes what the API server sets, leaving what the provisioner decided.
fn decided_fields(pv: &PersistentVolume) -> Value {
    let mut value = serde_json::to_value(pv).unwrap();
    let metadata = value["metadata"].as_object_mut().unwrap();
    for key in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "generation",
        "finalizers",
        "managedFields",
    ] {
        metadata.remove(key);
    }
    value.as_object_mut().unwrap().remove("status");
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotated_node_gets_exactly_the_expected_pvs_and_metrics() {
    let world = World::new().await;
    let disk_a = LoopDevice::filled(16 * MIB);
    let disk_b = LoopDevice::filled(24 * MIB + 512);
    world.link("disk:a", &disk_a);
    world.link("disk-b", &disk_b);
    std::fs::write(world.device_dir.path().join("disk-not-a-device"), b"x").unwrap();
    std::fs::write(world.device_dir.path().join("ignored"), b"x").unwrap();
    world
        .put_configmap(
            "pv-spec-fs",
            &[
                ("deviceDir", world.dir()),
                ("deviceNameFilter", "^disk"),
                ("volumeMode", "Filesystem"),
                ("fsType", "xfs"),
            ],
        )
        .await;
    let node = world.add_node("node-a", Some("pv-spec-fs")).await;
    let process = world.start("node-a", vec![]);

    eventually("two PVs", WAIT, || async {
        (world.pvs().await.len() == 2).then_some(())
    })
    .await;
    wait_metric(&process, &metric("available_devices", "node-a"), 2.0).await;
    assert_eq!(
        process.metric(&metric("error_devices", "node-a")).await,
        Some(1.0)
    );
    assert_eq!(
        process.metric(&metric("pvs_created_total", "node-a")).await,
        Some(2.0)
    );
    assert_eq!(
        process.metric(&metric("pv_spec_errors", "node-a")).await,
        Some(0.0)
    );
    wait_ready(&process).await;

    let pvs = world.pvs().await;
    let pv_a = pvs
        .iter()
        .find(|pv| pv.metadata.name.as_deref() == Some("local-node-a-disk-a"))
        .expect("PV for disk:a");
    let expected = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": "local-node-a-disk-a",
            "labels": {"local-pv-provisioner.cybozu.io/node": "node-a"},
            "annotations": {
                "local-pv-provisioner.cybozu.io/device-dir": world.dir(),
                "local-pv-provisioner.cybozu.io/device-name-filter": "^disk",
                "local-pv-provisioner.cybozu.io/volume-mode": "Filesystem",
                "local-pv-provisioner.cybozu.io/fs-type": "xfs",
                "local-pv-provisioner.cybozu.io/device-number": disk_a.number(),
                "local-pv-provisioner.cybozu.io/device-size": (16 * MIB).to_string(),
                "local-pv-provisioner.cybozu.io/device-stable-id": format!("loop:{}@0", disk_a.backing_file.display()),
                "local-pv-provisioner.cybozu.io/node-name": "node-a",
                "local-pv-provisioner.cybozu.io/wipe-bytes": "104857600",
            },
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "Node",
                "name": "node-a",
                "uid": node.metadata.uid.clone().unwrap(),
            }],
        },
        "spec": {
            "capacity": {"storage": (16 * MIB).to_string()},
            "volumeMode": "Filesystem",
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "local-storage",
            "local": {"path": format!("{}/disk:a", world.dir()), "fsType": "xfs"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{
                "key": "kubernetes.io/hostname",
                "operator": "In",
                "values": ["node-a.host"],
            }]}]}},
        },
    });
    assert_eq!(decided_fields(pv_a), expected);
    let pv_b = pvs
        .iter()
        .find(|pv| pv.metadata.name.as_deref() == Some("local-node-a-disk-b"))
        .expect("PV for disk-b");
    assert_eq!(
        pv_b.spec.as_ref().unwrap().capacity.as_ref().unwrap()["storage"].0,
        (24 * MIB + 512).to_string(),
        "exact bytes"
    );
    let event = world.wait_for_event("PVSpecApplied").await;
    assert_eq!(event.regarding.unwrap().name.as_deref(), Some("node-a"));
    let skipped = world.wait_for_event("DeviceSkipped").await;
    assert!(skipped.note.unwrap().contains("disk-not-a-device"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_without_annotation_or_default_is_left_alone() {
    let world = World::new().await;
    let disk = LoopDevice::filled(8 * MIB);
    world.link("disk0", &disk);
    world.put_block_spec("unused", ".*").await;
    world.add_node("node-b", None).await;
    let process = world.start("node-b", vec![]);
    wait_ready(&process).await;
    world.wait_for_event("PVSpecNotConfigured").await;
    assert_eq!(
        process.metric(&metric("available_devices", "node-b")).await,
        Some(0.0)
    );
    assert!(world.pvs().await.is_empty());
    assert_eq!(world.pv_creations(), 0);

    // The default flag is the fallback.
    drop(process);
    let process = world.start(
        "node-b",
        vec![("LP_DEFAULT_PV_SPEC_CONFIGMAP", "unused".into())],
    );
    eventually("a PV from the default ConfigMap", WAIT, || async {
        (world.pv_names().await == vec!["local-node-b-disk0".to_string()]).then_some(())
    })
    .await;
    drop(process);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configmap_creates_nothing_and_raises_an_event() {
    let world = World::new().await;
    let disk = LoopDevice::filled(8 * MIB);
    world.link("disk0", &disk);
    world
        .put_configmap(
            "bad",
            &[
                ("deviceDir", world.dir()),
                ("deviceNameFilter", ".*"),
                ("volumeMode", "Block"),
                ("fsType", "ext4"),
            ],
        )
        .await;
    world.add_node("node-c", Some("bad")).await;
    let process = world.start("node-c", vec![]);
    let event = world.wait_for_event("PVSpecInvalid").await;
    let note = event.note.unwrap();
    assert!(
        note.contains("\"fsType\"") && note.contains("\"ext4\""),
        "{note}"
    );
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    wait_metric(&process, &metric("pv_spec_errors", "node-c"), 1.0).await;
    assert!(world.pvs().await.is_empty());
    assert_eq!(world.pv_creations(), 0);
    assert!(process.log().contains("fsType"), "the error is logged");

    // A missing ConfigMap is reported the same way.
    Api::<Node>::all(world.client.clone())
        .patch(
            "node-c",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {ANNOTATION: "nope"}}})),
        )
        .await
        .unwrap();
    world.wait_for_event("PVSpecNotFound").await;
    assert!(world.pvs().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_edit_is_picked_up_without_waiting_for_the_poll() {
    let world = World::new().await;
    let first = LoopDevice::filled(8 * MIB);
    let second = LoopDevice::filled(8 * MIB);
    world.link("one", &first);
    world.link("two", &second);
    world.put_block_spec("spec", "^one$").await;
    world.add_node("node-d", Some("spec")).await;
    let process = world.start("node-d", vec![("LP_POLLING_INTERVAL", "1h".into())]);
    eventually("the first PV", WAIT, || async {
        (world.pv_names().await == vec!["local-node-d-one".to_string()]).then_some(())
    })
    .await;
    world.put_block_spec("spec", "^(one|two)$").await;
    eventually("the second PV after the ConfigMap edit", WAIT, || async {
        (world.pv_names().await
            == vec![
                "local-node-d-one".to_string(),
                "local-node-d-two".to_string(),
            ])
        .then_some(())
    })
    .await;
    wait_metric(&process, &metric("available_devices", "node-d"), 2.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_pv_is_wiped_deleted_and_recreated() {
    let world = World::new().await;
    let size = 160 * MIB;
    let disk = LoopDevice::filled(size);
    world.link("disk0", &disk);
    world.put_block_spec("spec", ".*").await;
    world.add_node("node-e", Some("spec")).await;
    let process = world.start("node-e", vec![]);
    let first_uid = eventually("an Available PV", WAIT, || async {
        let pvs = world.pvs().await;
        let pv = pvs.first()?;
        (pv.status.as_ref()?.phase.as_deref() == Some("Available"))
            .then(|| pv.metadata.uid.clone().unwrap())
    })
    .await;

    world.server.set_pv_phase("local-node-e-disk0", "Released");
    let second_uid = eventually("the PV recreated with a new UID", WAIT, || async {
        let pvs = world.pvs().await;
        let pv = pvs.first()?;
        let uid = pv.metadata.uid.clone()?;
        (uid != first_uid).then_some(uid)
    })
    .await;
    assert_ne!(first_uid, second_uid);
    assert_eq!(
        world.pv_names().await,
        vec!["local-node-e-disk0".to_string()]
    );
    assert!(
        disk.read(0, (100 * MIB) as usize).iter().all(|b| *b == 0),
        "head zeroed"
    );
    assert!(
        disk.read(100 * MIB, MIB as usize)
            .iter()
            .all(|b| *b == FILL_BYTE),
        "byte 100 MiB onward intact"
    );
    assert!(
        disk.read(size - MIB, MIB as usize).iter().all(|b| *b == 0),
        "tail zeroed"
    );
    wait_metric(&process, &metric("wipes_total", "node-e"), 1.0).await;
    let event = world.wait_for_event("VolumeWiped").await;
    assert_eq!(
        event.regarding.unwrap().uid.as_deref(),
        Some(first_uid.as_str())
    );
    let deletes: Vec<_> = world
        .server
        .requests()
        .into_iter()
        .filter(|r| r.verb == "delete" && r.resource == "persistentvolumes")
        .collect();
    assert_eq!(deletes.len(), 1, "one delete, after the wipe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_wipe_keeps_the_pv() {
    let world = World::new().await;
    let mut disk = LoopDevice::filled(8 * MIB);
    world.link("disk0", &disk);
    world.put_block_spec("spec", ".*").await;
    world.add_node("node-f", Some("spec")).await;
    let process = world.start("node-f", vec![]);
    let uid = eventually("a PV", WAIT, || async {
        world.pvs().await.first()?.metadata.uid.clone()
    })
    .await;

    // Another disk now sits behind the same loop device number and size.
    disk.swap_backing_file();
    world.server.set_pv_phase("local-node-f-disk0", "Released");
    let event = world.wait_for_event("WipeRefused").await;
    assert!(event.note.unwrap().contains("SameDevice"));
    wait_metric(
        &process,
        "local_pv_provisioner_wipe_failures_total{node=\"node-f\",reason=\"SameDevice\"}",
        1.0,
    )
    .await;
    let pvs = world.pvs().await;
    assert_eq!(pvs.len(), 1);
    assert_eq!(
        pvs[0].metadata.uid.as_deref(),
        Some(uid.as_str()),
        "the PV is kept"
    );
    assert!(pvs[0].metadata.deletion_timestamp.is_none());
    assert!(
        disk.read(0, MIB as usize).iter().all(|b| *b == FILL_BYTE),
        "nothing written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_creates_no_duplicates_and_sigterm_exits_zero() {
    let world = World::new().await;
    let disks: Vec<LoopDevice> = (0..3).map(|_| LoopDevice::filled(8 * MIB)).collect();
    for (index, disk) in disks.iter().enumerate() {
        world.link(&format!("disk{index}"), disk);
    }
    world.put_block_spec("spec", ".*").await;
    world.add_node("node-g", Some("spec")).await;
    let mut process = world.start("node-g", vec![]);
    eventually("three PVs", WAIT, || async {
        (world.pvs().await.len() == 3).then_some(())
    })
    .await;
    let before: Vec<Option<String>> = world
        .pvs()
        .await
        .into_iter()
        .map(|pv| pv.metadata.uid)
        .collect();
    let status = process.stop_with(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");

    let process = world.start("node-g", vec![]);
    wait_ready(&process).await;
    wait_metric(&process, &metric("available_devices", "node-g"), 3.0).await;
    let after: Vec<Option<String>> = world
        .pvs()
        .await
        .into_iter()
        .map(|pv| pv.metadata.uid)
        .collect();
    assert_eq!(before, after, "the same PVs, none added");
    assert_eq!(world.pv_creations(), 3);
    assert_eq!(
        process.metric(&metric("pvs_created_total", "node-g")).await,
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_required_flag_exits_with_one_clear_line() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_local-pv-provisioner"))
        .env_clear()
        .env("LP_NODE_NAME", "n")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--namespace-name"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_devices_delete_available_pvs_and_keep_bound_ones() {
    let world = World::new().await;
    let free = LoopDevice::filled(8 * MIB);
    let used = LoopDevice::filled(8 * MIB);
    world.link("free", &free);
    world.link("used", &used);
    world.put_block_spec("spec", ".*").await;
    world.add_node("node-h", Some("spec")).await;
    let process = world.start(
        "node-h",
        vec![
            ("LP_DEVICE_LOSS_GRACE", "1s".into()),
            ("LP_POLLING_INTERVAL", "1s".into()),
        ],
    );
    eventually("two Available PVs", WAIT, || async {
        let pvs = world.pvs().await;
        let available = pvs
            .iter()
            .filter(|pv| pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Available"))
            .count();
        (available == 2).then_some(())
    })
    .await;
    world.server.bind_pv("local-node-h-used", "apps", "data");
    let used_uid = world
        .pvs()
        .await
        .into_iter()
        .find(|pv| pv.metadata.name.as_deref() == Some("local-node-h-used"))
        .and_then(|pv| pv.metadata.uid)
        .unwrap();

    // Both disks vanish (their links disappear, as udev removes them on unplug).
    std::fs::remove_file(world.device_dir.path().join("free")).unwrap();
    std::fs::remove_file(world.device_dir.path().join("used")).unwrap();
    eventually(
        "the Available PV of the lost disk deleted",
        WAIT,
        || async {
            (world.pv_names().await == vec!["local-node-h-used".to_string()]).then_some(())
        },
    )
    .await;
    wait_metric(&process, &metric("missing_devices", "node-h"), 1.0).await;
    let missing: Vec<String> = world
        .events()
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("DeviceMissing"))
        .filter_map(|e| e.regarding?.name)
        .collect();
    assert!(
        missing.contains(&"local-node-h-free".to_string()),
        "{missing:?}"
    );
    eventually("a DeviceMissing Event for the Bound PV", WAIT, || async {
        world.events().await.into_iter().find(|e| {
            e.reason.as_deref() == Some("DeviceMissing")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("local-node-h-used")
        })
    })
    .await;

    // They come back: the Bound PV is untouched, the free disk gets a fresh PV.
    world.link("free", &free);
    world.link("used", &used);
    eventually("both PVs again", WAIT, || async {
        (world.pv_names().await
            == vec![
                "local-node-h-free".to_string(),
                "local-node-h-used".to_string(),
            ])
        .then_some(())
    })
    .await;
    wait_metric(&process, &metric("missing_devices", "node-h"), 0.0).await;
    world.wait_for_event("DeviceReturned").await;
    let still_used = world
        .pvs()
        .await
        .into_iter()
        .find(|pv| pv.metadata.name.as_deref() == Some("local-node-h-used"))
        .unwrap();
    assert_eq!(
        still_used.metadata.uid.as_deref(),
        Some(used_uid.as_str()),
        "the Bound PV is kept"
    );
    assert_eq!(still_used.status.unwrap().phase.as_deref(), Some("Bound"));
    assert!(
        used.read(0, MIB as usize).iter().all(|b| *b == FILL_BYTE),
        "its data is intact"
    );
}
