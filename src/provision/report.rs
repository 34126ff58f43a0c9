//! What the provisioning flow reports. The node's standing conditions —
//! where its PV spec stands, which devices get no PV and why, which creates
//! the API server refused, how many devices there are — as Events on the
//! Node, log lines and gauges, once per change, so a stuck condition never
//! floods the API server ([`NodeReports`]); and single happenings of PVs: one
//! created, one whose device is missing or back.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;

use crate::discover::devices::{DeviceProblem, ProblemKind};
use crate::objects::pv::{LeanPv, class_of, local_path};
use crate::objects::reasons;
use crate::objects::spec::NodeSpec;
use crate::observe::events::Severity;
use crate::observe::report::Reporter;
use crate::provision::build::{NodeFacts, missing_node_labels};
use crate::provision::classes::in_class;
use crate::provision::create::Provisioned;
use crate::provision::node_spec::SpecState;

/// What was already said about the node's standing conditions.
pub struct NodeReports {
    reporter: Reporter,
    spec_state: Option<SpecState>,
    skipped: BTreeMap<String, String>,
    refused: BTreeMap<String, String>,
    counts: Option<(usize, usize)>,
    /// What was said once for good (unstable paths, missing node labels).
    warned: BTreeSet<String>,
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
            warned: BTreeSet::new(),
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
                missing_dirs,
            } => {
                tracing::info!(node = %node_name, %configmap, "using the PV spec ConfigMap");
                for dir in missing_dirs {
                    tracing::warn!(node = %node_name, %configmap, device_dir = %dir, "deviceDir does not exist (yet): no devices there");
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
            reasons::INVALID_VOLUME,
            "Create",
            &reasons::invalid_volume_note(&problem.reason, &device),
        );
        self.refused.insert(device, problem.reason.clone());
    }

    /// The devices that get no PV, and the device gauges: an Event on the
    /// Node once per new device or new reason — `DeviceSkipped`, or
    /// `DeviceHasData` for a device that holds data (a refused create was
    /// reported as `InvalidVolume` already). A device no class selects is
    /// not an error: it is logged once and counted apart.
    pub fn devices(&mut self, node: &ObjectReference, spec: &NodeSpec, provisioned: &Provisioned) {
        let mut current = BTreeMap::new();
        let (excluded, problems): (Vec<&DeviceProblem>, Vec<&DeviceProblem>) = provisioned
            .problems
            .iter()
            .partition(|problem| problem.kind == ProblemKind::Excluded);
        for problem in &problems {
            let path = problem.path.display().to_string();
            let (event, severity) = match problem.kind {
                ProblemKind::Skipped | ProblemKind::InUse | ProblemKind::Ineligible => {
                    (Some(reasons::DEVICE_SKIPPED), Severity::Warning)
                }
                ProblemKind::HasData => (Some(reasons::DEVICE_HAS_DATA), Severity::Warning),
                ProblemKind::Refused | ProblemKind::Excluded => (None, Severity::Warning),
            };
            if self.skipped.get(&path) != Some(&problem.reason) {
                tracing::warn!(device = %path, class = ?problem.class, reason = %problem.reason, "device skipped");
                if let Some(event) = event {
                    let note = reasons::device_note(&path, &problem.reason);
                    self.reporter
                        .events
                        .publish(node, severity, event, "Discover", &note);
                }
            }
            current.insert(path, problem.reason.clone());
        }
        for problem in &excluded {
            let path = problem.path.display().to_string();
            if self.skipped.get(&path) != Some(&problem.reason) {
                tracing::info!(device = %path, reason = %problem.reason, "device not selected by any class");
            }
            current.insert(path, problem.reason.clone());
        }
        self.refused
            .retain(|device, _| current.contains_key(device));
        self.skipped = current;
        self.counts(node, provisioned.available, problems.len());
        let metrics = &self.reporter.metrics;
        metrics.available_devices.set(provisioned.available as i64);
        metrics.error_devices.set(problems.len() as i64);
        let holding = problems
            .iter()
            .filter(|p| p.kind == ProblemKind::HasData)
            .count();
        metrics.devices_with_data.set(holding as i64);
        let names: Vec<&str> = spec
            .classes
            .iter()
            .map(|class| class.class.as_str())
            .collect();
        metrics.keep_classes(&names);
        for (index, class) in names.iter().enumerate() {
            let available = provisioned
                .available_by_class
                .get(index)
                .copied()
                .unwrap_or(0);
            let errors = problems
                .iter()
                .filter(|problem| problem.class.as_deref() == Some(class))
                .count();
            let excluded = excluded
                .iter()
                .filter(|problem| problem.class.as_deref() == Some(class))
                .count();
            metrics.set_class_devices(class, available, errors, excluded);
        }
    }

    /// What the node's classes themselves call for, said once: a class
    /// whose `deviceDir` holds kernel-assigned names (an `UnstableDevicePath`
    /// Warning on the Node), and Node labels a class copies that the Node
    /// lacks (logged; the label is left off its PVs).
    pub fn classes(&mut self, node: &ObjectReference, spec: &NodeSpec, facts: &NodeFacts) {
        for class in &spec.classes {
            let dir = class.device_dir.display().to_string();
            if class.device_dir == std::path::Path::new(KERNEL_NAMES_DIR)
                && self
                    .warned
                    .insert(format!("unstable {} {dir}", class.class))
            {
                let note = format!(
                    "class {} takes devices from {dir}, whose names (sdX, nvmeXnY, loopN) are assigned by the kernel and can change across reboots, so a PV could point at another disk after one; use /dev/disk/by-id or /dev/disk/by-path",
                    class.class
                );
                tracing::warn!(class = %class.class, device_dir = %dir, "{note}");
                self.reporter.events.publish(
                    node,
                    Severity::Warning,
                    reasons::UNSTABLE_DEVICE_PATH,
                    "Configure",
                    &note,
                );
            }
            for key in missing_node_labels(facts, class) {
                if self.warned.insert(format!("label {} {key}", class.class)) {
                    tracing::info!(class = %class.class, label = %key, "the Node has no such label: it is left off the class's PVs");
                }
            }
        }
    }
}

