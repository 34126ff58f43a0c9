//! What did not happen, counted by reason: creates the API server refused
//! (`422`) or could not take (`500`), in `pv_create_failures_total`; wipes a
//! guard refused (the device held open: `ExclusiveOpen`) or that failed on
//! I/O (a read-only device: `io`), in `wipe_failures_total`, as
//! `WipeRefused` / `WipeFailed` Events on the PV, the PV kept (and shown
//! `Released` with its claim) until the device can be wiped. One test found
//! a defect, now fixed: a wipe the same guard refuses again was reported
//! again on every retry.

use kube::ResourceExt;

use crate::clean_offer::{
    claim_and_wait, span, span_holds, tenant_writes, wait_available, wait_pv, wait_recreated,
};
use crate::common::*;
use crate::page::{page, wait_page};
use crate::support::fake_api::FaultRule;
use crate::support::world::{QUICK_POLLING, polling};

/// The claim's name.
const CLAIM: &str = "data";
/// The byte a tenant writes.
const TENANT: u8 = 0x5A;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_refused_or_unreachable_are_counted_by_reason() {
    let node = "vis-create";
    let refused = format!("local-{node}-refused");
    let flaky = format!("local-{node}-flaky");
    let setup = node_with(node, &["ok", "flaky", "refused"], vec![], |world| {
        let invalid = FaultRule::new(422, usize::MAX)
            .verb("create")
            .object_name(&refused)
            .message("PersistentVolume is invalid: not on this cluster");
        world.server().fail_requests(invalid);
        let once = FaultRule::new(500, 1).verb("create").object_name(&flaky);
        world.server().fail_requests(once);
    })
    .await;
    wait_available(&setup.world, &setup.pv_name("ok")).await;
    wait_available(&setup.world, &flaky).await;
    let with = setup.on_node();
    let reason = |r: &'static str| [("node", node), ("reason", r)];
    // The PV watch's events reach the metrics an instant after the API
    // shows the PVs: wait for both series too.
    let page = wait_page(&setup.process, "both create failures counted", |p| {
        p.value("pv_create_failures_total", &reason("refused")) >= Some(1.0)
            && p.value("pv_create_failures_total", &reason("unreachable")) == Some(1.0)
            && p.series("volume_info", &with).len() >= 2
    })
    .await;
    assert_eq!(page.value("pvs_created_total", &with), Some(2.0));
    assert_eq!(
        page.value("pv_create_duration_seconds_count", &with),
        Some(2.0),
        "a latency for each PV made, none for the refused device"
    );
    let volumes: Vec<&str> = page
        .series("volume_info", &with)
        .iter()
        .map(|s| s.label("persistentvolume"))
        .collect();
    assert_eq!(volumes.len(), 2, "{volumes:?}");
    assert!(!volumes.contains(&refused.as_str()));
}

/// A node with one blank device whose PV a claim holds, the tenant's data
/// written; returns it with the PV's name and UID.
async fn claimed(node: &str, env: Vec<(&str, String)>) -> (Node, String, String) {
    let setup = node_with(node, &["disk0"], env, |_| {}).await;
    let name = setup.pv_name("disk0");
    let pv = wait_available(&setup.world, &name).await;
    claim_and_wait(&setup.world, CLAIM, &pv).await;
    tenant_writes(&setup.disks[0], &[span(0, 4096)]);
    let uid = pv.uid().expect("a UID");
    (setup, name, uid)
}

/// The sample of `wipe_failures_total` for `reason` on the node.
fn failures<'a>(setup: &'a Node, reason: &'a str) -> [(&'a str, &'a str); 2] {
    [("node", setup.node.as_str()), ("reason", reason)]
}

/// Waits for the Event `reason` about the PV `uid` and for
/// `wipe_failures_total{reason=label}` to count it; returns the Event's note.
async fn wait_failed_wipe(setup: &Node, reason: &str, label: &str, uid: &str) -> String {
    let note = wait_event_of(&setup.world, reason, uid).await;
    let counter = failures(setup, label);
    let what = format!("wipe_failures_total{{reason={label}}} counted");
    wait_page(&setup.process, &what, |p| {
        p.value("wipe_failures_total", &counter) >= Some(1.0)
    })
    .await;
    note
}

