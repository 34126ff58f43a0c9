//! The suite's scenarios, phase by phase: the whole lifecycle on two Nodes,
//! and the own-wipe check.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, PersistentVolume};
use kube::ResourceExt;

use crate::checks::{check_bound, check_pvs_appear, check_wiped, wait_for_fresh_pv};
use crate::history::PvHistory;
use crate::shape::{
    HEAD_BYTES, MIB, all, assert_pv_shape, block_spec, expected_pv, read_through, write_through,
};
use crate::support::loop_device::{FILL_BYTE, LoopDevice};
use crate::support::provisioner::ProvisionerProcess;
use crate::support::world::inspect::phase;
use crate::support::world::waits::{WAIT, eventually};
use crate::support::world::{World, polling};

/// The device the claim binds: larger than head and tail together, so that
/// the bytes between them show they were left alone.
const BOUND_DEVICE_BYTES: u64 = 128 * MIB;
/// The second device of the first Node: too small for the claim.
const SPARE_DEVICE_BYTES: u64 = 16 * MIB;
/// The devices of the second Node.
const NODE_B_DEVICE_BYTES: u64 = 8 * MIB;
/// The claim's request: only the bound device fits it.
const CLAIM_REQUEST: &str = "120Mi";
/// The provisioners' `--polling-interval`.
const POLLING_INTERVAL: &str = "1s";
/// A polling interval far shorter than a wipe, so that reconciles surely run
/// while one is in flight.
const FAST_POLLING_INTERVAL: &str = "20ms";
/// Whole reconcile passes the paused Node is watched for something it must
/// not do.
const PAUSED_PASSES: u32 = 3;

/// Starts the provisioner for `node`, polling every `interval`.
fn start(world: &World, node: &str, interval: &str) -> ProvisionerProcess {
    let env = vec![
        polling(interval),
        ("LP_POD_NAME", format!("{node}-provisioner")),
    ];
    world.start(node, env)
}

/// Phase 1 for one Node named after the run: its devices (blank, as only a
/// blank device is offered) linked in the world's directory, the
/// StorageClass, the ConfigMap, the Node.
async fn setup(world: &World, sizes: &[u64]) -> (Node, Vec<Arc<LoopDevice>>) {
    let devices: Vec<Arc<LoopDevice>> = sizes
        .iter()
        .enumerate()
        .map(|(index, size)| world.attach_linked(&format!("disk{index}"), *size))
        .collect();
    world.create_storage_class().await;
    let spec = format!("{}-a", world.run());
    world
        .put_configmap(&spec, block_spec(world, world.dir()))
        .await;
    let node = world.add_node(world.run(), Some(&spec)).await;
    (node, devices)
}

/// The phases, in order; panics at the first failed check.
pub async fn lifecycle(world: &World) {
    world
        .progress("1/7 setup: loop devices, namespace, StorageClass, ConfigMap, Node, provisioner");
    let (node, devices) = setup(world, &[BOUND_DEVICE_BYTES, SPARE_DEVICE_BYTES]).await;
    let provisioner = start(world, world.run(), POLLING_INTERVAL);

    world.progress("2/7 a PV per device, shaped as documented, owned by the live Node");
    let linked = [("disk0", &*devices[0]), ("disk1", &*devices[1])];
    let pvs = check_pvs_appear(world, &node, world.dir(), &linked).await;
    // Data on the spare device, which nothing may touch from now on.
    devices[1].fill();

    world.progress("3/7 a claim of the storage class binds, and is recorded on the PV");
    let claim = format!("{}-a", world.run());
    world.create_claim(&claim, CLAIM_REQUEST, None).await;
    check_bound(world, &claim, &pvs[0].name_any()).await;

    world.progress(
        "4/7 the tenant's data, and markers written through the bound block device read back",
    );
    devices[0].fill();
    let kept_marker = write_markers(world, &devices[0]);

    world.progress("5/7 claim deleted: Released, deleted, held while wiped, a fresh PV Available");
    release_and_check_wipe(world, &node, &claim, &pvs, &devices, &kept_marker).await;

    world.progress("6/7 a ConfigMap with volumeMode: Sideways pauses a second Node");
    let (second, second_provisioner) = check_invalid_spec_pauses(world).await;

    world.progress("7/7 Nodes deleted: their PVs are garbage-collected, released without a wipe");
    for node in [&node, &second] {
        world.delete_node(node).await;
    }
    for process in [&provisioner, &second_provisioner] {
        // 1 while the provisioner sees no Node: from then on it creates
        // nothing, so the PVs can only go.
        process.wait_metric("pv_spec_errors", 1.0).await;
    }
    for node in [world.run().to_string(), second.name_any()] {
        eventually(&format!("the PVs of {node} to be gone"), WAIT, || async {
            world.pvs_of(&node).await.is_empty().then_some(())
        })
        .await;
    }
    // Each Node had two PVs, none claimed since its device was last wiped:
    // the garbage collector's DELETE is followed by a release without a wipe.
    for process in [&provisioner, &second_provisioner] {
        process.wait_metric("wipes_skipped_total", 2.0).await;
    }
}

