//! One reconcile of the node, top to bottom: snapshot the watched objects,
//! resolve the node's PV spec, scan the devices, decide device loss, plan,
//! create the missing PVs, report. It returns when it wants to run again
//! (a retry or a device-loss deadline); the loop in [`crate::provisioner`]
//! also runs it on every change and poll tick.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node, ObjectReference, PersistentVolume};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use tokio::time::Instant;

use crate::apply::CreateOutcome;
use crate::backoff::{BackoffTable, REFUSED_CREATE_RETRY, UNREACHABLE_RETRY};
use crate::context::Context;
use crate::device_loss::DeviceLossTracker;
use crate::discovery::{DeviceProblem, Scan, scan_devices};
use crate::health::{Health, ReconcileHealth};
use crate::node_spec::{SpecSource, SpecState, read_spec, spec_source, summarize};
use crate::plan::{ExistingPv, plan};
use crate::pv::{HOSTNAME_LABEL, NodeFacts, local_path};
use crate::report::NodeReports;
use crate::spec::PvSpec;
use crate::watch::{WatchSetup, Watched};

/// How long a created PV the watch has not shown yet still counts as existing.
const CREATED_MEMORY: Duration = Duration::from_secs(30);

/// The node's spec, once resolved.
enum Resolved {
    /// The ConfigMap's name and its valid spec.
    Usable(String, PvSpec),
    /// The ConfigMap's watch has not delivered its first list yet.
    Waiting,
    /// No usable spec: the node is left alone.
    Unusable,
}

/// What a scan found: the devices (`None` when `deviceDir` does not exist)
/// and the PVs whose device path no longer leads to a block device.
struct Scanned {
    devices: Option<Scan>,
    missing: BTreeSet<String>,
}

/// The provisioning state that lives from one reconcile to the next.
pub struct Reconciler {
    client: Client,
    health: Health,
    nodes: Store<Node>,
    spec_watch: Option<(String, Watched<ConfigMap>)>,
    loss: DeviceLossTracker,
    refused: BackoffTable<PathBuf>,
    refusals: Vec<DeviceProblem>,
    unreachable: BackoffTable<()>,
    /// PVs created that the watch has not shown yet: planned as existing,
    /// so a lagging store never causes a second create.
    recently_created: Vec<(Instant, PersistentVolume)>,
    reports: NodeReports,
}

impl Reconciler {
    /// A reconciler reading the Node from `nodes`.
    pub fn new(ctx: &Context, client: Client, health: Health, nodes: Store<Node>) -> Self {
        Reconciler {
            client,
            health,
            nodes,
            spec_watch: None,
            loss: DeviceLossTracker::new(ctx.settings.device_loss_grace),
            refused: BackoffTable::new(REFUSED_CREATE_RETRY),
            refusals: Vec::new(),
            unreachable: BackoffTable::new(UNREACHABLE_RETRY),
            recently_created: Vec::new(),
            reports: NodeReports::new(ctx.reporter.clone()),
        }
    }

