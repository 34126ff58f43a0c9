//! Prometheus metrics of one provisioner, all labelled with its node. Gauges
//! are set from each reconcile's result as a whole, never from scattered
//! increments, so they always describe the last reconcile.
//!
//! Every labelled counter whose label values are known in advance (the
//! operations, the create failures' and the wipe failures' reasons) shows
//! each of them at 0 from the start, so a healthy node's page has every
//! family a dashboard panel or an alert reads, and `rate()` and `absent()`
//! tell "no failures" from "not scraped".

use prometheus::core::Collector;

use crate::error::Operation;
use crate::observe::volumes::VolumeSeries;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric of one provisioner, labelled with its node.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// The full name of every family registered, in registration order.
    names: std::sync::Arc<[String]>,
    /// Usable devices found in the last scan (upstream's gauge).
    pub available_devices: IntGauge,
    /// Matching but unusable devices in the last scan (upstream's gauge).
    pub error_devices: IntGauge,
    /// Devices never offered because they hold data (part of `error_devices`).
    pub devices_with_data: IntGauge,
    /// Usable devices of each device class, in the last scan.
    pub class_available_devices: IntGaugeVec,
    /// Matching devices of each class that cannot be used, in the last scan.
    pub class_error_devices: IntGaugeVec,
    /// Matching devices of each class that no class selects, in the last scan.
    pub class_excluded_devices: IntGaugeVec,
    /// 1 while the node's PV spec is missing or invalid, else 0.
    pub spec_errors: IntGauge,
    /// PersistentVolumes created.
    pub pvs_created: IntCounter,
    /// Creates that did not make a PV, by reason (`refused`, `unreachable`).
    pub pv_create_failures: IntCounterVec,
    /// Seconds from a device first seen to its PV existing.
    pub pv_create_duration: Histogram,
    /// Wipes completed (device zeroed and verified).
    pub wipes_completed: IntCounter,
    /// Seconds a completed wipe took (guards, zeroing, flush, read-back).
    pub wipe_duration: Histogram,
    /// PVs never claimed, released without a wipe.
    pub wipes_skipped: IntCounter,
    /// Wipes that failed, by reason: a guard's name, or `io`.
    pub wipes_failed: IntCounterVec,
    /// Released PVs of this node waiting for their cleanup to start.
    pub released_pending: IntGauge,
    /// Released PVs kept with their data (release policy `Keep`).
    pub kept_pvs: IntGauge,
    /// A full wipe's progress, 0 to 1, per PV being wiped.
    pub wipe_progress: prometheus::GaugeVec,
    /// PVs kept although their device is missing (Bound, Released, reserved).
    pub missing_devices: IntGauge,
    /// The per-PV series: `volume_info` (what each PV is and who claims
    /// it), `volume_capacity_bytes` and `volume_consumer_info`.
    pub volumes: VolumeSeries,
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

/// `pv_create_failures_total` reason: the API server refused the PV.
pub const CREATE_REFUSED: &str = "refused";
/// `pv_create_failures_total` reason: the API server did not answer.
pub const CREATE_UNREACHABLE: &str = "unreachable";
/// The `reason`s of `pv_create_failures_total`.
pub const CREATE_FAILURE_REASONS: [&str; 2] = [CREATE_REFUSED, CREATE_UNREACHABLE];

/// Labels of `volume_info`, in order.
pub const VOLUME_INFO_LABELS: [&str; 7] = [
    "persistentvolume",
    "device",
    "storage_class",
    "volume_mode",
    "phase",
    "claim_namespace",
    "claim_name",
];
/// Labels of `volume_consumer_info`, in order.
pub const VOLUME_CONSUMER_LABELS: [&str; 3] = ["persistentvolume", "pod_namespace", "pod"];

/// Registers metrics named `local_pv_provisioner_<name>`, labelled with the
/// node, and keeps each registered family's full name.
struct Registrar<'a> {
    registry: &'a Registry,
    node: &'a str,
    names: std::cell::RefCell<Vec<String>>,
}

impl Registrar<'_> {
    fn opts(&self, name: &str, help: &str) -> Opts {
        Opts::new(format!("{PREFIX}_{name}"), help).const_label("node", self.node)
    }

    fn register<M: Collector + Clone + 'static>(&self, metric: M) -> M {
        self.names
            .borrow_mut()
            .extend(metric.desc().iter().map(|desc| desc.fq_name.clone()));
        self.registry
            .register(Box::new(metric.clone()))
            .expect("unique metric");
        metric
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::with_opts(self.opts(name, help)).expect("valid gauge"))
    }

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(self.opts(name, help), labels).expect("valid gauge"))
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::with_opts(self.opts(name, help)).expect("valid counter"))
    }

    fn counters(&self, name: &str, help: &str, label: &str) -> IntCounterVec {
        self.register(IntCounterVec::new(self.opts(name, help), &[label]).expect("valid counter"))
    }

    fn histogram(&self, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
        let opts = HistogramOpts::from(self.opts(name, help)).buckets(buckets);
        self.register(Histogram::with_opts(opts).expect("valid histogram"))
    }
}

