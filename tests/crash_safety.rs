//! Crash safety: a provisioner killed with SIGKILL, or stopped with SIGTERM,
//! in the middle of a wipe leaves the PV Terminating and held by its
//! finalizer; the next start wipes the device again from the start and only
//! then removes the finalizer, so the device is never handed out half-wiped.
//! Real binary, fake API server, real loop device (needs root, as in CI).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use nix::sys::signal::Signal;
use support::loop_device::{FILL_BYTE, LoopDevice};
use support::world::inspect::{held_terminating, phase};
use support::world::waits::{WAIT, eventually};
use support::world::witness::{Witness, Write};
use support::world::{CLEANUP_FINALIZER, World};

const GIB: u64 = 1024 * 1024 * 1024;
const MIB: u64 = 1024 * 1024;

fn has_marker(device: &LoopDevice, offset: u64) -> bool {
    device.read(offset, 4096).iter().all(|b| *b == FILL_BYTE)
}

fn is_zero(device: &LoopDevice, offset: u64) -> bool {
    device.read(offset, 4096).iter().all(|b| *b == 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_wipe_is_finished_by_the_next_start() {
    interrupted_wipe_is_finished_by_the_next_start(Signal::SIGKILL, "node-k").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_wipe_exits_zero_and_the_next_start_finishes() {
    interrupted_wipe_is_finished_by_the_next_start(Signal::SIGTERM, "node-t").await;
}

/// The device: 4 GiB, its PV zeroing 1.5 GiB at the head and 1.5 GiB at the
/// Ceph label offset 1 GiB, which merge into one region of 2.5 GiB — long
/// enough (seconds) that the kill lands in the middle of it.
const DEVICE_SIZE: u64 = 4 * GIB;
const WIPE_BYTES: &str = "1536Mi";
const HEAD_END: u64 = GIB + 1536 * MIB;
/// Offsets of the markers on the device: the start and the late part of
/// the zeroed head, a place beyond it, and the tail.
const HEAD_START: u64 = 0;
const HEAD_LATE: u64 = HEAD_END - 64 * MIB;
const UNTOUCHED: u64 = 3 * GIB + 256 * MIB;
const TAIL: u64 = DEVICE_SIZE - 4096;

/// A world with the big device (blank until its PV exists) and the
/// witness of the PV's writes.
async fn world_with_a_big_device(node_name: &str) -> (World, Arc<LoopDevice>, Arc<Witness>) {
    let world = World::fake().await;
    let device = world.attach(DEVICE_SIZE);
    world.link("big0", &device);
    let pv_name = format!("local-{node_name}-big0");
    let witness = world.witness(BTreeMap::from([(pv_name, device.clone())]));
    let mut spec = world.block_spec("^big");
    spec.insert("wipeBytes".into(), WIPE_BYTES.into());
    world.put_configmap("spec", spec).await;
    world.add_node(node_name, Some("spec")).await;
    (world, device, witness)
}

/// Interrupts a wipe with `signal` as soon as it has begun (the PV
/// Terminating, the device's first bytes zeroed), then checks nothing was
/// handed out and the next start finishes the job.
async fn interrupted_wipe_is_finished_by_the_next_start(signal: Signal, node_name: &str) {
    let (world, device, witness) = world_with_a_big_device(node_name).await;
    let pv_name = format!("local-{node_name}-big0");
    // Direct writes: BLKZEROOUT on a loop device over a file is over in
    // milliseconds, too soon to interrupt; devices without write-zeroes
    // support take the write path and must be just as safe.
    let writes = || vec![("LP_WIPE_METHOD", "writes".to_string())];
    let mut first = world.start(node_name, writes());
    let original = world.wait_for_pv(&pv_name).await;
    let original_uid = original.metadata.uid.clone().unwrap();
    assert_eq!(
        original.metadata.annotations.as_ref().unwrap()["local-pv-provisioner.cybozu.io/wipe-bytes"],
        (1536 * MIB).to_string()
    );
    // The tenant's data, written once the PV exists.
    for offset in [HEAD_START, HEAD_LATE, UNTOUCHED, TAIL] {
        device.write_at(offset, &[FILL_BYTE; 4096]);
    }

    world.server().set_pv_phase(&pv_name, "Released");
    eventually("the wipe under way on the Terminating PV", WAIT, || async {
        let pv = world.pv(&pv_name).await?;
        (held_terminating(&pv) && is_zero(&device, HEAD_START)).then_some(())
    })
    .await;
    let status = first.stop_with(signal);
    if signal == Signal::SIGTERM {
        assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
        assert!(
            first.log().contains("wipe cancelled by shutdown"),
            "the cancelled wipe is logged"
        );
    }
    check_interrupted(&world, &device, &witness, &original_uid).await;

    let _second = world.start(node_name, writes());
    let fresh = eventually("a fresh PV after the finished wipe", WAIT, || async {
        world
            .pvs()
            .await
            .into_iter()
            .find(|pv| pv.metadata.uid.as_deref() != Some(original_uid.as_str()))
    })
    .await;
    assert!(
        fresh.metadata.deletion_timestamp.is_none(),
        "the new PV is a fresh one"
    );
    assert!(is_zero(&device, HEAD_LATE), "the head is zeroed to its end");
    assert!(is_zero(&device, TAIL), "the tail is zeroed");
    assert!(
        has_marker(&device, UNTOUCHED),
        "beyond the zeroed regions nothing changed"
    );
    witness.assert_deleted_then_released(&pv_name);
    world.assert_recreated_only_after_release();
    assert_eq!(world.pvs().await.len(), 1);
    // Once: a reconcile queued meanwhile (the "bulk reconcile" when the node
    // resumes) that runs on the stale PV from its store must not wipe the
    // device again (it did before the PV was read fresh before each wipe).
    let releases = witness.of(&pv_name, Write::FinalizerRemoval).len();
    assert_eq!(
        releases, 1,
        "the finalizer of the released PV was removed {releases} times \
         (a stale reconcile wiped the device again after its PV was gone)"
    );
}

/// Right after the interruption: the start of the head zeroed, its end not
/// yet; the PV the same, Released, Terminating and still held by the
/// finalizer, which nobody removed.
async fn check_interrupted(
    world: &World,
    device: &LoopDevice,
    witness: &Witness,
    original_uid: &str,
) {
    assert!(is_zero(device, HEAD_START), "the wipe had started");
    assert!(
        has_marker(device, HEAD_LATE),
        "the wipe was interrupted before the end of the head"
    );
    let after_kill = world.pvs().await;
    assert_eq!(
        after_kill.len(),
        1,
        "no PV handed out for the half-wiped device"
    );
    let pv = &after_kill[0];
    assert_eq!(
        pv.metadata.uid.as_deref(),
        Some(original_uid),
        "the PV is still there"
    );
    assert_eq!(phase(pv), "Released");
    assert!(
        held_terminating(pv),
        "the PV is Terminating and carries {CLEANUP_FINALIZER}"
    );
    assert!(
        witness
            .seen()
            .iter()
            .all(|seen| seen.write != Write::FinalizerRemoval),
        "the finalizer was not removed"
    );
}
