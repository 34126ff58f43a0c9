//! The rows of the cold-start section: start-up time, CPU and memory (the
//! median of the runs, with their range), then the idle window's CPU,
//! wake-ups and API requests.

use std::time::Duration;

use super::{Idle, PROGRAM_WATCHES, StartUp, median_of};
use crate::table::{Table, Verdict};

fn per_minute(count: f64, window: Duration) -> f64 {
    count * 60.0 / window.as_secs_f64()
}

fn judge(target: Option<f64>, value: f64) -> Verdict {
    target.map_or(Verdict::Info, |t| Verdict::of(value <= t))
}

fn text(target: Option<f64>, unit: &str) -> String {
    target.map_or("–".into(), |t| format!("≤ {t} {unit}"))
}

/// `1.23 s (runs 1.10–1.40)`, or without the range for one run.
fn with_range((median, low, high): (f64, f64, f64), digits: usize, unit: &str) -> String {
    if low == high {
        format!("{median:.digits$} {unit}")
    } else {
        format!("{median:.digits$} {unit} (runs {low:.digits$}–{high:.digits$})")
    }
}

/// Issue 19's targets and its real-server values for `n` devices.
struct Issue19 {
    /// Start → all PVs, s; start → first PV, s.
    all: Option<f64>,
    first: Option<f64>,
    /// CPU time in the window, CPU-s; RSS at its end, MiB; idle RSS, MiB.
    cpu: Option<f64>,
    rss: Option<f64>,
    idle_rss: Option<f64>,
    /// The real server's start → all PVs (first PV), CPU in the window,
    /// RSS then (peak), idle RSS.
    real_start: &'static str,
    real_cpu: &'static str,
    real_rss: &'static str,
    real_idle_rss: &'static str,
}

fn issue19(n: usize) -> Issue19 {
    match n {
        200 => Issue19 {
            all: Some(0.5),
            first: Some(0.3),
            cpu: None,
            rss: None,
            idle_rss: Some(15.0),
            real_start: "0.96 s (first PV 0.93 s)",
            real_cpu: "–",
            real_rss: "–",
            real_idle_rss: "18.4 MiB",
        },
        1000 => Issue19 {
            all: Some(2.0),
            first: None,
            cpu: Some(2.0),
            rss: Some(30.0),
            idle_rss: None,
            real_start: "3.28 s (first PV 1.19 s)",
            real_cpu: "5.45 CPU-s",
            real_rss: "42.8 MiB (peak 51.4)",
            real_idle_rss: "–",
        },
        _ => Issue19 {
            all: None,
            first: None,
            cpu: None,
            rss: None,
            idle_rss: None,
            real_start: "–",
            real_cpu: "–",
            real_rss: "–",
            real_idle_rss: "–",
        },
    }
}

