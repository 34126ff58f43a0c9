//! Cleanup of Released PersistentVolumes: pick this node's Released PVs,
//! confirm each against a fresh read, mark it (annotations: wipe started,
//! by which pod, when), wipe its device through the guarded
//! [`crate::wipe`] path off the async runtime, and only after a
//! completed, verified wipe delete the PV with UID and resourceVersion
//! preconditions. A refused or failed wipe keeps the PV and is retried with
//! backoff.
//!
//! The mark makes an interrupted wipe (a crash, SIGKILL, node reboot)
//! visible and finishable: a marked PV is wiped again at the next start even
//! if its phase changed meanwhile (unless a claim is bound to it), so a
//! half-zeroed device is never handed out.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolume;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::blockdev::DeviceNumber;
use crate::plan::ExistingPv;
use crate::wipe::{self, Owner, WipeError, WipeReport, WipeRequest};

/// Annotation set before the first write of a wipe: when it started (RFC 3339).
pub const WIPE_STARTED_AT_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/wipe-started-at";
/// Annotation set before the first write of a wipe: the pod that started it.
pub const WIPE_STARTED_BY_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/wipe-started-by";

/// Most wipes running at once on one node.
pub const MAX_CONCURRENT_WIPES: usize = 4;
/// First retry delay after a failed wipe; doubled per failure.
const FIRST_RETRY: Duration = Duration::from_secs(10);
/// Longest retry delay.
const MAX_RETRY: Duration = Duration::from_secs(600);

/// How one cleanup attempt ended.
#[derive(Debug)]
pub enum CleanupResult {
    /// Wiped, verified, and the PV deleted.
    Completed(WipeReport),
    /// The PV is no longer a Released PV of ours with that UID and version; nothing done.
    Skipped(String),
    /// The wipe did not complete; the PV is kept.
    WipeFailed(WipeError),
    /// An API request failed (reading the PV before, or deleting it after,
    /// the wipe); the PV is kept and will be wiped again.
    ApiFailed {
        /// Which request.
        operation: &'static str,
        /// The error.
        error: kube::Error,
    },
}

/// The outcome of one attempt, reported back to the reconciler.
#[derive(Debug)]
pub struct CleanupOutcome {
    /// The PV's name.
    pub pv_name: String,
    /// The PV's UID.
    pub uid: String,
    /// What happened.
    pub result: CleanupResult,
}

struct Attempt {
    number: Option<DeviceNumber>,
    resource_version: Option<String>,
}

struct Backoff {
    failures: u32,
    not_before: Instant,
}

/// Tracks wipes in flight and retry backoff for one node.
pub struct Cleaner {
    api: Api<PersistentVolume>,
    node_name: String,
    label_value: String,
    instance: String,
    cancel: Arc<AtomicBool>,
    results: mpsc::Sender<CleanupOutcome>,
    in_flight: HashMap<String, Attempt>,
    backoff: HashMap<String, Backoff>,
    /// UID → resourceVersion of PVs whose last attempt completed or found
    /// nothing to do: not tried again until the watch shows a newer version
    /// (the store may lag behind the fresh read).
    settled: HashMap<String, Option<String>>,
}

fn phase(pv: &PersistentVolume) -> Option<&str> {
    pv.status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
}

/// Whether a PV carries the mark of a wipe that started and has not finished.
pub fn has_wipe_mark(pv: &PersistentVolume) -> bool {
    pv.metadata
        .annotations
        .as_ref()
        .is_some_and(|annotations| annotations.contains_key(WIPE_STARTED_AT_ANNOTATION))
}

/// Whether a PV must be wiped and deleted: Released, or marked by an
/// interrupted wipe and not bound to a claim; never while being deleted.
pub fn needs_cleanup(pv: &PersistentVolume) -> bool {
    pv.metadata.deletion_timestamp.is_none()
        && (phase(pv) == Some("Released") || (has_wipe_mark(pv) && phase(pv) != Some("Bound")))
}

impl Cleaner {
    /// A cleaner for this node's PVs, marking wipes as started by
    /// `instance`. Outcomes go to `results`; `cancel` stops wipes between
    /// writes at shutdown.
    pub fn new(
        api: Api<PersistentVolume>,
        node_name: String,
        label_value: String,
        instance: String,
        cancel: Arc<AtomicBool>,
        results: mpsc::Sender<CleanupOutcome>,
    ) -> Self {
        Cleaner {
            api,
            node_name,
            label_value,
            instance,
            cancel,
            results,
            in_flight: HashMap::new(),
            backoff: HashMap::new(),
            settled: HashMap::new(),
        }
    }

