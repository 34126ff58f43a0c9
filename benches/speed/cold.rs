//! Cold start and idle cost. For each count (200 and 1000 by default) a
//! fresh world and Node, a device directory with that many links to
//! distinct blank loop devices (the program refuses a second entry for a
//! device, and has no switch to turn that off, so every entry is a device
//! of its own; the devices are attached once, before any measure, and the
//! attach time is reported apart), and a provisioner with the default
//! settings (inotify on, polling every 5 m), started `LPP_BENCH_COLD_RUNS`
//! times (medians, with the range: this machine is shared). Measured:
//! process start → the first and the last PV seen by the benchmark's
//! watch; the CPU time the process used in the window after the start
//! (`LPP_BENCH_COLD_WINDOW_SECS`, 30 s as in issue 19's measurement on a
//! real server, where the controller-manager still moves PVs to
//! `Available` then), its resident memory at the end of the window and its
//! peak until then; the CPU time until every PV is `Available` and until
//! the process is quiet again; its resident memory then (idle RSS); then,
//! over an idle window in which nothing changes, its CPU
//! time (from `/proc/<pid>/stat`, 10 ms ticks, and to the nanosecond from
//! the scheduler, with its wake-ups) and the API requests it makes besides
//! its open watches. An idle process still reads the bookmarks the API
//! server sends on its watches (the fake server one a second per watch,
//! kube-apiserver one a minute); idle CPU counts as none when the process
//! wakes no more often than those arrive.
//!
//! Then the largest count once more, its devices split across three device
//! classes (three name filters over one directory, a third of the devices
//! each): classes must not slow discovery.

mod rows;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::Api;
use kube::api::ListParams;
use local_pv_provisioner::objects::naming::node_label_value;
use local_pv_provisioner::objects::pv::NODE_LABEL;

use crate::devices::{Pool, link_dir};
use crate::options::Options;
use crate::procfs::{
    Sched, SchedDelta, cpu_seconds, peak_rss_mib, rss_mib, rss_split_mib, wait_until_quiet,
};
use crate::stage::Stage;
use crate::support::world::data;
use crate::table::Table;

/// Size of each device.
const DEVICE_BYTES: u64 = 4 << 20;
/// The program's open watches: its Node, its PVs, its spec ConfigMap, its
/// node's Pods, its LocalDisks.
pub(crate) const PROGRAM_WATCHES: f64 = 5.0;
/// Bookmarks per watch and minute: the fake API server sends one a second
/// (`BOOKMARK_INTERVAL` in `tests/support/fake_api/http/watch.rs`),
/// kube-apiserver one a minute (its cacher's `defaultBookmarkFrequency`).
const FAKE_BOOKMARKS: f64 = 60.0;
const CLUSTER_BOOKMARKS: f64 = 1.0;
/// Longest wait for a cold start.
const LIMIT: Duration = Duration::from_secs(300);

/// What one start-up measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StartUp {
    /// Process start → first PV seen.
    pub(crate) first: Duration,
    /// Process start → last PV seen.
    pub(crate) created: Duration,
    /// Process start → last PV seen `Available`.
    pub(crate) available: Duration,
    /// Process start → a LocalDisk with its status for every device
    /// (`None` on a cluster, whose CRD may be absent).
    pub(crate) disks: Option<Duration>,
    /// CPU time from start until the last PV was seen.
    pub(crate) cpu_created: f64,
    /// CPU time from start until every PV was `Available`.
    pub(crate) cpu_available: f64,
    /// CPU time from start until the process was quiet.
    pub(crate) cpu_quiet: f64,
    /// CPU time in the window after the start; resident memory at its end,
    /// and the peak until then.
    pub(crate) cpu_window: f64,
    pub(crate) rss_window: f64,
    pub(crate) peak_window: f64,
    /// Resident memory once quiet: all, anonymous, file pages; the peak.
    pub(crate) rss: f64,
    pub(crate) rss_anon: f64,
    pub(crate) rss_file: f64,
    pub(crate) peak_rss: f64,
}

