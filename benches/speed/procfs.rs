//! What `/proc` says about the provisioner process (CPU time from
//! `/proc/<pid>/stat`, resident memory from `/proc/<pid>/status`), and the
//! statistics of samples (median, p99).

use std::collections::HashMap;
use std::time::Duration;

/// CPU time (user + system, every thread) the process has used so far, from
/// fields 14 and 15 of `/proc/<pid>/stat` (clock ticks, 10 ms on Linux).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("process stat");
    // The command name (field 2) is in parentheses and may hold spaces.
    let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // `after_name` starts at field 3, so field N is at index N - 3.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / per_second
}

/// A field of `/proc/<pid>/status` in kB, as MiB (`VmRSS`, `VmHWM`, ...).
fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    kib as f64 / 1024.0
}

/// Resident memory now (`VmRSS`), MiB.
pub fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS")
}

/// Resident anonymous memory (heap, stacks: `RssAnon`) and resident file
/// pages (the binary, libraries: `RssFile`), MiB.
pub fn rss_split_mib(pid: u32) -> (f64, f64) {
    (status_mib(pid, "RssAnon"), status_mib(pid, "RssFile"))
}

/// Peak resident memory so far (`VmHWM`), MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmHWM")
}

/// Median and p99 (nearest rank: with fewer than 100 samples, the largest)
/// of some durations.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    /// The median.
    pub median: Duration,
    /// The 99th percentile.
    pub p99: Duration,
    /// The smallest and the largest.
    pub min: Duration,
    pub max: Duration,
    /// How many samples.
    pub count: usize,
}

impl Spread {
    /// The spread of `samples` (at least one).
    pub fn of(samples: &[Duration]) -> Spread {
        assert!(!samples.is_empty(), "no samples");
        let mut sorted = samples.to_vec();
        sorted.sort();
        let rank = (sorted.len() * 99).div_ceil(100).max(1);
        Spread {
            median: sorted[sorted.len() / 2],
            p99: sorted[rank - 1],
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            count: sorted.len(),
        }
    }

    /// `median 12.3 ms, p99 45.6 ms (n = 50)`.
    pub fn text(&self) -> String {
        format!(
            "median {}, p99 {} (n = {})",
            millis(self.median),
            millis(self.p99),
            self.count
        )
    }

    /// `median 12.3 ms, 10.1–45.6 ms, p99 45.6 ms (n = 50)`: with the range.
    pub fn text_with_range(&self) -> String {
        let range = if self.max < Duration::from_secs(10) {
            format!("{:.1}–{}", self.min.as_secs_f64() * 1e3, millis(self.max))
        } else {
            format!("{}–{}", millis(self.min), millis(self.max))
        };
        format!(
            "median {}, {range}, p99 {} (n = {})",
            millis(self.median),
            millis(self.p99),
            self.count
        )
    }
}

/// A duration in ms with one decimal, or in s above 10 s.
pub fn millis(d: Duration) -> String {
    if d >= Duration::from_secs(10) {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}

/// Waits until the process has used no CPU for `quiet` (checked every
/// 100 ms), at most `limit`; returns its CPU time then.
pub async fn wait_until_quiet(pid: u32, quiet: Duration, limit: Duration) -> f64 {
    let started = std::time::Instant::now();
    let mut last = cpu_seconds(pid);
    let mut still_since = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = cpu_seconds(pid);
        if now != last {
            last = now;
            still_since = std::time::Instant::now();
        } else if still_since.elapsed() >= quiet || started.elapsed() >= limit {
            return now;
        }
    }
}

/// The scheduler's account of the process, per thread
/// (`/proc/<pid>/task/*/schedstat`): time on a CPU, with nanosecond
/// resolution, and how many times each thread was put on a CPU.
#[derive(Debug, Clone, Default)]
pub struct Sched {
    /// Per thread id: time run (ns), times scheduled in.
    threads: HashMap<String, (u64, u64)>,
}

/// Time on a CPU and wake-ups over a window.
#[derive(Debug, Clone, Copy, Default)]
pub struct SchedDelta {
    /// Time run, ns.
    pub run_ns: u64,
    /// Times scheduled in.
    pub slices: u64,
}

impl Sched {
    /// The account now.
    pub fn of(pid: u32) -> Sched {
        let mut threads = HashMap::new();
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("process tasks");
        for task in tasks.flatten() {
            let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
                continue;
            };
            let fields: Vec<u64> = text
                .split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect();
            if let [run, _wait, slices] = fields[..] {
                let tid = task.file_name().to_string_lossy().into_owned();
                threads.insert(tid, (run, slices));
            }
        }
        Sched { threads }
    }

    /// What the threads did between `earlier` and `self`, thread by
    /// thread (a blocking-pool thread that ended meanwhile would otherwise
    /// take its whole past with it; what it did in the window is lost).
    pub fn since(&self, earlier: &Sched) -> SchedDelta {
        let mut delta = SchedDelta::default();
        for (tid, (run, slices)) in &self.threads {
            let (run0, slices0) = earlier.threads.get(tid).copied().unwrap_or_default();
            delta.run_ns += run.saturating_sub(run0);
            delta.slices += slices.saturating_sub(slices0);
        }
        delta
    }
}
