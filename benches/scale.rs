//! Scale: one provisioner with hundreds of devices against the fake API
//! server. Measures the time to provision them all, the process's resident
//! memory, and the API requests it makes in steady state (which should be
//! none: only its open watches).
//!
//! Run as root: `cargo bench --bench scale` (prints a Markdown table).

// The test fixtures, of which the benchmark needs a part (the module allows
// the dead code that leaves).
#[path = "../tests/support/mod.rs"]
mod support;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use support::fake_api::FakeApiServer;
use support::loop_device::LoopDevice;
use support::provisioner::{ProvisionerOptions, ProvisionerProcess};
use support::world::waits::eventually;
use tempfile::TempDir;

const DEVICES: usize = 200;
const STEADY: Duration = Duration::from_secs(20);

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// [`DEVICES`] sparse loop devices of 1 MiB, linked as `disk000`,
/// `disk001`, ... in a new directory.
fn linked_devices() -> (Vec<LoopDevice>, TempDir) {
    let devices: Vec<LoopDevice> = (0..DEVICES)
        .map(|_| LoopDevice::sparse(1024 * 1024))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    for (index, device) in devices.iter().enumerate() {
        symlink(&device.path, dir.path().join(format!("disk{index:03}"))).expect("link");
    }
    (devices, dir)
}

/// The namespace, the PV spec ConfigMap over `dir` and the Node naming it.
fn create_objects(server: &FakeApiServer, dir: &Path) {
    server.create_object(
        "namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "lpp"}}),
    );
    server.create_object(
        "configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "spec", "namespace": "lpp"},
               "data": {"deviceDir": dir.to_str().unwrap(), "deviceNameFilter": "^disk", "volumeMode": "Block"}}),
    );
    server.create_object(
        "nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "scale",
               "annotations": {"local-pv-provisioner.cybozu.io/pv-spec-configmap": "spec"}}}),
    );
}

/// The provisioner for node `scale`, polling every second.
fn start_provisioner(server: &FakeApiServer, work: &Path) -> ProvisionerProcess {
    ProvisionerProcess::start(ProvisionerOptions {
        kubeconfig: &server.write_kubeconfig(work),
        node: "scale",
        namespace: "lpp",
        env: vec![
            ("LP_POLLING_INTERVAL", "1s".into()),
            ("LP_DEVELOPMENT", "false".into()),
            ("RUST_LOG", "warn,local_pv_provisioner=info".into()),
        ],
        log_dir: work,
    })
}

/// The peak resident memory of `pid`, sampled every 500 ms over [`STEADY`].
async fn peak_rss_in_steady_state(pid: u32) -> u64 {
    let mut peak = rss_kib(pid);
    let steady_start = Instant::now();
    while steady_start.elapsed() < STEADY {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak = peak.max(rss_kib(pid));
    }
    peak
}

/// The Markdown table, and the first few unexpected requests.
fn print_table(provisioned: Duration, peak: u64, steady_requests: &[String], watches: usize) {
    println!("One provisioner, {DEVICES} loop devices, fake API server, polling every 1 s");
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| time from start to all {DEVICES} PVs created | {:.2} s |",
        provisioned.as_secs_f64()
    );
    println!(
        "| peak resident memory over {} s of steady state (polling every 1 s) | {:.1} MiB |",
        STEADY.as_secs(),
        peak as f64 / 1024.0
    );
    println!(
        "| API requests in steady state other than watches | {} |",
        steady_requests.len()
    );
    println!("| watch requests (re)opened in steady state | {watches} |");
    for request in steady_requests.iter().take(5) {
        println!("  unexpected request: {request}");
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (_devices, dir) = linked_devices();
    let server = FakeApiServer::start().await;
    let work = tempfile::tempdir().expect("tempdir");
    create_objects(&server, dir.path());
    let started = Instant::now();
    let process = start_provisioner(&server, work.path());
    eventually("every PV", Duration::from_secs(120), || async {
        (server.objects("persistentvolumes").len() == DEVICES).then_some(())
    })
    .await;
    let provisioned = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.clear_requests();
    let pid = process.pid().expect("running");
    let peak = peak_rss_in_steady_state(pid).await;
    let steady_requests: Vec<String> = server
        .requests()
        .iter()
        .filter(|r| r.verb != "watch")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    let watches = server
        .requests()
        .iter()
        .filter(|r| r.verb == "watch")
        .count();
    print_table(provisioned, peak, &steady_requests, watches);
}