/// What the idle window after the last start-up measured.
pub(crate) struct Idle {
    /// Its length.
    pub(crate) window: Duration,
    /// CPU time by `/proc/<pid>/stat`, and by the scheduler.
    pub(crate) cpu: f64,
    pub(crate) sched: SchedDelta,
    /// Bookmarks per minute the program's watches receive.
    pub(crate) bookmarks_per_minute: f64,
    /// Requests besides watches, watches (re)opened, the former as text;
    /// `None` on a cluster.
    pub(crate) requests: Option<(usize, usize, Vec<String>)>,
    /// Resident memory at its end.
    pub(crate) rss_after: f64,
    /// One of the node's PVs as the API server returns it: its JSON size
    /// and that of its managedFields, bytes.
    pub(crate) pv_size: Option<(usize, usize)>,
}

/// Runs the section and adds its rows.
pub async fn run(options: &Options, table: &mut Table) {
    let most = options.cold_devices.iter().copied().max().unwrap_or(0);
    let pool = Pool::attach(most, DEVICE_BYTES);
    let attach = pool.attach_time;
    let mut sizes = Vec::new();
    for &count in &options.cold_devices {
        let mut runs = Vec::new();
        let mut idle = None;
        for run in 1..=options.cold_runs {
            let last = run == options.cold_runs;
            let (start_up, measured) = cold_start(options, &pool, count, 1, last).await;
            runs.push(start_up);
            idle = measured;
        }
        let idle = idle.expect("the last run's idle window");
        rows::start_up(table, count, &runs, options.cold_window);
        rows::idle(table, count, &idle);
        sizes.extend(idle.pv_size);
    }
    if most > 0 {
        let mut runs = Vec::new();
        for _ in 0..options.cold_runs {
            runs.push(cold_start(options, &pool, most, CLASSES, false).await.0);
        }
        rows::classes(table, most, CLASSES, &runs);
    }
    let detach = pool.detach();
    if let Some((bytes, managed)) = sizes.first() {
        table.note(format!(
            "A PV of the cold start as the API server returned it, {}: {bytes} bytes of JSON, {managed} of them `metadata.managedFields` (a real server's: 2–3 KB with managedFields).",
            if options.on_cluster() { "on the cluster" } else { options.churn_text() }
        ));
    }
    table.note(format!(
        "Cold starts: {most} distinct sparse loop devices of {} MiB, attached one by one with `losetup -f --show` in {:.1} s and detached in {:.1} s, outside every measure; each count started {} times (fresh API server and Node each time), medians shown with the range; the idle window follows the last start.",
        DEVICE_BYTES >> 20,
        attach.as_secs_f64(),
        detach.as_secs_f64(),
        options.cold_runs
    ));
}

/// Device classes of the classes run.
const CLASSES: usize = 3;

/// One cold start with `count` devices split across `classes` classes (one
/// class: the flat keys), and its idle window when `idle`.
async fn cold_start(
    options: &Options,
    pool: &Pool,
    count: usize,
    classes: usize,
    idle: bool,
) -> (StartUp, Option<Idle>) {
    let name = format!("cold{count}x{classes}");
    let dir = link_dir(&name);
    let stage = if classes == 1 {
        pool.link(dir.path(), "disk", count);
        Stage::open(options, &name, dir.path(), "^disk", &[]).await
    } else {
        pool.link_split(dir.path(), classes, count);
        let path = dir.path().display().to_string();
        Stage::open_with(options, &name, |world| {
            let list: String = (0..classes)
                .map(|class| {
                    format!(
                        "- {{name: class{class}, deviceDir: {path}, deviceNameFilter: \"^c{class}-\", volumeMode: Block, storageClassName: {}}}\n",
                        world.run()
                    )
                })
                .collect();
            data(&[("deviceClasses", &list)])
        })
        .await
    };
    let started = Instant::now();
    let process = stage.start(vec![]);
    let pid = process.pid().expect("running");
    let timeline = &stage.timeline;
    let created = timeline.all_live(count, None, LIMIT).await - started;
    let first = timeline.first_seen().expect("a PV seen") - started;
    let cpu_created = cpu_seconds(pid);
    // The window after the start and the way to all Available overlap
    // (in churn mode 1000 PVs take about 50 s to settle): both at once.
    let ((available, cpu_available), disks, (cpu_window, rss_window, peak_window)) = tokio::join!(
        async {
            let at = timeline.all_live(count, Some("Available"), LIMIT).await;
            (at - started, cpu_seconds(pid))
        },
        all_disks(options, &stage, count, started),
        async {
            tokio::time::sleep_until((started + options.cold_window).into()).await;
            (cpu_seconds(pid), rss_mib(pid), peak_rss_mib(pid))
        },
    );
    let cpu_quiet = wait_until_quiet(pid, Duration::from_secs(2), Duration::from_secs(30)).await;
    let (rss_anon, rss_file) = rss_split_mib(pid);
    let start_up = StartUp {
        first,
        created,
        available,
        disks,
        cpu_created,
        cpu_available,
        cpu_quiet,
        cpu_window,
        rss_window,
        peak_window,
        rss: rss_mib(pid),
        rss_anon,
        rss_file,
        peak_rss: peak_rss_mib(pid),
    };
    let measured = if idle {
        Some(idle_window(options, &stage, pid, count).await)
    } else {
        None
    };
    stage.close(process).await;
    (start_up, measured)
}

