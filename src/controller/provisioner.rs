//! The controller of one node, wired up: the narrow watches (this Node by
//! name, this node's PVs by label, this node's pods by `spec.nodeName`),
//! the cleanup controller on the shared PV stream, the Event sender, and
//! the provisioning loop. The loop runs a [`Reconciler`] at start, on every
//! watched change (bursts coalesce into one run), on every poll tick, and
//! when the last run asked for it; on shutdown it stops taking work, lets
//! in-flight wipes stop between two writes (their PVs stay Released for the
//! next start) and returns.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::api::context::Context;
use crate::api::requests::ApiRequests;
use crate::api::watch::{Subscription, WatchSetup, Watched};
use crate::config::ControllerSettings;
use crate::controller::reconcile::{Reconciler, Stores, Wake};
use crate::objects::pv::{LeanPv, NODE_LABEL};
use crate::observe::events::EventPublisher;
use crate::observe::health::Health;
use crate::observe::metrics::Metrics;
use crate::observe::report::Reporter;

/// How long shutdown waits for in-flight cleanups to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// How long the loop must be quiet after work (a stream of PV changes as
/// new PVs settle one by one) before the memory it freed is given back.
const QUIET_BEFORE_TRIM: Duration = Duration::from_secs(1);
/// The longest a stream of work that is never quiet for
/// [`QUIET_BEFORE_TRIM`] keeps the memory it freed (a thousand new PVs move
/// to `Available` one by one over most of a minute).
const BUSY_TRIM_INTERVAL: Duration = Duration::from_secs(5);
/// How long shutdown waits for queued Events to be sent.
const EVENTS_GRACE: Duration = Duration::from_secs(2);

/// The three narrow watches of one node.
struct NodeWatches {
    nodes: Watched<Node>,
    pvs: Watched<LeanPv>,
    pods: Watched<Pod>,
}

impl NodeWatches {
    /// Starts the watches of `node`; the PV stream is shared with the
    /// cleanup. The Node's changes notify `trigger`; the PVs' and pods'
    /// notify `volumes` (the loop does work per changed object).
    fn start(
        client: &Client,
        node: &str,
        (trigger, volumes): (&Arc<Notify>, &Arc<Notify>),
        health: &Health,
    ) -> (Self, Subscription<LeanPv>) {
        let setup = |what, trigger: &Arc<Notify>| WatchSetup {
            what,
            trigger: trigger.clone(),
            health,
        };
        let label_value = crate::objects::naming::node_label_value(node);
        let by_name = watcher::Config::default()
            .fields(&format!("metadata.name={node}"))
            .any_semantic();
        let by_label = watcher::Config::default()
            .labels(&format!("{NODE_LABEL}={label_value}"))
            .any_semantic();
        let on_node = watcher::Config::default()
            .fields(&format!("spec.nodeName={node}"))
            .any_semantic();
        let nodes = Watched::spawn_trimmed_distinct(
            Api::all(client.clone()),
            by_name,
            setup("node", trigger),
            crate::api::watch::trim_node,
        );
        let (pvs, pv_stream) = Watched::spawn_shared(
            Api::all(client.clone()),
            by_label,
            setup("persistentvolumes", volumes),
            crate::api::watch::trim_pv,
        );
        let pods = Watched::spawn_trimmed(
            Api::all(client.clone()),
            on_node,
            setup("pods", volumes),
            crate::observe::volumes::strip_pod,
        );
        (NodeWatches { nodes, pvs, pods }, pv_stream)
    }
}

/// Runs the controller of `settings.node_name` until `shutdown` turns true.
pub async fn run(
    client: Client,
    settings: ControllerSettings,
    metrics: Metrics,
    health: Health,
    mut shutdown: watch::Receiver<bool>,
) {
    metrics.initialize(crate::cleanup::report::wipe_failure_reasons());
    let trigger = Arc::new(Notify::new());
    let volumes = Arc::new(Notify::new());
    let (watches, pv_stream) =
        NodeWatches::start(&client, &settings.node_name, (&trigger, &volumes), &health);
    let (events, event_sender) =
        EventPublisher::start(client.clone(), &settings.instance, metrics.clone());
    let reporter = Reporter::new(events, metrics.clone(), &settings.node_name);
    let api = ApiRequests::new(client.clone(), metrics.clone());
    let pvs = &watches.pvs;
    let ctx = Arc::new(Context::new(
        settings,
        api,
        reporter,
        pvs.store.clone(),
        pvs.relists(),
        trigger.clone(),
    ));
    let cleanup = {
        let mut stopped = shutdown.clone();
        tokio::spawn(crate::cleanup::controller::run(
            ctx.clone(),
            pv_stream,
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            },
        ))
    };
    let stores = Stores {
        nodes: watches.nodes.store.clone(),
        pods: watches.pods.store.clone(),
        pod_changes: watches.pods.changes.clone(),
        pv_changes: watches.pvs.changes.clone(),
    };
    let mut reconciler = Reconciler::new(&ctx, client, health.clone(), stores);
    // The first reconcile needs only the Node (to start the ConfigMap's
    // watch); it waits for the PV list itself, which arrives meanwhile.
    let mut started = false;
    while !*shutdown.borrow() {
        if watches.nodes.is_synced() {
            started = true;
            break;
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = trigger.notified() => {}
        }
    }
    if started {
        provision(&ctx, &mut reconciler, &volumes, &mut shutdown).await;
    }
    tracing::info!("shutting down");
    health.set_stopping();
    ctx.cancel.store(true, Ordering::Relaxed);
    if tokio::time::timeout(SHUTDOWN_GRACE, cleanup).await.is_err() {
        tracing::warn!("cleanups did not stop within {SHUTDOWN_GRACE:?}");
    }
    drop(reconciler);
    drop(ctx);
    event_sender.finish(EVENTS_GRACE).await;
}

/// The loop: reconcile, then wait for a change (of the PVs or pods:
/// `volumes`), a poll tick, the time the reconcile asked for, or shutdown.
async fn provision(
    ctx: &Context,
    reconciler: &mut Reconciler,
    volumes: &Notify,
    shutdown: &mut watch::Receiver<bool>,
) {
    let mut poll = tokio::time::interval(ctx.settings.polling_interval);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    poll.tick().await;
    let mut wake = Wake::Poll;
    let mut trimmed_at = Instant::now();
    loop {
        let created = ctx.reporter.metrics.pvs_created.get();
        let next = reconciler.reconcile(ctx, wake).await;
        // When to give back the memory the work freed: at once after a
        // burst (creates, a full rescan), else once the loop has been
        // quiet for a while, and during a long stream of PV changes (new
        // PVs settling) every few seconds.
        let mut trim_at = if wake == Wake::Poll || ctx.reporter.metrics.pvs_created.get() != created
        {
            crate::controller::memory::return_free_memory();
            trimmed_at = Instant::now();
            None
        } else {
            Some((Instant::now() + QUIET_BEFORE_TRIM).min(trimmed_at + BUSY_TRIM_INTERVAL))
        };
        loop {
            let asked = async move {
                match next {
                    Some(at) => tokio::time::sleep_until(at.max(Instant::now())).await,
                    None => std::future::pending().await,
                }
            };
            let trim = async move {
                match trim_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            wake = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = ctx.trigger.notified() => Wake::Change,
                _ = volumes.notified() => Wake::Volumes,
                _ = poll.tick() => Wake::Poll,
                _ = asked => Wake::Change,
                _ = trim => {
                    crate::controller::memory::return_free_memory();
                    trimmed_at = Instant::now();
                    trim_at = None;
                    continue;
                }
            };
            break;
        }
    }
}