    /// Runs one reconcile; returns when it wants to run again.
    #[tracing::instrument(name = "reconcile", skip_all, fields(node = %ctx.settings.node_name))]
    pub async fn reconcile(&mut self, ctx: &Context) -> Option<Instant> {
        let name = ObjectRef::new(&ctx.settings.node_name);
        let Some(node) = self.nodes.get(&name) else {
            ctx.set_paused(true);
            self.reports.spec_state(SpecState::NodeMissing, None);
            self.record(false, None);
            return None;
        };
        let node_ref = node.object_ref(&());
        let (configmap, spec) = match self.resolve_spec(ctx, &node, &node_ref) {
            Resolved::Usable(configmap, spec) => (configmap, spec),
            Resolved::Waiting => return None,
            Resolved::Unusable => {
                ctx.set_paused(true);
                self.record(true, None);
                return None;
            }
        };
        let pvs = ctx.pvs.state();
        ctx.reporter.metrics.released_pending.set(
            pvs.iter()
                .filter(|pv| crate::cleanup::needs_cleanup(pv))
                .count() as i64,
        );
        let existing = self.existing(&pvs);
        let scanned = match scan(&spec, &existing).await {
            Ok(scanned) => scanned,
            Err(error) => {
                ctx.set_paused(true);
                let state = SpecState::DeviceDirUnreadable(configmap, error);
                self.reports.spec_state(state, Some(&node_ref));
                self.record(true, None);
                return None;
            }
        };
        let ready = SpecState::Ready {
            configmap,
            summary: summarize(&spec),
            device_dir_missing: scanned.devices.is_none(),
        };
        self.reports.spec_state(ready, Some(&node_ref));
        ctx.set_paused(false);
        let recheck_at = self
            .handle_lost_devices(ctx, &pvs, &existing, &scanned.missing)
            .await;
        let facts = node_facts(ctx, &node);
        let devices = scanned.devices.unwrap_or_default();
        let api_reachable = self
            .provision(ctx, &facts, &spec, &devices, &existing, &node_ref)
            .await;
        self.record(true, api_reachable);
        [
            recheck_at,
            self.refused.next_due(),
            self.unreachable.next_due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// This node's PVs: those in the store, and those created that the
    /// watch has not shown yet.
    fn existing(&mut self, pvs: &[Arc<PersistentVolume>]) -> Vec<ExistingPv> {
        let now = Instant::now();
        self.recently_created.retain(|(at, created)| {
            now.duration_since(*at) < CREATED_MEMORY
                && !pvs
                    .iter()
                    .any(|pv| pv.metadata.name == created.metadata.name)
        });
        pvs.iter()
            .map(|pv| ExistingPv::from_pv(pv))
            .chain(
                self.recently_created
                    .iter()
                    .map(|(_, pv)| ExistingPv::from_pv(pv)),
            )
            .collect()
    }

    fn record(&self, node_present: bool, api_reachable: Option<bool>) {
        self.health.record_reconcile(ReconcileHealth {
            node_present,
            api_reachable,
        });
    }

    /// Finds and parses the node's PV spec, watching its ConfigMap by name.
    fn resolve_spec(&mut self, ctx: &Context, node: &Node, node_ref: &ObjectReference) -> Resolved {
        let default = ctx.settings.default_pv_spec_configmap.as_deref();
        let name = match spec_source(node, default) {
            SpecSource::ConfigMap(name) => name,
            SpecSource::Unusable(state) => {
                self.spec_watch = None;
                self.reports.spec_state(state, Some(node_ref));
                return Resolved::Unusable;
            }
        };
        let watched = self.watch_configmap(ctx, &name);
        if !watched.is_synced() {
            return Resolved::Waiting;
        }
        let key = ObjectRef::new(&name).within(&ctx.settings.namespace);
        match read_spec(&name, watched.store.get(&key).as_deref()) {
            Ok(spec) => Resolved::Usable(name, spec),
            Err(state) => {
                self.reports.spec_state(state, Some(node_ref));
                Resolved::Unusable
            }
        }
    }

    /// The watch of ConfigMap `name`, (re)started when the name changed.
    fn watch_configmap(&mut self, ctx: &Context, name: &str) -> &Watched<ConfigMap> {
        if self
            .spec_watch
            .as_ref()
            .is_none_or(|(watched, _)| watched != name)
        {
            let watched = Watched::spawn(
                Api::namespaced(self.client.clone(), &ctx.settings.namespace),
                watcher::Config::default()
                    .fields(&format!("metadata.name={name}"))
                    .any_semantic(),
                WatchSetup {
                    what: "configmap",
                    trigger: ctx.trigger.clone(),
                    health: &self.health,
                },
            );
            self.spec_watch = Some((name.to_string(), watched));
        }
        &self.spec_watch.as_ref().expect("just set").1
    }

    /// Deletes the unclaimed Available PVs of lost devices and reports the
    /// kept and returned ones; returns when a missing device will count as lost.
    async fn handle_lost_devices(
        &mut self,
        ctx: &Context,
        pvs: &[Arc<PersistentVolume>],
        existing: &[ExistingPv],
        missing: &BTreeSet<String>,
    ) -> Option<Instant> {
        let decision = self.loss.observe(Instant::now(), missing, existing);
        let find = |name: &String| {
            pvs.iter()
                .find(|pv| pv.metadata.name.as_ref() == Some(name))
        };
        let reporter = self.reports.reporter();
        for pv in decision.returned.iter().filter_map(find) {
            reporter.device_returned(pv);
        }
        for pv in decision.newly_kept.iter().filter_map(find) {
            reporter.lost_device_pv_kept(pv);
        }
        for pv in decision.delete.iter().filter_map(find) {
            let name = pv.metadata.name.as_deref().unwrap_or_default();
            let deleted = ctx
                .api
                .delete_pv(
                    name,
                    pv.metadata.uid.clone(),
                    pv.metadata.resource_version.clone(),
                )
                .await;
            match deleted {
                Ok(()) => reporter.lost_device_pv_deleted(pv),
                Err(error) => {
                    tracing::warn!(pv = %name, %error, "deleting the PV of a missing device failed; retrying");
                }
            }
        }
        reporter.metrics.missing_devices.set(decision.kept as i64);
        decision.recheck_at
    }
}

/// What the PV builder needs to know about the live Node.
fn node_facts(ctx: &Context, node: &Node) -> NodeFacts {
    NodeFacts {
        name: ctx.settings.node_name.clone(),
        uid: node.metadata.uid.clone().unwrap_or_default(),
        hostname: node
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(HOSTNAME_LABEL))
            .cloned()
            .unwrap_or_else(|| ctx.settings.node_name.clone()),
        label_value: ctx.label_value.clone(),
    }
}

/// Scans `deviceDir` (`None` when it does not exist), and checks which
/// existing PVs' devices are missing (their path no longer leads to a block
/// device). Blocking I/O, run off the runtime.
async fn scan(spec: &PvSpec, existing: &[ExistingPv]) -> Result<Scanned, String> {
    let dir = spec.device_dir.clone();
    let filter = spec.device_name_filter.clone();
    let paths: Vec<(String, PathBuf)> = existing
        .iter()
        .filter(|pv| !pv.deleting)
        .filter_map(|pv| Some((pv.name.clone(), pv.path.clone()?)))
        .collect();
    let (scanned, missing) = tokio::task::spawn_blocking(move || {
        let missing: BTreeSet<String> = paths
            .into_iter()
            .filter(|(_, path)| {
                std::fs::metadata(path)
                    .ok()
                    .and_then(|metadata| crate::blockdev::block_device_number(&metadata))
                    .is_none()
            })
            .map(|(name, _)| name)
            .collect();
        (scan_devices(&dir, &filter), missing)
    })
    .await
    .map_err(|error| format!("device scan failed: {error}"))?;
    match scanned {
        Ok(scan) => Ok(Scanned {
            devices: Some(scan),
            missing,
        }),
        Err(error) if error.source.kind() == std::io::ErrorKind::NotFound => Ok(Scanned {
            devices: None,
            missing,
        }),
        Err(error) => Err(error.to_string()),
    }
}

/// The device problem of a PV the API server would not take.
pub(crate) fn refused_pv_problem(path: &str, reason: String) -> DeviceProblem {
    DeviceProblem {
        name: path.rsplit('/').next().unwrap_or_default().to_string(),
        path: path.into(),
        reason,
        number: None,
    }
}

impl Reconciler {
    /// Plans and creates the missing PVs, then reports the devices. Returns
    /// whether the API server answered (`None`: nothing was asked).
    async fn provision(
        &mut self,
        ctx: &Context,
        facts: &NodeFacts,
        spec: &PvSpec,
        devices: &Scan,
        existing: &[ExistingPv],
        node_ref: &ObjectReference,
    ) -> Option<bool> {
        let decided = plan(facts, spec, devices, existing, &ctx.wipes.snapshot());
        for group in &decided.collisions {
            tracing::warn!(devices = ?group, "device names collide after sanitizing; they get hashed PV names");
        }
        let mut problems = decided.problems.clone();
        let mut available = decided.available;
        let now = Instant::now();
        let planned: BTreeSet<PathBuf> = decided
            .create
            .iter()
            .filter_map(|pv| local_path(pv).map(PathBuf::from))
            .collect();
        self.refused.retain(|path| planned.contains(path));
        self.refusals
            .retain(|problem| planned.contains(&problem.path));
        let (due, waiting): (Vec<&PersistentVolume>, Vec<&PersistentVolume>) =
            decided.create.iter().partition(|pv| {
                let path = PathBuf::from(local_path(pv).unwrap_or_default());
                self.refused.remaining(&path, now).is_none()
            });
        for pv in waiting {
            let path = PathBuf::from(local_path(pv).unwrap_or_default());
            if let Some(problem) = self.refusals.iter().find(|problem| problem.path == path) {
                available -= 1;
                problems.push(problem.clone());
            }
        }
        let mut api_reachable = None;
        if !due.is_empty() && self.unreachable.remaining(&(), now).is_none() {
            match self.create(ctx, facts, &due, node_ref).await {
                Ok(refused) => {
                    api_reachable = Some(true);
                    available -= refused.len();
                    problems.extend(refused);
                }
                Err(()) => api_reachable = Some(false),
            }
        }
        problems.sort_by(|a, b| a.name.cmp(&b.name));
        self.reports.devices(node_ref, available, &problems);
        api_reachable
    }