/// When the fake API server (read directly every 10 ms) holds a LocalDisk
/// with a status for each of the `count` devices; `None` on a cluster.
async fn all_disks(
    options: &Options,
    stage: &Stage,
    count: usize,
    started: Instant,
) -> Option<Duration> {
    if options.on_cluster() {
        return None;
    }
    let deadline = started + LIMIT;
    loop {
        let written = stage
            .world
            .server()
            .objects("localdisks.local-pv-provisioner.cybozu.io")
            .iter()
            .filter(|disk| disk.get("status").is_some())
            .count();
        if written >= count {
            return Some(started.elapsed());
        }
        if Instant::now() > deadline {
            panic!("bench: {written} of {count} LocalDisks written after {LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Watches the settled process for the idle window.
async fn idle_window(options: &Options, stage: &Stage, pid: u32, count: usize) -> Idle {
    stage.clear_requests();
    eprintln!(
        "bench: {count} PVs settled; idle window of {} s begins (provisioner pid {pid})",
        options.idle.as_secs()
    );
    let started = Instant::now();
    let sched = Sched::of(pid);
    let cpu = cpu_seconds(pid);
    tokio::time::sleep(options.idle).await;
    let cpu = cpu_seconds(pid) - cpu;
    let sched = Sched::of(pid).since(&sched);
    let window = started.elapsed();
    let requests = stage.program_requests().map(|requests| {
        let watches = requests.iter().filter(|r| r.verb == "watch").count();
        let others: Vec<String> = requests
            .iter()
            .filter(|r| r.verb != "watch")
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        (others.len(), watches, others)
    });
    let cluster = options.on_cluster() && !options.self_cluster;
    let rss_after = rss_mib(pid);
    let pv_size = pv_size(stage).await;
    Idle {
        window,
        cpu,
        sched,
        bookmarks_per_minute: PROGRAM_WATCHES
            * if cluster {
                CLUSTER_BOOKMARKS
            } else {
                FAKE_BOOKMARKS
            },
        requests,
        rss_after,
        pv_size,
    }
}

/// The JSON size of one of the stage's PVs as the API server returns it,
/// and that of its managedFields.
async fn pv_size(stage: &Stage) -> Option<(usize, usize)> {
    let pvs: Api<PersistentVolume> = Api::all(stage.world.client().clone());
    let selector = format!("{NODE_LABEL}={}", node_label_value(&stage.node));
    let list = pvs
        .list(&ListParams::default().labels(&selector).limit(1))
        .await
        .ok()?;
    let pv = list.items.first()?;
    let bytes = serde_json::to_vec(pv).ok()?.len();
    let managed = pv
        .metadata
        .managed_fields
        .as_ref()
        .map_or(0, |m| serde_json::to_vec(m).map_or(0, |v| v.len()));
    Some((bytes, managed))
}

/// The median of one measure over the runs, and its range.
pub(crate) fn median_of(runs: &[StartUp], measure: impl Fn(&StartUp) -> f64) -> (f64, f64, f64) {
    let mut values: Vec<f64> = runs.iter().map(measure).collect();
    values.sort_by(f64::total_cmp);
    (
        values[values.len() / 2],
        values[0],
        values[values.len() - 1],
    )
}