impl Metrics {
    /// Registers every metric for `node` in a fresh registry.
    pub fn new(node: &str) -> Self {
        let registry = Registry::new();
        let r = Registrar {
            registry: &registry,
            node,
            names: std::cell::RefCell::default(),
        };
        let seconds = |from: f64| prometheus::exponential_buckets(from, 2.0, 16).expect("buckets");
        Metrics {
            available_devices: r.gauge("available_devices", "Number of usable devices found in the last scan."),
            error_devices: r.gauge("error_devices", "Number of devices matching the filter that cannot be used, in the last scan."),
            devices_with_data: r.gauge("devices_with_data", "Matching devices without a PV that hold data and are not offered (counted in error_devices too)."),
            class_available_devices: r.gauges("class_available_devices", "Number of usable devices of each device class found in the last scan.", &["device_class"]),
            class_error_devices: r.gauges("class_error_devices", "Number of devices of each device class that cannot be used, in the last scan.", &["device_class"]),
            class_excluded_devices: r.gauges("class_excluded_devices", "Number of devices found for each device class that no class selects (by size, type or model), in the last scan.", &["device_class"]),
            spec_errors: r.gauge("pv_spec_errors", "1 when the node's PV spec ConfigMap is missing or invalid, else 0."),
            pvs_created: r.counter("pvs_created_total", "PersistentVolumes created."),
            pv_create_failures: r.counters("pv_create_failures_total", "PV creates that made no PV, by reason (refused, unreachable).", "reason"),
            pv_create_duration: r.histogram("pv_create_duration_seconds", "Seconds from a device first seen to its PersistentVolume existing.", seconds(0.005)),
            wipes_completed: r.counter("wipes_total", "Devices wiped and verified before their PersistentVolume was released."),
            wipe_duration: r.histogram("wipe_duration_seconds", "Seconds a completed wipe took: guards, zeroing, flush and read-back.", seconds(0.01)),
            wipes_skipped: r.counter("wipes_skipped_total", "PersistentVolumes never claimed, released without a wipe."),
            wipes_failed: r.counters("wipe_failures_total", "Wipes that did not complete, by reason (a guard's name, io, cancelled or NotAdoptable).", "reason"),
            released_pending: r.gauge("released_pvs", "Released PersistentVolumes of this node waiting for their cleanup to start."),
            kept_pvs: r.gauge("kept_pvs", "Released PersistentVolumes of this node kept with their data (release policy Keep) until a wipe is requested."),
            wipe_progress: r.register(prometheus::GaugeVec::new(r.opts("wipe_progress_ratio", "Progress of each full wipe running on this node, from 0 to 1."), &["persistentvolume"]).expect("valid gauge")),
            missing_devices: r.gauge("missing_devices", "PersistentVolumes of this node kept although their device is missing."),
            volumes: r.register(VolumeSeries::new(PREFIX, node)),
            api_errors: r.counters("api_errors_total", "Failed Kubernetes API requests, by operation.", "operation"),
            writes_denied: r.counters("writes_denied_total", "API writes refused with 403 (RBAC or an admission policy such as the node restriction), by operation.", "operation"),
            reconciles: r.counter("reconciles_total", "Reconcile passes finished, whatever their outcome."),
            events_dropped: r.counter("events_dropped_total", "Kubernetes Events dropped because too many were waiting to be sent."),
            names: r.names.take().into(),
            registry,
        }
    }

    /// Sets the device gauges of `class`.
    pub fn set_class_devices(&self, class: &str, available: usize, errors: usize, excluded: usize) {
        for (gauge, value) in [
            (&self.class_available_devices, available),
            (&self.class_error_devices, errors),
            (&self.class_excluded_devices, excluded),
        ] {
            gauge.with_label_values(&[class]).set(value as i64);
        }
    }

    /// Removes the class gauges of every class not in `classes`.
    pub fn keep_classes(&self, classes: &[&str]) {
        for gauge in [
            &self.class_available_devices,
            &self.class_error_devices,
            &self.class_excluded_devices,
        ] {
            for family in gauge.collect() {
                for metric in family.get_metric() {
                    let class = metric
                        .get_label()
                        .iter()
                        .find(|label| label.name() == "device_class")
                        .map(|label| label.value().to_string());
                    if let Some(class) = class.filter(|class| !classes.contains(&class.as_str())) {
                        let _ = gauge.remove_label_values(&[&class]);
                    }
                }
            }
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

    /// Shows each known label value of the labelled counters at 0: every
    /// operation, both create-failure reasons, and `wipe_reasons` (the
    /// wipe's guard names and its other outcomes, which the caller knows).
    pub fn initialize<'a>(&self, wipe_reasons: impl IntoIterator<Item = &'a str>) {
        for operation in Operation::ALL {
            self.api_errors.with_label_values(&[operation.label()]);
            self.writes_denied.with_label_values(&[operation.label()]);
        }
        for reason in CREATE_FAILURE_REASONS {
            self.pv_create_failures.with_label_values(&[reason]);
        }
        for reason in wipe_reasons {
            self.wipes_failed.with_label_values(&[reason]);
        }
    }

    /// Every metric's full name (also of those without a sample yet), as
    /// registered, for checks of dashboards and docs.
    pub fn names(&self) -> Vec<String> {
        self.names.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_named_and_registered_once() {
        let metrics = Metrics::new("node-a");
        let names = metrics.names();
        assert_eq!(names.len(), 25);
        let unique: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
        assert!(
            names
                .iter()
                .all(|name| name.starts_with("local_pv_provisioner_"))
        );
    }

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
