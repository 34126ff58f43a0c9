//! The `node-cleanup` mode: releases the PersistentVolumes of Nodes gone
//! for good. The pod that would remove a PV's cleanup finalizer goes with
//! its node, so without this a deleted Node's PVs keep the finalizer
//! forever, their claims stay Bound and StatefulSet pods stay Pending.
//!
//! Runs as a small Deployment (two replicas) with leader election on a
//! `coordination.k8s.io` Lease in its namespace (`kube-lease-manager`):
//! only the leader watches and acts. The leader watches every Node
//! (metadata only) and this program's PVs (label
//! `local-pv-provisioner.cybozu.io/node` exists), and on every change, at
//! the end of a PV's grace and each [`RESYNC`] runs one pass over its
//! stores, deciding each PV with [`crate::cleanup::node_gone::step`]:
//!
//! - a PV whose Node is absent is marked with the time it was first seen
//!   absent (`…/node-gone-since`, so the grace survives restarts of this
//!   controller); a Node back within the grace only removes the mark;
//! - once the Node has been absent for `--node-gone-grace` (and a fresh
//!   list says it still is), the PV is released **without a wipe**: the
//!   wipe-skipped note and the device's history are recorded (resourceVersion
//!   precondition), a `NodeGone` Event is published, the bound claim is
//!   deleted where the PV asks for it (UID precondition), the PV is deleted
//!   unless it already is (UID precondition), and last only the cleanup
//!   finalizer is removed (JSON patch testing the finalizers first).
//!
//! A request refused because the PV changed meanwhile is retried by the
//! next pass, from the store. Nothing here opens a device or touches a PV
//! without this program's cleanup finalizer. Its own Prometheus registry
//! is served with `/healthz` and `/readyz` on `--metrics-addr`.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, PartialObjectMeta, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use kube_lease_manager::LeaseManagerBuilder;
use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::cleanup::node_gone::{self, NodeGoneStep, Release};
use crate::config::NodeCleanupArgs;
use crate::objects::pv::{LeanPv, NODE_GONE_SINCE_ANNOTATION, NODE_LABEL};
use crate::objects::reasons;
use crate::observe::events::{EventPublisher, Severity};

/// How often the leader looks at every PV again without a change (the
/// safety net for a missed event and the retry of a refused request).
pub const RESYNC: Duration = Duration::from_secs(30);
/// How long a Lease stays valid without being renewed, in seconds.
pub const LEASE_DURATION_SECONDS: u64 = 15;
/// How long before the Lease expires its holder renews it, in seconds.
pub const LEASE_GRACE_SECONDS: u64 = 5;
/// Least time between the starts of two passes: a busy cluster's Node
/// updates come in bursts, and one pass sees them all.
const PASS_GAP: Duration = Duration::from_millis(500);
/// How long shutdown waits for the Lease to be released and Events sent.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// First and longest wait between attempts to set up the Lease.
const LEASE_RETRY: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

/// The settings of the `node-cleanup` mode, validated from its flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a Node must be absent before its PVs are released.
    pub grace: Duration,
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// The Lease holder identity and reporting instance of Events.
    pub identity: String,
    /// Bind address of `/metrics`, `/healthz` and `/readyz`.
    pub metrics_addr: SocketAddr,
    /// Development logging.
    pub development: bool,
}

impl Settings {
    /// Validates the flags: a namespace and Lease name, an identity (the
    /// pod name, else the hostname) of at most 128 characters.
    pub fn from_args(args: NodeCleanupArgs) -> Result<Settings, String> {
        if args.namespace_name.is_empty() {
            return Err("the required flag --namespace-name / LP_NAMESPACE_NAME is empty".into());
        }
        if args.lease_name.is_empty() {
            return Err("--lease-name / LP_LEASE_NAME must not be empty".into());
        }
        let mut identity = args
            .pod_name
            .filter(|name| !name.is_empty())
            .or_else(hostname)
            .unwrap_or_else(|| "local-pv-provisioner-node-cleanup".into());
        while identity.len() > 128 {
            identity.pop();
        }
        Ok(Settings {
            grace: args.node_gone_grace,
            namespace: args.namespace_name,
            lease_name: args.lease_name,
            identity,
            metrics_addr: args.metrics_addr,
            development: args.development,
        })
    }
}

