//! Cleanup of Released PersistentVolumes, one PV at a time: confirm the PV
//! against a fresh read, mark it (annotations: wipe started, by which pod,
//! when), wipe its device through the guarded [`crate::wipe`] path off the
//! async runtime, and only after a completed, verified wipe delete the PV
//! with UID and resourceVersion preconditions. A refused or failed wipe
//! keeps the PV and is retried with backoff ([`CLEANUP_RETRY`]).
//!
//! Driven by kube-runtime's [`Controller`] over the shared PV watch: it
//! reconciles each PV on its changes, never two reconciles of one PV at
//! once, at most [`MAX_CONCURRENT_CLEANUPS`] at a time, with
//! [`error_policy`] deciding the retry.
//!
//! While the node is paused (its PV spec is missing or invalid, or the Node
//! is gone) nothing is wiped; every PV is looked at again when it resumes.
//!
//! The mark makes an interrupted wipe (a crash, SIGKILL, node reboot)
//! visible and finishable: a marked PV is wiped again at the next start even
//! if its phase changed meanwhile (unless a claim is bound to it), so a
//! half-zeroed device is never handed out.
//!
//! [`CLEANUP_RETRY`]: crate::backoff::CLEANUP_RETRY

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::ReflectHandle;
use thiserror::Error;
use tokio::time::Instant;
use tracing::Instrument;

use crate::apply::WIPE_STARTED_AT_ANNOTATION;
use crate::blockdev::DeviceNumber;
use crate::context::Context;
use crate::error::ApiError;
use crate::pv::local_path;
use crate::report::pv_reference;
use crate::wipe::{self, Owner, WipeError, WipeReport, WipeRequest};

/// Most cleanups reconciling at once on one node.
pub const MAX_CONCURRENT_CLEANUPS: u16 = 4;

/// How long a PV waits while another PV of the same device is being wiped.
const DEVICE_BUSY_RETRY: Duration = Duration::from_secs(1);

