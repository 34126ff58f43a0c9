//! The report `status` prints, built from what was read: one entry per
//! node, each with its volumes (this program's PVs and the Go upstream's,
//! which carry the same label) and what its Events say. Pure; its JSON is
//! the `-o json` document.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use super::node_events::{self, Condition, DeviceCount, ErrorDevice, NodeEvent, format_time};
use super::read::ClusterState;
use crate::objects::localdisk::LocalDisk;
use crate::objects::naming::node_label_value;
use crate::objects::pv::{
    CLAIMED_AT_ANNOTATION, CLAIMED_BY_ANNOTATION, DEVICE_NUMBER_ANNOTATION,
    DEVICE_STABLE_ID_ANNOTATION, LeanPv, NODE_LABEL, NODE_NAME_ANNOTATION,
    WIPE_PROGRESS_ANNOTATION, WIPE_SKIPPED_ANNOTATION, class_of, local_path,
};
use crate::objects::spec::PV_SPEC_CONFIGMAP_ANNOTATION;
use crate::observe::history::{DeviceHistory, history_of};

/// The whole report: the nodes, by name.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Where the error devices come from.
    pub error_devices_from: ErrorSource,
    /// One entry per node with something to show.
    pub nodes: Vec<NodeStatus>,
}

/// Where a report's error devices come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ErrorSource {
    /// The nodes' `LocalDisk`s that are not offered, for as long as they stand.
    LocalDisks,
    /// The controller's Events on the Nodes (a cluster without the
    /// LocalDisk CRD), which expire.
    Events,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// The node's name.
    pub name: String,
    /// Whether the Node object exists.
    pub node_found: bool,
    /// The PV spec ConfigMap its annotation names.
    pub pv_spec_config_map: Option<String>,
    /// Where its PV spec stands (the latest spec Event).
    pub spec: Option<Condition>,
    /// The controller's last device count (the latest `DevicesDiscovered`).
    pub device_count: Option<DeviceCount>,
    /// Its PVs, by device path.
    pub volumes: Vec<VolumeStatus>,
    /// Its error devices, by path.
    pub error_devices: Vec<ErrorDevice>,
}

/// One PersistentVolume.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStatus {
    /// `spec.local.path`: the device entry.
    pub device: Option<String>,
    /// The PV's name.
    pub pv: String,
    /// Its device class (`default` for the flat keys and older PVs).
    pub class: String,
    /// Released and kept with its data (release policy `Keep`).
    pub kept: bool,
    /// A full wipe's progress (`DONE/TOTAL` bytes), while one runs.
    pub wipe_progress: Option<String>,
    /// Made by the Go upstream (no node-name annotation).
    pub upstream: bool,
    /// `spec.capacity.storage` as written.
    pub capacity: Option<String>,
    /// The capacity in bytes, when it reads as a whole number of bytes.
    pub capacity_bytes: Option<u64>,
    /// `status.phase`.
    pub phase: Option<String>,
    /// When its deletion was asked for (it is Terminating).
    pub deletion_timestamp: Option<String>,
    /// `spec.claimRef` as `namespace/name`.
    pub claim: Option<String>,
    /// Pods on the node using the claim, not finished, as `namespace/name`.
    pub pods: Vec<String>,
    /// `metadata.creationTimestamp`.
    pub created_at: Option<String>,
    /// `spec.storageClassName`.
    pub storage_class: Option<String>,
    /// `spec.volumeMode`.
    pub volume_mode: Option<String>,
    /// The device's `major:minor` at creation.
    pub device_number: Option<String>,
    /// The device's stable identity at creation.
    pub stable_id: Option<String>,
    /// The claim the controller saw bound (`…/claimed-by`).
    pub claimed_by: Option<String>,
    /// When the controller saw the claim bound.
    pub claimed_at: Option<String>,
    /// Why a PV was released unwiped.
    pub wipe_skipped: Option<String>,
    /// The device's history before this PV.
    pub history: DeviceHistory,
}

/// One annotation of a PV, owned.
fn annotation(pv: &LeanPv, key: &str) -> Option<String> {
    crate::objects::pv::annotation(pv, key).map(str::to_string)
}

/// Claims and the pods using them: `(namespace, claim)` → pods on
/// `nodeName`, as `(node, namespace/name)`. Finished pods mount nothing.
type PodIndex<'a> = BTreeMap<(&'a str, &'a str), Vec<(&'a str, String)>>;

