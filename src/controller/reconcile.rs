//! One reconcile of the node, top to bottom: snapshot the watched objects,
//! resolve the node's PV spec, scan the devices, decide device loss, plan,
//! create the missing PVs, report. It returns when it wants to run again
//! (a retry or a device-loss deadline); the loop in [`crate::controller::provisioner`]
//! also runs it on every change and poll tick.
//!
//! A change of this node's PVs or pods costs work for the objects that
//! changed: their metrics, the released and kept counts, the LocalDisks
//! that stand for them. A pass follows only when a PV changed what a pass
//! reads (its [pass key](ExistingPv::pass_key): a PV added or gone, its
//! path, device, class or deletion; the phase and claim of a PV whose
//! device is missing) or after a full list. A real controller-manager
//! moves each new PV from `Pending` to `Available` in an update of its
//! own; a thousand of them cost a thousand small updates, not a thousand
//! passes over every PV.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Node, ObjectReference, Pod};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use tokio::time::Instant;

use crate::api::context::Context;
use crate::api::watch::{ChangedNames, Touched, WatchSetup, Watched};
use crate::controller::pv_counts::PvCounts;
use crate::discover::devices::Scan;
use crate::discover::scanner::Scanner;
use crate::inventory::desired::{Sources, desired};
use crate::inventory::writer::{Inventory, Owner};
use crate::objects::pv::{HOSTNAME_LABEL, LeanPv};
use crate::objects::spec::NodeSpec;
use crate::observe::health::{Health, ReconcileHealth};
use crate::observe::volumes::VolumeMetrics;
use crate::provision::build::NodeFacts;
use crate::provision::classes::classify;
use crate::provision::create::{Inputs, Provisioning};
use crate::provision::device_loss::DeviceLossTracker;
use crate::provision::node_spec::{SpecSource, SpecState, read_spec, spec_source, summarize};
use crate::provision::plan::ExistingPv;
use crate::provision::report::NodeReports;

/// Why a reconcile runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The poll tick (or the start): a full rescan.
    Poll,
    /// A watched change, a retry or a deadline.
    Change,
    /// A change of this node's PVs or pods: work per changed object, and a
    /// pass only when one changed what a pass reads.
    Volumes,
}

/// The node's spec, once resolved.
enum Resolved {
    /// The ConfigMap's name and its valid spec.
    Usable(String, NodeSpec),
    /// The ConfigMap's watch has not delivered its first list yet.
    Waiting,
    /// No usable spec: the node is left alone.
    Unusable,
}

/// The watched objects besides this node's PVs (which are in the context).
pub struct Stores {
    /// This node's Node.
    pub nodes: Store<Node>,
    /// This node's pods, trimmed to the claims they mount.
    pub pods: Store<Pod>,
    /// The pods their watch changed since the last look.
    pub pod_changes: Arc<ChangedNames>,
    /// The PVs their watch changed since the last look.
    pub pv_changes: Arc<ChangedNames>,
}

/// The provisioning state that lives from one reconcile to the next.
pub struct Reconciler {
    client: Client,
    health: Health,
    stores: Stores,
    volumes: VolumeMetrics,
    spec_watch: Option<(String, Watched<ConfigMap>)>,
    loss: DeviceLossTracker,
    scanner: Scanner,
    provisioning: Provisioning,
    reports: NodeReports,
    inventory: Inventory,
    counts: PvCounts,
    /// The pass key of each PV the last complete pass read (none: the
    /// last pass stopped early, so any PV change needs a pass).
    keys: Option<HashMap<String, ExistingPv>>,
    /// The PVs whose device the last complete pass found missing.
    missing: BTreeSet<String>,
    /// When the last pass asked to run again.
    next_at: Option<Instant>,
}

impl Reconciler {
    /// A reconciler reading the Node and pods from `stores`.
    pub fn new(ctx: &Context, client: Client, health: Health, stores: Stores) -> Self {
        let inventory = Inventory::start(&client, &ctx.label_value, ctx.api.clone());
        Reconciler {
            client,
            health,
            stores,
            volumes: VolumeMetrics::default(),
            spec_watch: None,
            loss: DeviceLossTracker::new(ctx.settings.device_loss_grace),
            scanner: Scanner::default(),
            provisioning: Provisioning::default(),
            reports: NodeReports::new(ctx.reporter.clone()),
            inventory,
            counts: PvCounts::default(),
            keys: None,
            missing: BTreeSet::new(),
            next_at: None,
        }
    }

    /// Does what `wake` asks: the work for changed PVs and pods, and a pass
    /// when needed; returns when it wants to run again.
    pub async fn reconcile(&mut self, ctx: &Context, wake: Wake) -> Option<Instant> {
        if wake == Wake::Volumes && !self.volumes_changed(ctx) {
            return self.next_at;
        }
        self.keys = None;
        let next = self.pass(ctx, wake).await;
        ctx.reporter.metrics.reconciles.inc();
        self.next_at = next;
        next
    }

