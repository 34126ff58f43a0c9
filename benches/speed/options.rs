//! The benchmark's options, read from environment variables (documented at
//! the top of `main.rs` and in `BENCH.md`), and the one line describing a
//! run (backend, latency, machine) printed above the table.

use std::time::Duration;

/// One part of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// New device → PV, inotify and polling only.
    Latency,
    /// Claim deleted → fresh PV.
    Release,
    /// Wipe against `dd`.
    Wipe,
    /// Cold starts, idle cost, settling CPU.
    Cold,
    /// The full wipe against `blkdiscard -z` and `dd`, and its bandwidth limit.
    Full,
}

impl Section {
    fn parse(name: &str) -> Section {
        match name.trim() {
            "latency" => Section::Latency,
            "release" => Section::Release,
            "wipe" => Section::Wipe,
            "cold" => Section::Cold,
            "full" => Section::Full,
            other => panic!(
                "LPP_BENCH_SECTIONS: unknown section {other:?} (latency, release, wipe, cold, full)"
            ),
        }
    }
}

/// Everything a run is told.
#[derive(Debug, Clone)]
pub struct Options {
    /// Sections to run.
    pub sections: Vec<Section>,
    /// Latency the fake API server adds to every request.
    pub latency: Duration,
    /// Samples per latency measure.
    pub samples: usize,
    /// `LP_POLLING_INTERVAL` of the polling-only run, as given.
    pub poll_interval: String,
    /// The same, parsed.
    pub poll: Duration,
    /// Rounds of wipe and `dd` per region set.
    pub wipe_rounds: usize,
    /// Rounds of the full wipe, `blkdiscard -z` and `dd` per backing.
    pub full_rounds: usize,
    /// Device counts of the cold starts.
    pub cold_devices: Vec<usize>,
    /// Cold starts per count.
    pub cold_runs: usize,
    /// Length of each idle window.
    pub idle: Duration,
    /// The cluster's kubeconfig; `None`: the fake API server.
    pub kubeconfig: Option<String>,
    /// Whether a cluster with Nodes of its own is acceptable.
    pub allow_foreign_nodes: bool,
    /// Whether a fake API server in this process stands in for a cluster.
    pub self_cluster: bool,
    /// Churn mode (the default): the fake API server settles PV phases one
    /// PV at a time at kube-controller-manager's pace and every object
    /// carries managedFields, as a real server does; off: the fake before
    /// issue 19 (phases in batches every 50 ms, no managedFields).
    pub churn: bool,
    /// The window after a cold start over which CPU and RSS are read.
    pub cold_window: Duration,
    /// The program measured (`LPP_PROGRAM`, read by the test support when
    /// it starts the process); `None`: this build's binary.
    pub program: Option<String>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

fn number<T: std::str::FromStr>(name: &str, default: T) -> T {
    match var(name) {
        Some(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}: not a number: {text:?}")),
        None => default,
    }
}

/// A switch: `1`/`true`/`on`/`yes` or `0`/`false`/`off`/`no`.
fn switch(name: &str, default: bool) -> bool {
    match var(name).map(|text| text.trim().to_ascii_lowercase()) {
        None => default,
        Some(text) if ["1", "true", "on", "yes"].contains(&text.as_str()) => true,
        Some(text) if ["0", "false", "off", "no"].contains(&text.as_str()) => false,
        Some(text) => panic!("{name}: not a switch (1/0, true/false, on/off): {text:?}"),
    }
}

/// `500ms`, `1s`, `2m` as a duration.
pub fn parse_duration(text: &str) -> Duration {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let value: u64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("not a duration: {text:?}"));
    match unit {
        "ms" => Duration::from_millis(value),
        "s" | "" => Duration::from_secs(value),
        "m" => Duration::from_secs(value * 60),
        _ => panic!("not a duration (ms, s, m): {text:?}"),
    }
}

