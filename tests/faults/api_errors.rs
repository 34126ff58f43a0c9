//! Failed and conflicting PV creates, GETs and DELETEs, and a Released
//! state the controller's store keeps after the PV was taken back.

use std::time::Duration;

use crate::fixture::FaultWorld;
use crate::support::fake_api::{FaultRule, RecordedRequest};
use crate::support::world::waits::{WAIT, eventually};

/// The controller's delay before retrying a failed PV create (10 s), less
/// a margin for the time the first answer takes.
const CREATE_RETRY_AT_LEAST: Duration = Duration::from_secs(9);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_500_burst_is_retried_with_bounded_backoff_and_recovers() {
    let faults = FaultWorld::new("fault-create", 3).await;
    let every_create = FaultRule::new(500, usize::MAX)
        .verb("create")
        .path("/persistentvolumes");
    faults.world.server().fail_requests(every_create);
    let process = faults.start();

    // The controller retries creation every 10 s: the signal is the POST
    // that comes after that delay (arrival times as the server saw them).
    // Before it, at most one attempt's POSTs; a controller retrying on
    // each trigger would post dozens.
    let posts = eventually("a PV POST 9 s after the first", WAIT, || async {
        let posts = faults.witness.creations();
        let first = *posts.first()?;
        let retried = posts.iter().any(|at| *at - first >= CREATE_RETRY_AT_LEAST);
        retried.then_some(posts)
    })
    .await;
    let early = posts
        .iter()
        .filter(|at| **at - posts[0] < CREATE_RETRY_AT_LEAST)
        .count();
    assert!(
        (1..=3).contains(&early),
        "{early} PV POSTs within 9 s of the first failed one"
    );
    assert!(faults.pvs().await.is_empty());
    let failed = process.labelled_sample("api_errors_total", "operation", "create_pv");
    process.wait_sample_at_least(&failed, 1.0).await;

    faults.world.server().clear_faults();
    faults.wait_all_available().await;
    faults.assert_settled(3).await;
    for index in 0..3 {
        faults.assert_intact(index);
    }
    assert_eq!(faults.world.pv_requests("delete", None), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_409_on_create_makes_no_duplicate_and_the_pvs_still_come() {
    let faults = FaultWorld::new("fault-conflict", 2).await;
    // Both PVs' first POSTs get 409 although no such PV exists (a transient
    // conflict): the controller must not make a second PV for a device, and
    // must not give up on the devices either.
    let conflicts = FaultRule::new(409, 2)
        .verb("create")
        .path("/persistentvolumes");
    faults.world.server().fail_requests(conflicts);
    let _process = faults.start();
    eventually("the two conflicting POSTs", WAIT, || async {
        (faults.world.pv_requests("create", None) >= 2).then_some(())
    })
    .await;
    faults.wait_all_available().await;
    faults.assert_settled(2).await;
    let posts = faults.world.pv_requests("create", None);
    assert!(posts <= 6, "{posts} PV POSTs: not bounded");
    faults.assert_intact(0);
    faults.assert_intact(1);
}

/// Makes the next `count` requests of `verb` on PV `name` fail with `status`.
fn fail_pv(faults: &FaultWorld, status: u16, verb: &str, name: &str) {
    let rule = FaultRule::new(status, 1)
        .verb(verb)
        .path(&format!("/persistentvolumes/{name}"));
    faults.world.server().fail_requests(rule);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_delete_failures_never_delete_an_unwiped_pv() {
    // 0 Available, 1 Bound, 2 Released (its GET fails once with 500), 3
    // Released (its DELETE fails once with 500, after a completed wipe), 4
    // Released but its device was swapped underneath (the wipe is refused),
    // 5 Released (its DELETE gets a 409 Conflict once).
    let (faults, process) = FaultWorld::running("fault-cleanup", 6).await;
    faults.bind(1);
    faults.devices[4].swap_backing_file();
    fail_pv(&faults, 500, "get", &faults.pv_name(2));
    fail_pv(&faults, 500, "delete", &faults.pv_name(3));
    fail_pv(&faults, 409, "delete", &faults.pv_name(5));
    let uid2 = faults.release(2).await;
    let uid3 = faults.release(3).await;
    let uid4 = faults.release(4).await;
    let uid5 = faults.release(5).await;

    faults.wait_recreated(2, &uid2).await;
    faults.wait_recreated(3, &uid3).await;
    faults.wait_recreated(5, &uid5).await;
    let refused = process.labelled_sample("wipe_failures_total", "reason", "SameDevice");
    process.wait_sample_at_least(&refused, 1.0).await;

    faults.assert_settled(6 + 3).await;
    // The failed GET cost one retry after the backoff, not a hammering: one
    // GET between the failed one and the DELETE.
    let pv2 = faults.pv_name(2);
    let log: Vec<RecordedRequest> = faults
        .world
        .server()
        .requests()
        .into_iter()
        .filter(|r| r.resource == "persistentvolumes" && r.name.as_deref() == Some(pv2.as_str()))
        .collect();
    let failed = log
        .iter()
        .position(|r| r.verb == "get" && r.status == 500)
        .expect("the failed GET");
    let deleted = log
        .iter()
        .position(|r| r.verb == "delete")
        .expect("the DELETE");
    let retries = log[failed + 1..deleted]
        .iter()
        .filter(|r| r.verb == "get")
        .count();
    assert_eq!(
        retries, 1,
        "GETs of {pv2} between its failed GET and its DELETE"
    );
    for index in [3, 5] {
        let deletes = faults.deletes_of(&faults.pv_name(index));
        assert_eq!(deletes.len(), 2, "the failed DELETE and its retry");
        assert!(deletes.iter().all(|d| d.device_zeroed));
    }
    assert_eq!(faults.deletes_of(&pv2).len(), 1);
    assert!(
        faults.deletes_of(&faults.pv_name(4)).is_empty(),
        "a PV whose wipe was refused is never deleted"
    );
    assert_eq!(faults.uid(4).await, uid4, "the refused PV is kept");
    for index in [0, 1, 4] {
        faults.assert_intact(index);
    }
    for index in [2, 3, 5] {
        faults.assert_wiped(index);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_released_state_is_rechecked_before_any_wipe_and_not_hammered() {
    let (faults, process) = FaultWorld::running("fault-stale", 2).await;
    let pv0 = faults.pv_name(0);

    // The controller sees PV 0 Released, but its first GET fails: it waits
    // 10 s. Meanwhile its PV watch goes blind (re-watches fail) and an admin
    // takes the PV back (Available again): the controller's store still
    // says Released when the retry comes.
    fail_pv(&faults, 500, "get", &pv0);
    faults.release(0).await;
    let server = faults.world.server();
    eventually("the failed GET", WAIT, || async {
        let gets = faults.world.requests("get", "persistentvolumes");
        gets.iter().any(|r| r.status == 500).then_some(())
    })
    .await;
    let blind = FaultRule::new(500, usize::MAX)
        .verb("watch")
        .path("/persistentvolumes");
    server.fail_requests(blind);
    server.cut_watches();
    server.set_pv_phase(&pv0, "Available");
    let gets_of_pv0 = || faults.world.pv_requests("get", Some(&pv0));
    eventually("the retried GET", WAIT, || async {
        (gets_of_pv0() >= 2).then_some(())
    })
    .await;

    // The fresh read said Available: no wipe, no DELETE. And with the store
    // still stale, the controller must not re-read the PV on every pass:
    // the signal is three passes, each made to run by a change to the Node
    // (whose watch still works), with at most two more GETs among them.
    for round in 0..3 {
        let before = process.reconciles().await;
        faults
            .world
            .touch_node(faults.node, &round.to_string())
            .await;
        eventually("a pass after the Node changed", WAIT, || async {
            (process.reconciles().await > before).then_some(())
        })
        .await;
    }
    let gets = gets_of_pv0();
    assert!(
        gets <= 4,
        "{gets} GETs of {pv0}: the stale Released state is re-read on every pass"
    );
    faults.assert_intact(0);
    faults.assert_intact(1);
    assert!(faults.deletes_of(&pv0).is_empty());
    server.clear_faults();
    faults.assert_settled(2).await;
}