/// Phase 4: a marker at byte 0 and one at 100 MiB, written through the
/// bound device's link and read back; returns the second.
fn write_markers(world: &World, bound: &LoopDevice) -> Vec<u8> {
    let path = world.dir().join("disk0");
    let head_marker = format!("{} head marker", world.run()).into_bytes();
    let kept_marker = format!("{} marker at 100 MiB", world.run()).into_bytes();
    write_through(&path, 0, &head_marker);
    write_through(&path, HEAD_BYTES, &kept_marker);
    assert_eq!(read_through(&path, 0, head_marker.len()), head_marker);
    assert_eq!(
        read_through(&path, HEAD_BYTES, kept_marker.len()),
        kept_marker
    );
    assert_eq!(
        bound.read(0, head_marker.len()),
        head_marker,
        "the marker reached the device"
    );
    kept_marker
}

/// Phase 5: the claim deleted; the PV seen Released before it is deleted,
/// the device wiped at head and tail, a fresh PV of the same shape, the
/// spare device and its PV untouched, a `Wiped` Event.
async fn release_and_check_wipe(
    world: &World,
    node: &Node,
    claim: &str,
    pvs: &[PersistentVolume],
    devices: &[Arc<LoopDevice>],
    kept_marker: &[u8],
) {
    let (bound_pv, spare_pv) = (&pvs[0], &pvs[1]);
    let history = PvHistory::start(world.client().clone(), world.run()).await;
    world.delete_claim(claim).await;
    let old_uid = bound_pv.uid().expect("PV UID");
    let events = eventually("the released PV to be deleted", WAIT, || async {
        history.until_deleted(&old_uid)
    })
    .await;
    let released = events.iter().position(|seen| seen.phase == "Released");
    let held = events.iter().position(|seen| seen.held);
    let deleted = events.iter().position(|seen| seen.event == "DELETED");
    assert!(
        released.is_some() && released < held && held < deleted,
        "the PV was Released, then Terminating under the provisioner's finalizer, \
         then deleted: {events:?}"
    );
    let link = world.dir().join("disk0");
    check_wiped(&devices[0], BOUND_DEVICE_BYTES, &link, kept_marker);
    let fresh = wait_for_fresh_pv(world, &bound_pv.name_any(), bound_pv.uid()).await;
    let expected = expected_pv(node, world.dir(), "disk0", &devices[0], world.run());
    assert_pv_shape(&fresh, &expected);
    let spare_now = world.pv(&spare_pv.name_any()).await.expect("the spare PV");
    assert_eq!(spare_now.uid(), spare_pv.uid(), "the spare PV is untouched");
    assert_eq!(phase(&spare_now), "Available");
    assert!(
        all(&devices[1].read(0, SPARE_DEVICE_BYTES as usize), FILL_BYTE),
        "the spare device is untouched"
    );
    let wiped = world
        .wait_for_event_about("Wiped", "PersistentVolume", &bound_pv.name_any())
        .await;
    assert_eq!(
        wiped.regarding.and_then(|r| r.uid).as_deref(),
        Some(old_uid.as_str()),
        "Wiped is about the released PV"
    );
}

/// Phase 6: a second Node with a PV, bound and then released while its
/// annotation names an invalid ConfigMap: a Warning Event, and neither a
/// new PV nor a wipe or deletion until the annotation is fixed. Returns
/// the Node and its provisioner.
async fn check_invalid_spec_pauses(world: &World) -> (Node, ProvisionerProcess) {
    let name = format!("{}-b", world.run());
    let dir = world.new_device_dir();
    let first = world.attach(NODE_B_DEVICE_BYTES);
    world.link_in(&dir, "disk0", &first);
    let valid = name.clone();
    world.put_configmap(&valid, block_spec(world, &dir)).await;
    let invalid = format!("{}-invalid", world.run());
    let mut sideways = block_spec(world, &dir);
    sideways.insert("volumeMode".into(), "Sideways".into());
    world.put_configmap(&invalid, sideways).await;
    let node = world.add_node(&name, Some(&valid)).await;
    let process = start(world, &name, POLLING_INTERVAL);
    let pv = check_pvs_appear(world, &node, &dir, &[("disk0", &*first)])
        .await
        .remove(0);
    world.create_claim(&name, "1Mi", Some(&pv.name_any())).await;
    check_bound(world, &name, &pv.name_any()).await;
    first.fill();

    world.annotate(&name, &invalid).await;
    check_invalid_spec_event(world, &node).await;
    process.wait_metric("pv_spec_errors", 1.0).await;
    let second = world.attach(NODE_B_DEVICE_BYTES);
    world.link_in(&dir, "disk1", &second);
    world.delete_claim(&name).await;
    check_paused(world, &process, &pv, &first).await;

    world.progress("   annotation fixed: the Node resumes");
    world.annotate(&name, &valid).await;
    wait_for_fresh_pv(world, &pv.name_any(), pv.uid()).await;
    assert!(
        all(&first.read(0, NODE_B_DEVICE_BYTES as usize), 0),
        "a device smaller than 100 MiB is zeroed whole"
    );
    let both = [("disk0", &*first), ("disk1", &*second)];
    check_pvs_appear(world, &node, &dir, &both).await;
    process.wait_metric("pv_spec_errors", 0.0).await;
    (node, process)
}