/// Why a cleanup did not complete; the PV is kept in every case.
#[derive(Debug, Error)]
pub enum CleanupError {
    /// Reading, marking or deleting the PV failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The wipe was refused, failed or was cancelled.
    #[error(transparent)]
    Wipe(#[from] WipeError),
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

/// Runs the cleanup controller until `shutdown` resolves and the cleanups
/// in flight have stopped.
pub async fn run(
    ctx: Arc<Context>,
    pvs: ReflectHandle<PersistentVolume>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let resumed = futures::stream::unfold(ctx.paused.subscribe(), |mut paused| async move {
        loop {
            paused.changed().await.ok()?;
            if !*paused.borrow_and_update() {
                return Some(((), paused));
            }
        }
    });
    Controller::for_shared_stream(pvs, ctx.pvs.clone())
        .reconcile_all_on(resumed)
        .with_config(Config::default().concurrency(MAX_CONCURRENT_CLEANUPS))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

/// Cleans one PV if it needs it.
async fn reconcile(pv: Arc<PersistentVolume>, ctx: Arc<Context>) -> Result<Action, CleanupError> {
    if !needs_cleanup(&pv) || ctx.is_paused() {
        return Ok(Action::await_change());
    }
    let span = tracing::info_span!(
        "cleanup",
        node = %ctx.settings.node_name,
        pv = pv.metadata.name.as_deref().unwrap_or_default(),
        device = local_path(&pv).unwrap_or_default(),
    );
    clean(&pv, &ctx).instrument(span).await
}

async fn clean(pv: &PersistentVolume, ctx: &Context) -> Result<Action, CleanupError> {
    let (Some(name), Some(uid)) = (pv.metadata.name.as_deref(), pv.metadata.uid.as_deref()) else {
        return Ok(Action::await_change());
    };
    let waiting = ctx
        .cleanup_backoff
        .lock()
        .expect("backoff lock")
        .remaining(&uid.to_string(), Instant::now());
    if let Some(left) = waiting {
        return Ok(Action::requeue(left));
    }
    // A fresh read: the store may lag, and a PV that is no longer
    // Released (an admin cleared its claimRef) must not be wiped.
    let fresh = match ctx.api.get_pv(name).await? {
        Some(fresh) if fresh.metadata.uid.as_deref() == Some(uid) && needs_cleanup(&fresh) => fresh,
        _ => {
            tracing::debug!("the PV is gone, replaced or no longer needs a cleanup");
            return Ok(Action::await_change());
        }
    };
    let owner = Owner {
        node_name: &ctx.settings.node_name,
        label_value: &ctx.label_value,
    };
    let request = WipeRequest::from_pv(&fresh, &owner)?;
    let Some(_claim) = DeviceClaim::new(ctx, request.number) else {
        return Ok(Action::requeue(DEVICE_BUSY_RETRY));
    };
    if has_wipe_mark(&fresh) {
        tracing::warn!("an earlier wipe of this device did not finish; wiping it again");
    }
    let marked = ctx
        .api
        .mark_wipe_started(&fresh, &ctx.settings.instance)
        .await?;
    let report = wipe_off_runtime(request, ctx).await?;
    // The version our mark produced: any later change cancels the delete.
    ctx.api
        .delete_pv(
            name,
            Some(uid.to_string()),
            marked.metadata.resource_version.clone(),
        )
        .await?;
    ctx.reporter
        .wipe_completed(&pv_reference(name, Some(uid)), &report);
    ctx.cleanup_backoff
        .lock()
        .expect("backoff lock")
        .clear(&uid.to_string());
    Ok(Action::await_change())
}

/// Runs the blocking wipe on a blocking thread.
async fn wipe_off_runtime(request: WipeRequest, ctx: &Context) -> Result<WipeReport, WipeError> {
    let cancel = ctx.cancel.clone();
    let wiped = tokio::task::spawn_blocking(move || wipe::wipe_device(&request, &cancel)).await;
    wiped.unwrap_or_else(|join_error| {
        Err(WipeError::Io {
            step: "running the wipe".into(),
            source: std::io::Error::other(join_error.to_string()),
        })
    })
}

/// Decides the retry after a failed cleanup and reports it.
fn error_policy(pv: Arc<PersistentVolume>, error: &CleanupError, ctx: Arc<Context>) -> Action {
    let name = pv.metadata.name.as_deref().unwrap_or_default();
    let uid = pv.metadata.uid.clone().unwrap_or_default();
    let reference = pv_reference(name, Some(&uid));
    if let CleanupError::Wipe(WipeError::Cancelled) = error {
        ctx.reporter
            .wipe_failed(&reference, &WipeError::Cancelled, None);
        return Action::await_change();
    }
    let delay = ctx
        .cleanup_backoff
        .lock()
        .expect("backoff lock")
        .record_failure(&uid, Instant::now());
    match error {
        CleanupError::Wipe(error) => ctx.reporter.wipe_failed(&reference, error, Some(delay)),
        CleanupError::Api(error) => {
            tracing::warn!(pv = name, %error, "cleanup request failed; the PV is kept; retrying in {}s", delay.as_secs());
        }
    }
    Action::requeue(delay)
}

/// A device claimed for a wipe; released (and the provisioning loop woken,
/// so the device is offered again at once) when dropped.
struct DeviceClaim<'a> {
    ctx: &'a Context,
    device: DeviceNumber,
}

impl<'a> DeviceClaim<'a> {
    fn new(ctx: &'a Context, device: DeviceNumber) -> Option<Self> {
        ctx.wipes
            .claim(device)
            .then_some(DeviceClaim { ctx, device })
    }
}

impl Drop for DeviceClaim<'_> {
    fn drop(&mut self) {
        self.ctx.wipes.release(self.device);
        self.ctx.trigger.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

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
}