impl Options {
    /// The options of this run.
    pub fn from_env() -> Options {
        let sections = var("LPP_BENCH_SECTIONS")
            .unwrap_or_else(|| "latency,release,wipe,cold,full".into())
            .split(',')
            .filter(|name| !name.trim().is_empty())
            .map(Section::parse)
            .collect();
        let poll_interval = var("LPP_BENCH_POLL_INTERVAL").unwrap_or_else(|| "1s".into());
        let cold_devices = var("LPP_BENCH_COLD_DEVICES")
            .unwrap_or_else(|| "200,1000".into())
            .split(',')
            .map(|count| {
                count
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("LPP_BENCH_COLD_DEVICES: not a count: {count:?}"))
            })
            .collect();
        let samples: usize = number("LPP_BENCH_SAMPLES", 50);
        assert!(samples > 0, "LPP_BENCH_SAMPLES must be at least 1");
        Options {
            sections,
            latency: Duration::from_millis(number("LPP_BENCH_LATENCY_MS", 0)),
            samples,
            poll: parse_duration(&poll_interval),
            poll_interval,
            wipe_rounds: number("LPP_BENCH_WIPE_ROUNDS", 15).max(1),
            full_rounds: number("LPP_BENCH_FULL_ROUNDS", 3).max(1),
            cold_devices,
            cold_runs: number("LPP_BENCH_COLD_RUNS", 3).max(1),
            idle: Duration::from_secs(number("LPP_BENCH_IDLE_SECS", 30).max(1)),
            kubeconfig: var("KUBECONFIG"),
            allow_foreign_nodes: var("LPP_BENCH_ALLOW_FOREIGN_NODES").as_deref() == Some("1"),
            self_cluster: var("LPP_BENCH_SELF_CLUSTER").as_deref() == Some("1"),
            churn: switch("LPP_BENCH_CHURN", true),
            cold_window: Duration::from_secs(number("LPP_BENCH_COLD_WINDOW_SECS", 30).max(1)),
            program: var("LPP_PROGRAM"),
        }
    }

    /// Whether `section` runs.
    pub fn runs(&self, section: Section) -> bool {
        self.sections.contains(&section)
    }

    /// What the fake API server's churn mode is, in words.
    pub fn churn_text(&self) -> &'static str {
        if self.churn {
            "churn on (PV phases one at a time at kube-controller-manager's 20 a second, bursts of 30; managedFields on every object)"
        } else {
            "churn off (PV phases in batches every 50 ms; no managedFields but the Lease's)"
        }
    }

    /// Whether the run is against a real cluster.
    pub fn on_cluster(&self) -> bool {
        self.kubeconfig.is_some()
    }

    /// Hands the backend choice to the test world, which reads its own
    /// variables (`LPP_E2E_KUBECONFIG`, `LPP_E2E_ALLOW_FOREIGN_NODES`).
    /// Called before any thread starts.
    pub fn export_for_world(&self) {
        // SAFETY: called first thing in `main`, before the runtime or any
        // other thread exists.
        unsafe {
            match &self.kubeconfig {
                Some(path) => std::env::set_var("LPP_E2E_KUBECONFIG", path),
                None => std::env::remove_var("LPP_E2E_KUBECONFIG"),
            }
            if self.allow_foreign_nodes {
                std::env::set_var("LPP_E2E_ALLOW_FOREIGN_NODES", "1");
            } else {
                std::env::remove_var("LPP_E2E_ALLOW_FOREIGN_NODES");
            }
        }
    }

    /// One line: backend, latency, samples, machine.
    pub fn describe(&self) -> String {
        let backend = match &self.kubeconfig {
            Some(_) if self.self_cluster => {
                "cluster mode against a stand-in (a fake API server in this process)".to_string()
            }
            Some(path) => format!("real cluster ({path})"),
            None => format!(
                "fake API server, {} ms added to every request, {}",
                self.latency.as_millis(),
                self.churn_text()
            ),
        };
        let program = self
            .program
            .as_deref()
            .map_or("this build's binary".to_string(), |path| {
                format!("`{path}`")
            });
        format!(
            "Backend: {backend}; program: {program}; {} samples per latency measure, {} wipe rounds; machine: {}",
            self.samples,
            self.wipe_rounds,
            machine()
        )
    }
}

/// Cores, memory and kernel of this machine.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores, {:.0} GiB, Linux {}",
        memory_kib as f64 / 1024.0 / 1024.0,
        kernel.trim()
    )
}
