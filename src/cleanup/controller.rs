//! Cleanup: every PV of this node carries the finalizer
//! [`CLEANUP_FINALIZER`], and its device is wiped before the finalizer goes,
//! whoever deletes the PV — this program after the PV turned `Released`, an
//! admin by hand, or the garbage collector after the Node went away. Driven
//! by kube-runtime's [`Controller`] over the shared PV watch (never two
//! reconciles of one PV at once, at most [`MAX_CONCURRENT_CLEANUPS`] at a
//! time, `error_policy` deciding retries) and its `finalizer` helper
//! (the finalizer is added to PVs made before it existed, and removed only
//! after a cleanup succeeded).
//!
//! For a PV that is not being deleted ([`decide::apply_step`]): a PV of the
//! Go upstream is adopted ([`crate::cleanup::adopt`]); a bound claim is recorded on
//! the PV; a `Released` PV is deleted with UID and resourceVersion
//! preconditions (a PV changed meanwhile is left alone), unless the node is
//! paused. For a PV being deleted ([`decide::cleanup_step`]): while a claim
//! may still use it, it waits; a PV never claimed is released without a
//! wipe, and the decision is recorded on it; any other is wiped through the
//! guarded [`crate::device::wipe`] path off the async runtime, and only a completed,
//! verified wipe releases it. A refused or failed wipe keeps the finalizer,
//! is reported and retried with backoff. A crash mid-wipe leaves the PV
//! being deleted with the finalizer, so the next start wipes it again.
//!
//! [`CLEANUP_FINALIZER`]: crate::objects::pv::CLEANUP_FINALIZER

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::finalizer::{self, Event};
use thiserror::Error;
use tokio::time::Instant;
use tracing::Instrument;

use super::decide::{self, ApplyStep, CleanupStep};
use super::progress;
use crate::api::context::Context;
use crate::api::watch::Subscription;
use crate::cleanup::adopt;
use crate::device::wipe::{self, Owner, WipeError, WipeReport, WipeRequest};
use crate::error::{ApiError, Operation};
use crate::objects::pv::{
    self, CLAIMED_AT_ANNOTATION, CLAIMED_BY_ANNOTATION, CLEANUP_FINALIZER, LeanPv,
    WIPE_SKIPPED_ANNOTATION,
};
use crate::objects::spec::WipeMode;
use crate::observe::history::{self, WipeRecord};
use crate::provision::plan::ExistingPv;

/// Most cleanups reconciling at once on one node.
pub const MAX_CONCURRENT_CLEANUPS: u16 = 4;

/// How long a PV waits while another PV of the same device is being wiped.
const DEVICE_BUSY_RETRY: Duration = Duration::from_secs(1);

