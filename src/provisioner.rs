//! The provisioning loop: one per process. It keeps narrow watches (this
//! Node by name, this node's PVs by label, the PV spec ConfigMap by name),
//! and on every change, poll tick, sweep tick, retry deadline or finished
//! cleanup it reconciles: resolve the PV spec, start cleanups of Released
//! PVs, scan the devices, plan, create the missing PVs, update metrics.
//! Bursts of triggers coalesce into one reconcile.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node, ObjectReference, PersistentVolume};
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::cleanup::{Cleaner, CleanupOutcome, CleanupResult, needs_cleanup};
use crate::config::ControllerSettings;
use crate::discovery::{DeviceProblem, Scan, scan_devices};
use crate::events::{EventPublisher, Severity};
use crate::metrics::{Health, Metrics};
use crate::naming::node_label_value;
use crate::plan::{ExistingPv, LostDevice, lost_devices, plan};
use crate::pv::{HOSTNAME_LABEL, NODE_LABEL, NodeFacts, local_path};
use crate::spec::{PV_SPEC_CONFIGMAP_ANNOTATION, PvSpec, parse_pv_spec};
use crate::watch::Watched;
use crate::wipe::WipeError;

/// Delay before retrying after a failed PV creation.
const CREATE_RETRY: Duration = Duration::from_secs(10);
/// How long shutdown waits for in-flight cleanups to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Where the node's PV spec stands; reported once per change.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SpecState {
    /// The Node object is not visible.
    NodeMissing,
    /// Neither the annotation nor the default flag names a ConfigMap.
    NotConfigured,
    /// The named ConfigMap does not exist.
    ConfigMapMissing(String),
    /// The ConfigMap is invalid.
    Invalid(String, String),
    /// `deviceDir` cannot be read.
    DeviceDirUnreadable(String, String),
    /// The spec is valid and in use.
    Ready {
        /// The ConfigMap's name.
        configmap: String,
        /// The spec's values (logged at debug level only).
        summary: String,
        /// `deviceDir` does not exist (yet): no devices.
        device_dir_missing: bool,
    },
}

impl SpecState {
    fn is_error(&self) -> bool {
        !matches!(self, SpecState::Ready { .. } | SpecState::NotConfigured)
    }
}

impl fmt::Display for SpecState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecState::NodeMissing => write!(f, "the Node object is not found"),
            SpecState::NotConfigured => write!(
                f,
                "no PV spec ConfigMap: the Node has no {PV_SPEC_CONFIGMAP_ANNOTATION} annotation and no --default-pv-spec-configmap is set; the node is left alone"
            ),
            SpecState::ConfigMapMissing(name) => write!(
                f,
                "PV spec ConfigMap {name:?} is not found; no PV is created or deleted"
            ),
            SpecState::Invalid(name, error) => {
                write!(
                    f,
                    "PV spec ConfigMap {name:?} is invalid: {error}; no PV is created or deleted"
                )
            }
            SpecState::DeviceDirUnreadable(name, error) => {
                write!(
                    f,
                    "PV spec ConfigMap {name:?}: {error}; no PV is created or deleted"
                )
            }
            SpecState::Ready {
                configmap,
                summary,
                device_dir_missing,
            } => {
                write!(f, "using PV spec ConfigMap {configmap:?}: {summary}")?;
                if *device_dir_missing {
                    write!(f, " (deviceDir does not exist yet: no devices)")?;
                }
                Ok(())
            }
        }
    }
}

/// The outcome of looking up the node's PV spec.
enum SpecResolution {
    /// The ConfigMap's watch has not delivered its first list yet.
    Waiting,
    /// No usable spec (none configured, missing, invalid): the node is left alone.
    Unusable,
    /// The ConfigMap's name and its valid spec.
    Usable(String, PvSpec),
}

