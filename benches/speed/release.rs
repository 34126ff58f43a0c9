//! Release → fresh PV on a 1 GiB loop device: a claim is bound to the
//! device's PV (the program records it, so the PV will be wiped), then the
//! claim is deleted and the clock runs until the benchmark's watch sees a
//! new PV for the device. The watch also times the steps between, which
//! tell the controller-manager's share (claim gone → PV `Released`; the
//! program's finalizer off → PV gone: the emulated one on the fake server
//! polls every 50 ms) from the program's (delete the Released PV, wipe,
//! remove its finalizer, create the new PV).
//!
//! The program's finalizer off is seen as a MODIFIED without it while
//! `kubernetes.io/pv-protection` still holds the PV, or, when it was the
//! last finalizer, as the PV's DELETED: a real API server deletes the
//! object in the write that removes its last finalizer, and watchers never
//! see a MODIFIED with it gone (the DELETED event shows the last state
//! stored, finalizer included). Which comes first depends on timing: a
//! released PV loses `pv-protection` within about a second.

use std::time::{Duration, Instant};

use crate::devices::{Pool, link_dir};
use crate::options::Options;
use crate::procfs::{Spread, millis};
use crate::stage::Stage;
use crate::table::{Table, Verdict};
use crate::timeline::Seen;

/// Size of the device.
const DEVICE_BYTES: u64 = 1 << 30;
/// The target.
const TARGET: Duration = Duration::from_millis(150);
/// Longest wait for any one step.
const LIMIT: Duration = Duration::from_secs(60);

/// The steps of one release, as the watch saw them.
struct Steps {
    /// Claim delete sent → fresh PV seen.
    total: Duration,
    /// Claim delete sent → old PV `Released`.
    to_released: Duration,
    /// The program's finalizer off → old PV gone (zero when it was the
    /// last finalizer).
    to_gone: Duration,
    /// Old PV being deleted → the program's finalizer removed (the wipe).
    wipe: Duration,
}

/// Runs the section and adds its rows.
pub async fn run(options: &Options, table: &mut Table) {
    let pool = Pool::attach(1, DEVICE_BYTES);
    let dir = link_dir("release");
    pool.link(dir.path(), "rel", 1);
    let path = dir
        .path()
        .join("rel0000")
        .to_str()
        .expect("UTF-8")
        .to_string();
    let stage = Stage::open(options, "release", dir.path(), "^rel", &[]).await;
    stage.world.create_storage_class().await;
    let process = stage.start(vec![]);
    stage.wait_ready(&process).await;
    let mut pv = stage.timeline.added(&path, &[], LIMIT).await;
    let mut old = Vec::new();
    let mut steps = Vec::new();
    for index in 0..options.samples {
        let (step, fresh) = release_once(&stage, &pv, &path, &old, index).await;
        steps.push(step);
        old.push(pv.uid.clone());
        pv = fresh;
    }
    let wipes = process.value("wipes_total").await.unwrap_or(0.0);
    stage.close(process).await;
    pool.detach();
    add_rows(table, &steps, wipes);
}

/// Binds a claim to `pv`, deletes it, and times the way to the fresh PV.
async fn release_once(
    stage: &Stage,
    pv: &Seen,
    path: &str,
    old: &[String],
    index: usize,
) -> (Steps, Seen) {
    let timeline = &stage.timeline;
    let claim = format!("{}-claim{index}", stage.world.run());
    timeline
        .first(&pv.uid, "the PV Available", LIMIT, |s| {
            s.phase == "Available"
        })
        .await;
    stage
        .world
        .create_claim(&claim, "1Gi", Some(&pv.name))
        .await;
    timeline
        .first(&pv.uid, "the PV Bound, its claim recorded", LIMIT, |s| {
            s.phase == "Bound" && s.claimed
        })
        .await;
    let started = Instant::now();
    stage.world.delete_claim(&claim).await;
    let mut known = old.to_vec();
    known.push(pv.uid.clone());
    let fresh = timeline.added(path, &known, LIMIT).await;
    let first =
        |what: &'static str, check: fn(&Seen) -> bool| timeline.first(&pv.uid, what, LIMIT, check);
    let released = first("Released", |s| s.phase == "Released").await;
    let deleting = first("being deleted", |s| s.deleting).await;
    let unfinalized = first(
        "the program's finalizer off (a MODIFIED without it, or the PV's DELETED)",
        |s| s.gone || (s.deleting && !s.finalizer),
    )
    .await;
    let gone = first("gone", |s| s.gone).await;
    let steps = Steps {
        total: fresh.at - started,
        to_released: released.at - started,
        to_gone: gone.at - unfinalized.at,
        wipe: unfinalized.at - deleting.at,
    };
    (steps, fresh)
}

/// The rows: the total, and the program's share alone.
fn add_rows(table: &mut Table, steps: &[Steps], wipes: f64) {
    let of = |f: fn(&Steps) -> Duration| Spread::of(&steps.iter().map(f).collect::<Vec<_>>());
    let total = of(|s| s.total);
    let controller = of(|s| s.to_released + s.to_gone);
    let program = of(|s| s.total.saturating_sub(s.to_released + s.to_gone));
    table.row(
        "claim deleted → fresh PV (1 GiB loop device, wiped)",
        total.text(),
        "≤ 150 ms",
        format!(
            "controller-manager's steps: median {} (claim deleted → PV Released: {}; the program's finalizer off → PV gone: {}, 0 when it was the last)",
            millis(controller.median),
            millis(of(|s| s.to_released).median),
            millis(of(|s| s.to_gone).median),
        ),
        Verdict::of(total.p99 <= TARGET),
    );
    table.row(
        "… of which the program's steps (Released → delete → wipe → finalizer off; PV gone → new PV)",
        program.text(),
        "–",
        format!(
            "PV being deleted → its finalizer off (the wipe and its guards): median {}; wipes counted by the program: {wipes}",
            millis(of(|s| s.wipe).median)
        ),
        Verdict::Info,
    );
}