/// Why a cleanup did not complete; the PV and its finalizer are kept.
#[derive(Debug, Error)]
pub enum CleanupError {
    /// A request about the PV failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The wipe was refused, failed or was cancelled.
    #[error(transparent)]
    Wipe(#[from] WipeError),
    /// A claim may still use the PV being deleted.
    #[error("claim {0} may still use the PersistentVolume")]
    ClaimInUse(String),
    /// A PV of the Go upstream whose device identity is ambiguous.
    #[error("cannot adopt the PersistentVolume: {0}")]
    NotAdoptable(String),
    /// The finalizer could not be added or removed.
    #[error("finalizer {CLEANUP_FINALIZER}: {0}")]
    Finalizer(String),
    /// Not now: a retry is already scheduled, or another wipe holds the device.
    #[error("retrying in {0:?}")]
    RetryLater(Duration),
    /// The fresh read shows the PV gone, replaced or already released: the
    /// watch lagged; nothing to do.
    #[error("the PersistentVolume is already gone or released")]
    Gone,
}

/// Runs the cleanup controller until `shutdown` resolves and the cleanups
/// in flight have stopped.
pub async fn run(
    ctx: Arc<Context>,
    pvs: Subscription<LeanPv>,
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
    // The safety net, as the poll is for discovery: every PV is looked at
    // again each polling interval (decisions from the store; a request only
    // where something is due), so no missed trigger leaves a PV stuck.
    let mut every_poll = tokio::time::interval_at(
        tokio::time::Instant::now() + ctx.settings.polling_interval,
        ctx.settings.polling_interval,
    );
    let polled = futures::stream::poll_fn(move |cx| every_poll.poll_tick(cx).map(|_| Some(())));
    Controller::for_stream(pvs.map(Ok), ctx.pvs.clone())
        .reconcile_all_on(futures::stream::select(resumed, polled))
        .with_config(Config::default().concurrency(MAX_CONCURRENT_CLEANUPS))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

/// Whether this program looks after `pv`: made by it for this node, or by
/// the Go upstream for this node, or already carrying our finalizer.
fn looked_after(pv: &LeanPv, ctx: &Context) -> bool {
    let node = ctx.settings.node_name.as_str();
    pv::annotation(pv, pv::NODE_NAME_ANNOTATION) == Some(node)
        || adopt::is_upstream_pv(pv, node)
        || pv::has_cleanup_finalizer(pv)
}

/// One PV: through kube-runtime's finalizer helper to [`apply`] or [`clean`].
async fn reconcile(pv: Arc<LeanPv>, ctx: Arc<Context>) -> Result<Action, CleanupError> {
    let released = pv
        .metadata
        .uid
        .as_ref()
        .is_some_and(|uid| ctx.is_released(uid));
    if released {
        return Ok(Action::await_change());
    }
    if !looked_after(&pv, &ctx) {
        ctx.reporter.not_ours(&pv);
        return Ok(Action::await_change());
    }
    let span = tracing::info_span!(
        "cleanup",
        node = %ctx.settings.node_name,
        pv = pv.metadata.name.as_deref().unwrap_or_default(),
        device = pv::local_path(&pv).unwrap_or_default(),
    );
    let api = ctx.api.pv_api().clone();
    let releasing = pv
        .metadata
        .deletion_timestamp
        .is_some()
        .then(|| pv.metadata.uid.clone());
    let done = finalizer::finalizer(&api, CLEANUP_FINALIZER, pv, |event| async {
        match event {
            Event::Apply(pv) => apply(&pv, &ctx).await,
            Event::Cleanup(pv) => clean(&pv, &ctx).await,
        }
    })
    .instrument(span)
    .await;
    if let (Ok(_), Some(Some(uid))) = (&done, releasing) {
        // The finalizer is gone (or was): a lagging event must not clean again.
        ctx.mark_released(&uid);
    }
    done.map_err(|error| match error {
        finalizer::Error::ApplyFailed(error) | finalizer::Error::CleanupFailed(error) => error,
        finalizer::Error::AddFinalizer(source) | finalizer::Error::RemoveFinalizer(source) => {
            CleanupError::Api(ctx.api.failed(Operation::PatchPv, source))
        }
        other => CleanupError::Finalizer(other.to_string()),
    })
}

/// A PV that is not being deleted.
async fn apply(pv: &LeanPv, ctx: &Context) -> Result<Action, CleanupError> {
    let name = pv.metadata.name.as_deref().unwrap_or_default();
    match decide::apply_step(pv, &ctx.settings.node_name, ctx.is_paused()) {
        ApplyStep::Nothing => {}
        ApplyStep::Keep => ctx.reporter.kept(pv),
        ApplyStep::Adopt => {
            let identity = adoption(pv, ctx).await?;
            if ctx.api.annotate_pv(pv, &identity).await?.is_some() {
                ctx.reporter.adopted(pv, &identity);
            }
        }
        ApplyStep::RecordClaim(claim) => {
            let record = BTreeMap::from([
                (CLAIMED_BY_ANNOTATION.to_string(), claim.clone()),
                (
                    CLAIMED_AT_ANNOTATION.to_string(),
                    Timestamp::now().to_string(),
                ),
            ]);
            if ctx.api.annotate_pv(pv, &record).await?.is_some() {
                ctx.reporter.claimed(pv, &claim);
            }
        }
        ApplyStep::StartCleanup => {
            let (uid, version) = (
                pv.metadata.uid.clone(),
                pv.metadata.resource_version.clone(),
            );
            let key = uid.clone().unwrap_or_default();
            if ctx.delete_sent(&key) {
                // The store lags behind the DELETE this process sent (a
                // bulk look at every PV can come before the watch event).
                tracing::debug!("the PV's DELETE was sent; waiting for the watch to show it");
            } else if ctx.api.delete_pv(name, uid, version).await? {
                ctx.mark_delete_sent(&key);
                ctx.reporter.released(pv);
            } else {
                tracing::debug!("the PV changed since it was seen Released; looking again");
            }
        }
    }
    Ok(Action::await_change())
}

/// The identity of an upstream PV, checked against its device off the runtime.
async fn adoption(pv: &LeanPv, ctx: &Context) -> Result<BTreeMap<String, String>, CleanupError> {
    let others: Vec<ExistingPv> = ctx
        .pvs
        .state()
        .iter()
        .map(|pv| ExistingPv::from_pv(pv))
        .collect();
    let candidate = pv.clone();
    let checked = tokio::task::spawn_blocking(move || {
        adopt::check(
            &candidate,
            &others,
            crate::objects::spec::DEFAULT_WIPE_BYTES,
        )
    })
    .await
    .unwrap_or_else(|error| Err(format!("the check failed: {error}")));
    checked.map_err(CleanupError::NotAdoptable)
}

/// A PV being deleted that still carries our finalizer. `Ok` releases it.
async fn clean(pv: &LeanPv, ctx: &Context) -> Result<Action, CleanupError> {
    match decide::cleanup_step(pv) {
        CleanupStep::WaitForClaim(claim) => Err(CleanupError::ClaimInUse(claim)),
        CleanupStep::SkipWipe => {
            let note = format!(
                "{}: never claimed, released without a wipe",
                Timestamp::now()
            );
            let record = BTreeMap::from([(WIPE_SKIPPED_ANNOTATION.to_string(), note)]);
            if ctx.api.annotate_pv(pv, &record).await?.is_none() {
                return Err(CleanupError::Finalizer(
                    "the PV changed while being released; looking again".into(),
                ));
            }
            ctx.reporter.wipe_skipped(pv);
            ctx.keep_history(pv, history::after_release(pv, None));
            Ok(Action::await_change())
        }
        CleanupStep::Wipe => wipe_and_release(pv, ctx).await,
    }
}

/// Wipes the device of a PV being deleted; `Ok` lets the finalizer go.
async fn wipe_and_release(pv: &LeanPv, ctx: &Context) -> Result<Action, CleanupError> {
    let uid = pv.metadata.uid.clone().unwrap_or_default();
    let backoff = ctx
        .cleanup_backoff
        .lock()
        .expect("backoff lock")
        .remaining(&uid, Instant::now());
    if let Some(left) = backoff {
        return Err(CleanupError::RetryLater(left));
    }
    // A fresh read: the watch may lag behind a release this or another pod
    // already finished, and a device offered again must never be wiped.
    let name = pv.metadata.name.as_deref().unwrap_or_default();
    let pv = match ctx.api.get_pv(name).await? {
        Some(fresh) if still_to_clean(&fresh, &uid) => fresh,
        _ => return Err(CleanupError::Gone),
    };
    let request = wipe_request(&pv, ctx).await?;
    let Some(_claim) = DeviceClaim::new(ctx, request.number) else {
        return Err(CleanupError::RetryLater(DEVICE_BUSY_RETRY));
    };
    // Full wipes take their turn (--max-concurrent-wipes); signature wipes
    // are short and never wait.
    let _turn = match request.mode {
        WipeMode::Full => Some(
            ctx.full_wipes
                .acquire()
                .await
                .map_err(|_| CleanupError::Wipe(WipeError::Cancelled))?,
        ),
        WipeMode::Signatures => None,
    };
    ctx.reporter.wipe_started(&pv, &request);
    let report = wipe_off_runtime(request, &pv, ctx).await?;
    ctx.reporter.wipe_completed(&pv, &report);
    let wipe = WipeRecord {
        at: Timestamp::now().to_string(),
        regions: history::regions_text(&report.regions),
        duration_seconds: report.elapsed.as_secs_f64(),
    };
    ctx.keep_history(&pv, history::after_release(&pv, Some(wipe)));
    ctx.cleanup_backoff
        .lock()
        .expect("backoff lock")
        .clear(&uid);
    Ok(Action::await_change())
}

/// Whether `fresh` is still the PV `uid`, being deleted and held by our finalizer.
fn still_to_clean(fresh: &LeanPv, uid: &str) -> bool {
    fresh.metadata.uid.as_deref() == Some(uid)
        && fresh.metadata.deletion_timestamp.is_some()
        && pv::has_cleanup_finalizer(fresh)
}

/// What the wipe needs, from the PV (or, for a PV of the Go upstream not
/// adopted yet, from the adoption check).
async fn wipe_request(pv: &LeanPv, ctx: &Context) -> Result<WipeRequest, CleanupError> {
    let owner = Owner {
        node_name: &ctx.settings.node_name,
        label_value: &ctx.label_value,
    };
    if !adopt::is_upstream_pv(pv, &ctx.settings.node_name) {
        return Ok(WipeRequest::from_pv(pv, &owner)?);
    }
    let identity = adoption(pv, ctx).await?;
    let mut adopted = pv.clone();
    adopted
        .metadata
        .annotations
        .get_or_insert_default()
        .extend(identity);
    Ok(WipeRequest::from_pv(&adopted, &owner)?)
}

/// Runs the blocking wipe on a blocking thread; a full wipe's progress is
/// reported while it runs ([`progress`]).
async fn wipe_off_runtime(
    request: WipeRequest,
    pv: &LeanPv,
    ctx: &Context,
) -> Result<WipeReport, WipeError> {
    let cancel = ctx.cancel.clone();
    let method = ctx.settings.wipe_method;
    let (done, mut heard) = tokio::sync::watch::channel(request.resume_from);
    let total = request.size_bytes;
    let full = request.mode == WipeMode::Full;
    let mut wiping = tokio::task::spawn_blocking(move || {
        let report = |offset: u64| {
            done.send_replace(offset);
        };
        wipe::wipe_device(&request, method, &cancel, &report)
    });
    let mut reporter = progress::Progress::new(pv, total, ctx);
    let wiped = loop {
        tokio::select! {
            joined = &mut wiping => break joined,
            changed = heard.changed(), if full => {
                if changed.is_err() {
                    break (&mut wiping).await;
                }
                let offset = *heard.borrow_and_update();
                reporter.record(offset).await;
            }
        }
    };
    reporter.finish();
    wiped.unwrap_or_else(|join_error| {
        Err(WipeError::Io {
            step: "running the wipe".into(),
            source: std::io::Error::other(join_error.to_string()),
        })
    })
}

/// Decides the retry after a cleanup that did not complete, and reports it.
fn error_policy(pv: Arc<LeanPv>, error: &CleanupError, ctx: Arc<Context>) -> Action {
    let uid = pv.metadata.uid.clone().unwrap_or_default();
    let retry = match error {
        CleanupError::RetryLater(left) => return Action::requeue(*left),
        CleanupError::Gone => {
            tracing::debug!("the PV was gone or released already; the watch lagged");
            return Action::await_change();
        }
        CleanupError::Wipe(WipeError::Cancelled) => None,
        CleanupError::ClaimInUse(_) | CleanupError::NotAdoptable(_) => None,
        _ => Some(
            ctx.cleanup_backoff
                .lock()
                .expect("backoff lock")
                .record_failure(&uid, Instant::now()),
        ),
    };
    ctx.reporter.cleanup_failed(&pv, error, retry);
    retry.map_or_else(Action::await_change, Action::requeue)
}

/// A device claimed for a wipe; released (and the provisioning loop woken,
/// so the device is offered again at once) when dropped.
struct DeviceClaim<'a> {
    ctx: &'a Context,
    device: crate::device::blockdev::DeviceNumber,
}

impl<'a> DeviceClaim<'a> {
    fn new(ctx: &'a Context, device: crate::device::blockdev::DeviceNumber) -> Option<Self> {
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
