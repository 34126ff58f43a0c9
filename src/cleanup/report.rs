//! What the cleanup flow reports: a PV adopted, claimed, released, left
//! alone, waiting for its claim, wiped or released without a wipe, and a
//! cleanup that did not complete (a refused or failed wipe, a denied
//! write), each as an Event, a log line and a metric; standing conditions
//! once per change.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;

use super::controller::CleanupError;
use super::decide;
use crate::device::wipe::{Guard, WipeError, WipeReport, WipeRequest};
use crate::objects::pv::LeanPv;
use crate::objects::reasons;
use crate::objects::spec::WipeMode;
use crate::observe::events::Severity;
use crate::observe::report::{Reporter, Topic};

/// `wipe_failures_total` reason: writing, flushing or verifying failed.
pub const IO: &str = "io";
/// `wipe_failures_total` reason: shutdown stopped the wipe.
pub const CANCELLED: &str = "cancelled";
/// `wipe_failures_total` reason: a PV of the Go upstream cannot be identified.
pub const NOT_ADOPTABLE: &str = "NotAdoptable";

/// Every `reason` of `wipe_failures_total`: each guard's name and the
/// other outcomes.
pub fn wipe_failure_reasons() -> impl Iterator<Item = &'static str> {
    Guard::ALL
        .into_iter()
        .map(Guard::name)
        .chain([IO, CANCELLED, NOT_ADOPTABLE])
}

/// How an admin releases a PV whose wipe cannot run (its disk or node is
/// gone for good), once they have dealt with the disk.
pub fn release_by_hand(pv: &str) -> String {
    format!(
        "if the disk is gone for good or was wiped by hand, release it with: kubectl patch pv {pv} --type=merge -p '{{\"metadata\":{{\"finalizers\":null}}}}'"
    )
}

