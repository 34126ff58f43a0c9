//! Device classes, end to end: the real binary against the fake API server
//! over HTTP and real loop devices (needs root, as in CI). Several classes
//! on one node, each device in the class that selects it by name, size and
//! what the kernel says it is; a device two classes select, a read-only
//! device and a class at `maxDevices` are reported, never offered; the flat
//! keys beside `deviceClasses` pause the node; rewriting the flat keys as
//! the class `default` keeps every PV.

#[path = "../support/mod.rs"]
mod support;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PersistentVolume;
use support::world::waits::{WAIT, eventually};
use support::world::{QUICK_POLLING, World, data, polling};

const MIB: u64 = 1024 * 1024;
const CLASS_LABEL: &str = "local-pv-provisioner.cybozu.io/device-class";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The value of a class gauge of `process`'s node, once the page has it.
async fn class_gauge(
    process: &support::provisioner::ProvisionerProcess,
    name: &str,
    class: &str,
) -> Option<f64> {
    let (_, page) = process.get("/metrics").await?;
    let wanted = format!("device_class=\"{class}\"");
    page.lines()
        .filter(|line| line.starts_with(&format!("local_pv_provisioner_{name}{{")))
        .find(|line| line.contains(&wanted))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

fn labels(pv: &PersistentVolume) -> BTreeMap<String, String> {
    pv.metadata.labels.clone().unwrap_or_default()
}

fn storage_class(pv: &PersistentVolume) -> String {
    pv.spec
        .as_ref()
        .and_then(|spec| spec.storage_class_name.clone())
        .unwrap_or_default()
}

/// Two classes over one directory split by size, a third by name in
/// another directory, a fourth by model (which loop devices lack: it fails
/// closed and says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_device_goes_to_the_class_that_selects_it_with_its_labels() {
    let world = World::fake().await;
    world.attach_linked("disk-small", 16 * MIB);
    world.attach_linked("disk-large", 48 * MIB);
    let fast_dir = world.new_device_dir();
    let fast = world.attach(8 * MIB);
    world.link_in(&fast_dir, "fast-a", &fast);
    let by_model = world.attach(8 * MIB);
    world.link_in(&fast_dir, "model-a", &by_model);
    let classes = format!(
        r#"
- name: small
  deviceDir: {dir}
  deviceNameFilter: "^disk-"
  volumeMode: Block
  storageClassName: local-small
  maxSize: 32Mi
- name: large
  deviceDir: {dir}
  deviceNameFilter: "^disk-"
  volumeMode: Filesystem
  fsType: xfs
  storageClassName: local-large
  minSize: 32Mi
  labels: {{tier: cold}}
  nodeLabels: [{ZONE_LABEL}, topology.kubernetes.io/rack]
- name: fast
  deviceDir: {fast_dir}
  deviceNameFilter: "^fast-"
  volumeMode: Block
  storageClassName: local-fast
  deviceTypes: [loop]
- name: by-model
  deviceDir: {fast_dir}
  deviceNameFilter: "^model-"
  volumeMode: Block
  storageClassName: local-model
  models: ["Samsung"]
"#,
        dir = world.dir_text(),
        fast_dir = fast_dir.display(),
    );
    world
        .put_configmap("classes", data(&[("deviceClasses", &classes)]))
        .await;
    world.add_node("node-a", Some("classes")).await;
    world
        .modify::<k8s_openapi::api::core::v1::Node>(None, "node-a", |node| {
            node["metadata"]["labels"][ZONE_LABEL] = serde_json::json!("zone-a");
        })
        .await;
    let process = world.start("node-a", vec![polling(QUICK_POLLING)]);
    world
        .wait_for_pv_names(&[
            "local-node-a-disk-large",
            "local-node-a-disk-small",
            "local-node-a-fast-a",
        ])
        .await;

    let small = world.pv("local-node-a-disk-small").await.unwrap();
    let large = world.pv("local-node-a-disk-large").await.unwrap();
    let fast_pv = world.pv("local-node-a-fast-a").await.unwrap();
    assert_eq!(labels(&small)[CLASS_LABEL], "small");
    assert_eq!(storage_class(&small), "local-small");
    assert_eq!(labels(&large)[CLASS_LABEL], "large");
    assert_eq!(storage_class(&large), "local-large");
    assert_eq!(
        large.spec.as_ref().unwrap().volume_mode.as_deref(),
        Some("Filesystem")
    );
    assert_eq!(labels(&large)["tier"], "cold");
    assert_eq!(labels(&large)[ZONE_LABEL], "zone-a", "copied from the Node");
    assert!(
        !labels(&large).contains_key("topology.kubernetes.io/rack"),
        "the Node has no rack label: left out"
    );
    assert!(!labels(&small).contains_key("tier"));
    assert_eq!(labels(&fast_pv)[CLASS_LABEL], "fast");
    assert_eq!(storage_class(&fast_pv), "local-fast");
    assert_eq!(
        labels(&fast_pv)["local-pv-provisioner.cybozu.io/device-type"],
        "loop",
        "the device type comes from sysfs"
    );
    let name = fast
        .path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let rotational =
        std::fs::read_to_string(format!("/sys/block/{name}/queue/rotational")).unwrap();
    assert_eq!(
        labels(&fast_pv)["local-pv-provisioner.cybozu.io/rotational"],
        if rotational.trim() == "1" {
            "true"
        } else {
            "false"
        },
        "the rotational flag comes from sysfs"
    );

    let provisioned = world
        .wait_for_event_about("Provisioned", "PersistentVolume", "local-node-a-disk-large")
        .await;
    assert!(
        provisioned
            .note
            .as_deref()
            .unwrap_or_default()
            .ends_with("(class large)"),
        "Events name the class: {:?}",
        provisioned.note
    );
    // The model class: no model in sysfs for a loop device, so not offered.
    let note = eventually("a DeviceSkipped Event for model-a", WAIT, || async {
        world
            .events()
            .await
            .into_iter()
            .filter(|event| event.reason.as_deref() == Some("DeviceSkipped"))
            .filter_map(|event| event.note)
            .find(|note| note.contains("model-a"))
    })
    .await;
    assert!(note.contains("class by-model cannot tell"), "{note}");
    assert!(note.contains("sysfs has no model"), "{note}");
    eventually("the class gauges", WAIT, || async {
        let counts = (
            class_gauge(&process, "class_available_devices", "small").await,
            class_gauge(&process, "class_available_devices", "large").await,
            class_gauge(&process, "class_available_devices", "fast").await,
            class_gauge(&process, "class_error_devices", "by-model").await,
        );
        (counts == (Some(1.0), Some(1.0), Some(1.0), Some(1.0))).then_some(())
    })
    .await;
    assert_eq!(world.pvs().await.len(), 3, "the model-less device has none");
    world.teardown().await;
}

