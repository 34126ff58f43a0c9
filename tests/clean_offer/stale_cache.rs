//! One release wipes once, however late the watch. Found failing on
//! cf75726, where the cleanup acted on its watch cache without reading the
//! PV fresh, so a PV event that arrived after the
//! release — the cache still showing the PV being deleted with the cleanup
//! finalizer, though the API server removed it — wiped the device a second
//! time; `wipes_total` counted two wipes for one release. The PV is now read
//! fresh before every wipe, and a PV this process released is not looked at
//! again. (Seen without any lag
//! too, now and then, in the Ceph test: the controller-manager's removal of
//! `pv-protection` during the wipe queues a second reconcile, which can run
//! before the cache has the deletion.) While a second provisioner pod
//! overlaps during a rollout, the other pod may already have offered the
//! device again when such a stale wipe runs.
//!
//! Here the fake API server's PV watch delivers every change half a second
//! after it was committed, as a loaded API server's watch cache can, which
//! makes the stale reconcile certain: the controller-manager drops
//! `pv-protection` right after the program's DELETE, and that change reaches
//! the program after the finalizer is gone, before the deletion does.

use std::time::Duration;

use crate::common::*;
use crate::moments::{Moments, Step, Watch};
use crate::support::world::{QUICK_POLLING, polling};

/// How late the program's PV watch delivers each change.
const LAG: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_pv_is_wiped_once_when_its_watch_lags() {
    let size = 64 * MIB;
    let (process, world, disk, name, old_uid) =
        one_disk("lag-a", size, "4Mi", vec![polling(QUICK_POLLING)])
            .await
            .parts();
    let name = name.as_str();
    let pv = world.pv(name).await.expect("the PV");
    claim_and_wait(&world, "data", &pv).await;
    let spans = vec![span(0, 4096), span(size - 4096, 4096)];
    tenant_writes(&disk, &spans);
    let watch = Watch {
        pv: name.to_string(),
        device: disk.clone(),
        spans,
    };
    let moments = Moments::install(&world, vec![watch]);

    world.server().set_watch_lag("persistentvolumes", LAG);
    world.delete_claim("data").await;
    wait_recreated(&world, name, &old_uid).await;
    moments.assert_wiped_before_release_and_offer(name);
    // Every cleanup of the old PV is over once the cache has the new one
    // and passes have begun after that.
    process.wait_for_fresh_passes(3).await;

    let seen = moments.of(name);
    let removals = seen
        .iter()
        .filter(|m| m.step == Step::FinalizerRemoved)
        .count();
    let wipes = process.value("wipes_total").await;
    let wiped = events_with(&world, "Wiped", "PersistentVolume", name).await;
    assert!(
        removals == 1 && wipes == Some(1.0) && publishes(&wiped) == 1,
        "one release, but {removals} finalizer removals (the later ones after the \
         PV was gone: {seen:?}), wipes_total {wipes:?}, {} Wiped published",
        publishes(&wiped)
    );
}