/// The Warning Event about `node` naming the invalid key and value.
async fn check_invalid_spec_event(world: &World, node: &Node) {
    let event = world
        .wait_for_event_about("PVSpecInvalid", "Node", &node.name_any())
        .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(
        event.regarding.as_ref().and_then(|r| r.uid.as_deref()),
        node.uid().as_deref(),
        "the Event is about this Node"
    );
    let note = event.note.unwrap_or_default();
    assert!(
        note.contains("volumeMode") && note.contains("Sideways"),
        "the Event names the key and the value: {note}"
    );
}

/// While paused: once `pv` is Released, whole reconcile passes begun after
/// it (the signal that the program looked) create no PV for the new
/// device, and neither delete the Released PV nor wipe its device.
async fn check_paused(
    world: &World,
    process: &ProvisionerProcess,
    pv: &PersistentVolume,
    device: &LoopDevice,
) {
    let name = pv.name_any();
    eventually(&format!("PV {name} Released"), WAIT, || async {
        (phase(&world.pv(&name).await?) == "Released").then_some(())
    })
    .await;
    world.progress(&format!(
        "   paused: {PAUSED_PASSES} reconcile passes must create, wipe and delete nothing"
    ));
    process.wait_for_fresh_passes(PAUSED_PASSES).await;
    let node = pv.annotations()[crate::support::world::NODE_NAME_ANNOTATION].clone();
    let pvs = world.pvs_of(&node).await;
    assert_eq!(
        pvs.iter().map(ResourceExt::name_any).collect::<Vec<_>>(),
        vec![name.clone()],
        "no PV created for disk1 while paused"
    );
    assert_eq!(pvs[0].uid(), pv.uid(), "the Released PV is not deleted");
    assert_eq!(phase(&pvs[0]), "Released");
    assert!(pvs[0].metadata.deletion_timestamp.is_none());
    assert!(
        all(&device.read(0, NODE_B_DEVICE_BYTES as usize), FILL_BYTE),
        "the Released PV's device is not wiped"
    );
}

/// The own-wipe check: one device, a provisioner polling every 20 ms, a
/// claim bound and deleted; once the device is back as a fresh PV, no
/// `DeviceSkipped` Event may name the Node.
pub async fn own_wipe(world: &World) {
    world.progress("setup: a loop device, namespace, StorageClass, ConfigMap, Node, provisioner polling every 20 ms");
    let (node, devices) = setup(world, &[BOUND_DEVICE_BYTES]).await;
    let _provisioner = start(world, world.run(), FAST_POLLING_INTERVAL);
    let linked = [("disk0", &*devices[0])];
    let pv = check_pvs_appear(world, &node, world.dir(), &linked)
        .await
        .remove(0);

    world.progress("the claim bound, then deleted: the device is wiped while reconciles run");
    let claim = format!("{}-a", world.run());
    world.create_claim(&claim, CLAIM_REQUEST, None).await;
    check_bound(world, &claim, &pv.name_any()).await;
    world.delete_claim(&claim).await;
    wait_for_fresh_pv(world, &pv.name_any(), pv.uid()).await;
    world
        .wait_for_event_about("Wiped", "PersistentVolume", &pv.name_any())
        .await;
    let skipped: Vec<String> = world
        .events_about("Node", world.run())
        .await
        .into_iter()
        .filter(|event| event.reason.as_deref() == Some("DeviceSkipped"))
        .map(|event| event.note.unwrap_or_default())
        .collect();
    assert!(
        skipped.is_empty(),
        "the node's own wipe was reported as a skipped device: {skipped:?}"
    );
}
