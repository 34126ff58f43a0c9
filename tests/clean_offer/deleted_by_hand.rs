//! A PV deleted by hand (`kubectl delete pv`: a DELETE through the client,
//! without preconditions): once Released, with the program running and with
//! the program stopped at the time, its device is zeroed before the cleanup
//! finalizer goes and before a new PV for the device exists; while Bound it
//! waits, Terminating, with one `WaitingForClaim` Event, and the device
//! keeps the tenant's data until the claim is deleted.

use kube::ResourceExt;
use nix::sys::signal::Signal;

use crate::common::*;
use crate::moments::{Moments, Watch};
use crate::support::fake_api::FaultRule;
use crate::support::loop_device::LoopDevice;
use crate::support::world::inspect::phase;
use crate::support::world::waits::{WAIT, eventually};
use crate::support::world::{QUICK_POLLING, polling};

/// Size of the device.
const SIZE: u64 = 64 * MIB;
/// The claim's name.
const CLAIM: &str = "data";

/// `wipeBytes` of the spec: small, so the regions are easy to tell apart.
const WIPE_BYTES: u64 = 4 * MIB;

/// A [`OneDisk`] with a 4 MiB head whose PV a claim holds, the tenant's
/// data written.
async fn claimed(node: &str, env: Vec<(&str, String)>) -> OneDisk {
    let setup = one_disk(node, SIZE, "4Mi", env).await;
    claim_and_wait(&setup.world, CLAIM, &setup.pv().await).await;
    tenant_fills(&setup.disk);
    setup
}

/// Spans a tenant writes that a wipe must zero: the start, the end of
/// the head, and the last block.
fn inside() -> Vec<Span> {
    vec![
        span(0, 64 * 1024),
        span(WIPE_BYTES - 4096, 4096),
        span(SIZE - 4096, 4096),
    ]
}

/// A span a tenant writes that no wipe touches: just past the head.
fn outside() -> Span {
    span(WIPE_BYTES, 4096)
}

/// What [`Moments`] reads of `disk` for PV `pv`: the spans inside.
fn watch(pv: &str, disk: &std::sync::Arc<LoopDevice>) -> Watch {
    Watch {
        pv: pv.to_string(),
        device: disk.clone(),
        spans: inside(),
    }
}

/// Writes the tenant's data, inside and outside the wipe regions.
fn tenant_fills(disk: &LoopDevice) {
    tenant_writes(disk, &inside());
    tenant_writes(disk, &[outside()]);
}

/// Before the release: the tenant's data is all there.
fn assert_tenant_data(disk: &LoopDevice) {
    let mut all = inside().into_iter().chain([outside()]);
    assert!(
        all.all(|s| span_holds(disk, s, TENANT_BYTE)),
        "the tenant's data is intact"
    );
}

/// After the release: the device zeroed where it must be, and only there.
fn assert_wiped_only_inside(disk: &LoopDevice) {
    assert!(spans_zeroed(disk, &inside()), "the wipe regions read zero");
    assert!(
        span_holds(disk, outside(), TENANT_BYTE),
        "past the head, the tenant's bytes are untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_pv_deleted_by_hand_is_wiped_before_its_release_and_offer() {
    let (process, world, disk, name, old_uid) = claimed("hand-a", vec![]).await.parts();
    let name = name.as_str();
    let moments = Moments::install(&world, vec![watch(name, &disk)]);

    // The program's own DELETE of the Released PV fails once (as any
    // request can), so that the DELETE that counts is the admin's.
    let refused = FaultRule::new(500, 1).verb("delete").object_name(name);
    world.server().fail_requests(refused);
    world.delete_claim(CLAIM).await;
    eventually("the program's DELETE answered 500", WAIT, || async {
        let deletes = world.requests("delete", "persistentvolumes");
        deletes.iter().any(|r| r.status == 500).then_some(())
    })
    .await;
    delete_by_hand(&world, name).await;

    let fresh = wait_recreated(&world, name, &old_uid).await;
    moments.assert_wiped_before_release_and_offer(name);
    let deletes = world.requests("delete", "persistentvolumes");
    let effective = deletes.iter().find(|r| r.status == 200).expect("a DELETE");
    let preconditions = effective.body.as_ref().and_then(|b| b.get("preconditions"));
    assert!(
        preconditions.is_none_or(|p| p.get("resourceVersion").is_none()),
        "the admin's DELETE (no resourceVersion precondition) put the PV into deletion: {deletes:?}"
    );
    assert_wiped_only_inside(&disk);
    wait_wiped(&process).await;
    let wiped = world.wait_for_event("Wiped").await;
    assert_eq!(wiped.regarding.unwrap().uid, Some(old_uid));
    assert!(has_finalizer(&fresh, CLEANUP_FINALIZER));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_pv_deleted_by_hand_while_stopped_is_wiped_after_the_start() {
    let (mut process, world, disk, name, old_uid) = claimed("hand-b", vec![]).await.parts();
    let name = name.as_str();
    assert_eq!(process.stop_with(Signal::SIGTERM).code(), Some(0));

    world.delete_claim(CLAIM).await;
    wait_pv(&world, name, "Released", |pv| phase(pv) == "Released").await;
    delete_by_hand(&world, name).await;
    // pv-protection goes (the PV is not bound): only the program's
    // finalizer holds it, and nothing wiped the device meanwhile.
    let held = wait_pv(&world, name, "held by the cleanup finalizer alone", |pv| {
        pv.metadata.deletion_timestamp.is_some() && pv.finalizers() == [CLEANUP_FINALIZER]
    })
    .await;
    assert_eq!(held.uid(), Some(old_uid.clone()));
    assert_tenant_data(&disk);

    let moments = Moments::install(&world, vec![watch(name, &disk)]);
    let process = world.start("hand-b", vec![]);
    wait_recreated(&world, name, &old_uid).await;
    moments.assert_wiped_before_release_and_offer(name);
    assert_wiped_only_inside(&disk);
    wait_wiped(&process).await;
    assert_eq!(
        world.pv_requests("delete", Some(name)),
        1,
        "the admin's DELETE only: the program had nothing to delete"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_pv_deleted_by_hand_waits_for_its_claim_with_its_data() {
    let (process, world, disk, name, old_uid) = claimed("hand-c", vec![polling(QUICK_POLLING)])
        .await
        .parts();
    let name = name.as_str();
    let moments = Moments::install(&world, vec![watch(name, &disk)]);

    delete_by_hand(&world, name).await;
    world
        .wait_for_event_about("WaitingForClaim", "PersistentVolume", name)
        .await;
    // A change makes the program look at the PV again; the passes that
    // begin after it are the signal that it did.
    touch_pv(&world, name).await;
    process.wait_for_fresh_passes(2).await;
    reported_once(&world, "WaitingForClaim", "PersistentVolume", name).await;
    let waiting = world.pv(name).await.expect("still there");
    assert_eq!(phase(&waiting), "Bound");
    assert!(waiting.metadata.deletion_timestamp.is_some(), "Terminating");
    assert!(has_finalizer(&waiting, CLEANUP_FINALIZER), "{waiting:?}");
    assert!(!moments.finalizer_removed(name), "the finalizer stays");
    assert_tenant_data(&disk);
    assert_eq!(process.value("wipes_total").await, Some(0.0));
    assert_eq!(world.pv_requests("create", None), 1, "no second PV");

    world.delete_claim(CLAIM).await;
    wait_recreated(&world, name, &old_uid).await;
    moments.assert_wiped_before_release_and_offer(name);
    assert_wiped_only_inside(&disk);
    wait_wiped(&process).await;
}
