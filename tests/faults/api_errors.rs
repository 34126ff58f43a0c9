//! Failed and conflicting PV creates, DELETEs and finalizer removals, and a
//! Released state the controller's store keeps after the PV was taken back.

use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolume;
use serde_json::json;

use crate::fixture::FaultWorld;
use crate::support::fake_api::FaultRule;
use crate::support::provisioner::ProvisionerProcess;
use crate::support::world::waits::{WAIT, eventually};

/// A window that the controller's create retries (2 s doubling to 30 s)
/// fill with three attempts (at 0, 2 and 6 s; the fourth comes at 14 s).
const CREATE_RETRY_WINDOW: Duration = Duration::from_secs(9);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_500_burst_is_retried_with_bounded_backoff_and_recovers() {
    let faults = FaultWorld::new("fault-create", 3).await;
    let every_create = FaultRule::new(500, usize::MAX)
        .verb("create")
        .path("/persistentvolumes");
    faults.world.server().fail_requests(every_create);
    let process = faults.start();

    // The controller retries creation after 2 s, 4 s, 8 s, ...: the signal
    // is the POST that comes after the window (arrival times as the server
    // saw them). Within it, at most three attempts, each at most one POST
    // per device (creates run concurrently, so a batch's POSTs may all be
    // under way before the first 500 returns); a controller retrying on
    // each trigger would post dozens.
    let posts = eventually("a PV POST 9 s after the first", WAIT, || async {
        let posts = faults.witness.creations();
        let first = *posts.first()?;
        let retried = posts.iter().any(|at| *at - first >= CREATE_RETRY_WINDOW);
        retried.then_some(posts)
    })
    .await;
    let early = posts
        .iter()
        .filter(|at| **at - posts[0] < CREATE_RETRY_WINDOW)
        .count();
    assert!(
        (1..=9).contains(&early),
        "{early} PV POSTs within 9 s of the first failed one (3 attempts x 3 devices at most)"
    );
    assert!(faults.pvs().await.is_empty());
    let failed = process.labelled_sample("api_errors_total", "operation", "create_pv");
    process.wait_sample_at_least(&failed, 1.0).await;

    faults.world.server().clear_faults();
    faults.wait_all_available().await;
    faults.assert_settled(3).await;
    faults.assert_nothing_wiped(&process).await;
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
    let process = faults.start();
    eventually("the two conflicting POSTs", WAIT, || async {
        (faults.world.pv_requests("create", None) >= 2).then_some(())
    })
    .await;
    faults.wait_all_available().await;
    faults.assert_settled(2).await;
    let posts = faults.world.pv_requests("create", None);
    assert!(posts <= 6, "{posts} PV POSTs: not bounded");
    faults.assert_nothing_wiped(&process).await;
}

/// Makes the next request of `verb` on PV `name` fail with `status`.
fn fail_pv(faults: &FaultWorld, status: u16, verb: &str, name: &str) {
    let rule = FaultRule::new(status, 1)
        .verb(verb)
        .path(&format!("/persistentvolumes/{name}"));
    faults.world.server().fail_requests(rule);
}

