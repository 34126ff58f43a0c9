//! The one place that turns what happened into Kubernetes Events, log lines
//! and metrics: [`Reporter`] reports single happenings (a PV created, a wipe
//! done) and a PV's standing conditions once per change;
//! [`crate::node_reports`] does the same for the node's standing conditions
//! (the spec, skipped devices, refused creates), so a stuck condition never
//! floods the API server.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume};
use kube::Resource;

use crate::cleanup::CleanupError;
use crate::events::{EventPublisher, Severity};
use crate::metrics::Metrics;
use crate::pv::local_path;
use crate::wipe::{WipeError, WipeReport};

/// Reports single happenings; cheap to clone.
#[derive(Clone)]
pub struct Reporter {
    /// Where Events go.
    pub events: EventPublisher,
    /// Where numbers go.
    pub metrics: Metrics,
    /// This node's name.
    pub node_name: String,
    /// Per PV UID, the standing condition last reported (a wait, a refusal).
    said: Arc<Mutex<HashMap<(String, Topic), String>>>,
}

/// What a remembered condition of a PV is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Topic {
    /// Why the PV waits or is left alone.
    Standing,
    /// Why its wipe did not complete.
    Wipe,
    /// That its wipe started.
    Started,
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

    /// Whether `condition` is new for the PV `uid` on `topic` (and remembers it).
    fn first_time(&self, uid: &str, topic: Topic, condition: &str) -> bool {
        let mut said = self.said.lock().expect("report lock");
        let key = (uid.to_string(), topic);
        if said.get(&key).map(String::as_str) == Some(condition) {
            return false;
        }
        said.insert(key, condition.to_string());
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

    /// Forgets what was said about the PV `uid` (its conditions ended).
    fn forget(&self, uid: &str) {
        self.said
            .lock()
            .expect("report lock")
            .retain(|(said_of, _), _| said_of != uid);
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
                if self.first_time(uid, Topic::Standing, &error.to_string()) {
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
                if self.first_time(uid, Topic::Standing, &error.to_string()) {
                    tracing::error!(%reason, "cannot adopt a PersistentVolume of the Go local-pv-provisioner");
                    self.events.publish(
                        &regarding,
                        Severity::Warning,
                        "AdoptionRefused",
                        "Adopt",
                        &format!("Made by the Go local-pv-provisioner, but its device cannot be identified safely: {reason}. It is kept and not wiped while its device is ambiguous (checked again each polling interval); check which disk it names, wipe it by hand, then delete the PersistentVolume; {}", release_by_hand(name)),
                    );
                }
            }
            CleanupError::Api(denied) if denied.status_code() == Some(403) => {
                if self.first_time(uid, Topic::Standing, &denied.to_string()) {
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
        self.metrics
            .wipe_duration
            .observe(report.elapsed.as_secs_f64());
        tracing::info!(device = %report.device.display(), ?regions, elapsed_ms = report.elapsed.as_millis() as u64, "wiped the device; the PersistentVolume is released");
        self.events.publish(
            pv,
            Severity::Normal,
            "Wiped",
            "Wipe",
            &format!(
                "Zeroed bytes {} of {} in {:.3} s and verified; the PersistentVolume goes and the device is offered again",
                regions.join(", "),
                report.device.display(),
                report.elapsed.as_secs_f64()
            ),
        );
    }

    /// A PV carries this node's label but was not made by this node's
    /// program (its node-name annotation names another node): left alone,
    /// said once.
    pub fn not_ours(&self, pv: &PersistentVolume) {
        let uid = pv.metadata.uid.as_deref().unwrap_or_default();
        if !self.first_time(uid, Topic::Standing, "not ours") {
            return;
        }
        let named = crate::pv::annotation(pv, crate::pv::NODE_NAME_ANNOTATION).unwrap_or("no node");
        let note = format!(
            "Labelled for node {} but its {} annotation names {named:?}: this node's local-pv-provisioner leaves it alone (never wipes or deletes it)",
            self.node_name,
            crate::pv::NODE_NAME_ANNOTATION
        );
        tracing::warn!(pv = ?pv.metadata.name, "{note}");
        self.events.publish(
            &pv.object_ref(&()),
            Severity::Warning,
            "NotOurs",
            "Adopt",
            &note,
        );
    }

    /// A claim was seen bound to the PV for the first time.
    pub fn claimed(&self, pv: &PersistentVolume, claim: &str) {
        tracing::info!(%claim, "the PersistentVolume is bound to a claim");
        self.events.publish(
            &pv.object_ref(&()),
            Severity::Normal,
            "Claimed",
            "Bind",
            &format!("Bound to claim {claim}"),
        );
    }

    /// The PV's claim let go and its cleanup started (the PV was deleted).
    pub fn released(&self, pv: &PersistentVolume) {
        let claim = crate::cleanup::decide::claim_of(pv).unwrap_or_else(|| "(none)".into());
        tracing::info!(%claim, "the PersistentVolume is released; deleting it for its wipe");
        self.events.publish(
            &pv.object_ref(&()),
            Severity::Normal,
            "Released",
            "Delete",
            &format!("Claim {claim} let go: the device is wiped, then the PersistentVolume goes and the device is offered again"),
        );
    }

    /// A wipe starts.
    pub fn wipe_started(&self, pv: &PersistentVolume, device: &std::path::Path) {
        let uid = pv.metadata.uid.as_deref().unwrap_or_default();
        if !self.first_time(uid, Topic::Started, "") {
            return;
        }
        self.events.publish(
            &pv.object_ref(&()),
            Severity::Normal,
            "WipeStarted",
            "Wipe",
            &format!(
                "Wiping {} before the PersistentVolume goes",
                device.display()
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
        tracing::error!(reason = label, %error, "wipe did not complete; the PV is kept{retry_note}");
        let uid = pv.uid.as_deref().unwrap_or_default();
        if !self.first_time(uid, Topic::Wipe, &error.to_string()) {
            return;
        }
        let hint = hint.map_or(String::new(), |hint| format!("; {hint}"));
        self.events.publish(
            pv,
            Severity::Warning,
            reason,
            "Wipe",
            &format!("{error}; the PersistentVolume is kept and the wipe retried with backoff (this is reported once while it fails the same way){hint}"),
        );
    }
}