/// This machine's hostname, if the kernel says.
fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
}

/// The `operation`s of `node_cleanup_api_errors_total`.
const OPERATIONS: [&str; 4] = ["list_nodes", "patch_pv", "delete_pv", "delete_claim"];

/// The metrics of the `node-cleanup` mode, in a registry of their own.
#[derive(Clone)]
pub struct NodeCleanupMetrics {
    registry: Registry,
    /// 1 while this replica holds the Lease, else 0.
    pub leader: IntGauge,
    /// Passes over every PV finished as the leader.
    pub passes: IntCounter,
    /// PVs whose Node is absent, waiting out the grace (last pass).
    pub waiting: IntGauge,
    /// PVs released without a wipe because their Node is gone.
    pub released: IntCounter,
    /// Claims deleted because their PV's Node is gone.
    pub claims_deleted: IntCounter,
    /// PVs deleted because their Node is gone.
    pub pvs_deleted: IntCounter,
    /// Failed API requests, by operation.
    pub api_errors: IntCounterVec,
}

impl NodeCleanupMetrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let opts = |name: &str, help: &str| Opts::new(format!("local_pv_provisioner_{name}"), help);
        let register = |metric: Box<dyn prometheus::core::Collector>| {
            registry.register(metric).expect("unique metric");
        };
        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::with_opts(opts(name, help)).expect("valid gauge");
            register(Box::new(gauge.clone()));
            gauge
        };
        let counter = |name: &str, help: &str| {
            let counter = IntCounter::with_opts(opts(name, help)).expect("valid counter");
            register(Box::new(counter.clone()));
            counter
        };
        let api_errors = IntCounterVec::new(
            opts(
                "node_cleanup_api_errors_total",
                "Failed Kubernetes API requests of node-cleanup, by operation.",
            ),
            &["operation"],
        )
        .expect("valid counter");
        register(Box::new(api_errors.clone()));
        // Every operation at 0 from the start: rate() and alerts tell "no
        // failures" from "not scraped".
        for operation in OPERATIONS {
            api_errors.with_label_values(&[operation]);
        }
        NodeCleanupMetrics {
            leader: gauge(
                "node_cleanup_leader",
                "1 while this node-cleanup replica holds the leader Lease, else 0.",
            ),
            passes: counter(
                "node_cleanup_passes_total",
                "Passes over every PersistentVolume finished by the node-cleanup leader.",
            ),
            waiting: gauge(
                "node_gone_pvs_waiting",
                "PersistentVolumes whose Node is absent, waiting out --node-gone-grace (last pass).",
            ),
            released: counter(
                "node_gone_pvs_released_total",
                "PersistentVolumes of Nodes gone for good released without a wipe.",
            ),
            claims_deleted: counter(
                "node_gone_claims_deleted_total",
                "Claims deleted because their PersistentVolume's Node is gone for good.",
            ),
            pvs_deleted: counter(
                "node_gone_pvs_deleted_total",
                "PersistentVolumes deleted because their Node is gone for good.",
            ),
            api_errors,
            registry,
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

    fn failed(&self, operation: &str, error: &kube::Error) {
        self.api_errors.with_label_values(&[operation]).inc();
        tracing::warn!(operation, %error, "an API request failed; retried by a later pass");
    }
}

impl Default for NodeCleanupMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone)]
struct ServerState {
    metrics: NodeCleanupMetrics,
    ready: Arc<AtomicBool>,
}