/// Waits until the provisioner logged that PV `name` changed since it was
/// seen Released (its DELETE got 409): the signal that it let it be.
async fn wait_left_alone(process: &ProvisionerProcess, name: &str) {
    eventually(
        &format!("{name} left alone after its 409"),
        WAIT,
        || async {
            let log = process.log();
            log.lines()
                .any(|line| line.contains(name) && line.contains("looking again"))
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_release_failures_never_release_an_unwiped_pv() {
    // 0 Available, 1 Bound, 2 Released (the PATCH removing its finalizer
    // fails once with 500, after a completed wipe), 3 Released (its DELETE
    // fails once with 500), 4 Released but its device was swapped
    // underneath (the wipe is refused), 5 Released (its DELETE gets a 409
    // Conflict once: left alone until the PV changes again).
    let (faults, process) = FaultWorld::running("fault-cleanup", 6).await;
    faults.bind(1);
    faults.devices[4].swap_backing_file();
    fail_pv(&faults, 500, "patch", &faults.pv_name(2));
    fail_pv(&faults, 500, "delete", &faults.pv_name(3));
    fail_pv(&faults, 409, "delete", &faults.pv_name(5));
    let uid2 = faults.release(2).await;
    let uid3 = faults.release(3).await;
    let uid4 = faults.release(4).await;
    let uid5 = faults.release(5).await;

    let pv5 = faults.pv_name(5);
    wait_left_alone(&process, &pv5).await;
    assert_eq!(
        faults.live_pv(5).await,
        Some((uid5.clone(), "Released".into()))
    );
    faults.assert_intact(5);
    // An admin's edit is the change it waits for.
    faults
        .world
        .modify::<PersistentVolume>(None, &pv5, |pv| {
            pv["metadata"]["annotations"]["example.com/touched"] = json!("yes");
        })
        .await;

    faults.wait_recreated(2, &uid2).await;
    faults.wait_recreated(3, &uid3).await;
    faults.wait_recreated(5, &uid5).await;
    let refused = process.labelled_sample("wipe_failures_total", "reason", "SameDevice");
    process.wait_sample_at_least(&refused, 1.0).await;

    faults.assert_settled(6 + 3).await;
    // The failed removal cost one retry after the backoff (a wipe again,
    // then the removal), not a hammering. (A 404 after a success is the
    // stale second cleanup the scenarios report as a product bug.)
    let answered = |index| {
        let answers = faults.release_answers(&faults.pv_name(index));
        answers
            .into_iter()
            .filter(|status| *status != 404)
            .collect::<Vec<_>>()
    };
    assert_eq!(answered(2), [500, 200], "the failed removal and its retry");
    let failed = process.labelled_sample("api_errors_total", "operation", "patch_pv");
    assert!(process.metric(&failed).await >= Some(1.0));
    for index in [3, 5] {
        assert_eq!(answered(index), [200]);
        let deletes = faults.deletes_of(&faults.pv_name(index));
        assert_eq!(
            deletes.len(),
            2,
            "the refused DELETE and the one that went through"
        );
    }
    let pv4 = faults.pv_name(4);
    assert!(
        faults.releases_of(&pv4).is_empty(),
        "a PV whose wipe was refused keeps its finalizer"
    );
    assert_eq!(
        faults.held_uid(4).await,
        Some(uid4),
        "the refused PV is kept"
    );
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
    let uid0 = faults.uid(0).await;

    // The controller sees PV 0 Released, but its DELETE fails: it waits
    // 10 s. Meanwhile its PV watch goes blind (re-watches fail) and an admin
    // takes the PV back (Available again): the controller's store still
    // says Released when the retry comes.
    fail_pv(&faults, 500, "delete", &pv0);
    faults.release(0).await;
    let server = faults.world.server();
    eventually("the failed DELETE", WAIT, || async {
        let deletes = faults.world.requests("delete", "persistentvolumes");
        deletes.iter().any(|r| r.status == 500).then_some(())
    })
    .await;
    let blind = FaultRule::new(500, usize::MAX)
        .verb("watch")
        .path("/persistentvolumes");
    server.fail_requests(blind);
    server.cut_watches();
    server.set_pv_phase(&pv0, "Available");
    faults.bind(1);

    // The retried DELETE carries the stale resourceVersion: 409, and the
    // PV is left alone, neither wiped nor deleted again.
    wait_left_alone(&process, &pv0).await;
    let conflicts = faults.world.requests("delete", "persistentvolumes");
    assert!(conflicts.iter().any(|r| r.status == 409), "{conflicts:?}");
    // Once the watch works again, the controller sees the PVs as they are:
    // the signal is the claim it records on PV 1.
    server.clear_faults();
    eventually("the claim recorded on PV 1", WAIT, || async {
        let patches = faults.world.pv_requests("patch", Some(&faults.pv_name(1)));
        (patches > 0).then_some(())
    })
    .await;
    let deletes = faults.deletes_of(&pv0).len();
    assert_eq!(deletes, 2, "the failed DELETE and the refused retry only");
    assert!(faults.releases_of(&pv0).is_empty());
    assert_eq!(faults.live_pv(0).await, Some((uid0, "Available".into())));
    faults.assert_intact(0);
    faults.assert_intact(1);
    faults.assert_settled(2).await;
}
