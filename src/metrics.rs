//! Prometheus metrics of one provisioner, all labelled with its node. Gauges
//! are set from each reconcile's result as a whole, never from scattered
//! increments, so they always describe the last reconcile.

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// Every metric of one provisioner, labelled with its node.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Usable devices found in the last scan (upstream's gauge).
    pub available_devices: IntGauge,
    /// Matching but unusable devices in the last scan (upstream's gauge).
    pub error_devices: IntGauge,
    /// Devices never offered because they hold data (part of `error_devices`).
    pub devices_with_data: IntGauge,
    /// 1 while the node's PV spec is missing or invalid, else 0.
    pub spec_errors: IntGauge,
    /// PersistentVolumes created.
    pub pvs_created: IntCounter,
    /// Wipes completed (device zeroed and verified).
    pub wipes_completed: IntCounter,
    /// PVs never claimed, released without a wipe.
    pub wipes_skipped: IntCounter,
    /// Wipes that failed, by reason: a guard's name, or `io`.
    pub wipes_failed: IntCounterVec,
    /// Released PVs of this node waiting for a wipe (in progress or retrying).
    pub released_pending: IntGauge,
    /// PVs kept although their device is missing (Bound, Released, reserved).
    pub missing_devices: IntGauge,
    /// Failed API requests made by the reconciler, by operation.
    pub api_errors: IntCounterVec,
    /// API writes the server refused with 403 (RBAC, an admission policy), by operation.
    pub writes_denied: IntCounterVec,
    /// Reconcile passes finished (whatever their outcome).
    pub reconciles: IntCounter,
    /// Events dropped because the queue was full.
    pub events_dropped: IntCounter,
}

const PREFIX: &str = "local_pv_provisioner";

impl Metrics {
    /// Registers every metric for `node` in a fresh registry.
    pub fn new(node: &str) -> Self {
        let registry = Registry::new();
        let opts = |name: &str, help: &str| {
            Opts::new(format!("{PREFIX}_{name}"), help).const_label("node", node)
        };
        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::with_opts(opts(name, help)).expect("valid gauge");
            registry
                .register(Box::new(gauge.clone()))
                .expect("unique metric");
            gauge
        };
        let counter = |name: &str, help: &str| {
            let counter = IntCounter::with_opts(opts(name, help)).expect("valid counter");
            registry
                .register(Box::new(counter.clone()))
                .expect("unique metric");
            counter
        };
        let counter_vec = |name: &str, help: &str, label: &str| {
            let counter = IntCounterVec::new(opts(name, help), &[label]).expect("valid counter");
            registry
                .register(Box::new(counter.clone()))
                .expect("unique metric");
            counter
        };
        Metrics {
            available_devices: gauge(
                "available_devices",
                "Number of usable devices found in the last scan.",
            ),
            error_devices: gauge(
                "error_devices",
                "Number of devices matching the filter that cannot be used, in the last scan.",
            ),
            devices_with_data: gauge(
                "devices_with_data",
                "Matching devices without a PV that hold data and are not offered (counted in error_devices too).",
            ),
            spec_errors: gauge(
                "pv_spec_errors",
                "1 when the node's PV spec ConfigMap is missing or invalid, else 0.",
            ),
            pvs_created: counter("pvs_created_total", "PersistentVolumes created."),
            wipes_completed: counter(
                "wipes_total",
                "Devices wiped and verified before their PV was deleted.",
            ),
            wipes_skipped: counter(
                "wipes_skipped_total",
                "PersistentVolumes never claimed, released without a wipe.",
            ),
            wipes_failed: counter_vec(
                "wipe_failures_total",
                "Wipes that did not complete, by reason (a guard's name, io or cancelled).",
                "reason",
            ),
            released_pending: gauge(
                "released_pvs",
                "Released PersistentVolumes of this node waiting to be wiped.",
            ),
            missing_devices: gauge(
                "missing_devices",
                "PersistentVolumes of this node kept although their device is missing.",
            ),
            api_errors: counter_vec(
                "api_errors_total",
                "Failed Kubernetes API requests, by operation.",
                "operation",
            ),
            writes_denied: counter_vec(
                "writes_denied_total",
                "API writes refused with 403 (RBAC or an admission policy such as the node restriction), by operation.",
                "operation",
            ),
            reconciles: counter(
                "reconciles_total",
                "Reconcile passes finished, whatever their outcome.",
            ),
            events_dropped: counter(
                "events_dropped_total",
                "Kubernetes Events dropped because too many were waiting to be sent.",
            ),
            registry,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding cannot fail");
        String::from_utf8(buffer).expect("exposition is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_gauges_carry_the_node_label() {
        let metrics = Metrics::new("node-a");
        metrics.available_devices.set(3);
        metrics.error_devices.set(1);
        metrics
            .wipes_failed
            .with_label_values(&["SameDevice"])
            .inc();
        let text = metrics.render();
        assert!(
            text.contains("local_pv_provisioner_available_devices{node=\"node-a\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("local_pv_provisioner_error_devices{node=\"node-a\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "local_pv_provisioner_wipe_failures_total{node=\"node-a\",reason=\"SameDevice\"} 1"
            ),
            "{text}"
        );
    }
}
