//! Crash safety: a provisioner killed with SIGKILL, or stopped with SIGTERM,
//! in the middle of a wipe leaves the PV marked and Released; the next start
//! finishes the wipe, and the device is never handed out half-wiped. Real
//! binary, fake API server, real loop device (needs root, as in CI).

mod support;

use std::sync::Arc;

use nix::sys::signal::Signal;
use support::loop_device::{FILL_BYTE, LoopDevice};
use support::world::World;
use support::world::waits::{WAIT, eventually};

const GIB: u64 = 1024 * 1024 * 1024;
const MIB: u64 = 1024 * 1024;
const WIPE_STARTED_AT: &str = "local-pv-provisioner.cybozu.io/wipe-started-at";
const WIPE_STARTED_BY: &str = "local-pv-provisioner.cybozu.io/wipe-started-by";

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

/// Offsets of the markers on the device: the start and the late part of
/// the 3 GiB head, a place beyond the head, and the tail.
const HEAD_START: u64 = 0;
const HEAD_LATE: u64 = 3 * GIB - 64 * MIB;
const UNTOUCHED: u64 = 3 * GIB + 256 * MIB;
const DEVICE_SIZE: u64 = 4 * GIB;
const TAIL: u64 = DEVICE_SIZE - 4096;

/// A world with a 4 GiB device whose PV zeroes a 3 GiB head: the wipe
/// takes long enough (seconds) that the kill lands in the middle of it.
async fn world_with_a_big_device(node_name: &str) -> (World, Arc<LoopDevice>) {
    let world = World::fake().await;
    let device = world.attach_sparse(DEVICE_SIZE);
    world.link("big0", &device);
    for offset in [HEAD_START, HEAD_LATE, UNTOUCHED, TAIL] {
        device.write_at(offset, &[FILL_BYTE; 4096]);
    }
    let mut spec = world.block_spec("^big");
    spec.insert("wipeBytes".into(), "3Gi".into());
    world.put_configmap("spec", spec).await;
    world.add_node(node_name, Some("spec")).await;
    (world, device)
}

/// Interrupts a wipe with `signal` as soon as the PV carries the wipe mark,
/// then checks nothing was handed out and the next start finishes the job.
async fn interrupted_wipe_is_finished_by_the_next_start(signal: Signal, node_name: &str) {
    let (world, device) = world_with_a_big_device(node_name).await;
    let pv_name = format!("local-{node_name}-big0");
    let mut first = world.start(node_name, vec![]);
    let original = world.wait_for_pv(&pv_name).await;
    let original_uid = original.metadata.uid.clone().unwrap();
    assert_eq!(
        original.metadata.annotations.as_ref().unwrap()["local-pv-provisioner.cybozu.io/wipe-bytes"],
        (3 * GIB).to_string()
    );

    world.server().set_pv_phase(&pv_name, "Released");
    eventually("the wipe mark on the PV", WAIT, || async {
        let pv = world.pv(&pv_name).await?;
        pv.metadata
            .annotations?
            .contains_key(WIPE_STARTED_AT)
            .then_some(())
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
    check_interrupted(&world, &device, &original_uid, node_name).await;

    let second = world.start(node_name, vec![]);
    let fresh = eventually("a fresh PV after the finished wipe", WAIT, || async {
        world
            .pvs()
            .await
            .into_iter()
            .find(|pv| pv.metadata.uid.as_deref() != Some(original_uid.as_str()))
    })
    .await;
    assert!(
        !fresh
            .metadata
            .annotations
            .unwrap()
            .contains_key(WIPE_STARTED_AT),
        "the new PV carries no mark"
    );
    assert!(is_zero(&device, HEAD_LATE), "the head is zeroed to its end");
    assert!(is_zero(&device, TAIL), "the tail is zeroed");
    assert!(
        has_marker(&device, UNTOUCHED),
        "beyond the head and tail nothing changed"
    );
    assert!(
        second.log().contains("did not finish"),
        "the resumed wipe is logged"
    );
    assert_eq!(world.pvs().await.len(), 1);
}

/// Right after the interruption: the start of the head zeroed, its end not
/// yet; the PV the same, still Released, its mark naming the pod.
async fn check_interrupted(
    world: &World,
    device: &LoopDevice,
    original_uid: &str,
    node_name: &str,
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
        "the PV was not deleted"
    );
    assert_eq!(
        pv.status.as_ref().unwrap().phase.as_deref(),
        Some("Released")
    );
    let annotations = pv.metadata.annotations.clone().unwrap();
    assert_eq!(
        annotations[WIPE_STARTED_BY],
        format!("test-{node_name}"),
        "the mark names the pod"
    );
}