    /// Creates `pvs` for the live Node; returns the devices the API server
    /// refused, or `Err` when it could not be reached (the batch waits).
    async fn create(
        &mut self,
        ctx: &Context,
        facts: &NodeFacts,
        pvs: &[&PersistentVolume],
        node_ref: &ObjectReference,
    ) -> Result<Vec<DeviceProblem>, ()> {
        // The owner must be the live Node: after an API server restart the
        // PV watch can relist before the Node watch does, and a PV owned by
        // a Node that is gone is garbage-collected at once.
        match ctx.api.get_node(&ctx.settings.node_name).await {
            Ok(Some(live)) if live.metadata.uid.as_deref() == Some(facts.uid.as_str()) => {}
            Ok(_) => {
                tracing::debug!(
                    "the Node in the watch store is not the live one; creating nothing until the watch catches up"
                );
                return Ok(Vec::new());
            }
            Err(error) => {
                tracing::warn!(%error, "reading the Node before creating PVs failed; retrying");
                self.unreachable.record_failure(&(), Instant::now());
                return Err(());
            }
        }
        let mut refused = Vec::new();
        for pv in pvs {
            let path = local_path(pv).unwrap_or_default().to_string();
            match ctx.api.create_pv(pv, &ctx.pvs, &ctx.label_value).await {
                CreateOutcome::Created(created) => {
                    self.refused.clear(&PathBuf::from(&path));
                    ctx.reporter.created(&created);
                    self.recently_created.push((Instant::now(), *created));
                }
                CreateOutcome::AlreadyOurs => {}
                CreateOutcome::Refused(reason) => {
                    let problem = refused_pv_problem(&path, reason);
                    self.refused.record_failure(&problem.path, Instant::now());
                    self.reports.create_refused(node_ref, &problem);
                    self.refusals.retain(|known| known.path != problem.path);
                    self.refusals.push(problem.clone());
                    refused.push(problem);
                }
                CreateOutcome::Unreachable(error) => {
                    tracing::warn!(%error, "creating the PersistentVolume failed; retrying");
                    self.unreachable.record_failure(&(), Instant::now());
                    return Err(());
                }
            }
        }
        self.unreachable.clear(&());
        Ok(refused)
    }
}