/// Serves `/metrics`, `/healthz` (the process runs) and `/readyz` (the
/// Lease is set up and the process is not stopping) on `listener` until
/// `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: NodeCleanupMetrics,
    ready: Arc<AtomicBool>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new()
        .route(
            "/metrics",
            get(|State(state): State<ServerState>| async move {
                (
                    [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
                    state.metrics.render(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(state): State<ServerState>| async move {
                if state.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready").into_response()
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
                }
            }),
        )
        .with_state(ServerState { metrics, ready });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Runs the `node-cleanup` mode until `shutdown` turns true: sets up the
/// Lease (retried while the API server cannot be reached), then acts while
/// this replica leads. On shutdown the Lease is released, so the other
/// replica takes over at once. An error: the leader election ended by
/// itself (the process should restart).
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: NodeCleanupMetrics,
    ready: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let Some(manager) = lease_manager(&client, &settings, &mut shutdown).await else {
        return Ok(());
    };
    ready.store(true, Ordering::Relaxed);
    tracing::info!(lease = %settings.lease_name, namespace = %settings.namespace, identity = %settings.identity, "waiting to lead");
    let (events, event_sender) = EventPublisher::start(
        client.clone(),
        &settings.identity,
        crate::observe::metrics::Metrics::new("node-cleanup"),
    );
    let (mut leading, mut lease_task) = manager.watch().await;
    let mut ended = None;
    let leader = Leader {
        client,
        settings,
        metrics: metrics.clone(),
        events,
        released: Mutex::default(),
    };
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            led = leading.wait_for(|lead| *lead) => if led.is_err() {
                ended = Some("the leader election ended".to_string());
                break;
            },
        }
        tracing::info!("leading: releasing the PersistentVolumes of Nodes gone for good");
        metrics.leader.set(1);
        leader.lead(leading.clone(), shutdown.clone()).await;
        metrics.leader.set(0);
        if *shutdown.borrow() {
            break;
        }
        if leading.has_changed().is_err() {
            ended = Some("the leader election ended".to_string());
            break;
        }
        tracing::warn!("no longer leading");
    }
    ready.store(false, Ordering::Relaxed);
    // Closing the channel makes the Lease task release the Lease and end.
    drop(leading);
    match tokio::time::timeout(SHUTDOWN_GRACE, &mut lease_task).await {
        Err(_) => tracing::warn!("the Lease was not released within {SHUTDOWN_GRACE:?}"),
        Ok(Ok(Err(error))) => {
            let why = format!("the leader election failed: {error}");
            ended = Some(ended.map_or(why.clone(), |ended| format!("{ended}: {why}")));
        }
        Ok(_) => {}
    }
    drop(leader);
    event_sender.finish(SHUTDOWN_GRACE).await;
    ended.map_or(Ok(()), Err)
}

/// The Lease manager, once the Lease could be read or created; `None` on
/// shutdown first.
async fn lease_manager(
    client: &Client,
    settings: &Settings,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<kube_lease_manager::LeaseManager> {
    let mut wait = LEASE_RETRY.0;
    loop {
        let built = LeaseManagerBuilder::new(client.clone(), &settings.lease_name)
            .with_namespace(&settings.namespace)
            .with_identity(&settings.identity)
            .with_duration(LEASE_DURATION_SECONDS)
            .with_grace(LEASE_GRACE_SECONDS)
            .build()
            .await;
        match built {
            Ok(manager) => return Some(manager),
            Err(error) => {
                tracing::warn!(%error, lease = %settings.lease_name, "cannot set up the leader election Lease; retrying in {wait:?}")
            }
        }
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return None,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(LEASE_RETRY.1);
    }
}

/// What the leader needs to act.
struct Leader {
    client: Client,
    settings: Settings,
    metrics: NodeCleanupMetrics,
    events: EventPublisher,
    /// UIDs of the PVs released: a lagging watch may still show them with
    /// the cleanup finalizer, and they must not be released twice.
    released: Mutex<HashSet<String>>,
}

/// A watch feeding a store; aborted when dropped.
struct Watching<K: Resource + 'static>
where
    K::DynamicType: std::hash::Hash + Eq,
{
    store: Store<K>,
    synced: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl<K: Resource + 'static> Drop for Watching<K>
where
    K::DynamicType: std::hash::Hash + Eq,
{
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<K> Watching<K>
where
    K: Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Default,
{
    /// Feeds a fresh store from `events`, notifying `trigger` on every event.
    fn spawn(
        what: &'static str,
        events: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
        trigger: Arc<Notify>,
    ) -> Self {
        let (store, writer) = reflector::store();
        let synced = Arc::new(AtomicBool::new(false));
        let flag = synced.clone();
        let events = reflector::reflector(writer, events).default_backoff();
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => flag.store(true, Ordering::Relaxed),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(what, %error, "watch failed; retrying"),
                }
                trigger.notify_one();
            }
        });
        Watching {
            store,
            synced,
            task,
        }
    }

    fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }
}

