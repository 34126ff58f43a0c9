//! `promtool check metrics` (Prometheus' own linter: names, units, `_total`
//! counters, help texts) on what the program serves: a live `/metrics` page
//! fetched from the running binary after a lifecycle with a pod, a failed
//! create and a wipe (so the per-volume series and both histograms have
//! samples), and a page of the program's registry with a sample in every
//! metric family. promtool comes with Debian's `prometheus` package, which
//! `.ci/run` installs; without it these tests fail, saying so.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use local_pv_provisioner::objects::pv::LeanPv;
use local_pv_provisioner::observe::metrics::Metrics;
use local_pv_provisioner::observe::volumes::{VolumeMetrics, strip_pod};

use crate::clean_offer::{claim_and_wait, wait_available, wait_recreated};
use crate::common::*;
use crate::page::{page, wait_page};
use crate::promtool_run::{promtool, said};
use crate::support::fake_api::FaultRule;

/// Pipes `page` to `promtool check metrics`; fails with its complaints.
fn promtool_check(page: &str, what: &str) {
    let output = promtool(&["check", "metrics"], page);
    assert!(
        output.status.success(),
        "promtool check metrics complains about {what} ({}):\n{}\n--- the page ---\n{page}",
        output.status,
        said(&output),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_metrics_page_after_a_lifecycle_passes_promtool() {
    let node = "vis-prom";
    let flaky = format!("local-{node}-b");
    let setup = node_with(node, &["a", "b"], vec![], |world| {
        let once = FaultRule::new(500, 1).verb("create").object_name(&flaky);
        world.server().fail_requests(once);
    })
    .await;
    let world = &setup.world;
    let a = wait_available(world, &setup.pv_name("a")).await;
    let b = wait_available(world, &flaky).await;
    claim_and_wait(world, "held", &a).await;
    create_pod(world, "db-0", node, "held").await;
    claim_and_wait(world, "gone", &b).await;
    world.delete_claim("gone").await;
    wait_recreated(world, &flaky, &b.metadata.uid.clone().expect("a UID")).await;
    let with = setup.on_node();
    let consumer: &[&str] = &[&setup.pv_name("a"), world.namespace(), "db-0"];
    setup.wait_consumers(&[consumer]).await;
    wait_page(&setup.process, "a wipe and a failed create counted", |p| {
        p.value("wipe_duration_seconds_count", &with) == Some(1.0)
            && p.value("pv_create_failures_total", &[("reason", "unreachable")]) == Some(1.0)
    })
    .await;

    let live = page(&setup.process).await.expect("the metrics page");
    for family in [
        "volume_info",
        "volume_capacity_bytes",
        "volume_consumer_info",
        "wipe_duration_seconds_bucket",
        "pv_create_duration_seconds_bucket",
        "pv_create_failures_total",
        "api_errors_total",
    ] {
        assert!(
            !live.series(family, &with).is_empty(),
            "no {family}:\n{}",
            live.text
        );
    }
    promtool_check(&live.text, "the live page");
}

#[test]
fn every_metric_family_with_a_sample_passes_promtool() {
    let metrics = Metrics::new("node-a");
    let pv: LeanPv = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "local-node-a-sda"},
        "spec": {"capacity": {"storage": "1Gi"}, "local": {"path": "/dev/disk/by-path/sda"},
                 "storageClassName": "local-storage", "volumeMode": "Block",
                 "claimRef": {"namespace": "ns", "name": "data"}},
        "status": {"phase": "Bound"},
    }))
    .expect("a PV");
    let mut pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web-0", "namespace": "ns"},
        "spec": {"containers": [{"name": "c", "image": "i"}],
                 "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]},
    }))
    .expect("a pod");
    strip_pod(&mut pod);
    VolumeMetrics::default().update(&metrics, &[Arc::new(pv)], &[Arc::new(pod)]);
    metrics
        .pv_create_failures
        .with_label_values(&["refused"])
        .inc();
    metrics
        .wipes_failed
        .with_label_values(&["ExclusiveOpen"])
        .inc();
    metrics.api_errors.with_label_values(&["create_pv"]).inc();
    metrics
        .writes_denied
        .with_label_values(&["create_pv"])
        .inc();
    metrics.set_class_devices("fast", 2, 1, 1);
    metrics
        .wipe_progress
        .with_label_values(&["local-node-a-disk0"])
        .set(0.25);
    metrics.pv_create_duration.observe(0.2);
    metrics.wipe_duration.observe(1.5);
    let text = metrics.render();
    for name in metrics.names() {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} is on the page:\n{text}"
        );
    }
    promtool_check(&text, "a page with every metric family");
}
