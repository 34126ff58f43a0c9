//! The one place that turns what happened into Kubernetes Events, log lines
//! and metrics. [`Reporter`] reports single happenings (a PV created, a
//! wipe done); [`NodeReports`] remembers what it already said about the
//! node's standing conditions (the spec, skipped devices, refused creates,
//! lost devices) and speaks once per change, so a stuck condition never
//! floods the API server.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume};
use kube::Resource;

use crate::cleanup::CleanupError;
use crate::discovery::{DeviceProblem, ProblemKind};
use crate::events::{EventPublisher, Severity};
use crate::metrics::Metrics;
use crate::node_spec::SpecState;
use crate::pv::local_path;
use crate::wipe::{WipeError, WipeReport};

/// Reports single happenings; cheap to clone.
#[derive(Clone)]
pub struct Reporter {
    /// Where Events go.
    pub events: EventPublisher,
    /// Where numbers go.
    pub metrics: Metrics,
    node_name: String,
    /// Per PV UID, the standing condition last reported (a wait, a refusal).
    said: Arc<Mutex<HashMap<String, String>>>,
}

/// How an admin releases a PV whose wipe cannot run (its disk or node is
/// gone for good), once they have dealt with the disk.
pub fn release_by_hand(pv: &str) -> String {
    format!(
        "if the disk is gone for good or was wiped by hand, release it with: kubectl patch pv {pv} --type=merge -p '{{\"metadata\":{{\"finalizers\":null}}}}'"
    )
}

/// A reference to a PV for an Event, from its name and UID.
pub fn pv_reference(name: &str, uid: Option<&str>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolume".into()),
        name: Some(name.to_string()),
        uid: uid.map(str::to_string),
        ..ObjectReference::default()
    }
}

impl Reporter {
    /// A reporter for `node_name`.
    pub fn new(events: EventPublisher, metrics: Metrics, node_name: &str) -> Self {
        Reporter {
            events,
            metrics,
            node_name: node_name.to_string(),
            said: Arc::default(),
        }
    }

    /// Whether `condition` of the PV `uid` is new (and remembers it).
    fn first_time(&self, uid: &str, condition: &str) -> bool {
        let mut said = self.said.lock().expect("report lock");
        if said.get(uid).map(String::as_str) == Some(condition) {
            return false;
        }
        said.insert(uid.to_string(), condition.to_string());
        true
    }

