//! Watch streams cut between and in the middle of events, a watch history
//! that expired (410 Gone) while relists fail, and slow responses.

use std::time::Duration;

use crate::fixture::FaultWorld;
use crate::support::fake_api::FaultRule;
use crate::support::world::waits::{WAIT, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_cut_mid_event_or_between_events_loses_no_release() {
    let (faults, _process) = FaultWorld::running("fault-cut", 2).await;
    let server = faults.world.server();

    // The Released event goes out half-written and the connection dies: the
    // controller must drop the partial line, re-watch and see it again.
    server.cut_watches_mid_event("persistentvolumes");
    faults.recycle(1).await;
    assert!(server.mid_event_cuts() >= 1, "an event was cut in half");

    // A cut between events, then a release while the controller re-watches.
    server.cut_watches();
    faults.recycle(1).await;

    faults.assert_settled(2 + 2).await;
    assert_eq!(faults.deletes_of(&faults.pv_name(1)).len(), 2);
    faults.assert_intact(0);
    faults.assert_wiped(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_watch_410_relists_through_list_500s_and_handles_missed_changes() {
    let (faults, _process) = FaultWorld::running("fault-expired", 3).await;
    let server = faults.world.server();

    // Blind the PV watch (re-watches fail), change PVs behind its back,
    // then forget the history: the resumed watch gets 410 Gone in the
    // stream and must relist; the first two relists fail with 500.
    let blind = FaultRule::new(500, usize::MAX)
        .verb("watch")
        .path("/persistentvolumes");
    server.fail_requests(blind);
    server.cut_watches();
    let released = faults.release(0).await;
    faults.bind(1);
    server.expire_history();
    eventually("a failed PV re-watch", WAIT, || async {
        let watches = faults.world.requests("watch", "persistentvolumes");
        watches.iter().any(|r| r.status == 500).then_some(())
    })
    .await;
    let lists_before = faults.world.pv_requests("list", None);
    server.clear_faults();
    let failing_lists = FaultRule::new(500, 2)
        .verb("list")
        .path("/persistentvolumes");
    server.fail_requests(failing_lists);

    faults.wait_recreated(0, &released).await;
    let lists_after = faults.world.requests("list", "persistentvolumes");
    assert!(
        lists_after.len() >= lists_before + 3,
        "two failed relists and a successful one after the 410"
    );
    assert!(lists_after.iter().any(|r| r.status == 200));
    faults.assert_settled(3 + 1).await;
    faults.assert_wiped(0);
    faults.assert_intact(1);
    faults.assert_intact(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_api_responses_converge_without_duplicates() {
    let faults = FaultWorld::new("fault-slow", 3).await;
    faults
        .world
        .server()
        .set_latency(Duration::from_millis(400));
    let _process = faults.start();
    faults.wait_all_available().await;
    faults.fill_all();
    faults.bind(1);
    faults.recycle(0).await;
    faults.assert_settled(3 + 1).await;
    faults.assert_wiped(0);
    faults.assert_intact(1);
    faults.assert_intact(2);
}