fn pod_index(pods: &[Pod]) -> PodIndex<'_> {
    let mut index: PodIndex<'_> = BTreeMap::new();
    for pod in pods {
        let finished = pod
            .status
            .as_ref()
            .and_then(|status| status.phase.as_deref())
            .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
        let (Some(spec), Some(namespace), Some(name)) = (
            pod.spec.as_ref(),
            pod.metadata.namespace.as_deref(),
            pod.metadata.name.as_deref(),
        ) else {
            continue;
        };
        let Some(node) = spec.node_name.as_deref().filter(|_| !finished) else {
            continue;
        };
        let claims: BTreeSet<&str> = spec
            .volumes
            .iter()
            .flatten()
            .filter_map(|volume| volume.persistent_volume_claim.as_ref())
            .map(|claim| claim.claim_name.as_str())
            .collect();
        for claim in claims {
            index
                .entry((namespace, claim))
                .or_default()
                .push((node, format!("{namespace}/{name}")));
        }
    }
    index
}

fn volume(pv: &LeanPv, node: &str, pods: &PodIndex<'_>) -> VolumeStatus {
    let spec = pv.spec.as_ref();
    let capacity = spec
        .and_then(|spec| spec.capacity.as_ref())
        .and_then(|capacity| capacity.get("storage"))
        .map(|quantity| quantity.0.clone());
    let claim_ref = spec.and_then(|spec| spec.claim_ref.as_ref());
    let claim =
        claim_ref.and_then(|claim| Some((claim.namespace.as_deref()?, claim.name.as_deref()?)));
    let mut users: Vec<String> = claim
        .and_then(|key| pods.get(&key))
        .into_iter()
        .flatten()
        .filter(|(on, _)| *on == node)
        .map(|(_, pod)| pod.clone())
        .collect();
    users.sort();
    VolumeStatus {
        device: local_path(pv).map(str::to_string),
        pv: pv.metadata.name.clone().unwrap_or_default(),
        class: class_of(pv).to_string(),
        kept: crate::cleanup::decide::is_kept(pv),
        wipe_progress: annotation(pv, WIPE_PROGRESS_ANNOTATION),
        upstream: annotation(pv, NODE_NAME_ANNOTATION).is_none(),
        capacity_bytes: capacity
            .as_deref()
            .and_then(crate::objects::quantity::bytes),
        capacity,
        phase: pv.status.as_ref().and_then(|status| status.phase.clone()),
        deletion_timestamp: pv
            .metadata
            .deletion_timestamp
            .as_ref()
            .map(|t| format_time(t.0)),
        claim: claim.map(|(namespace, name)| format!("{namespace}/{name}")),
        pods: users,
        created_at: pv
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| format_time(t.0)),
        storage_class: spec.and_then(|spec| spec.storage_class_name.clone()),
        volume_mode: spec.and_then(|spec| spec.volume_mode.clone()),
        device_number: annotation(pv, DEVICE_NUMBER_ANNOTATION),
        stable_id: annotation(pv, DEVICE_STABLE_ID_ANNOTATION),
        claimed_by: annotation(pv, CLAIMED_BY_ANNOTATION),
        claimed_at: annotation(pv, CLAIMED_AT_ANNOTATION),
        wipe_skipped: annotation(pv, WIPE_SKIPPED_ANNOTATION),
        history: history_of(pv),
    }
}

/// The node a PV belongs to: its node-name annotation, else the Node whose
/// label value its label holds, else that label value.
fn node_of(pv: &LeanPv, by_label: &BTreeMap<String, &str>) -> String {
    if let Some(name) = annotation(pv, NODE_NAME_ANNOTATION) {
        return name;
    }
    let label = pv
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(NODE_LABEL))
        .cloned()
        .unwrap_or_default();
    by_label
        .get(&label)
        .map_or(label, |name| (*name).to_string())
}