impl Leader {
    /// Acts until this replica no longer leads or `shutdown` turns true.
    async fn lead(&self, mut leading: watch::Receiver<bool>, mut shutdown: watch::Receiver<bool>) {
        let trigger = Arc::new(Notify::new());
        let nodes = Watching::<PartialObjectMeta<Node>>::spawn(
            "nodes",
            watcher(
                Api::<PartialObjectMeta<Node>>::all(self.client.clone()),
                watcher::Config::default(),
            ),
            trigger.clone(),
        );
        let pvs = Watching::<LeanPv>::spawn(
            "persistentvolumes",
            watcher(
                Api::all(self.client.clone()),
                watcher::Config::default().labels(NODE_LABEL),
            )
            .modify(crate::api::watch::trim_pv),
            trigger.clone(),
        );
        let mut resync = tokio::time::interval(RESYNC);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = None;
        loop {
            if let Some(last) = last {
                tokio::time::sleep_until(last + PASS_GAP).await;
            }
            let next = if nodes.is_synced() && pvs.is_synced() {
                last = Some(tokio::time::Instant::now());
                self.pass(&nodes.store, &pvs.store, &leading).await
            } else {
                None
            };
            let deadline = async move {
                match next {
                    Some(until) => {
                        let left = until.duration_since(Timestamp::now());
                        let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
                        // A little after the grace ends, so the pass sees it over.
                        tokio::time::sleep(left + Duration::from_millis(50)).await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = leading.wait_for(|lead| !*lead) => return,
                _ = trigger.notified() => {}
                _ = resync.tick() => {}
                _ = deadline => {}
            }
        }
    }

    /// One pass over every PV of the store; returns when the next PV's
    /// grace ends, if one is waiting.
    async fn pass(
        &self,
        nodes: &Store<PartialObjectMeta<Node>>,
        pvs: &Store<LeanPv>,
        leading: &watch::Receiver<bool>,
    ) -> Option<Timestamp> {
        let present: HashSet<String> = nodes
            .state()
            .iter()
            .filter_map(|node| node.metadata.name.clone())
            .collect();
        let now = Timestamp::now();
        let mut next: Option<Timestamp> = None;
        let mut waiting = 0;
        for pv in pvs.state() {
            if !*leading.borrow() {
                return None;
            }
            let uid = pv.metadata.uid.as_deref().unwrap_or_default();
            if self.released.lock().expect("released lock").contains(uid) {
                continue;
            }
            let step =
                node_gone::step(&pv, |node| present.contains(node), now, self.settings.grace);
            let name = pv.metadata.name.as_deref().unwrap_or_default();
            let node = node_gone::node_of(&pv).unwrap_or_default();
            match step {
                NodeGoneStep::LeaveAlone | NodeGoneStep::Nothing => {}
                NodeGoneStep::ClearMark => {
                    tracing::info!(
                        pv = name,
                        node,
                        "the Node is back within the grace; removing the mark"
                    );
                    let patch = serde_json::json!({"metadata": {
                        "resourceVersion": pv.metadata.resource_version,
                        "annotations": {NODE_GONE_SINCE_ANNOTATION: null},
                    }});
                    self.patch_pv(name, &Patch::Merge(&patch)).await;
                }
                NodeGoneStep::Mark { since } => {
                    tracing::info!(pv = name, node, grace = ?self.settings.grace, "the PersistentVolume's Node is absent; it is released without a wipe if the Node stays away for the grace");
                    waiting += 1;
                    let until = since
                        .parse::<Timestamp>()
                        .ok()
                        .and_then(|at| at.checked_add(self.settings.grace).ok());
                    next = earliest(next, until);
                    let patch = serde_json::json!({"metadata": {
                        "resourceVersion": pv.metadata.resource_version,
                        "annotations": {NODE_GONE_SINCE_ANNOTATION: since},
                    }});
                    self.patch_pv(name, &Patch::Merge(&patch)).await;
                }
                NodeGoneStep::Wait { until } => {
                    waiting += 1;
                    next = earliest(next, Some(until));
                }
                NodeGoneStep::Release(release) => {
                    if self.node_listed(&release.node).await {
                        tracing::info!(pv = name, node, "the Node is listed again; not releasing");
                        continue;
                    }
                    self.release(&pv, &release).await;
                }
            }
        }
        self.metrics.waiting.set(waiting);
        self.metrics.passes.inc();
        next
    }

    /// Whether a fresh list finds Node `name` (a failed list counts as
    /// found: nothing is released on a guess).
    async fn node_listed(&self, name: &str) -> bool {
        let params = ListParams::default().fields(&format!("metadata.name={name}"));
        match Api::<Node>::all(self.client.clone())
            .list_metadata(&params)
            .await
        {
            Ok(list) => !list.items.is_empty(),
            Err(error) => {
                self.metrics.failed("list_nodes", &error);
                true
            }
        }
    }

    /// Patches a PV; `false` when the request failed or the PV changed
    /// meanwhile (the next pass looks again).
    async fn patch_pv<P: serde::Serialize + std::fmt::Debug>(
        &self,
        name: &str,
        patch: &Patch<P>,
    ) -> bool {
        let api = Api::<LeanPv>::all(self.client.clone());
        match api.patch(name, &PatchParams::default(), patch).await {
            Ok(_) => true,
            Err(error) if changed_meanwhile(&error) => {
                tracing::debug!(pv = name, %error, "the PersistentVolume changed meanwhile; looking again");
                false
            }
            Err(error) => {
                self.metrics.failed("patch_pv", &error);
                false
            }
        }
    }

    /// Releases a PV of a Node gone for good: annotate, Event, delete the
    /// claim, delete the PV, remove the cleanup finalizer, in that order;
    /// a step that does not go through leaves the rest to the next pass.
    async fn release(&self, pv: &LeanPv, release: &Release) {
        let name = pv.metadata.name.as_deref().unwrap_or_default();
        let span = tracing::info_span!("node_gone", pv = name, node = %release.node);
        self.release_steps(pv, release).instrument(span).await;
    }

    /// The steps of [`Self::release`].
    async fn release_steps(&self, pv: &LeanPv, release: &Release) {
        let name = pv.metadata.name.as_deref().unwrap_or_default();
        if let Some(annotations) = &release.annotations {
            if !self.annotate(pv, annotations).await {
                return;
            }
            tracing::warn!(
                "the Node has been gone for the grace: releasing the PersistentVolume without a wipe (the disk left with the node)"
            );
            self.events.publish(
                &pv.object_ref(&()),
                Severity::Warning,
                reasons::NODE_GONE,
                "Release",
                &node_gone::event_note(release, self.settings.grace),
            );
        }
        if let Some(claim) = &release.delete_claim {
            let api =
                Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &claim.namespace);
            match api.delete(&claim.name, &with_uid(&claim.uid)).await {
                Ok(_) => {
                    tracing::info!(claim = %claim.key(), "deleted the claim of the released PersistentVolume");
                    self.metrics.claims_deleted.inc();
                }
                Err(error) if status(&error) == Some(404) => {}
                Err(error) if status(&error) == Some(409) => {
                    tracing::info!(claim = %claim.key(), "a claim of that name with another UID exists; left alone");
                }
                Err(error) => return self.metrics.failed("delete_claim", &error),
            }
        }
        let api = Api::<LeanPv>::all(self.client.clone());
        let uid = pv.metadata.uid.clone().unwrap_or_default();
        if release.delete_pv {
            match api.delete(name, &with_uid(&uid)).await {
                Ok(_) => self.metrics.pvs_deleted.inc(),
                Err(error) if status(&error) == Some(404) => return,
                Err(error) if status(&error) == Some(409) => return,
                Err(error) => return self.metrics.failed("delete_pv", &error),
            }
        }
        let current: Vec<&String> = pv.metadata.finalizers.iter().flatten().collect();
        let operations = serde_json::json!([
            {"op": "test", "path": "/metadata/uid", "value": uid},
            {"op": "test", "path": "/metadata/finalizers", "value": current},
            {"op": "replace", "path": "/metadata/finalizers", "value": release.kept_finalizers},
        ]);
        let patch: Patch<()> =
            Patch::Json(serde_json::from_value(operations).expect("a JSON patch"));
        match api.patch(name, &PatchParams::default(), &patch).await {
            Ok(_) => {}
            Err(error) if status(&error) == Some(404) => {}
            Err(error) if changed_meanwhile(&error) => {
                tracing::debug!(%error, "the finalizers changed meanwhile; looking again");
                return;
            }
            Err(error) => return self.metrics.failed("patch_pv", &error),
        }
        tracing::info!("released without a wipe: the cleanup finalizer is removed");
        self.released.lock().expect("released lock").insert(uid);
        self.metrics.released.inc();
    }

    /// Adds `annotations` only if the PV still has the snapshot's
    /// resourceVersion.
    async fn annotate(&self, pv: &LeanPv, annotations: &BTreeMap<String, String>) -> bool {
        let patch = serde_json::json!({"metadata": {
            "resourceVersion": pv.metadata.resource_version,
            "annotations": annotations,
        }});
        let name = pv.metadata.name.as_deref().unwrap_or_default();
        self.patch_pv(name, &Patch::Merge(&patch)).await
    }
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn with_uid(uid: &str) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}

fn status(error: &kube::Error) -> Option<u16> {
    crate::error::status_code(error)
}

/// A write refused because the object is not what the snapshot showed: a
/// resourceVersion or UID precondition (409), or a failed JSON patch test (422).
fn changed_meanwhile(error: &kube::Error) -> bool {
    matches!(status(error), Some(409 | 422))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn settings_take_the_pod_name_as_identity() {
        let cli = crate::config::Cli::try_parse_from([
            "local-pv-provisioner",
            "node-cleanup",
            "--namespace-name=ns",
            "--pod-name=cleanup-0",
        ])
        .unwrap();
        let Some(crate::config::Command::NodeCleanup(args)) = cli.command else {
            panic!("not node-cleanup");
        };
        let settings = Settings::from_args(args).unwrap();
        assert_eq!(settings.identity, "cleanup-0");
        assert_eq!(settings.grace, Duration::from_secs(600));
    }

    #[test]
    fn metrics_are_named_for_node_cleanup() {
        let metrics = NodeCleanupMetrics::new();
        metrics.released.inc();
        metrics.api_errors.with_label_values(&["patch_pv"]).inc();
        let text = metrics.render();
        for sample in [
            "local_pv_provisioner_node_gone_pvs_released_total 1",
            "local_pv_provisioner_node_cleanup_leader 0",
            "local_pv_provisioner_node_gone_pvs_waiting 0",
            "local_pv_provisioner_node_cleanup_api_errors_total{operation=\"patch_pv\"} 1",
        ] {
            assert!(text.contains(sample), "{sample} in {text}");
        }
    }

    #[test]
    fn the_earliest_deadline_wins() {
        let (a, b) = (
            "2026-01-01T00:00:00Z".parse().unwrap(),
            "2026-01-02T00:00:00Z".parse().unwrap(),
        );
        assert_eq!(earliest(Some(b), Some(a)), Some(a));
        assert_eq!(earliest(None, Some(b)), Some(b));
        assert_eq!(earliest(None, None), None);
    }
}
