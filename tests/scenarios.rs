//! Whole scenarios: the real binary against the fake API server over HTTP
//! (through a kubeconfig) and real loop devices, in the shared test world.
//! Needs root, as in CI.

mod support;

#[path = "scenarios/expected.rs"]
mod expected;

use std::collections::BTreeMap;

use expected::{decided_fields, expected_disk_a_pv};
use k8s_openapi::api::core::v1::PersistentVolume;
use support::loop_device::FILL_BYTE;
use support::world::inspect::{held_terminating, phase};
use support::world::waits::{WAIT, eventually};
use support::world::witness::Write;
use support::world::{CLAIMED_BY_ANNOTATION, QUICK_POLLING, World, data, polling};

const MIB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotated_node_gets_exactly_the_expected_pvs_and_metrics() {
    let world = World::fake().await;
    let disk_a = world.attach_linked("disk:a", 16 * MIB);
    world.attach_linked("disk-b", 24 * MIB + 512);
    std::fs::write(world.dir().join("disk-not-a-device"), b"x").unwrap();
    std::fs::write(world.dir().join("ignored"), b"x").unwrap();
    let dir = world.dir_text();
    let spec = [
        ("deviceDir", dir.as_str()),
        ("deviceNameFilter", "^disk"),
        ("volumeMode", "Filesystem"),
        ("fsType", "xfs"),
    ];
    world.put_configmap("pv-spec-fs", data(&spec)).await;
    let node = world.add_node("node-a", Some("pv-spec-fs")).await;
    let process = world.start("node-a", vec![polling(QUICK_POLLING)]);

    process.wait_metric("available_devices", 2.0).await;
    process.wait_for_fresh_passes(1).await;
    assert_eq!(process.value("error_devices").await, Some(1.0));
    assert_eq!(process.value("pvs_created_total").await, Some(2.0));
    assert_eq!(process.value("pv_spec_errors").await, Some(0.0));
    process.wait_ready(true).await;

    let pv_a = world
        .pv("local-node-a-disk-a")
        .await
        .expect("PV for disk:a");
    let node_uid = node.metadata.uid.clone().unwrap();
    let expected = expected_disk_a_pv(&dir, &disk_a, &node_uid);
    assert_eq!(decided_fields(&pv_a), expected);
    let pv_b = world
        .pv("local-node-a-disk-b")
        .await
        .expect("PV for disk-b");
    assert_eq!(
        pv_b.spec.unwrap().capacity.unwrap()["storage"].0,
        (24 * MIB + 512).to_string(),
        "exact bytes"
    );
    assert_eq!(world.pvs().await.len(), 2);
    let event = world.wait_for_event("PVSpecApplied").await;
    assert_eq!(event.regarding.unwrap().name.as_deref(), Some("node-a"));
    let skipped = world.wait_for_event("DeviceSkipped").await;
    assert!(skipped.note.unwrap().contains("disk-not-a-device"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_without_annotation_or_default_is_left_alone() {
    let world = World::fake().await;
    world.attach_linked("disk0", 8 * MIB);
    world.put_configmap("unused", world.block_spec(".*")).await;
    world.add_node("node-b", None).await;
    let process = world.start("node-b", vec![polling(QUICK_POLLING)]);
    process.wait_ready(true).await;
    world.wait_for_event("PVSpecNotConfigured").await;
    // Nothing made: the signal is a pass that began after the Event.
    process.wait_for_fresh_passes(1).await;
    assert_eq!(process.value("available_devices").await, Some(0.0));
    assert!(world.pvs().await.is_empty());
    assert_eq!(world.pv_requests("create", None), 0);

    // The default flag is the fallback.
    drop(process);
    let default = ("LP_DEFAULT_PV_SPEC_CONFIGMAP", "unused".to_string());
    let _process = world.start("node-b", vec![default]);
    world.wait_for_pv_names(&["local-node-b-disk0"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configmap_creates_nothing_and_raises_an_event() {
    let world = World::fake().await;
    world.attach_linked("disk0", 8 * MIB);
    let mut spec = world.block_spec(".*");
    spec.insert("fsType".into(), "ext4".into());
    world.put_configmap("bad", spec).await;
    world.add_node("node-c", Some("bad")).await;
    let process = world.start("node-c", vec![polling(QUICK_POLLING)]);
    let event = world.wait_for_event("PVSpecInvalid").await;
    let note = event.note.unwrap();
    assert!(
        note.contains("\"fsType\"") && note.contains("\"ext4\""),
        "{note}"
    );
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    process.wait_metric("pv_spec_errors", 1.0).await;
    // Nothing made: the signal is a pass that began after the metric.
    process.wait_for_fresh_passes(1).await;
    assert!(world.pvs().await.is_empty());
    assert_eq!(world.pv_requests("create", None), 0);
    assert!(process.log().contains("fsType"), "the error is logged");

    // A missing ConfigMap is reported the same way.
    world.annotate("node-c", "nope").await;
    world.wait_for_event("PVSpecNotFound").await;
    process.wait_for_fresh_passes(1).await;
    assert!(world.pvs().await.is_empty());
    assert_eq!(world.pv_requests("create", None), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_edit_is_picked_up_without_waiting_for_the_poll() {
    let world = World::fake().await;
    world.attach_linked("one", 8 * MIB);
    world.attach_linked("two", 8 * MIB);
    world.put_configmap("spec", world.block_spec("^one$")).await;
    world.add_node("node-d", Some("spec")).await;
    let process = world.start("node-d", vec![polling("1h")]);
    world.wait_for_pv_names(&["local-node-d-one"]).await;
    world
        .put_configmap("spec", world.block_spec("^(one|two)$"))
        .await;
    world
        .wait_for_pv_names(&["local-node-d-one", "local-node-d-two"])
        .await;
    process.wait_metric("available_devices", 2.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_pv_is_wiped_deleted_and_recreated() {
    let world = World::fake().await;
    let size = 160 * MIB;
    let disk = world.attach_linked("disk0", size);
    let name = "local-node-e-disk0";
    let witness = world.witness(BTreeMap::from([(name.to_string(), disk.clone())]));
    world.put_configmap("spec", world.block_spec(".*")).await;
    world.add_node("node-e", Some("spec")).await;
    let process = world.start("node-e", vec![]);
    let first_uid = eventually("an Available PV", WAIT, || async {
        let pv = world.pv(name).await?;
        (phase(&pv) == "Available").then(|| pv.metadata.uid.clone().unwrap())
    })
    .await;
    disk.fill();

    world.server().set_pv_phase(name, "Released");
    eventually("the PV recreated with a new UID", WAIT, || async {
        let uid = world.pv(name).await?.metadata.uid?;
        (uid != first_uid).then_some(())
    })
    .await;
    assert_eq!(world.pv_names().await, vec![name]);
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
    let event = world.wait_for_event("Wiped").await;
    assert_eq!(
        event.regarding.unwrap().uid.as_deref(),
        Some(first_uid.as_str())
    );
    // Deleted first (it stays Terminating), wiped, released, offered again.
    witness.assert_deleted_then_released(name);
    world.assert_recreated_only_after_release();
    let writes: Vec<Write> = witness.seen().iter().map(|s| s.write).collect();
    // The release path is one DELETE, one finalizer removal, one POST: a
    // reconcile queued while the wipe ran must not wipe again from a stale
    // store (it did before the PV was read fresh before each wipe).
    let wipes = process.value("wipes_total").await;
    assert_eq!(
        (writes, wipes),
        (
            vec![
                Write::Create,
                Write::Delete,
                Write::FinalizerRemoval,
                Write::Create
            ],
            Some(1.0)
        ),
        "one create, one DELETE, one finalizer removal, one create, one wipe"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_wipe_keeps_the_pv() {
    let world = World::fake().await;
    let disk = world.attach_linked("disk0", 8 * MIB);
    world.put_configmap("spec", world.block_spec(".*")).await;
    world.add_node("node-f", Some("spec")).await;
    let process = world.start("node-f", vec![polling(QUICK_POLLING)]);
    let uid = world.wait_for_pv("local-node-f-disk0").await.metadata.uid;

    // Another disk now sits behind the same loop device number and size.
    disk.swap_backing_file();
    world
        .server()
        .set_pv_phase("local-node-f-disk0", "Released");
    let event = world.wait_for_event("WipeRefused").await;
    let note = event.note.unwrap();
    assert!(note.contains("SameDevice"), "{note}");
    assert!(
        note.contains("kubectl patch pv local-node-f-disk0"),
        "the note says how to release it by hand: {note}"
    );
    let refused = process.labelled_sample("wipe_failures_total", "reason", "SameDevice");
    process.wait_sample_at_least(&refused, 1.0).await;
    // Kept: the signal is a pass that began after the refusal was counted.
    process.wait_for_fresh_passes(1).await;
    let pvs = world.pvs().await;
    assert_eq!(pvs.len(), 1, "no second PV for the device");
    assert_eq!(pvs[0].metadata.uid, uid, "the PV is kept");
    assert!(
        held_terminating(&pvs[0]),
        "deleted by the program, held by its finalizer"
    );
    assert_eq!(world.pv_requests("delete", None), 1);
    assert_eq!(world.finalizer_removals(None), 0, "never released");
    assert!(
        disk.read(0, MIB as usize).iter().all(|b| *b == FILL_BYTE),
        "nothing written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_creates_no_duplicates_and_sigterm_exits_zero() {
    let world = World::fake().await;
    world.attach_disks(3, 8 * MIB);
    world.put_configmap("spec", world.block_spec(".*")).await;
    world.add_node("node-g", Some("spec")).await;
    let mut process = world.start("node-g", vec![]);
    process.wait_metric("pvs_created_total", 3.0).await;
    let uids = |pvs: Vec<PersistentVolume>| -> Vec<Option<String>> {
        pvs.into_iter().map(|pv| pv.metadata.uid).collect()
    };
    let before = uids(world.pvs().await);
    let status = process.stop_with(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");

    let process = world.start("node-g", vec![polling(QUICK_POLLING)]);
    process.wait_ready(true).await;
    process.wait_metric("available_devices", 3.0).await;
    // None added: the signal is a pass that began after the restart's first.
    process.wait_for_fresh_passes(1).await;
    assert_eq!(before, uids(world.pvs().await), "the same PVs, none added");
    assert_eq!(world.pv_requests("create", None), 3);
    assert_eq!(process.value("pvs_created_total").await, Some(0.0));
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
    let world = World::fake().await;
    let free = world.attach_linked("free", 8 * MIB);
    let used = world.attach_linked("used", 8 * MIB);
    world.put_configmap("spec", world.block_spec(".*")).await;
    world.add_node("node-h", Some("spec")).await;
    let grace = ("LP_DEVICE_LOSS_GRACE", "1s".to_string());
    let process = world.start("node-h", vec![grace, polling("1s")]);
    eventually("two Available PVs", WAIT, || async {
        let pvs = world.pvs().await;
        (pvs.iter().filter(|pv| phase(pv) == "Available").count() == 2).then_some(())
    })
    .await;
    world.server().bind_pv("local-node-h-used", "apps", "data");
    used.fill();
    let used_uid = eventually("the claim recorded on the Bound PV", WAIT, || async {
        let pv = world.pv("local-node-h-used").await?;
        let claim = pv
            .metadata
            .annotations
            .as_ref()?
            .get(CLAIMED_BY_ANNOTATION)?;
        (claim == "apps/data").then_some(pv.metadata.uid)
    })
    .await;

    // Both disks vanish (their links disappear, as udev removes them on unplug).
    world.unlink("free");
    world.unlink("used");
    world.wait_for_pv_names(&["local-node-h-used"]).await;
    process.wait_metric("missing_devices", 1.0).await;
    let about_free = world
        .events_about("PersistentVolume", "local-node-h-free")
        .await;
    assert!(
        about_free
            .iter()
            .any(|event| event.reason.as_deref() == Some("DeviceMissing")),
        "a DeviceMissing Event about the deleted PV: {about_free:?}"
    );
    world
        .wait_for_event_about("DeviceMissing", "PersistentVolume", "local-node-h-used")
        .await;
    // The deleted PV was never claimed: released without a wipe, and told.
    world
        .wait_for_event_about("WipeSkipped", "PersistentVolume", "local-node-h-free")
        .await;
    process.wait_metric("wipes_skipped_total", 1.0).await;
    assert_eq!(process.value("wipes_total").await, Some(0.0));

    // They come back: the Bound PV is untouched, the free disk (blank, as
    // nobody wrote to it) gets a fresh PV.
    world.link("free", &free);
    world.link("used", &used);
    world
        .wait_for_pv_names(&["local-node-h-free", "local-node-h-used"])
        .await;
    process.wait_metric("missing_devices", 0.0).await;
    world.wait_for_event("DeviceReturned").await;
    let still_used = world.pv("local-node-h-used").await.unwrap();
    assert_eq!(still_used.metadata.uid, used_uid, "the Bound PV is kept");
    assert_eq!(phase(&still_used), "Bound");
    assert!(
        used.read(0, MIB as usize).iter().all(|b| *b == FILL_BYTE),
        "its data is intact"
    );
}