    /// The work for the PVs and pods their watches changed, per object:
    /// their metrics, then (when no pass is needed) the counts and the
    /// LocalDisks that stand for them. Returns whether a pass is needed.
    fn volumes_changed(&mut self, ctx: &Context) -> bool {
        let metrics = &ctx.reporter.metrics;
        let pods_changed = !self.stores.pod_changes.take().is_empty();
        let names = match self.stores.pv_changes.take() {
            Touched::All => {
                let pods = self.stores.pods.state();
                self.volumes.update(metrics, &ctx.pvs.state(), &pods);
                return true;
            }
            Touched::Names(names) => names,
        };
        if pods_changed {
            self.volumes.update_pods(metrics, &self.stores.pods.state());
        }
        let changed: Vec<(String, Option<Arc<LeanPv>>)> = names
            .into_iter()
            .map(|name| {
                let pv = ctx.pvs.get(&ObjectRef::new(&name));
                (name, pv)
            })
            .collect();
        self.volumes.update_pvs(metrics, &changed);
        let Some(keys) = &self.keys else {
            return true;
        };
        let pass_reads_it = changed.iter().any(|(name, pv)| {
            let key = pv
                .as_deref()
                .map(|pv| ExistingPv::from_pv(pv).pass_key(self.missing.contains(name)));
            keys.get(name) != key.as_ref()
        });
        if pass_reads_it {
            return true;
        }
        self.counts.update(metrics, &changed);
        let pvs: Vec<Arc<LeanPv>> = changed.into_iter().filter_map(|(_, pv)| pv).collect();
        self.inventory.refresh(&pvs, &self.missing);
        false
    }

    /// One pass over the node; returns when it wants to run again.
    #[tracing::instrument(name = "reconcile", skip_all, fields(node = %ctx.settings.node_name))]
    async fn pass(&mut self, ctx: &Context, wake: Wake) -> Option<Instant> {
        if wake == Wake::Poll {
            self.provisioning.rescan();
        }
        // One snapshot of this node's PVs, once they are listed.
        let synced = ctx.pv_relists.load(std::sync::atomic::Ordering::Relaxed) > 0;
        let pvs = synced.then(|| ctx.pvs.state());
        let name = ObjectRef::new(&ctx.settings.node_name);
        let Some(node) = self.stores.nodes.get(&name) else {
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
        let Some(pvs) = pvs else {
            // This node's PVs are not listed yet; their list wakes the loop.
            return None;
        };
        self.devices(ctx, &node, (configmap, spec), &pvs, wake)
            .await
    }

    /// The node's devices, under its usable spec: scan, device loss,
    /// provisioning, report.
    async fn devices(
        &mut self,
        ctx: &Context,
        node: &Node,
        (configmap, spec): (String, NodeSpec),
        pvs: &[Arc<LeanPv>],
        wake: Wake,
    ) -> Option<Instant> {
        let node_ref = node.object_ref(&());
        self.counts.set_all(&ctx.reporter.metrics, pvs);
        let existing = self.provisioning.existing(pvs);
        let full = wake == Wake::Poll;
        let watch = ctx.settings.watch_device_dir.then_some(&ctx.trigger);
        let scan_began = Instant::now();
        let scanned = match self
            .scanner
            .scan(
                &spec.classes,
                ExistingPv::live_paths(&existing),
                full,
                watch,
            )
            .await
        {
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
            missing_dirs: spec
                .classes
                .iter()
                .zip(&scanned.devices)
                .filter(|(_, scan)| scan.is_none())
                .map(|(class, _)| class.device_dir.display().to_string())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        };
        self.reports.spec_state(ready, Some(&node_ref));
        ctx.set_paused(false);
        let recheck_at = self
            .handle_lost_devices(ctx, pvs, &existing, &scanned.missing)
            .await;
        let facts = node_facts(ctx, node);
        let scans: Vec<Scan> = scanned
            .devices
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect();
        let classified = classify(&spec.classes, &scans);
        self.reports.classes(&node_ref, &spec, &facts);
        let inputs = Inputs {
            facts: &facts,
            spec: &spec,
            classified: &classified,
            existing: &existing,
            node: &node_ref,
            scan_began,
        };
        let provisioned = self
            .provisioning
            .provision(ctx, inputs, &mut self.reports)
            .await;
        self.reports.devices(&node_ref, &spec, &provisioned);
        // The disk inventory after the creates, written off this loop.
        let sources = Sources {
            node: &ctx.settings.node_name,
            spec: &spec,
            scans: &scans,
            classified: &classified,
            problems: &provisioned.problems,
            pvs,
            missing: &scanned.missing,
        };
        let owner = Owner {
            node: facts.name.clone(),
            uid: facts.uid.clone(),
            label_value: facts.label_value.clone(),
        };
        self.inventory
            .set(owner, desired(&sources, &self.inventory.names()));
        self.keys = Some(
            existing
                .iter()
                .chain(self.provisioning.recently_created())
                .map(|pv| {
                    let key = pv.pass_key(scanned.missing.contains(&pv.name));
                    (pv.name.clone(), key)
                })
                .collect(),
        );
        self.missing = scanned.missing;
        self.record(true, provisioned.api_reachable);
        recheck_at
            .into_iter()
            .chain(self.provisioning.next_due())
            .min()
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
        pvs: &[Arc<LeanPv>],
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
                Ok(true) => reporter.lost_device_pv_deleted(pv),
                Ok(false) => tracing::debug!(pv = %name, "the PV changed meanwhile; looking again"),
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
        labels: node.metadata.labels.clone().unwrap_or_default(),
    }
}