/// Start-up time, the CPU and memory of the window after the start, the
/// CPU until settled and the idle RSS of `n` devices.
pub fn start_up(table: &mut Table, n: usize, runs: &[StartUp], window: Duration) {
    // Issue 9's targets.
    let (start_target, rss_target) = match n {
        200 => (Some(1.0), Some(15.0)),
        1000 => (Some(5.0), Some(30.0)),
        _ => (None, None),
    };
    let strict = issue19(n);
    let window = window.as_secs();
    let created = median_of(runs, |r| r.created.as_secs_f64());
    let first = median_of(runs, |r| r.first.as_secs_f64());
    let start_text = match (strict.all, strict.first) {
        (Some(all), Some(first)) => format!("≤ {all} s, first PV ≤ {first} s (issue 19)"),
        (Some(all), None) => format!("≤ {all} s (issue 19)"),
        _ => "–".into(),
    };
    let start_text = match start_target {
        Some(t) => format!("{start_text}; issue 9: ≤ {t} s"),
        None => start_text,
    };
    let start_met = strict.all.or(start_target).is_none_or(|t| created.0 <= t)
        && strict.first.is_none_or(|t| first.0 <= t);
    table.row(
        format!("cold start, {n} devices: process start → all {n} PVs created (first PV)"),
        format!(
            "{}; first PV {}",
            with_range(created, 2, "s"),
            with_range(first, 2, "s")
        ),
        start_text,
        format!(
            "→ all Available: {}",
            with_range(median_of(runs, |r| r.available.as_secs_f64()), 2, "s")
        ),
        if strict.all.is_none() && start_target.is_none() {
            Verdict::Info
        } else {
            Verdict::of(start_met)
        },
    );
    table.real(strict.real_start);
    if runs.iter().all(|r| r.disks.is_some()) {
        let disks = median_of(runs, |r| r.disks.map_or(0.0, |d| d.as_secs_f64()));
        table.row(
            format!("cold start, {n} devices: process start → all {n} LocalDisks written"),
            with_range(disks, 2, "s"),
            "its own row (issue 18); the PVs above must not slow down",
            "each LocalDisk created and its status patched, by the inventory writer beside the provisioning loop".to_string(),
            Verdict::Info,
        );
    }
    let cpu_window = median_of(runs, |r| r.cpu_window);
    table.row(
        format!("CPU time in the {window} s after the start, {n} devices"),
        with_range(cpu_window, 2, "CPU-s"),
        text(strict.cpu, "CPU-s"),
        format!(
            "start → all created: {:.2} CPU-s; → all Available: {:.2} CPU-s",
            median_of(runs, |r| r.cpu_created).0,
            median_of(runs, |r| r.cpu_available).0,
        ),
        judge(strict.cpu, cpu_window.0),
    );
    table.real(strict.real_cpu);
    let rss_window = median_of(runs, |r| r.rss_window);
    table.row(
        format!("RSS {window} s after the start, {n} devices (peak until then)"),
        format!(
            "{}; peak {}",
            with_range(rss_window, 1, "MiB"),
            with_range(median_of(runs, |r| r.peak_window), 1, "MiB")
        ),
        text(strict.rss, "MiB"),
        "RSS from `/proc/<pid>/status` (`VmRSS`, peak `VmHWM`)".to_string(),
        judge(strict.rss, rss_window.0),
    );
    table.real(strict.real_rss);
    let rss = median_of(runs, |r| r.rss);
    let idle_target = strict.idle_rss.or(rss_target);
    table.row(
        format!("idle RSS with {n} PVs (after start-up, all Available, once quiet)"),
        with_range(rss, 1, "MiB"),
        match (strict.idle_rss, rss_target) {
            (Some(t), _) => format!("≤ {t} MiB (issues 9 and 19)"),
            (None, Some(t)) => format!("≤ {t} MiB (issue 9)"),
            (None, None) => "–".into(),
        },
        format!(
            "heap and stacks (RssAnon) {:.1} MiB + binary and libraries (RssFile) {:.1} MiB; peak during start-up (VmHWM) {:.1} MiB",
            median_of(runs, |r| r.rss_anon).0,
            median_of(runs, |r| r.rss_file).0,
            median_of(runs, |r| r.peak_rss).0,
        ),
        judge(idle_target, rss.0),
    );
    table.real(strict.real_idle_rss);
    let cpu_target = (n == 1000).then_some(2.0);
    let quiet = median_of(runs, |r| r.cpu_quiet);
    table.row(
        format!("CPU time, start → all {n} PVs Available and the process quiet"),
        with_range(quiet, 2, "CPU-s"),
        cpu_target.map_or("–".into(), |t| format!("≤ {t} CPU-s (issue 9)")),
        format!(
            "start → all Available: {:.2} CPU-s; after the last PV was created: {:.2} CPU-s",
            median_of(runs, |r| r.cpu_available).0,
            median_of(runs, |r| r.cpu_quiet - r.cpu_created).0,
        ),
        judge(cpu_target, quiet.0),
    );
}

/// Start-up time of `n` devices split across `classes` device classes
/// (issue 16: within the single-class target, all PVs in ≤ 1 s on the fake).
pub fn classes(table: &mut Table, n: usize, classes: usize, runs: &[StartUp]) {
    let target = Some(1.0);
    let created = median_of(runs, |r| r.created.as_secs_f64());
    table.row(
        format!("cold start, {n} devices in {classes} device classes: process start → all {n} PVs created"),
        with_range(created, 2, "s"),
        text(target, "s"),
        format!(
            "→ all Available: {}; CPU to quiet {}; RSS {}",
            with_range(median_of(runs, |r| r.available.as_secs_f64()), 2, "s"),
            with_range(median_of(runs, |r| r.cpu_quiet), 2, "CPU-s"),
            with_range(median_of(runs, |r| r.rss), 1, "MiB"),
        ),
        judge(target, created.0),
    );
}

/// CPU, wake-ups and API requests over the idle window with `n` PVs.
pub fn idle(table: &mut Table, n: usize, idle: &Idle) {
    let wakeups = per_minute(idle.sched.slices as f64, idle.window);
    table.row(
        format!("idle CPU with {n} PVs, nothing changing"),
        format!(
            "{:.1} ms on a CPU per minute, {wakeups:.0} wake-ups per minute (`/proc/<pid>/stat`: {:.0} ticks of 10 ms in {:.0} s)",
            per_minute(idle.sched.run_ns as f64 / 1e6, idle.window),
            idle.cpu * 100.0,
            idle.window.as_secs_f64()
        ),
        "0 (nothing but reading the watches' bookmarks)",
        format!(
            "bookmarks sent to the program's {PROGRAM_WATCHES} watches: {:.0} per minute (the fake server: one a second per watch; kube-apiserver: one a minute); met when wake-ups ≤ 1.5 × that; RSS at the end {:.1} MiB",
            idle.bookmarks_per_minute, idle.rss_after
        ),
        Verdict::of(wakeups <= 1.5 * idle.bookmarks_per_minute),
    );
    let (value, reference, verdict) = match &idle.requests {
        Some((others, watches, examples)) => (
            format!("{:.1} per minute", per_minute(*others as f64, idle.window)),
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