/// A device two classes select is offered by neither, and both are named;
/// a read-only device is never offered; a class over `/dev` is warned about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_and_read_only_devices_are_never_offered() {
    let world = World::fake().await;
    let shared = world.attach_linked("disk-shared", 16 * MIB);
    let by_path = world.new_device_dir();
    world.link_in(&by_path, "pci-shared", &shared);
    let read_only = world.attach_read_only(16 * MIB);
    let loop_name = read_only
        .path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let classes = format!(
        r#"
- {{name: by-id, deviceDir: {dir}, deviceNameFilter: "^disk-", volumeMode: Block}}
- {{name: by-path, deviceDir: {by_path}, deviceNameFilter: "^pci-", volumeMode: Block}}
- {{name: raw, deviceDir: /dev, deviceNameFilter: "^{loop_name}$", volumeMode: Block}}
"#,
        dir = world.dir_text(),
        by_path = by_path.display(),
    );
    world
        .put_configmap("classes", data(&[("deviceClasses", &classes)]))
        .await;
    world.add_node("node-a", Some("classes")).await;
    let process = world.start("node-a", vec![polling(QUICK_POLLING)]);
    let notes = eventually(
        "DeviceSkipped Events for all three entries",
        WAIT,
        || async {
            let notes: Vec<String> = world
                .events()
                .await
                .into_iter()
                .filter(|event| event.reason.as_deref() == Some("DeviceSkipped"))
                .filter_map(|event| event.note)
                .collect();
            (notes.len() >= 3).then_some(notes)
        },
    )
    .await;
    let about = |entry: &str| {
        notes
            .iter()
            .find(|note| note.contains(entry))
            .unwrap_or_else(|| panic!("no Event about {entry}: {notes:?}"))
    };
    for entry in ["disk-shared", "pci-shared"] {
        assert!(
            about(entry).contains("selected by the classes by-id and by-path"),
            "{}",
            about(entry)
        );
    }
    assert!(
        about(&loop_name).contains("read-only"),
        "{}",
        about(&loop_name)
    );
    let unstable = world.wait_for_note("UnstableDevicePath").await;
    assert!(unstable.contains("class raw"), "{unstable}");
    assert!(unstable.contains("/dev/disk/by-id"), "{unstable}");
    process.wait_metric("error_devices", 3.0).await;
    process.wait_for_fresh_passes(2).await;
    assert!(world.pvs().await.is_empty(), "no PV for any of them");
    world.teardown().await;
}