/// The note of a burst's one Node Event: how many PVs, of which classes,
/// and the first few names.
fn burst_note(created: &[LeanPv], classes: &BTreeMap<&str, usize>) -> String {
    let by_class: Vec<String> = classes
        .iter()
        .map(|(class, count)| format!("{count} in class {class}"))
        .collect();
    let mut names: Vec<&str> = created
        .iter()
        .filter_map(|pv| pv.metadata.name.as_deref())
        .collect();
    names.sort_unstable();
    let listed = names.len().min(BURST_NAMES_LISTED);
    let more = names.len() - listed;
    let tail = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!(
        "Created {} PersistentVolumes at once ({}): {}{tail}; each PV's own Events start with its next change",
        created.len(),
        by_class.join(", "),
        names[..listed].join(", ")
    )
}

/// The directory of kernel-assigned device names.
const KERNEL_NAMES_DIR: &str = "/dev";

impl NodeReports {
    /// A `DevicesDiscovered` Event on the Node when the counts changed.
    fn counts(&mut self, node: &ObjectReference, available: usize, without: usize) {
        if self.counts == Some((available, without)) {
            return;
        }
        let note = reasons::devices_discovered_note(available, without);
        self.reporter.events.publish(
            node,
            Severity::Normal,
            reasons::DEVICES_DISCOVERED,
            "Discover",
            &note,
        );
        self.counts = Some((available, without));
    }
}

/// Most PVs one pass creates that each get a `Provisioned` Event of their
/// own; a larger burst (a cold start, a shelf of disks plugged in) gets one
/// `Provisioned` Event on the Node instead, so a thousand devices cost one
/// Event write, not a thousand.
pub const PROVISIONED_EVENTS_PER_PASS: usize = 10;

/// PV names a burst's Node Event lists before "and N more".
const BURST_NAMES_LISTED: usize = 5;

impl Reporter {
    /// The PVs one pass created: counted and logged each, and told as
    /// Events by [`PROVISIONED_EVENTS_PER_PASS`]'s rule.
    pub fn created(&self, node: &ObjectReference, created: &[LeanPv]) {
        let mut classes: BTreeMap<&str, usize> = BTreeMap::new();
        for pv in created {
            let name = pv.metadata.name.as_deref().unwrap_or_default();
            let path = local_path(pv).unwrap_or_default();
            let class = class_of(pv);
            self.metrics.pvs_created.inc();
            tracing::info!(pv = %name, device = %path, %class, "created PersistentVolume");
            *classes.entry(class).or_default() += 1;
        }
        if created.len() <= PROVISIONED_EVENTS_PER_PASS {
            for pv in created {
                let path = local_path(pv).unwrap_or_default();
                self.events.publish(
                    &pv.object_ref(&()),
                    Severity::Normal,
                    reasons::PROVISIONED,
                    "Create",
                    &format!(
                        "Created for device {path} on node {}{}",
                        self.node_name,
                        in_class(class_of(pv))
                    ),
                );
            }
            return;
        }
        self.events.publish(
            node,
            Severity::Normal,
            reasons::PROVISIONED,
            "Create",
            &burst_note(created, &classes),
        );
    }

    /// The unclaimed Available PV of a lost device was deleted.
    pub fn lost_device_pv_deleted(&self, pv: &LeanPv) {
        self.device_missing(
            pv,
            "Delete",
            "the Available PersistentVolume is deleted so no claim binds to it, and it comes back when the device does",
        );
    }

    /// A PV in use lost its device and is kept.
    pub fn lost_device_pv_kept(&self, pv: &LeanPv) {
        self.device_missing(
            pv,
            "Discover",
            "the PersistentVolume is kept (it is in use or reserved) and nothing is lost if the device returns",
        );
    }

    fn device_missing(&self, pv: &LeanPv, action: &str, outcome: &str) {
        let name = pv.metadata.name.as_deref().unwrap_or_default();
        let path = local_path(pv).unwrap_or_default();
        let note = format!("Device {path} is missing; {outcome}");
        tracing::warn!(pv = %name, device = %path, "{note}");
        let regarding = pv.object_ref(&());
        self.events.publish(
            &regarding,
            Severity::Warning,
            reasons::DEVICE_MISSING,
            action,
            &note,
        );
    }

    /// A kept PV's device is present again.
    pub fn device_returned(&self, pv: &LeanPv) {
        let name = pv.metadata.name.as_deref().unwrap_or_default();
        tracing::info!(pv = %name, "the PersistentVolume's device is back");
        self.events.publish(
            &pv.object_ref(&()),
            Severity::Normal,
            reasons::DEVICE_RETURNED,
            "Discover",
            "The device of this PersistentVolume is present again",
        );
    }
}