/// The controller of one node.
pub struct Provisioner {
    settings: ControllerSettings,
    client: Client,
    metrics: Metrics,
    health: Health,
    events: EventPublisher,
    trigger: Arc<Notify>,
    label_value: String,
    nodes: Watched<Node>,
    pvs: Watched<PersistentVolume>,
    spec_source: Option<(String, Watched<ConfigMap>)>,
    cleaner: Cleaner,
    outcomes: mpsc::Receiver<CleanupOutcome>,
    cancel: Arc<AtomicBool>,
    spec_state: Option<SpecState>,
    reported_problems: BTreeMap<String, String>,
    create_retry_at: Option<Instant>,
    missing_since: HashMap<String, Instant>,
    reported_lost: BTreeSet<String>,
    recheck_at: Option<Instant>,
    api_ok: bool,
}

impl Provisioner {
    /// Starts the watches for the node in `settings`.
    pub fn new(
        client: Client,
        settings: ControllerSettings,
        metrics: Metrics,
        health: Health,
    ) -> Self {
        let trigger = Arc::new(Notify::new());
        let label_value = node_label_value(&settings.node_name);
        let nodes = Watched::spawn(
            Api::<Node>::all(client.clone()),
            watcher::Config::default()
                .fields(&format!("metadata.name={}", settings.node_name))
                .any_semantic(),
            "node",
            trigger.clone(),
        );
        let pvs = Watched::spawn(
            Api::<PersistentVolume>::all(client.clone()),
            watcher::Config::default()
                .labels(&format!("{NODE_LABEL}={label_value}"))
                .any_semantic(),
            "persistentvolumes",
            trigger.clone(),
        );
        let cancel = Arc::new(AtomicBool::new(false));
        let (results, outcomes) = mpsc::channel(64);
        let cleaner = Cleaner::new(
            Api::all(client.clone()),
            settings.node_name.clone(),
            label_value.clone(),
            settings.instance.clone(),
            cancel.clone(),
            results,
        );
        let events = EventPublisher::new(client.clone(), &settings.instance, metrics.clone());
        Provisioner {
            settings,
            client,
            metrics,
            health,
            events,
            trigger,
            label_value,
            nodes,
            pvs,
            spec_source: None,
            cleaner,
            outcomes,
            cancel,
            spec_state: None,
            reported_problems: BTreeMap::new(),
            create_retry_at: None,
            missing_since: HashMap::new(),
            reported_lost: BTreeSet::new(),
            recheck_at: None,
            api_ok: true,
        }
    }