impl Reporter {
    /// A PV of the Go upstream got its device identity recorded.
    pub fn adopted(&self, pv: &LeanPv, identity: &BTreeMap<String, String>) {
        let device = identity
            .get(crate::objects::pv::DEVICE_NUMBER_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        tracing::info!(device = %device, "adopted a PersistentVolume of the Go local-pv-provisioner");
        self.events.publish(
            &pv.object_ref(&()),
            Severity::Normal,
            reasons::ADOPTED,
            "Adopt",
            &format!("Made by the Go local-pv-provisioner; its device {device} is recorded, so it is wiped and offered again when released"),
        );
    }

    /// A Released PV is kept with its data (release policy `Keep`); said
    /// once per PV.
    pub fn kept(&self, pv: &LeanPv) {
        let uid = pv.metadata.uid.as_deref().unwrap_or_default();
        if !self.first_time(uid, Topic::Standing, "kept") {
            return;
        }
        let name = pv.metadata.name.as_deref().unwrap_or_default();
        tracing::info!(
            "the PersistentVolume is Released and kept with its data (release policy Keep)"
        );
        self.events.publish(
            &pv.object_ref(&()),
            Severity::Normal,
            reasons::KEPT,
            "Keep",
            &format!(
                "Released and kept with its data (release policy Keep): nothing is wiped until you ask, with kubectl annotate pv {name} {}=true, or delete the PersistentVolume (it is wiped before it goes)",
                crate::objects::pv::WIPE_REQUESTED_ANNOTATION
            ),
        );
    }

    /// A PV never claimed was released without a wipe.
    pub fn wipe_skipped(&self, pv: &LeanPv) {
        tracing::info!("the PersistentVolume was never claimed: released without a wipe");
        self.metrics.wipes_skipped.inc();
        self.events.publish(
            &pv.object_ref(&()),
            Severity::Normal,
            reasons::WIPE_SKIPPED,
            "Delete",
            "Never claimed, so nothing was written to the device: released without a wipe",
        );
    }

    /// A cleanup did not complete; retried after `retry` (`None`: when the PV changes).
    pub fn cleanup_failed(&self, pv: &LeanPv, error: &CleanupError, retry: Option<Duration>) {
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
                        reasons::WAITING_FOR_CLAIM,
                        "Wipe",
                        &format!("Being deleted while claim {claim} may still use it: the device is wiped and the PersistentVolume released once the claim lets go"),
                    );
                }
            }
            CleanupError::NotAdoptable(reason) => {
                self.metrics
                    .wipes_failed
                    .with_label_values(&[NOT_ADOPTABLE])
                    .inc();
                if self.first_time(uid, Topic::Standing, &error.to_string()) {
                    tracing::error!(%reason, "cannot adopt a PersistentVolume of the Go local-pv-provisioner");
                    self.events.publish(
                        &regarding,
                        Severity::Warning,
                        reasons::ADOPTION_REFUSED,
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
                    self.events.publish(
                        &node,
                        Severity::Warning,
                        reasons::WRITE_DENIED,
                        "Wipe",
                        &note,
                    );
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

    /// A device was wiped and verified; its PV is released.
    pub fn wipe_completed(&self, pv: &LeanPv, report: &WipeReport) {
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
            reasons::WIPED,
            "Wipe",
            &format!(
                "Zeroed bytes {} of {} in {:.3} s{} and verified; the PersistentVolume goes and the device is offered again",
                regions.join(", "),
                report.device.display(),
                report.elapsed.as_secs_f64(),
                if report.resumed_from > 0 {
                    format!(" (resumed at byte {} after a restart)", report.resumed_from)
                } else {
                    String::new()
                }
            ),
        );
    }

    /// A PV carries this node's label but was not made by this node's
    /// program (its node-name annotation names another node): left alone,
    /// said once.
    pub fn not_ours(&self, pv: &LeanPv) {
        let uid = pv.metadata.uid.as_deref().unwrap_or_default();
        if !self.first_time(uid, Topic::Standing, "not ours") {
            return;
        }
        let named = crate::objects::pv::annotation(pv, crate::objects::pv::NODE_NAME_ANNOTATION)
            .unwrap_or("no node");
        let note = format!(
            "Labelled for node {} but its {} annotation names {named:?}: this node's local-pv-provisioner leaves it alone (never wipes or deletes it)",
            self.node_name,
            crate::objects::pv::NODE_NAME_ANNOTATION
        );
        tracing::warn!(pv = ?pv.metadata.name, "{note}");
        self.events.publish(
            &pv.object_ref(&()),
            Severity::Warning,
            reasons::NOT_OURS,
            "Adopt",
            &note,
        );
    }

    /// A claim was seen bound to the PV for the first time.
    pub fn claimed(&self, pv: &LeanPv, claim: &str) {
        tracing::info!(%claim, "the PersistentVolume is bound to a claim");
        self.events.publish(
            &pv.object_ref(&()),
            Severity::Normal,
            reasons::CLAIMED,
            "Bind",
            &format!("Bound to claim {claim}"),
        );
    }

    /// The PV's claim let go and its cleanup started (the PV was deleted).
    pub fn released(&self, pv: &LeanPv) {
        let claim = decide::claim_of(pv).unwrap_or_else(|| "(none)".into());
        tracing::info!(%claim, "the PersistentVolume is released; deleting it for its wipe");
        self.events.publish(
            &pv.object_ref(&()),
            Severity::Normal,
            reasons::RELEASED,
            "Delete",
            &format!("Claim {claim} let go: the device is wiped, then the PersistentVolume goes and the device is offered again"),
        );
    }

    /// A wipe starts (said once per PV): a full wipe resuming after a
    /// restart says from where.
    pub fn wipe_started(&self, pv: &LeanPv, request: &WipeRequest) {
        let uid = pv.metadata.uid.as_deref().unwrap_or_default();
        if !self.first_time(uid, Topic::Started, "") {
            return;
        }
        let device = request.path.display();
        let note = match request.mode {
            WipeMode::Signatures => format!("Wiping {device} before the PersistentVolume goes"),
            WipeMode::Full if request.resume_from > 0 => format!(
                "Wiping every byte of {device} before the PersistentVolume goes, resuming from the recorded progress at byte {} of {}",
                request.resume_from, request.size_bytes
            ),
            WipeMode::Full => format!(
                "Wiping every byte ({} bytes) of {device} before the PersistentVolume goes; progress in the {} annotation",
                request.size_bytes,
                crate::objects::pv::WIPE_PROGRESS_ANNOTATION
            ),
        };
        tracing::info!(
            mode = request.mode.as_str(),
            resume_from = request.resume_from,
            "{note}"
        );
        self.events.publish(
            &pv.object_ref(&()),
            Severity::Normal,
            reasons::WIPE_STARTED,
            "Wipe",
            &note,
        );
    }

    /// A full wipe's progress, for the Event at most every few minutes.
    pub fn wipe_progress(&self, pv: &LeanPv, done: u64, total: u64, rate: f64) {
        let percent = if total == 0 {
            100.0
        } else {
            100.0 * done as f64 / total as f64
        };
        let left = (total - done) as f64 / rate.max(1.0);
        let note = format!(
            "Wiped {percent:.0}% ({done} of {total} bytes) at {:.0} MiB/s; about {:.0} min left",
            rate / (1 << 20) as f64,
            (left / 60.0).ceil()
        );
        tracing::info!("{note}");
        self.events.publish(
            &pv.object_ref(&()),
            Severity::Normal,
            reasons::WIPE_PROGRESS,
            "Wipe",
            &note,
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
                    .with_label_values(&[CANCELLED])
                    .inc();
                tracing::warn!(
                    "wipe cancelled by shutdown; the PV is wiped again on the next start"
                );
                return;
            }
            WipeError::Refused { guard, .. } => (guard.name(), reasons::WIPE_REFUSED),
            WipeError::Io { .. } => (IO, reasons::WIPE_FAILED),
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