    /// A reference to this node's Node, for Events about the node as a whole.
    fn node_reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(self.node_name.clone()),
            ..ObjectReference::default()
        }
    }

    /// Forgets what was said about the PV `uid` (its condition ended).
    fn forget(&self, uid: &str) {
        self.said.lock().expect("report lock").remove(uid);
    }

    /// A PV of the Go upstream got its device identity recorded.
    pub fn adopted(&self, pv: &PersistentVolume, identity: &BTreeMap<String, String>) {
        let device = identity
            .get(crate::pv::DEVICE_NUMBER_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        tracing::info!(device = %device, "adopted a PersistentVolume of the Go local-pv-provisioner");
        self.events.publish(
            &pv.object_ref(&()),
            Severity::Normal,
            "Adopted",
            "Adopt",
            &format!("Made by the Go local-pv-provisioner; its device {device} is recorded, so it is wiped and offered again when released"),
        );
    }

    /// A PV never claimed was released without a wipe.
    pub fn wipe_skipped(&self, pv: &PersistentVolume) {
        tracing::info!("the PersistentVolume was never claimed: released without a wipe");
        self.metrics.wipes_skipped.inc();
        self.events.publish(
            &pv.object_ref(&()),
            Severity::Normal,
            "WipeSkipped",
            "Delete",
            "Never claimed, so nothing was written to the device: released without a wipe",
        );
    }

    /// A cleanup did not complete; retried after `retry` (`None`: when the PV changes).
    pub fn cleanup_failed(
        &self,
        pv: &PersistentVolume,
        error: &CleanupError,
        retry: Option<Duration>,
    ) {
        let name = pv.metadata.name.as_deref().unwrap_or_default();
        let uid = pv.metadata.uid.as_deref().unwrap_or_default();
        let regarding = pv.object_ref(&());
        match error {
            CleanupError::Wipe(wipe) => {
                let deleting = pv.metadata.deletion_timestamp.is_some();
                self.wipe_failed(
                    &regarding,
                    wipe,
                    retry,
                    deleting.then(|| release_by_hand(name)),
                );
            }
            CleanupError::ClaimInUse(claim) => {
                if self.first_time(uid, &error.to_string()) {
                    tracing::info!(%claim, "the PersistentVolume is being deleted; waiting for its claim");
                    self.events.publish(
                        &regarding,
                        Severity::Normal,
                        "WaitingForClaim",
                        "Wipe",
                        &format!("Being deleted while claim {claim} may still use it: the device is wiped and the PersistentVolume released once the claim lets go"),
                    );
                }
            }
            CleanupError::NotAdoptable(reason) => {
                self.metrics
                    .wipes_failed
                    .with_label_values(&["NotAdoptable"])
                    .inc();
                if self.first_time(uid, &error.to_string()) {
                    tracing::error!(%reason, "cannot adopt a PersistentVolume of the Go local-pv-provisioner");
                    self.events.publish(
                        &regarding,
                        Severity::Warning,
                        "AdoptionRefused",
                        "Adopt",
                        &format!("Made by the Go local-pv-provisioner, but its device cannot be identified safely: {reason}. It is kept and never wiped by this program; check which disk it names, wipe it by hand, then delete the PersistentVolume; {}", release_by_hand(name)),
                    );
                }
            }
            CleanupError::Api(denied) if denied.status_code() == Some(403) => {
                if self.first_time(uid, &denied.to_string()) {
                    tracing::error!(error = %denied, "the API server denied a write about this node's PersistentVolume; retrying with backoff");
                    let note = format!(
                        "The API server denied {} of PersistentVolume {name} (RBAC or an admission policy): {}; the PersistentVolume is kept, retried with backoff",
                        denied.operation, denied.source
                    );
                    let node = self.node_reference();
                    self.events
                        .publish(&node, Severity::Warning, "WriteDenied", "Wipe", &note);
                }
            }
            other => {
                let note = retry.map_or(String::new(), |delay| {
                    format!("; retrying in {}s", delay.as_secs())
                });
                tracing::warn!(error = %other, "cleanup did not complete; the PV is kept{note}");
            }
        }
    }

    /// A PV was created.
    pub fn created(&self, created: &PersistentVolume) {
        let name = created.metadata.name.as_deref().unwrap_or_default();
        let path = local_path(created).unwrap_or_default();
        self.metrics.pvs_created.inc();
        tracing::info!(pv = %name, device = %path, "created PersistentVolume");
        self.events.publish(
            &created.object_ref(&()),
            Severity::Normal,
            "Provisioned",
            "Create",
            &format!("Created for device {path} on node {}", self.node_name),
        );
    }

    /// The unclaimed Available PV of a lost device was deleted.
    pub fn lost_device_pv_deleted(&self, pv: &PersistentVolume) {
        self.device_missing(
            pv,
            "Delete",
            "the Available PersistentVolume is deleted so no claim binds to it, and it comes back when the device does",
        );
    }

    /// A PV in use lost its device and is kept.
    pub fn lost_device_pv_kept(&self, pv: &PersistentVolume) {
        self.device_missing(
            pv,
            "Discover",
            "the PersistentVolume is kept (it is in use or reserved) and nothing is lost if the device returns",
        );
    }

    fn device_missing(&self, pv: &PersistentVolume, action: &str, outcome: &str) {
        let name = pv.metadata.name.as_deref().unwrap_or_default();
        let path = local_path(pv).unwrap_or_default();
        let note = format!("Device {path} is missing; {outcome}");
        tracing::warn!(pv = %name, device = %path, "{note}");
        let regarding = pv.object_ref(&());
        self.events.publish(
            &regarding,
            Severity::Warning,
            "DeviceMissing",
            action,
            &note,
        );
    }

    /// A kept PV's device is present again.
    pub fn device_returned(&self, pv: &PersistentVolume) {
        let name = pv.metadata.name.as_deref().unwrap_or_default();
        tracing::info!(pv = %name, "the PersistentVolume's device is back");
        self.events.publish(
            &pv.object_ref(&()),
            Severity::Normal,
            "DeviceReturned",
            "Discover",
            "The device of this PersistentVolume is present again",
        );
    }

    /// A device was wiped and verified; its PV is released.
    pub fn wipe_completed(&self, pv: &PersistentVolume, report: &WipeReport) {
        self.forget(pv.metadata.uid.as_deref().unwrap_or_default());
        let regarding = pv.object_ref(&());
        let pv = &regarding;
        self.metrics.wipes_completed.inc();
        let regions: Vec<String> = report
            .regions
            .iter()
            .map(|r| format!("{}..{}", r.start, r.end))
            .collect();
        tracing::info!(device = %report.device.display(), ?regions, elapsed_ms = report.elapsed.as_millis() as u64, "wiped the device; the PersistentVolume is released");
        self.events.publish(
            pv,
            Severity::Normal,
            "VolumeWiped",
            "Delete",
            &format!(
                "Zeroed bytes {} of {} and verified; the PersistentVolume goes and the device is offered again",
                regions.join(", "),
                report.device.display()
            ),
        );
    }

    /// A wipe did not complete; the PV is kept and retried after `retry`
    /// (`None`: at the next start, after a shutdown); `hint` tells the admin
    /// what they can do.
    fn wipe_failed(
        &self,
        pv: &ObjectReference,
        error: &WipeError,
        retry: Option<Duration>,
        hint: Option<String>,
    ) {
        let retry_note = retry.map_or(String::new(), |delay| {
            format!("; retrying in {}s", delay.as_secs())
        });
        let (label, reason) = match error {
            WipeError::Cancelled => {
                self.metrics
                    .wipes_failed
                    .with_label_values(&["cancelled"])
                    .inc();
                tracing::warn!(
                    "wipe cancelled by shutdown; the PV is wiped again on the next start"
                );
                return;
            }
            WipeError::Refused { guard, .. } => (guard.name(), "WipeRefused"),
            WipeError::Io { .. } => ("io", "WipeFailed"),
        };
        self.metrics.wipes_failed.with_label_values(&[label]).inc();
        tracing::error!(reason = label, %error, "wipe did not complete; the PV is kept");
        let hint = hint.map_or(String::new(), |hint| format!("; {hint}"));
        self.events.publish(
            pv,
            Severity::Warning,
            reason,
            "Wipe",
            &format!("{error}; the PersistentVolume is kept{retry_note}{hint}"),
        );
    }
}

/// What was already said about the node's standing conditions.
pub struct NodeReports {
    reporter: Reporter,
    spec_state: Option<SpecState>,
    skipped: BTreeMap<String, String>,
    refused: BTreeMap<String, String>,
}

impl NodeReports {
    /// Nothing said yet.
    pub fn new(reporter: Reporter) -> Self {
        NodeReports {
            reporter,
            spec_state: None,
            skipped: BTreeMap::new(),
            refused: BTreeMap::new(),
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