    /// Runs until `shutdown` turns true, then stops taking work, cancels
    /// in-flight wipes between writes (their PVs stay Released for the next
    /// start) and returns.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut poll = tokio::time::interval(self.settings.polling_interval);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval(self.settings.cleanup_interval);
        sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let retry_at = [
                self.cleaner.next_retry(),
                self.create_retry_at,
                self.recheck_at,
            ]
            .into_iter()
            .flatten()
            .min();
            let retry = async move {
                match retry_at {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                Some(outcome) = self.outcomes.recv() => self.handle_outcome(outcome).await,
                _ = self.trigger.notified() => {}
                _ = poll.tick() => {}
                _ = sweep.tick() => {}
                _ = retry => {}
            }
            self.reconcile().await;
        }
        tracing::info!(in_flight = self.cleaner.in_flight(), "shutting down");
        self.health.set_ready(false);
        self.cancel.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while self.cleaner.in_flight() > 0 {
            match tokio::time::timeout_at(deadline, self.outcomes.recv()).await {
                Ok(Some(outcome)) => self.handle_outcome(outcome).await,
                _ => break,
            }
        }
    }

    /// Whether any watch (Node, PVs, PV spec ConfigMap) fails to reach the API server.
    fn watches_failing(&self) -> bool {
        self.nodes.is_failing()
            || self.pvs.is_failing()
            || self
                .spec_source
                .as_ref()
                .is_some_and(|(_, watched)| watched.is_failing())
    }

    async fn reconcile(&mut self) {
        self.reconcile_once().await;
        self.metrics.reconciles.inc();
    }

    async fn reconcile_once(&mut self) {
        if !self.nodes.is_synced() || !self.pvs.is_synced() {
            self.health.set_ready(false);
            return;
        }
        let Some(node) = self
            .nodes
            .store
            .get(&ObjectRef::new(&self.settings.node_name))
        else {
            self.set_spec_state(SpecState::NodeMissing, None).await;
            self.clear_device_gauges();
            self.health.set_ready(false);
            return;
        };
        let node_ref = node.object_ref(&());
        let (cm_name, spec) = match self.resolve_spec(&node, &node_ref).await {
            SpecResolution::Usable(cm_name, spec) => (cm_name, spec),
            SpecResolution::Waiting => return,
            SpecResolution::Unusable => {
                self.clear_device_gauges();
                self.health.set_ready(!self.watches_failing());
                return;
            }
        };
        let facts = NodeFacts {
            name: self.settings.node_name.clone(),
            uid: node.metadata.uid.clone().unwrap_or_default(),
            hostname: node
                .metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get(HOSTNAME_LABEL))
                .cloned()
                .unwrap_or_else(|| self.settings.node_name.clone()),
            label_value: self.label_value.clone(),
        };

        let pvs = self.pvs.store.state();
        self.cleaner.start(&pvs);
        self.metrics
            .released_pending
            .set(pvs.iter().filter(|pv| needs_cleanup(pv)).count() as i64);

        let existing: Vec<ExistingPv> = pvs.iter().map(|pv| ExistingPv::from_pv(pv)).collect();
        let (scan, missing) = match self.scan(&spec, &existing).await {
            Ok(result) => result,
            Err(error) => {
                self.set_spec_state(
                    SpecState::DeviceDirUnreadable(cm_name, error),
                    Some(&node_ref),
                )
                .await;
                self.clear_device_gauges();
                return;
            }
        };
        let ready = SpecState::Ready {
            configmap: cm_name,
            summary: summarize(&spec),
            device_dir_missing: scan.is_none(),
        };
        self.set_spec_state(ready, Some(&node_ref)).await;
        let scan = scan.unwrap_or_default();
        self.handle_missing_devices(&pvs, &existing, missing).await;
        let decided = plan(
            &facts,
            &spec,
            &scan,
            &existing,
            &self.cleaner.devices_in_flight(),
        );
        for group in &decided.collisions {
            tracing::warn!(devices = ?group, "device names collide after sanitizing; they get hashed PV names");
        }

        let mut problems = decided.problems.clone();
        let mut available = decided.available;
        let mut created_all = true;
        let creation_due = self.create_retry_at.is_none_or(|at| at <= Instant::now());
        if creation_due && !decided.create.is_empty() {
            // The owner must be the live Node: after an API server restart the
            // PV watch can relist before the Node watch does, and a PV owned by
            // a Node that is gone is garbage-collected at once.
            match Api::<Node>::all(self.client.clone())
                .get_opt(&self.settings.node_name)
                .await
            {
                Ok(Some(fresh)) if fresh.metadata.uid.as_deref() == Some(facts.uid.as_str()) => {}
                Ok(_) => {
                    tracing::debug!(
                        "the Node in the watch store is not the live one; creating nothing until the watch catches up"
                    );
                    self.report_problems(&problems, &node_ref).await;
                    return;
                }
                Err(error) => {
                    self.metrics
                        .api_errors
                        .with_label_values(&["get_node"])
                        .inc();
                    tracing::warn!(%error, "reading the Node before creating PVs failed; retrying");
                    self.create_retry_at = Some(Instant::now() + CREATE_RETRY);
                    self.api_ok = false;
                    self.health.set_ready(false);
                    return;
                }
            }
        }
        if creation_due {
            self.create_retry_at = None;
            self.api_ok = true;
            for pv in &decided.create {
                if let Err(problem) = self.create(pv, &node_ref).await {
                    if let Some(problem) = problem {
                        available -= 1;
                        problems.push(problem);
                    } else {
                        created_all = false;
                        break;
                    }
                }
            }
        }
        self.report_problems(&problems, &node_ref).await;
        self.metrics.available_devices.set(available as i64);
        self.metrics.error_devices.set(problems.len() as i64);
        if !created_all {
            self.create_retry_at = Some(Instant::now() + CREATE_RETRY);
            self.api_ok = false;
        }
        self.health
            .set_ready(self.api_ok && !self.watches_failing());
    }

    /// Finds and parses the node's PV spec, reporting every state change once.
    async fn resolve_spec(&mut self, node: &Node, node_ref: &ObjectReference) -> SpecResolution {
        let annotated = node
            .metadata
            .annotations
            .as_ref()
            .and_then(|annotations| annotations.get(PV_SPEC_CONFIGMAP_ANNOTATION))
            .filter(|name| !name.is_empty())
            .cloned();
        let Some(cm_name) = annotated.or_else(|| self.settings.default_pv_spec_configmap.clone())
        else {
            self.spec_source = None;
            self.set_spec_state(SpecState::NotConfigured, Some(node_ref))
                .await;
            return SpecResolution::Unusable;
        };
        if !crate::naming::is_dns1123_subdomain(&cm_name) {
            self.spec_source = None;
            let error = format!(
                "annotation {PV_SPEC_CONFIGMAP_ANNOTATION} (or --default-pv-spec-configmap) is not a valid ConfigMap name"
            );
            self.set_spec_state(SpecState::Invalid(cm_name, error), Some(node_ref))
                .await;
            return SpecResolution::Unusable;
        }
        if self
            .spec_source
            .as_ref()
            .is_none_or(|(name, _)| *name != cm_name)
        {
            let watched = Watched::spawn(
                Api::<ConfigMap>::namespaced(self.client.clone(), &self.settings.namespace),
                watcher::Config::default()
                    .fields(&format!("metadata.name={cm_name}"))
                    .any_semantic(),
                "configmap",
                self.trigger.clone(),
            );
            self.spec_source = Some((cm_name.clone(), watched));
        }
        let Some((_, watched)) = self.spec_source.as_ref() else {
            return SpecResolution::Waiting;
        };
        if !watched.is_synced() {
            return SpecResolution::Waiting;
        }
        let key = ObjectRef::new(&cm_name).within(&self.settings.namespace);
        let Some(configmap) = watched.store.get(&key) else {
            self.set_spec_state(SpecState::ConfigMapMissing(cm_name), Some(node_ref))
                .await;
            return SpecResolution::Unusable;
        };
        let data = configmap.data.clone().unwrap_or_default();
        match parse_pv_spec(&data) {
            Ok(spec) => SpecResolution::Usable(cm_name, spec),
            Err(error) => {
                self.set_spec_state(
                    SpecState::Invalid(cm_name, error.to_string()),
                    Some(node_ref),
                )
                .await;
                SpecResolution::Unusable
            }
        }
    }

    /// Scans `deviceDir` (`None` when it does not exist), and checks which
    /// existing PVs' devices are missing (their path no longer leads to a
    /// block device). Blocking I/O, run off the runtime.
    async fn scan(
        &self,
        spec: &PvSpec,
        existing: &[ExistingPv],
    ) -> Result<(Option<Scan>, BTreeSet<String>), String> {
        let dir = spec.device_dir.clone();
        let filter = spec.device_name_filter.clone();
        let paths: Vec<(String, std::path::PathBuf)> = existing
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
            Ok(scan) => Ok((Some(scan), missing)),
            Err(error) if error.source.kind() == std::io::ErrorKind::NotFound => {
                Ok((None, missing))
            }
            Err(error) => Err(error.to_string()),
        }
    }

    /// Device loss: once a PV's device has been missing for the grace
    /// period, an unclaimed Available PV is deleted (so no claim binds to a
    /// missing disk) and any other PV is kept and reported. Each PV is
    /// reported once, and again when its device returns.
    async fn handle_missing_devices(
        &mut self,
        pvs: &[Arc<PersistentVolume>],
        existing: &[ExistingPv],
        missing: BTreeSet<String>,
    ) {
        let now = Instant::now();
        let grace = self.settings.device_loss_grace;
        self.missing_since.retain(|name, _| missing.contains(name));
        for name in missing {
            self.missing_since.entry(name).or_insert(now);
        }
        let lost: BTreeSet<String> = self
            .missing_since
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= grace)
            .map(|(name, _)| name.clone())
            .collect();
        self.recheck_at = self
            .missing_since
            .values()
            .map(|since| *since + grace)
            .filter(|deadline| *deadline > now)
            .min();
        let returned: Vec<String> = self.reported_lost.difference(&lost).cloned().collect();
        for name in returned {
            self.reported_lost.remove(&name);
            if let Some(pv) = pvs
                .iter()
                .find(|pv| pv.metadata.name.as_deref() == Some(name.as_str()))
            {
                tracing::info!(pv = %name, "the PersistentVolume's device is back");
                self.events
                    .publish(
                        &pv.object_ref(&()),
                        Severity::Normal,
                        "DeviceReturned",
                        "Discover",
                        "The device of this PersistentVolume is present again",
                    )
                    .await;
            }
        }
        let mut kept = 0;
        for action in lost_devices(existing, &lost) {
            let name = match &action {
                LostDevice::DeleteAvailable(name) | LostDevice::Keep(name) => name.clone(),
            };
            let Some(pv) = pvs
                .iter()
                .find(|pv| pv.metadata.name.as_deref() == Some(name.as_str()))
            else {
                continue;
            };
            let path = local_path(pv).unwrap_or_default();
            let reported = match action {
                LostDevice::DeleteAvailable(_) => {
                    let params = DeleteParams {
                        preconditions: Some(Preconditions {
                            uid: pv.metadata.uid.clone(),
                            resource_version: pv.metadata.resource_version.clone(),
                        }),
                        ..DeleteParams::default()
                    };
                    let api: Api<PersistentVolume> = Api::all(self.client.clone());
                    match api.delete(&name, &params).await {
                        Ok(_) => Some((
                            "Delete",
                            "the Available PersistentVolume is deleted so no claim binds to it, and it comes back when the device does",
                        )),
                        Err(error) => {
                            self.metrics
                                .api_errors
                                .with_label_values(&["delete_pv"])
                                .inc();
                            tracing::warn!(pv = %name, %error, "deleting the PV of a missing device failed; retrying");
                            None
                        }
                    }
                }
                LostDevice::Keep(_) => {
                    kept += 1;
                    self.reported_lost.insert(name.clone()).then_some((
                        "Discover",
                        "the PersistentVolume is kept (it is in use or reserved) and nothing is lost if the device returns",
                    ))
                }
            };
            if let Some((event_action, outcome)) = reported {
                let note = format!("Device {path} is missing; {outcome}");
                tracing::warn!(pv = %name, device = %path, "{note}");
                self.events
                    .publish(
                        &pv.object_ref(&()),
                        Severity::Warning,
                        "DeviceMissing",
                        event_action,
                        &note,
                    )
                    .await;
            }
        }
        self.metrics.missing_devices.set(kept);
    }

    /// Creates one PV. `Err(Some(problem))`: the device cannot get this PV
    /// (reported with the devices); `Err(None)`: a transient failure, retry later.
    async fn create(
        &self,
        pv: &PersistentVolume,
        node_ref: &ObjectReference,
    ) -> Result<(), Option<DeviceProblem>> {
        let name = pv.metadata.name.clone().unwrap_or_default();
        let path = local_path(pv).unwrap_or_default();
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        match api.create(&PostParams::default(), pv).await {
            Ok(created) => {
                self.metrics.pvs_created.inc();
                tracing::info!(pv = %name, device = %path, "created PersistentVolume");
                self.events
                    .publish(
                        &created.object_ref(&()),
                        Severity::Normal,
                        "Provisioned",
                        "Create",
                        &format!(
                            "Created for device {path} on node {}",
                            self.settings.node_name
                        ),
                    )
                    .await;
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let ours = if self.pvs.store.get(&ObjectRef::new(&name)).is_some() {
                    true
                } else {
                    // Not in the watch store: read it to tell a lagging
                    // store from a foreign PV holding the name.
                    match api.get_opt(&name).await {
                        Ok(Some(existing)) => {
                            existing
                                .metadata
                                .labels
                                .as_ref()
                                .and_then(|labels| labels.get(NODE_LABEL))
                                == Some(&self.label_value)
                        }
                        Ok(None) | Err(_) => {
                            self.metrics
                                .api_errors
                                .with_label_values(&["create_pv"])
                                .inc();
                            tracing::warn!(pv = %name, "conflict creating the PersistentVolume, but it cannot be read; retrying");
                            return Err(None);
                        }
                    }
                };
                if ours {
                    Ok(())
                } else {
                    Err(Some(refused_pv_problem(
                        path,
                        format!(
                            "PV name {name} is taken by a PersistentVolume this node does not own"
                        ),
                    )))
                }
            }
            Err(kube::Error::Api(status)) if status.code == 422 || status.code == 400 => {
                self.metrics
                    .api_errors
                    .with_label_values(&["create_pv"])
                    .inc();
                let message = format!(
                    "the API server refused PV {name} for device {path}: {}",
                    status.message
                );
                tracing::error!(pv = %name, device = %path, "{message}");
                self.events
                    .publish(
                        node_ref,
                        Severity::Warning,
                        "InvalidVolume",
                        "Create",
                        &message,
                    )
                    .await;
                Err(Some(refused_pv_problem(path, message)))
            }
            Err(error) => {
                self.metrics
                    .api_errors
                    .with_label_values(&["create_pv"])
                    .inc();
                tracing::warn!(pv = %name, %error, "creating the PersistentVolume failed; retrying");
                Err(None)
            }
        }
    }

    async fn handle_outcome(&mut self, outcome: CleanupOutcome) {
        let pv_ref = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolume".into()),
            name: Some(outcome.pv_name.clone()),
            uid: Some(outcome.uid.clone()),
            ..ObjectReference::default()
        };
        let retry = self.cleaner.finish(&outcome);
        let retry_note = retry.map_or(String::new(), |delay| {
            format!("; retrying in {}s", delay.as_secs())
        });
        let pv = outcome.pv_name.as_str();
        match &outcome.result {
            CleanupResult::Completed(report) => {
                self.metrics.wipes_completed.inc();
                let regions: Vec<String> = report
                    .regions
                    .iter()
                    .map(|r| format!("{}..{}", r.start, r.end))
                    .collect();
                tracing::info!(pv, device = %report.device.display(), ?regions, elapsed_ms = report.elapsed.as_millis() as u64, "wiped the device and deleted the released PersistentVolume");
                self.events
                    .publish(
                        &pv_ref,
                        Severity::Normal,
                        "VolumeWiped",
                        "Delete",
                        &format!(
                            "Zeroed bytes {} of {} and verified; the PersistentVolume is deleted and the device will be offered again",
                            regions.join(", "),
                            report.device.display()
                        ),
                    )
                    .await;
            }
            CleanupResult::Skipped(reason) => tracing::debug!(pv, reason, "cleanup skipped"),
            CleanupResult::WipeFailed(WipeError::Cancelled) => {
                self.metrics
                    .wipes_failed
                    .with_label_values(&["cancelled"])
                    .inc();
                tracing::warn!(
                    pv,
                    "wipe cancelled by shutdown; the PV stays Released and is wiped on the next start"
                );
            }
            CleanupResult::WipeFailed(error @ WipeError::Refused { guard, .. }) => {
                self.metrics
                    .wipes_failed
                    .with_label_values(&[guard.name()])
                    .inc();
                tracing::error!(pv, guard = guard.name(), %error, "wipe refused; the PV is kept");
                self.events
                    .publish(
                        &pv_ref,
                        Severity::Warning,
                        "WipeRefused",
                        "Wipe",
                        &format!("{error}; the PersistentVolume is kept{retry_note}"),
                    )
                    .await;
            }
            CleanupResult::WipeFailed(error) => {
                self.metrics.wipes_failed.with_label_values(&["io"]).inc();
                tracing::error!(pv, %error, "wipe failed; the PV is kept");
                self.events
                    .publish(
                        &pv_ref,
                        Severity::Warning,
                        "WipeFailed",
                        "Wipe",
                        &format!("{error}; the PersistentVolume is kept{retry_note}"),
                    )
                    .await;
            }
            CleanupResult::ApiFailed { operation, error } => {
                self.metrics
                    .api_errors
                    .with_label_values(&[operation])
                    .inc();
                tracing::warn!(pv, operation, %error, "cleanup request failed; the PV is kept{retry_note}");
            }
        }
    }

    async fn set_spec_state(&mut self, state: SpecState, node_ref: Option<&ObjectReference>) {
        self.metrics.spec_errors.set(i64::from(state.is_error()));
        if self.spec_state.as_ref() == Some(&state) {
            return;
        }
        match &state {
            // The spec's values stay at debug level; errors name only the offending key and value.
            SpecState::Ready {
                configmap,
                summary,
                device_dir_missing,
            } => {
                tracing::info!(node = %self.settings.node_name, %configmap, "using the PV spec ConfigMap");
                if *device_dir_missing {
                    tracing::warn!(node = %self.settings.node_name, %configmap, "deviceDir does not exist (yet): no devices");
                }
                tracing::debug!(node = %self.settings.node_name, %configmap, "PV spec: {summary}");
            }
            state if state.is_error() => {
                tracing::error!(node = %self.settings.node_name, "{state}")
            }
            state => tracing::info!(node = %self.settings.node_name, "{state}"),
        }
        if let Some(node_ref) = node_ref {
            let (severity, reason) = match &state {
                SpecState::Ready { .. } => (Severity::Normal, "PVSpecApplied"),
                SpecState::NotConfigured => (Severity::Normal, "PVSpecNotConfigured"),
                SpecState::ConfigMapMissing(_) => (Severity::Warning, "PVSpecNotFound"),
                SpecState::Invalid(..) => (Severity::Warning, "PVSpecInvalid"),
                SpecState::DeviceDirUnreadable(..) => (Severity::Warning, "DeviceDirUnreadable"),
                SpecState::NodeMissing => (Severity::Warning, "NodeMissing"),
            };
            self.events
                .publish(node_ref, severity, reason, "Configure", &state.to_string())
                .await;
        }
        self.spec_state = Some(state);
    }

    /// Logs each skipped device and raises a `DeviceSkipped` Event on the
    /// Node, once per new device or new reason, not every poll.
    async fn report_problems(&mut self, problems: &[DeviceProblem], node_ref: &ObjectReference) {
        let current: BTreeMap<String, String> = problems
            .iter()
            .map(|problem| (problem.path.display().to_string(), problem.reason.clone()))
            .collect();
        for (path, reason) in &current {
            if self.reported_problems.get(path) != Some(reason) {
                tracing::warn!(device = %path, reason = %reason, "device skipped");
                self.events
                    .publish(
                        node_ref,
                        Severity::Warning,
                        "DeviceSkipped",
                        "Discover",
                        &format!("{path} gets no PersistentVolume: {reason}"),
                    )
                    .await;
            }
        }
        self.reported_problems = current;
    }

    fn clear_device_gauges(&self) {
        self.metrics.available_devices.set(0);
        self.metrics.error_devices.set(0);
    }
}

/// The device problem of a PV the API server would not take.
fn refused_pv_problem(path: &str, reason: String) -> DeviceProblem {
    DeviceProblem {
        name: path.rsplit('/').next().unwrap_or_default().to_string(),
        path: path.into(),
        reason,
        number: None,
    }
}

fn summarize(spec: &PvSpec) -> String {
    let mut summary = format!(
        "deviceDir={} deviceNameFilter={:?} volumeMode={} storageClassName={}",
        spec.device_dir.display(),
        spec.device_name_filter_source,
        spec.volume_mode.as_str(),
        spec.storage_class_name
    );
    if let Some(fs_type) = spec.fs_type {
        summary.push_str(&format!(" fsType={}", fs_type.as_str()));
    }
    if !spec.unknown_keys.is_empty() {
        summary.push_str(&format!(
            " (ignored unknown keys: {})",
            spec.unknown_keys.join(", ")
        ));
    }
    summary
}
