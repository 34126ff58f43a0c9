//! A PV that changes and is gone before the cleanup controller has read
//! the change must not cost the controller any later event. Found by a
//! flaky fault test: kube-runtime 5's shared-store subscription
//! (`ReflectHandle`) returns `Pending` without a wake-up when the object a
//! queued reference names is already gone, and the controller heard of no
//! PV change again; a PV deleted by hand afterwards was cleaned only by the
//! poll. The watch now hands the controller objects, not references.
//!
//! Here never-claimed PVs are deleted by hand one after another, each only
//! once the one before is back: the program marks each (`wipe-skipped`) and
//! lets its finalizer go, so each ends as a change followed at once by its
//! removal — under a PV watch that delivers every change late, in bursts.
//! The poll is an hour away, so only watch events can clean each PV. On
//! the code before the fix (d93edaf~1) this test failed 3 runs of 3 with 8
//! PVs (2 of 3 with 4), waiting for a PV that was never cleaned.

use std::time::Duration;

use kube::ResourceExt;

use crate::common::*;
use crate::support::world::polling;

/// How late the program's PV watch delivers each change.
const LAG: Duration = Duration::from_millis(300);
/// The node.
const NODE: &str = "vanish-a";
/// PVs deleted in turn.
const DISKS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pvs_deleted_in_turn_are_each_released_on_their_watch_events() {
    let world = binding_world().await;
    let _disks: Vec<_> = (0..DISKS)
        .map(|i| blank_disk(&world, &format!("disk{i}"), 16 * MIB))
        .collect();
    world.put_configmap("spec", world.block_spec(".*")).await;
    world.add_node(NODE, Some("spec")).await;
    let process = world.start(NODE, vec![polling("1h")]);
    let names: Vec<String> = (0..DISKS)
        .map(|i| format!("local-{NODE}-disk{i}"))
        .collect();
    let mut uids = Vec::new();
    for name in &names {
        uids.push(wait_available(&world, name).await.uid().expect("a UID"));
    }

    world.server().set_watch_lag("persistentvolumes", LAG);
    for (done, (name, uid)) in names.iter().zip(&uids).enumerate() {
        delete_by_hand(&world, name).await;
        // Released on its own events: the PV comes back as a new one.
        wait_recreated(&world, name, uid).await;
        let skipped = process.sample("wipes_skipped_total");
        process
            .wait_sample_at_least(&skipped, (done + 1) as f64)
            .await;
    }
    assert_eq!(
        process.value("wipes_total").await,
        Some(0.0),
        "never claimed: released without a wipe"
    );
}
