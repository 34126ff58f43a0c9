//! Cold start and idle cost. For each count (200 and 1000 by default) a
//! fresh world and Node, a device directory with that many links to
//! distinct blank loop devices (the program refuses a second entry for a
//! device, and has no switch to turn that off, so every entry is a device
//! of its own; the devices are attached once, before any measure, and the
//! attach time is reported apart), and a provisioner with the default
//! settings (inotify on, polling every 5 m). Measured: process start → the
//! last PV seen by the benchmark's watch; the CPU time the process used
//! until every PV is `Available` and until it is quiet again; its resident
//! memory then; then, over an idle window in which nothing changes, its CPU
//! time (from `/proc/<pid>/stat`, 10 ms ticks, and to the nanosecond from
//! the scheduler, with its wake-ups) and the API requests it makes besides
//! its open watches. An idle process still reads the bookmarks the API
//! server sends on its watches (the fake server one a second per watch,
//! kube-apiserver one a minute); idle CPU counts as none when the process
//! wakes no more often than those arrive.

use std::time::{Duration, Instant};

use crate::devices::{Pool, link_dir};
use crate::options::Options;
use crate::procfs::{
    Sched, SchedDelta, cpu_seconds, peak_rss_mib, rss_mib, rss_split_mib, wait_until_quiet,
};
use crate::stage::Stage;
use crate::table::{Table, Verdict};

/// Size of each device.
const DEVICE_BYTES: u64 = 4 << 20;
/// The program's open watches: its Node, its PVs, its spec ConfigMap.
const PROGRAM_WATCHES: f64 = 3.0;
/// Bookmarks per watch and minute: the fake API server sends one a second
/// (`BOOKMARK_INTERVAL` in `tests/support/fake_api/http.rs`), kube-apiserver
/// one a minute (its cacher's `defaultBookmarkFrequency`).
const FAKE_BOOKMARKS: f64 = 60.0;
const CLUSTER_BOOKMARKS: f64 = 1.0;
/// Longest wait for a cold start.
const LIMIT: Duration = Duration::from_secs(300);

/// What one cold start measured.
struct Cold {
    count: usize,
    /// Process start → last PV seen.
    created: Duration,
    /// Process start → last PV seen `Available`.
    available: Duration,
    /// CPU time from start until every PV was `Available`.
    cpu_available: f64,
    /// CPU time from start until the process was quiet.
    cpu_quiet: f64,
    /// CPU time when the last PV was seen.
    cpu_created: f64,
    /// Resident memory once quiet, and the peak so far.
    rss: f64,
    rss_split: (f64, f64),
    peak_rss: f64,
    /// Over the idle window: its length, CPU time, requests besides
    /// watches, watches (re)opened; `None` on a cluster.
    idle: Duration,
    idle_cpu: f64,
    idle_sched: SchedDelta,
    /// Bookmarks per minute the program's watches receive.
    bookmarks_per_minute: f64,
    idle_requests: Option<(usize, usize, Vec<String>)>,
    /// Resident memory after the idle window.
    rss_after_idle: f64,
}

/// Runs the section and adds its rows.
pub async fn run(options: &Options, table: &mut Table) {
    let most = options.cold_devices.iter().copied().max().unwrap_or(0);
    let pool = Pool::attach(most, DEVICE_BYTES);
    let attach = pool.attach_time;
    for &count in &options.cold_devices {
        let cold = cold_start(options, &pool, count).await;
        add_rows(table, &cold);
    }
    let detach = pool.detach();
    table.note(format!(
        "Cold starts: {most} distinct sparse loop devices of {} MiB, attached one by one with `losetup -f --show` in {:.1} s and detached in {:.1} s, outside every measure.",
        DEVICE_BYTES >> 20,
        attach.as_secs_f64(),
        detach.as_secs_f64()
    ));
}

/// One cold start with `count` devices, then its idle window.
async fn cold_start(options: &Options, pool: &Pool, count: usize) -> Cold {
    let name = format!("cold{count}");
    let dir = link_dir(&name);
    pool.link(dir.path(), "disk", count);
    let stage = Stage::open(options, &name, dir.path(), "^disk", &[]).await;
    let started = Instant::now();
    let process = stage.start(vec![]);
    let pid = process.pid().expect("running");
    let timeline = &stage.timeline;
    let created = timeline.all_live(count, None, LIMIT).await - started;
    let cpu_created = cpu_seconds(pid);
    let available = timeline.all_live(count, Some("Available"), LIMIT).await - started;
    let cpu_available = cpu_seconds(pid);
    let cpu_quiet = wait_until_quiet(pid, Duration::from_secs(2), Duration::from_secs(30)).await;
    let rss = rss_mib(pid);
    let rss_split = rss_split_mib(pid);
    let peak_rss = peak_rss_mib(pid);
    stage.clear_requests();
    eprintln!(
        "bench: {count} PVs settled; idle window of {} s begins (provisioner pid {pid})",
        options.idle.as_secs()
    );
    let idle_started = Instant::now();
    let sched = Sched::of(pid);
    let cpu_idle_start = cpu_seconds(pid);
    tokio::time::sleep(options.idle).await;
    let idle_cpu = cpu_seconds(pid) - cpu_idle_start;
    let idle_sched = Sched::of(pid).since(&sched);
    let idle = idle_started.elapsed();
    let idle_requests = stage.program_requests().map(|requests| {
        let watches = requests.iter().filter(|r| r.verb == "watch").count();
        let others: Vec<String> = requests
            .iter()
            .filter(|r| r.verb != "watch")
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        (others.len(), watches, others)
    });
    let rss_after_idle = rss_mib(pid);
    stage.close(process).await;
    Cold {
        count,
        created,
        available,
        cpu_available,
        cpu_quiet,
        cpu_created,
        rss,
        rss_split,
        peak_rss,
        idle,
        idle_cpu,
        idle_sched,
        bookmarks_per_minute: PROGRAM_WATCHES
            * if options.on_cluster() && !options.self_cluster {
                CLUSTER_BOOKMARKS
            } else {
                FAKE_BOOKMARKS
            },
        idle_requests,
        rss_after_idle,
    }
}

