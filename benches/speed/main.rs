//! `cargo bench --bench speed`: the speed of the real binary (the release
//! build) against the fake API server, or against a real cluster, printed as
//! one Markdown table with each measure, its target (issue 9, or issue 19
//! where it set a stricter one), the value measured on a real
//! kube-apiserver and kube-controller-manager v1.36 where issue 19 gives
//! one, and its reference. Against the fake API server the benchmark runs
//! in churn mode by default (see `LPP_BENCH_CHURN`). Run as root (loop
//! devices). Sections:
//!
//! - `latency`: a new device → its PV, with the inotify watch of `deviceDir`
//!   and with polling only (`LP_WATCH_DEVICE_DIR=false`);
//! - `release`: a claim deleted → the device wiped → a fresh PV, on a 1 GiB
//!   loop device, with the controller-manager's share shown apart;
//! - `wipe`: the program's guarded wipe against `dd bs=1M oflag=direct
//!   conv=fsync` writing the same regions of the same device, for three
//!   region sets (1 GiB, 12 GiB and 1100 GiB sparse loop devices);
//! - `cold`: cold start with 200 and with 1000 devices (1000 distinct loop
//!   devices: the program refuses a second entry for one device): start →
//!   first PV and → all PVs, the CPU and RSS of the 30 s after the start,
//!   then idle RSS, CPU and API requests, and the CPU the PVs cost until
//!   they have settled `Available`;
//! - `full`: the full wipe (`wipeMode: Full`) of a 2 GiB loop device against
//!   `blkdiscard -z` and `dd if=/dev/zero bs=4M oflag=direct` on the same
//!   device, and a full wipe under `wipeBandwidth` against its limit.
//!
//! Options (environment variables):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LPP_BENCH_SECTIONS` | `latency,release,wipe,cold,full` | sections to run |
//! | `LPP_BENCH_LATENCY_MS` | `0` | latency the fake API server adds to every request (ms) |
//! | `LPP_BENCH_CHURN` | `1` | churn mode of the fake API server: PV phases one PV at a time at kube-controller-manager's pace (20 a second, bursts of 30) and managedFields on every object, as on a real server; `0`: the fake before issue 19 (phases in batches every 50 ms, no managedFields) |
//! | `LPP_BENCH_SAMPLES` | `50` | samples of each latency measure |
//! | `LPP_BENCH_POLL_INTERVAL` | `1s` | `LP_POLLING_INTERVAL` of the polling-only run |
//! | `LPP_BENCH_WIPE_ROUNDS` | `15` | rounds of wipe and `dd` (back to back) per region set |
//! | `LPP_BENCH_FULL_ROUNDS` | `3` | rounds of the full wipe, `blkdiscard -z` and `dd` per backing |
//! | `LPP_BENCH_COLD_DEVICES` | `200,1000` | device counts of the cold starts |
//! | `LPP_BENCH_COLD_RUNS` | `3` | cold starts per count (medians reported) |
//! | `LPP_BENCH_COLD_WINDOW_SECS` | `30` | window after each cold start over which CPU and RSS are read (s; issue 19 measured 30 s) |
//! | `LPP_PROGRAM` | this build's binary | the program to start instead, for example the container image's static musl build |
//! | `LPP_BENCH_IDLE_SECS` | `30` | length of each idle window (s) |
//! | `KUBECONFIG` | (unset) | run against this cluster instead of the fake API server |
//! | `LPP_BENCH_ALLOW_FOREIGN_NODES` | (unset) | `1`: run on a cluster that has Nodes of its own |
//! | `LPP_BENCH_SELF_CLUSTER` | (unset) | `1`: check the cluster mode without a cluster: a fake API server in this process stands in for one, reached only through its kubeconfig |
//!
//! Against a cluster, the controller-manager is the real one; every object
//! the benchmark makes is named `lpp-e2e-<random>`-something and labelled,
//! its Nodes are deleted while their provisioner still runs (so their PVs
//! are released) and everything is removed at the end, also after a
//! failure (the test world of `tests/support/world`); API requests cannot
//! be counted there (the program exports no request counter) and show as
//! `n/a`.

// The test fixtures, of which the benchmark uses a part.
#[path = "../../tests/support/mod.rs"]
mod support;

mod cold;
mod devices;
mod full_wipe;
mod latency;
mod options;
mod procfs;
mod release;
mod stage;
mod table;
mod timeline;
mod wipe;

use options::{Options, Section};
use table::Table;

fn main() {
    let mut options = Options::from_env();
    // Self-check of the cluster mode: a fake API server in this process,
    // reached like a cluster through a kubeconfig written before it starts.
    let stand_in = options.self_cluster.then(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        options.kubeconfig = Some(dir.path().join("kubeconfig").display().to_string());
        dir
    });
    options.export_for_world();
    support::loop_device::require_root();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let table = runtime.block_on(async {
        let _server = match &stand_in {
            Some(dir) => Some(stand_in_cluster(dir.path(), &options).await),
            None => None,
        };
        run(&options).await
    });
    println!();
    println!("{}", options.describe());
    println!();
    table.print();
}

/// The fake API server standing in for a cluster (its controller-manager
/// emulation and PV binder on, the churn mode as asked; no added latency),
/// its kubeconfig written into `dir`.
async fn stand_in_cluster(
    dir: &std::path::Path,
    options: &Options,
) -> support::fake_api::FakeApiServer {
    let server = support::fake_api::FakeApiServer::start().await;
    stage::configure_fake(&server, options);
    server.set_latency(std::time::Duration::ZERO);
    server.set_pvc_binding(true);
    server.write_kubeconfig(dir);
    server
}

/// Runs the chosen sections in order and collects their rows.
async fn run(options: &Options) -> Table {
    let mut table = Table::default();
    if options.runs(Section::Latency) {
        latency::run(options, &mut table).await;
    }
    if options.runs(Section::Release) {
        release::run(options, &mut table).await;
    }
    if options.runs(Section::Wipe) {
        wipe::run(options, &mut table);
    }
    if options.runs(Section::Cold) {
        cold::run(options, &mut table).await;
    }
    if options.runs(Section::Full) {
        full_wipe::run(options, &mut table);
    }
    table
}
