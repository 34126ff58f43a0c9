//! The node's standing conditions — where its PV spec stands, which devices
//! get no PV and why, which creates the API server refused, how many
//! devices there are — reported as Events on the Node, log lines and
//! gauges, once per change, so a stuck condition never floods the API
//! server.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;

use crate::discovery::{DeviceProblem, ProblemKind};
use crate::events::Severity;
use crate::node_spec::SpecState;
use crate::report::Reporter;

/// What was already said about the node's standing conditions.
pub struct NodeReports {
    reporter: Reporter,
    spec_state: Option<SpecState>,
    skipped: BTreeMap<String, String>,
    refused: BTreeMap<String, String>,
    counts: Option<(usize, usize)>,
}

impl NodeReports {
    /// Nothing said yet.
    pub fn new(reporter: Reporter) -> Self {
        NodeReports {
            reporter,
            spec_state: None,
            skipped: BTreeMap::new(),
            refused: BTreeMap::new(),
            counts: None,
        }
    }

    /// The single-happening reporter.
    pub fn reporter(&self) -> &Reporter {
        &self.reporter
    }

    /// Where the spec stands; an Event on the Node (`node`, when it
    /// exists) and a log line when it changed. Sets `pv_spec_errors`.
    pub fn spec_state(&mut self, state: SpecState, node: Option<&ObjectReference>) {
        let metrics = &self.reporter.metrics;
        metrics.spec_errors.set(i64::from(state.is_error()));
        if !matches!(state, SpecState::Ready { .. }) {
            metrics.available_devices.set(0);
            metrics.error_devices.set(0);
            metrics.devices_with_data.set(0);
        }
        if self.spec_state.as_ref() == Some(&state) {
            return;
        }
        let node_name = &self.reporter.node_name;
        match &state {
            // The spec's values stay at debug level; errors name only the offending key and value.
            SpecState::Ready {
                configmap,
                summary,
                device_dir_missing,
            } => {
                tracing::info!(node = %node_name, %configmap, "using the PV spec ConfigMap");
                if *device_dir_missing {
                    tracing::warn!(node = %node_name, %configmap, "deviceDir does not exist (yet): no devices");
                }
                tracing::debug!(node = %node_name, %configmap, "PV spec: {summary}");
            }
            state if state.is_error() => tracing::error!(node = %node_name, "{state}"),
            state => tracing::info!(node = %node_name, "{state}"),
        }
        if let Some(node) = node {
            let (severity, reason) = state.event();
            self.reporter
                .events
                .publish(node, severity, reason, "Configure", &state.to_string());
        }
        self.spec_state = Some(state);
    }

    /// A create the API server refused: an `InvalidVolume` Event on the
    /// Node once per device and reason.
    pub fn create_refused(&mut self, node: &ObjectReference, problem: &DeviceProblem) {
        let device = problem.path.display().to_string();
        if self.refused.get(&device) == Some(&problem.reason) {
            return;
        }
        tracing::error!(device = %device, "{}", problem.reason);
        self.reporter.events.publish(
            node,
            Severity::Warning,
            "InvalidVolume",
            "Create",
            &format!("{} (device {device})", problem.reason),
        );
        self.refused.insert(device, problem.reason.clone());
    }

    /// The devices that get no PV, and the device gauges: an Event on the
    /// Node once per new device or new reason — `DeviceSkipped`, or
    /// `DeviceHasData` for a device that holds data (a refused create was
    /// reported as `InvalidVolume` already).
    pub fn devices(
        &mut self,
        node: &ObjectReference,
        available: usize,
        problems: &[DeviceProblem],
    ) {
        let mut current = BTreeMap::new();
        for problem in problems {
            let path = problem.path.display().to_string();
            let (event, severity) = match problem.kind {
                ProblemKind::Skipped => (Some("DeviceSkipped"), Severity::Warning),
                ProblemKind::HasData => (Some("DeviceHasData"), Severity::Warning),
                ProblemKind::Refused => (None, Severity::Warning),
            };
            if self.skipped.get(&path) != Some(&problem.reason) {
                tracing::warn!(device = %path, reason = %problem.reason, "device skipped");
                if let Some(event) = event {
                    let note = format!("{path} gets no PersistentVolume: {}", problem.reason);
                    self.reporter
                        .events
                        .publish(node, severity, event, "Discover", &note);
                }
            }
            current.insert(path, problem.reason.clone());
        }
        self.refused
            .retain(|device, _| current.contains_key(device));
        self.skipped = current;
        self.counts(node, available, problems.len());
        let metrics = &self.reporter.metrics;
        metrics.available_devices.set(available as i64);
        metrics.error_devices.set(problems.len() as i64);
        let holding = problems
            .iter()
            .filter(|p| p.kind == ProblemKind::HasData)
            .count();
        metrics.devices_with_data.set(holding as i64);
    }
}

impl NodeReports {
    /// A `DevicesDiscovered` Event on the Node when the counts changed.
    fn counts(&mut self, node: &ObjectReference, available: usize, without: usize) {
        if self.counts == Some((available, without)) {
            return;
        }
        let note = format!(
            "{available} device(s) usable (with or getting a PersistentVolume), {without} without one"
        );
        self.reporter.events.publish(
            node,
            Severity::Normal,
            "DevicesDiscovered",
            "Discover",
            &note,
        );
        self.counts = Some((available, without));
    }
}