/// Waits until the PV `uid` is wiped and its device offered again, and
/// checks that the tenant's bytes were zeroed.
async fn wait_wiped_again(setup: &Node, name: &str, uid: &str) {
    wait_recreated(&setup.world, name, uid).await;
    wait_event_of(&setup.world, "Wiped", uid).await;
    let zeroed = span_holds(&setup.disks[0], span(0, 4096), 0);
    assert!(zeroed, "the tenant's bytes were zeroed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wipe_refused_by_a_guard_is_counted_by_it_and_the_pv_kept_until_it_passes() {
    let (setup, name, uid) = claimed("vis-refuse", vec![]).await;
    let world = &setup.world;
    let held = hold(&setup.disks[0]);
    world.delete_claim(CLAIM).await;
    let note = wait_failed_wipe(&setup, "WipeRefused", "ExclusiveOpen", &uid).await;
    assert!(note.contains("ExclusiveOpen"), "names the guard: {note}");
    let claim = (world.namespace(), CLAIM);
    setup.wait_volume("disk0", "Released", claim).await;
    let kept = world.pv(&name).await.expect("the PV is kept");
    assert_eq!(kept.uid().as_deref(), Some(uid.as_str()));
    assert!(
        span_holds(&setup.disks[0], span(0, 4096), TENANT),
        "nothing written"
    );

    held.release();
    wait_wiped_again(&setup, &name, &uid).await;
    let now = page(&setup.process).await.expect("the metrics page");
    assert_eq!(now.value("wipes_total", &setup.on_node()), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wipe_failing_on_io_is_counted_as_io_and_the_pv_kept_until_it_succeeds() {
    let (setup, name, uid) = claimed("vis-io", vec![]).await;
    let world = &setup.world;
    let read_only = read_only(&setup.disks[0]);
    world.delete_claim(CLAIM).await;
    let note = wait_failed_wipe(&setup, "WipeFailed", "io", &uid).await;
    assert!(note.contains("kept"), "says the PV is kept: {note}");
    let kept = wait_pv(world, &name, "being deleted, kept", |pv| {
        pv.metadata.deletion_timestamp.is_some()
    })
    .await;
    assert_eq!(kept.uid().as_deref(), Some(uid.as_str()));
    assert_never(world, &["Wiped"], &uid).await;

    read_only.writable();
    wait_wiped_again(&setup, &name, &uid).await;
}

/// A stuck condition does not flood the API server (issue 10, item 2): a
/// device that stays held is refused by the same guard on every retry
/// (10 s, doubling to 10 min), and the Events `WipeStarted` and
/// `WipeRefused` are published once, while the failure counter counts
/// every attempt. Found failing (every retry published both again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wipe_refused_again_by_the_same_guard_is_reported_once() {
    let (setup, _name, uid) = claimed("vis-stuck", vec![polling(QUICK_POLLING)]).await;
    let world = &setup.world;
    let _held = hold(&setup.disks[0]);
    world.delete_claim(CLAIM).await;
    wait_event_of(world, "WipeRefused", &uid).await;
    // The signal: the guard refused a second attempt, after its backoff.
    let refused = failures(&setup, "ExclusiveOpen");
    wait_page(&setup.process, "a second refusal", |p| {
        p.value("wipe_failures_total", &refused) >= Some(2.0)
    })
    .await;
    setup.process.wait_for_fresh_passes(2).await;
    for reason in ["WipeRefused", "WipeStarted"] {
        let notes: Vec<String> = events_of(world, reason, &uid)
            .await
            .into_iter()
            .filter_map(|event| event.note)
            .collect();
        assert_eq!(
            notes.len(),
            1,
            "{reason} published again for a wipe the same guard keeps refusing \
             (a standing condition): {notes:#?}"
        );
    }
}