/// The report on `state`; with `only`, that node alone (an error when
/// nothing at all names it).
pub fn build_report(state: &ClusterState, only: Option<&str>) -> Result<Report, String> {
    let nodes: BTreeMap<&str, &Node> = state
        .nodes
        .iter()
        .filter_map(|node| Some((node.metadata.name.as_deref()?, node)))
        .collect();
    let by_label: BTreeMap<String, &str> = nodes
        .keys()
        .map(|name| (node_label_value(name), *name))
        .collect();
    let mut pvs: BTreeMap<String, Vec<&LeanPv>> = BTreeMap::new();
    for pv in &state.pvs {
        pvs.entry(node_of(pv, &by_label)).or_default().push(pv);
    }
    let events = node_events::by_node(&state.events);
    let spec_configmap = |node: &Node| -> Option<String> {
        node.metadata
            .annotations
            .as_ref()?
            .get(PV_SPEC_CONFIGMAP_ANNOTATION)
            .filter(|name| !name.is_empty())
            .cloned()
    };
    let mut disks: BTreeMap<String, Vec<&LocalDisk>> = BTreeMap::new();
    for disk in state.disks.iter().flatten() {
        if let Some(status) = &disk.status {
            disks.entry(status.node.clone()).or_default().push(disk);
        }
    }
    let mut names: BTreeSet<String> = pvs
        .keys()
        .chain(events.keys())
        .chain(disks.keys())
        .cloned()
        .collect();
    names.extend(
        nodes
            .iter()
            .filter(|(_, node)| spec_configmap(node).is_some())
            .map(|(name, _)| name.to_string()),
    );
    if let Some(only) = only {
        if !names.contains(only) && !nodes.contains_key(only) {
            return Err(format!(
                "node {only:?} not found, and no PersistentVolume or Event of local-pv-provisioner names it"
            ));
        }
        names = BTreeSet::from([only.to_string()]);
    }
    let pods = pod_index(&state.pods);
    let no_events = Vec::new();
    let statuses = names
        .into_iter()
        .map(|name| {
            let node = nodes.get(name.as_str());
            let node_pvs = pvs.get(&name).map(Vec::as_slice).unwrap_or_default();
            let mut status = node_status(
                &name,
                node_pvs,
                events.get(&name).unwrap_or(&no_events),
                &pods,
            );
            status.node_found = node.is_some();
            status.pv_spec_config_map = node.and_then(|node| spec_configmap(node));
            if state.disks.is_some() {
                // The inventory says why each disk is not offered, for as
                // long as it stands; Events expire after an hour.
                status.error_devices = not_offered(disks.get(&name).map(Vec::as_slice));
            }
            status
        })
        .collect();
    Ok(Report {
        error_devices_from: if state.disks.is_some() {
            ErrorSource::LocalDisks
        } else {
            ErrorSource::Events
        },
        nodes: statuses,
    })
}

/// The disks of a node that are not offered, from its `LocalDisk`s.
fn not_offered(disks: Option<&[&LocalDisk]>) -> Vec<ErrorDevice> {
    let mut devices: Vec<ErrorDevice> = disks
        .into_iter()
        .flatten()
        .filter_map(|disk| {
            let status = disk.status.as_ref()?;
            (!status.state.is_offered()).then(|| ErrorDevice {
                device: status.path.clone(),
                reason: status.state.as_str().to_string(),
                message: status.reason.clone(),
                at: disk
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|time| format_time(time.0)),
            })
        })
        .collect();
    devices.sort_by(|a, b| a.device.cmp(&b.device));
    devices
}

/// A node's status from its PVs and Events (found and spec ConfigMap unset).
fn node_status(
    name: &str,
    pvs: &[&LeanPv],
    events: &[NodeEvent],
    pods: &PodIndex<'_>,
) -> NodeStatus {
    let mut volumes: Vec<VolumeStatus> = pvs.iter().map(|pv| volume(pv, name, pods)).collect();
    volumes.sort_by(|a, b| (&a.device, &a.pv).cmp(&(&b.device, &b.pv)));
    // The newest PV of each device path.
    let mut created: BTreeMap<&str, Timestamp> = BTreeMap::new();
    for pv in pvs {
        if let (Some(path), Some(time)) = (local_path(pv), &pv.metadata.creation_timestamp) {
            let newest = created.entry(path).or_insert(time.0);
            *newest = (*newest).max(time.0);
        }
    }
    let report = node_events::summarize(events, |path| created.get(path).copied());
    NodeStatus {
        name: name.to_string(),
        node_found: false,
        pv_spec_config_map: None,
        spec: report.spec,
        device_count: report.count,
        volumes,
        error_devices: report.error_devices,
    }
}
