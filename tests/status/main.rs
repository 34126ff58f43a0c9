//! `local-pv-provisioner status` (and `kubectl local-pv`): the real binary
//! against the fake API server, through a kubeconfig, with a fixed clock
//! (`--now`). A small cluster is written straight into the fake's store
//! ([`cluster::Cluster`]) and the output is compared with the golden files
//! under `tests/status/golden/`: the table, `-o wide`, `-o json` and
//! `--node`. Run with `UPDATE_GOLDEN=1` to rewrite them after a deliberate
//! change, and read the diff.
//!
//! The cluster has its LocalDisks (the error devices are read from them);
//! one test runs against a server without the CRD, where they come from
//! the controller's Events.
//!
//! Also: the one line for an unreachable cluster and for a list RBAC
//! forbids, the one line for an unknown node, and the program invoked as
//! the kubectl plugin `kubectl-local_pv`.

#[path = "../support/mod.rs"]
mod support;

mod cluster;

use std::path::{Path, PathBuf};
use std::process::Output;

use cluster::{Cluster, LONG_NODE};
use support::fake_api::FaultRule;
use tempfile::TempDir;

const BINARY: &str = env!("CARGO_BIN_EXE_local-pv-provisioner");

/// Runs `program` with `args` against `cluster`'s kubeconfig and clock.
async fn run_as(program: &Path, cluster: &Cluster, args: &[&str]) -> Output {
    let dir = TempDir::new().expect("temporary directory");
    let kubeconfig = cluster.server.write_kubeconfig(dir.path());
    tokio::process::Command::new(program)
        .args(args)
        .arg(cluster.now_flag())
        .env_clear()
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", dir.path())
        .output()
        .await
        .expect("run local-pv-provisioner")
}

/// `local-pv-provisioner status ARGS`; asserts it succeeded and returns
/// its standard output, normalized.
async fn status(cluster: &Cluster, args: &[&str]) -> String {
    let mut all = vec!["status"];
    all.extend(args);
    succeeded(cluster, run_as(Path::new(BINARY), cluster, &all).await)
}

fn succeeded(cluster: &Cluster, output: Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "status failed: {stderr}");
    assert!(stderr.is_empty(), "nothing on standard error: {stderr}");
    cluster.normalize(&String::from_utf8(output.stdout).expect("UTF-8 output"))
}

/// The one line on standard error of a run that must fail with status 1.
fn failed(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
    let stderr = String::from_utf8(output.stderr.clone()).expect("UTF-8");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr.trim_end().to_string()
}

/// Compares `actual` with `tests/status/golden/NAME`, or writes it there
/// with `UPDATE_GOLDEN` set.
fn golden(name: &str, actual: &str) {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "status",
        "golden",
        name,
    ]
    .iter()
    .collect();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert!(
        actual == expected,
        "output differs from {} (UPDATE_GOLDEN=1 rewrites it):\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_shows_every_node_with_something_to_show() {
    let cluster = Cluster::build().await;
    golden("table.txt", &status(&cluster, &[]).await);
}

/// Without the LocalDisk CRD, the error devices come from the
/// controller's Events, and the output says they expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_crd_error_devices_come_from_events() {
    let cluster = Cluster::build_without_crd().await;
    golden("table-events.txt", &status(&cluster, &[]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_adds_class_mode_device_identity_and_claim_history() {
    let cluster = Cluster::build().await;
    golden("wide.txt", &status(&cluster, &["-o", "wide"]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_is_one_stable_document() {
    let cluster = Cluster::build().await;
    let json = status(&cluster, &["-o", "json"]).await;
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(parsed["nodes"].as_array().map(Vec::len), Some(5));
    golden("status.json", &json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_narrows_to_one_node_even_behind_a_hashed_label() {
    let cluster = Cluster::build().await;
    golden("node1.txt", &status(&cluster, &["--node", "node1"]).await);
    golden(
        "long-node.txt",
        &status(&cluster, &["--node", LONG_NODE]).await,
    );
    let output = run_as(
        Path::new(BINARY),
        &cluster,
        &["status", "--node", "nowhere"],
    )
    .await;
    assert_eq!(
        failed(&output),
        "error: node \"nowhere\" not found, and no PersistentVolume or Event of local-pv-provisioner names it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_a_kubectl_plugin_it_is_status() {
    let cluster = Cluster::build().await;
    let dir = TempDir::new().expect("temporary directory");
    let plugin = dir.path().join("kubectl-local_pv");
    std::os::unix::fs::symlink(BINARY, &plugin).expect("symlink the plugin");
    let output = run_as(&plugin, &cluster, &["--node", "node1"]).await;
    golden("node1.txt", &succeeded(&cluster, output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_one_line() {
    let mut cluster = Cluster::build().await;
    let url = cluster.server.url();
    cluster.server.stop().await;
    let output = run_as(Path::new(BINARY), &cluster, &["status"]).await;
    assert_eq!(
        failed(&output),
        format!(
            "error: cannot reach the Kubernetes API server at {url}: Connection refused (os error 111)"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_rbac_forbids_is_one_line_naming_resource_and_permission() {
    let cluster = Cluster::build().await;
    cluster.server.fail_requests(
        FaultRule::new(403, usize::MAX)
            .verb("list")
            .path("/apis/events.k8s.io/v1/events")
            .message("events.events.k8s.io is forbidden: User \"jane\" cannot list resource \"events\" in API group \"events.k8s.io\" at the cluster scope"),
    );
    let output = run_as(Path::new(BINARY), &cluster, &["status", "-o", "json"]).await;
    assert_eq!(
        failed(&output),
        "error: forbidden: cannot list events.events.k8s.io at the cluster scope: the credentials in use lack the \"list\" permission on \"events.events.k8s.io\" (API group \"events.k8s.io\"); the server said: events.events.k8s.io is forbidden: User \"jane\" cannot list resource \"events\" in API group \"events.k8s.io\" at the cluster scope"
    );
}