    /// Starts a cleanup for every PV that [needs one](needs_cleanup) and is
    /// not in flight or waiting for a retry, up to [`MAX_CONCURRENT_WIPES`].
    pub fn start(&mut self, pvs: &[Arc<PersistentVolume>]) {
        let now = Instant::now();
        let live: BTreeSet<&str> = pvs
            .iter()
            .filter_map(|pv| pv.metadata.uid.as_deref())
            .collect();
        self.backoff.retain(|uid, _| live.contains(uid.as_str()));
        self.settled.retain(|uid, _| live.contains(uid.as_str()));
        for pv in pvs.iter().filter(|pv| needs_cleanup(pv)) {
            if self.in_flight.len() >= MAX_CONCURRENT_WIPES {
                break;
            }
            let (Some(uid), Some(name)) = (pv.metadata.uid.clone(), pv.metadata.name.clone())
            else {
                continue;
            };
            let number = ExistingPv::from_pv(pv).number;
            let device_busy = number.is_some()
                && self
                    .in_flight
                    .values()
                    .any(|attempt| attempt.number == number);
            let waiting = self
                .backoff
                .get(&uid)
                .is_some_and(|backoff| backoff.not_before > now);
            let settled = self.settled.get(&uid) == Some(&pv.metadata.resource_version);
            if self.in_flight.contains_key(&uid) || device_busy || waiting || settled {
                continue;
            }
            self.in_flight.insert(
                uid.clone(),
                Attempt {
                    number,
                    resource_version: pv.metadata.resource_version.clone(),
                },
            );
            let task = CleanupTask {
                api: self.api.clone(),
                node_name: self.node_name.clone(),
                label_value: self.label_value.clone(),
                instance: self.instance.clone(),
                cancel: self.cancel.clone(),
                pv_name: name,
                uid,
            };
            let results = self.results.clone();
            tokio::spawn(async move {
                let outcome = task.run().await;
                let _ = results.send(outcome).await;
            });
        }
    }

    /// Records an outcome; returns the retry delay when the PV will be retried.
    pub fn finish(&mut self, outcome: &CleanupOutcome) -> Option<Duration> {
        let attempt = self.in_flight.remove(&outcome.uid);
        match outcome.result {
            CleanupResult::Completed(_) | CleanupResult::Skipped(_) => {
                if let Some(attempt) = attempt {
                    self.settled
                        .insert(outcome.uid.clone(), attempt.resource_version);
                }
                self.backoff.remove(&outcome.uid);
                None
            }
            CleanupResult::WipeFailed(WipeError::Cancelled) => None,
            CleanupResult::WipeFailed(_) | CleanupResult::ApiFailed { .. } => {
                let failures = self.backoff.get(&outcome.uid).map_or(0, |b| b.failures) + 1;
                let delay = retry_delay(failures);
                self.backoff.insert(
                    outcome.uid.clone(),
                    Backoff {
                        failures,
                        not_before: Instant::now() + delay,
                    },
                );
                Some(delay)
            }
        }
    }

    /// Device numbers with a cleanup in flight (discovery must not recreate them).
    pub fn devices_in_flight(&self) -> BTreeSet<DeviceNumber> {
        self.in_flight
            .values()
            .filter_map(|attempt| attempt.number)
            .collect()
    }

    /// Number of cleanups in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// When the earliest retry is due.
    pub fn next_retry(&self) -> Option<Instant> {
        self.backoff
            .values()
            .map(|backoff| backoff.not_before)
            .min()
    }
}

/// Retry delay after `failures` consecutive failures: 10 s doubling to 10 min.
pub fn retry_delay(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    FIRST_RETRY.saturating_mul(factor).min(MAX_RETRY)
}

struct CleanupTask {
    api: Api<PersistentVolume>,
    node_name: String,
    label_value: String,
    instance: String,
    cancel: Arc<AtomicBool>,
    pv_name: String,
    uid: String,
}

impl CleanupTask {
    async fn run(self) -> CleanupOutcome {
        let result = self.attempt().await;
        CleanupOutcome {
            pv_name: self.pv_name,
            uid: self.uid,
            result,
        }
    }

