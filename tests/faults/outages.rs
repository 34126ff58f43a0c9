//! The API server restarting with its store or empty, failing every
//! request, or gone: no duplicate, no wipe without a release, readiness
//! that follows the outage and recovers.

use std::time::{Duration, Instant};

use kube::ResourceExt;

use crate::fixture::FaultWorld;
use crate::support::fake_api::FaultRule;
use crate::support::world::waits::{WAIT, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_with_its_store_resumes_without_duplicates() {
    let (mut faults, _process) = FaultWorld::running("fault-restart", 3).await;
    faults.bind(1);

    // Released just before the restart: the event may or may not have gone
    // out; the controller must catch up either way.
    let first = faults.release(0).await;
    faults.world.server_mut().restart(true).await;
    faults.wait_recreated(0, &first).await;

    // Released right after a restart, while the controller re-watches.
    faults.world.server_mut().restart(true).await;
    faults.recycle(2).await;

    faults.assert_settled(3 + 2).await;
    faults.assert_wiped(0);
    faults.assert_wiped(2);
    faults.assert_intact(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_empty_then_recreated_objects_gives_one_pv_per_device_and_no_wipe() {
    // Devices 0 (Available) and 1 (Bound) hold their tenants' data; device
    // 2 was never written to.
    let mut faults = FaultWorld::new("fault-reset", 3).await;
    let process = faults.start();
    faults.wait_all_available().await;
    faults.devices[0].fill();
    faults.devices[1].fill();
    faults.bind(1);
    process.wait_ready(true).await;
    let old_uid = faults.node_uid.clone();

    // The server comes back empty: no Node, no ConfigMap, no PVs; and, as
    // a server whose storage is still coming up, it fails the first two
    // Node lists. Every watch gets 410 and relists; until the Node relist
    // succeeds, the controller's Node is the stale one.
    let failing_lists = FaultRule::new(500, 2).verb("list").path("/nodes");
    faults.world.server().fail_requests(failing_lists);
    faults.world.server_mut().restart(false).await;
    process.wait_ready(false).await;
    // Nothing to act on until the operator restores the objects. The signal
    // is the pass that finds the Node gone (it logs so and is not ready):
    // every pass before it, which could have created PVs for the stale
    // Node, has ended.
    eventually("the Node seen gone, and /readyz failing", WAIT, || async {
        let seen = process.log().contains("the Node object is not found");
        (seen && !process.is_ready().await).then_some(())
    })
    .await;
    let created_without_node = faults.pv_creations() - 3;
    assert!(faults.pvs().await.is_empty(), "no PV stays without a Node");

    // The devices holding data lost their PVs with the store: they are
    // never offered again as they are; the blank one is.
    faults.create_cluster_objects().await;
    faults.world.wait_for_pv_names(&[&faults.pv_name(2)]).await;
    process.wait_metric("devices_with_data", 2.0).await;
    process.wait_ready(true).await;
    for pv in faults.pvs().await {
        assert_eq!(
            pv.owner_references()[0].uid,
            faults.node_uid,
            "new PVs belong to the new Node"
        );
    }
    assert_eq!(
        faults.world.pv_requests("delete", None),
        0,
        "nothing was Released: nothing deleted"
    );
    faults.assert_intact(0);
    faults.assert_intact(1);
    assert_eq!(
        created_without_node, 0,
        "PVs POSTed while the server had no Node, for the stale Node {old_uid} \
         (then garbage-collected)"
    );
    assert_eq!(
        faults.pv_creations(),
        3 + 1,
        "again only the blank device's PV"
    );
    faults.assert_no_two_pvs_per_device().await;
    faults
        .assert_reported_holding_data(&["disk0", "disk1"])
        .await;
}

/// How long the 500 outage lasts: the window over which the request rate
/// is measured (a rate needs a window; nothing waits on it).
const OUTAGE_WINDOW: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_a_500_outage_and_watch_retries_are_bounded() {
    let (faults, process) = FaultWorld::running("fault-ready500", 2).await;
    process.wait_ready(true).await;
    let server = faults.world.server();

    // Every request fails and the open watches are cut: unreachable.
    server.fail_requests(FaultRule::new(500, usize::MAX));
    let before = server.requests().len();
    let outage = Instant::now();
    server.cut_watches();
    process.wait_ready(false).await;
    let released = faults.release(0).await;
    tokio::time::sleep(OUTAGE_WINDOW.saturating_sub(outage.elapsed())).await;
    // Three watches backing off from 0.8 s: a handful of attempts each in
    // 4 s, not a tight loop.
    let during = server.requests().len() - before;
    assert!(during <= 30, "{during} requests in a 4 s outage");
    assert!(!process.is_ready().await, "not ready while unreachable");

    server.clear_faults();
    process.wait_ready(true).await;
    faults.wait_recreated(0, &released).await;
    faults.assert_settled(2 + 1).await;
    faults.assert_intact(1);
    assert_eq!(process.value("available_devices").await, Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_a_stopped_server_and_recovers_after_restart() {
    let (mut faults, process) = FaultWorld::running("fault-readystop", 2).await;
    faults.bind(1);
    process.wait_ready(true).await;

    // The server goes away (connections refused).
    faults.world.server_mut().stop().await;
    process.wait_ready(false).await;
    // Still not ready: the signal is two passes run during the outage (each
    // failed watch retry makes one).
    process.wait_for_fresh_passes(2).await;
    assert!(!process.is_ready().await, "not ready while unreachable");
    faults.world.server_mut().resume(true).await;
    process.wait_ready(true).await;

    // And it works again.
    faults.recycle(0).await;
    faults.assert_settled(2 + 1).await;
    faults.assert_intact(1);
}