/// `maxDevices: 2` with three devices: two PVs, the third reported; when a
/// PV of the class goes, the device that waited is offered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_at_max_devices_offers_the_waiting_device_when_a_pv_goes() {
    let world = World::fake().await;
    world.attach_disks(3, 8 * MIB);
    let classes = format!(
        "- {{name: two, deviceDir: {}, deviceNameFilter: \"^disk\", volumeMode: Block, maxDevices: 2}}\n",
        world.dir_text()
    );
    world
        .put_configmap("classes", data(&[("deviceClasses", &classes)]))
        .await;
    world.add_node("node-a", Some("classes")).await;
    let process = world.start("node-a", vec![polling(QUICK_POLLING)]);
    world
        .wait_for_pv_names(&["local-node-a-disk0", "local-node-a-disk1"])
        .await;
    let note = eventually("disk2 reported", WAIT, || async {
        world
            .events()
            .await
            .into_iter()
            .filter_map(|event| event.note)
            .find(|note| note.contains("disk2") && note.contains("maxDevices"))
    })
    .await;
    assert!(
        note.contains("class two already has maxDevices (2)"),
        "{note}"
    );
    process.wait_for_fresh_passes(2).await;
    assert_eq!(world.pvs().await.len(), 2, "the third waits");

    // disk0's PV goes (never claimed: released at once); disk2 waited longest.
    world
        .delete::<PersistentVolume>(None, "local-node-a-disk0", None)
        .await;
    world
        .wait_for_pv_names(&["local-node-a-disk1", "local-node-a-disk2"])
        .await;
    process.wait_for_fresh_passes(2).await;
    assert_eq!(
        world.pv_names().await,
        vec!["local-node-a-disk1", "local-node-a-disk2"],
        "disk0 came back and now waits"
    );
    world.teardown().await;
}

/// The flat keys beside `deviceClasses` pause the node and delete nothing;
/// the flat keys rewritten as the class `default` keep every PV by name,
/// with no create or delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flat_keys_become_the_default_class_without_touching_a_pv() {
    let world = World::fake().await;
    world.attach_disks(2, 8 * MIB);
    let dir = world.dir_text();
    world.put_configmap("spec", world.block_spec("^disk")).await;
    world.add_node("node-a", Some("spec")).await;
    let process = world.start("node-a", vec![polling(QUICK_POLLING)]);
    let names = ["local-node-a-disk0", "local-node-a-disk1"];
    world.wait_for_pv_names(&names).await;
    let creates = world.pv_requests("POST", None);

    let class = format!(
        "- {{name: default, deviceDir: {dir}, deviceNameFilter: \"^disk\", volumeMode: Block}}\n"
    );
    let mut both = world.block_spec("^disk");
    both.insert("deviceClasses".into(), class.clone());
    world.put_configmap("spec", both).await;
    let invalid = world.wait_for_note("PVSpecInvalid").await;
    assert!(
        invalid.contains("cannot stand beside the flat keys"),
        "{invalid}"
    );
    process.wait_metric("pv_spec_errors", 1.0).await;
    process.wait_for_fresh_passes(2).await;
    assert_eq!(world.pv_names().await, names, "paused: nothing deleted");

    world
        .put_configmap("spec", data(&[("deviceClasses", &class)]))
        .await;
    process.wait_metric("pv_spec_errors", 0.0).await;
    process.wait_metric("available_devices", 2.0).await;
    process.wait_for_fresh_passes(2).await;
    assert_eq!(world.pv_names().await, names, "the same PVs, by name");
    assert_eq!(world.pv_requests("POST", None), creates, "no PV created");
    assert_eq!(world.pv_requests("DELETE", None), 0, "no PV deleted");
    world.teardown().await;
}
