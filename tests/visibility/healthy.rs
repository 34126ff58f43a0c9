//! A healthy node in use (a volume claimed and mounted by a pod) has, on its
//! live `/metrics` page (and node-cleanup's on its own), every
//! family the shipped dashboard and alert rules read, before anything has
//! failed: the labelled failure counters show their known label values at
//! 0, so panels show 0, not "No data", and `rate()` and `absent()` can tell
//! "no failures" from "not scraped".

use std::collections::BTreeSet;

use crate::clean_offer::{claim_and_wait, wait_available};
use crate::common::{create_pod, node_with};
use crate::support::promql::{expressions, metric_names, rule_expressions};
use crate::support::world::waits::{WAIT, eventually};
use crate::support::world::{QUICK_POLLING, polling};

/// The dashboard and the rules, from the repository root.
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/local-pv-provisioner/dashboards/local-pv-provisioner.json"
);
const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/config/prometheus/prometheus_rule.yaml"
);

/// Families with a series only while something is under way: a full wipe's
/// progress exists only while a full wipe runs (its alert reads it "while
/// present"). Nothing else may be missing from a healthy page.
const ONLY_WHILE_UNDER_WAY: [&str; 1] = ["local_pv_provisioner_wipe_progress_ratio"];
/// Read by the rules but not the program's: their own recording rule and
/// kube-state-metrics.
const NOT_OURS: [&str; 2] = ["node:local_pv_provisioner_volumes:count", "kube_node_info"];

/// The metric families the dashboard and the rules read (a histogram's
/// series named as its family).
fn wanted() -> BTreeSet<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let rules: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(RULES).unwrap()).unwrap();
    expressions(&dashboard)
        .into_iter()
        .chain(rule_expressions(&rules["spec"]))
        .flat_map(|(_, expr)| metric_names(&expr))
        .map(|name| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix).map(str::to_string))
                .filter(|base| base.ends_with("_seconds"))
                .unwrap_or(name)
        })
        .filter(|name| !NOT_OURS.contains(&name.as_str()))
        .filter(|name| !ONLY_WHILE_UNDER_WAY.contains(&name.as_str()))
        .collect()
}

/// The families a page has samples of.
fn families(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_node_shows_every_family_the_dashboard_and_alerts_read() {
    let node = node_with(
        "node-healthy",
        &["disk0", "disk1"],
        vec![polling(QUICK_POLLING)],
        |_| {},
    )
    .await;
    node.world
        .wait_for_pv_names(&["local-node-healthy-disk0", "local-node-healthy-disk1"])
        .await;
    // A node in use: one volume claimed and mounted by a pod on the node.
    let pv = wait_available(&node.world, "local-node-healthy-disk0").await;
    claim_and_wait(&node.world, "data", &pv).await;
    create_pod(&node.world, "app-0", "node-healthy", "data").await;
    node.wait_consumers(&[&["local-node-healthy-disk0", node.world.namespace(), "app-0"]])
        .await;
    node.process.wait_ready(true).await;
    node.process.wait_for_fresh_passes(1).await;
    let cleanup = node.world.start_node_cleanup("node-cleanup-0", vec![]);
    let cleanup_page = eventually("node-cleanup's /metrics as leader", WAIT, || async {
        let (_, page) = cleanup.get("/metrics").await?;
        page.contains("local_pv_provisioner_node_cleanup_leader 1")
            .then_some(page)
    })
    .await;
    let (_, page) = node.process.get("/metrics").await.expect("the page");
    let present: BTreeSet<String> = families(&page)
        .union(&families(&cleanup_page))
        .cloned()
        .collect();
    let wanted = wanted();
    assert!(
        wanted.len() >= 10,
        "what the dashboard and rules read: {wanted:?}"
    );
    let missing: Vec<&String> = wanted.difference(&present).collect();
    assert!(
        missing.is_empty(),
        "families the dashboard or alerts read, absent from a healthy page: {missing:?}\n{page}"
    );
    // Before any failure, each known label value is there at 0.
    for sample in [
        "local_pv_provisioner_wipe_failures_total{node=\"node-healthy\",reason=\"SameDevice\"} 0",
        "local_pv_provisioner_wipe_failures_total{node=\"node-healthy\",reason=\"io\"} 0",
        "local_pv_provisioner_pv_create_failures_total{node=\"node-healthy\",reason=\"unreachable\"} 0",
        "local_pv_provisioner_api_errors_total{node=\"node-healthy\",operation=\"delete_pv\"} 0",
        "local_pv_provisioner_writes_denied_total{node=\"node-healthy\",operation=\"create_pv\"} 0",
    ] {
        assert!(page.contains(sample), "{sample} on the page:\n{page}");
    }
    assert!(
        cleanup_page.contains(
            "local_pv_provisioner_node_cleanup_api_errors_total{operation=\"delete_claim\"} 0"
        ),
        "{cleanup_page}"
    );
    drop(cleanup);
    let world = {
        let crate::common::Node { process, world, .. } = node;
        drop(process);
        world
    };
    world.teardown().await;
}