fn per_minute(count: f64, window: Duration) -> f64 {
    count * 60.0 / window.as_secs_f64()
}

/// The rows of one cold start.
fn add_rows(table: &mut Table, cold: &Cold) {
    let n = cold.count;
    let (start_target, rss_target) = match n {
        200 => (Some(1.0), Some(15.0)),
        1000 => (Some(5.0), Some(30.0)),
        _ => (None, None),
    };
    let judge =
        |target: Option<f64>, value: f64| target.map_or(Verdict::Info, |t| Verdict::of(value <= t));
    let text =
        |target: Option<f64>, unit: &str| target.map_or("–".into(), |t| format!("≤ {t} {unit}"));
    table.row(
        format!("cold start, {n} devices: process start → all {n} PVs created"),
        format!("{:.2} s", cold.created.as_secs_f64()),
        text(start_target, "s"),
        format!("→ all Available: {:.2} s", cold.available.as_secs_f64()),
        judge(start_target, cold.created.as_secs_f64()),
    );
    table.row(
        format!("idle RSS with {n} PVs (after start-up, once quiet)"),
        format!("{:.1} MiB", cold.rss),
        text(rss_target, "MiB"),
        format!(
            "heap and stacks (RssAnon) {:.1} MiB + binary and libraries (RssFile) {:.1} MiB; peak during start-up (VmHWM) {:.1} MiB; after the idle window {:.1} MiB",
            cold.rss_split.0, cold.rss_split.1, cold.peak_rss, cold.rss_after_idle
        ),
        judge(rss_target, cold.rss),
    );
    let cpu_target = (n == 1000).then_some(2.0);
    table.row(
        format!("CPU time, start → all {n} PVs Available (→ quiet again)"),
        format!("{:.2} s ({:.2} s)", cold.cpu_available, cold.cpu_quiet),
        text(cpu_target, "CPU-s"),
        format!(
            "of which after the last PV was created: {:.2} s until all Available, {:.2} s until quiet",
            cold.cpu_available - cold.cpu_created,
            cold.cpu_quiet - cold.cpu_created
        ),
        judge(cpu_target, cold.cpu_quiet),
    );
    let wakeups = per_minute(cold.idle_sched.slices as f64, cold.idle);
    table.row(
        format!("idle CPU with {n} PVs, nothing changing"),
        format!(
            "{:.1} ms on a CPU per minute, {wakeups:.0} wake-ups per minute (`/proc/<pid>/stat`: {:.0} ticks of 10 ms in {:.0} s)",
            per_minute(cold.idle_sched.run_ns as f64 / 1e6, cold.idle),
            cold.idle_cpu * 100.0,
            cold.idle.as_secs_f64()
        ),
        "0 (nothing but reading the watches' bookmarks)",
        format!(
            "bookmarks sent to the program's {PROGRAM_WATCHES} watches: {:.0} per minute (the fake server: one a second per watch; kube-apiserver: one a minute); met when wake-ups ≤ 1.5 × that",
            cold.bookmarks_per_minute
        ),
        Verdict::of(wakeups <= 1.5 * cold.bookmarks_per_minute),
    );
    let (value, reference, verdict) = match &cold.idle_requests {
        Some((others, watches, examples)) => (
            format!("{:.1} per minute", per_minute(*others as f64, cold.idle)),
            format!(
                "watches (re)opened in the window: {watches}{}",
                examples
                    .first()
                    .map_or(String::new(), |e| format!("; e.g. `{e}`"))
            ),
            Verdict::of(*others == 0),
        ),
        None => (
            "n/a on a cluster".to_string(),
            "the program exports no request counter; see the API server's `apiserver_request_total`"
                .to_string(),
            Verdict::Info,
        ),
    };
    table.row(
        format!("idle API requests with {n} PVs, besides the open watches"),
        value,
        "0",
        reference,
        verdict,
    );
}