    async fn attempt(&self) -> CleanupResult {
        // A fresh read: the store may lag, and a PV that is no longer
        // Released (an admin cleared its claimRef) must not be wiped.
        let fresh = match self.api.get_opt(&self.pv_name).await {
            Ok(Some(pv)) => pv,
            Ok(None) => return CleanupResult::Skipped("the PV no longer exists".into()),
            Err(error) => {
                return CleanupResult::ApiFailed {
                    operation: "get_pv",
                    error,
                };
            }
        };
        if fresh.metadata.uid.as_deref() != Some(self.uid.as_str()) {
            return CleanupResult::Skipped(
                "the PV was replaced by another with the same name".into(),
            );
        }
        if !needs_cleanup(&fresh) {
            return CleanupResult::Skipped("the PV no longer needs a cleanup".into());
        }
        let owner = Owner {
            node_name: &self.node_name,
            label_value: &self.label_value,
        };
        let request = match WipeRequest::from_pv(&fresh, &owner) {
            Ok(request) => request,
            Err(error) => return CleanupResult::WipeFailed(error),
        };
        if has_wipe_mark(&fresh) {
            let annotations = fresh.metadata.annotations.clone().unwrap_or_default();
            tracing::warn!(
                pv = %self.pv_name,
                started_at = ?annotations.get(WIPE_STARTED_AT_ANNOTATION),
                started_by = ?annotations.get(WIPE_STARTED_BY_ANNOTATION),
                "an earlier wipe of this device did not finish; wiping it again"
            );
        }
        let marked = match self.mark(&fresh).await {
            Ok(marked) => marked,
            Err(error) => {
                return CleanupResult::ApiFailed {
                    operation: "patch_pv",
                    error,
                };
            }
        };
        let cancel = self.cancel.clone();
        let wiped = tokio::task::spawn_blocking(move || wipe::wipe_device(&request, &cancel)).await;
        let report = match wiped {
            Ok(Ok(report)) => report,
            Ok(Err(error)) => return CleanupResult::WipeFailed(error),
            Err(join_error) => {
                return CleanupResult::WipeFailed(WipeError::Io {
                    step: "running the wipe".into(),
                    source: std::io::Error::other(join_error.to_string()),
                });
            }
        };
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                // The version our mark produced: any later change cancels the delete.
                resource_version: marked.metadata.resource_version.clone(),
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(&self.pv_name, &params).await {
            Ok(_) => CleanupResult::Completed(report),
            Err(kube::Error::Api(status)) if status.code == 404 => CleanupResult::Completed(report),
            Err(error) => CleanupResult::ApiFailed {
                operation: "delete_pv",
                error,
            },
        }
    }
}

impl CleanupTask {
    /// Records on the PV that a wipe starts now, by this pod; conditional on
    /// the resourceVersion just read, so a PV changed meanwhile is not wiped.
    async fn mark(&self, fresh: &PersistentVolume) -> Result<PersistentVolume, kube::Error> {
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": fresh.metadata.resource_version,
                "annotations": {
                    WIPE_STARTED_AT_ANNOTATION: Timestamp::now().to_string(),
                    WIPE_STARTED_BY_ANNOTATION: self.instance,
                },
            },
        });
        self.api
            .patch(
                &self.pv_name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(phase: &str, marked: bool) -> PersistentVolume {
        let mut value = serde_json::json!({
            "metadata": {"name": "pv"},
            "status": {"phase": phase},
        });
        if marked {
            value["metadata"]["annotations"] =
                serde_json::json!({WIPE_STARTED_AT_ANNOTATION: "2026-11-22T00:00:00Z"});
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn released_or_interrupted_pvs_need_cleanup_but_never_bound_ones() {
        assert!(needs_cleanup(&pv("Released", false)));
        assert!(needs_cleanup(&pv("Released", true)));
        assert!(
            needs_cleanup(&pv("Available", true)),
            "a half-wiped device is never offered"
        );
        assert!(!needs_cleanup(&pv("Available", false)));
        assert!(
            !needs_cleanup(&pv("Bound", true)),
            "a claim is bound: never wiped under it"
        );
        assert!(!needs_cleanup(&pv("Pending", false)));
        let mut deleting = pv("Released", false);
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
        );
        assert!(!needs_cleanup(&deleting));
    }

    #[test]
    fn retry_delay_doubles_up_to_ten_minutes() {
        assert_eq!(retry_delay(1), Duration::from_secs(10));
        assert_eq!(retry_delay(2), Duration::from_secs(20));
        assert_eq!(retry_delay(4), Duration::from_secs(80));
        assert_eq!(retry_delay(7), Duration::from_secs(600));
        assert_eq!(retry_delay(1000), Duration::from_secs(600));
    }
}
