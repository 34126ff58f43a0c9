//! The labels, annotations and finalizer this program puts on its
//! PersistentVolumes to recognise them later, the PV as the program reads
//! it ([`LeanPv`]) and readers of its fields. The PV object sent at
//! create is built by [`crate::provision::build`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LocalVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeSpec,
    PersistentVolumeStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::objects::classes::DEFAULT_CLASS;

/// Annotation: the release policy in force when the PV was made (`Wipe`
/// or `Keep`; absent: `Wipe`).
pub const RELEASE_POLICY_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/release-policy";
/// Annotation: how the device is wiped (`Signatures` or `Full`; absent: `Signatures`).
pub const WIPE_MODE_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/wipe-mode";
/// Annotation: bytes per second a full wipe may write, when limited.
pub const WIPE_BANDWIDTH_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/wipe-bandwidth";
/// Annotation: `"true"` when the claims of this PV are deleted if its Node
/// is gone for good (recorded at creation).
pub const DELETE_CLAIMS_ON_NODE_GONE_ANNOTATION: &str =
    "local-pv-provisioner.cybozu.io/delete-claims-on-node-gone";
/// Annotation an admin sets to `"true"` to have a kept, Released PV wiped
/// and its device offered again.
pub const WIPE_REQUESTED_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/wipe-requested";
/// Annotation: a full wipe's progress, `DONE/TOTAL` bytes; a restarted
/// wipe resumes from `DONE`.
pub const WIPE_PROGRESS_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/wipe-progress";
/// Annotation the node-cleanup controller sets: when it first saw the
/// PV's Node absent (RFC 3339).
pub const NODE_GONE_SINCE_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/node-gone-since";
/// Label on every PV of ours, valued with the node's label value.
pub const NODE_LABEL: &str = "local-pv-provisioner.cybozu.io/node";
/// Label: the PV's device class (absent on PVs made before classes: the
/// [`DEFAULT_CLASS`]).
pub const DEVICE_CLASS_LABEL: &str = "local-pv-provisioner.cybozu.io/device-class";
/// Label: the kind of device (`disk`, `part`, `loop`, `dm`, `md`, `mpath`), when known.
pub const DEVICE_TYPE_LABEL: &str = "local-pv-provisioner.cybozu.io/device-type";
/// Label: `"true"` or `"false"`, the kernel's rotational flag, when known.
pub const ROTATIONAL_LABEL: &str = "local-pv-provisioner.cybozu.io/rotational";
/// Label: the device's model, made a valid label value, when known.
pub const MODEL_LABEL: &str = "local-pv-provisioner.cybozu.io/model";
/// Annotation: `deviceDir` the PV was made from.
pub const DEVICE_DIR_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/device-dir";
/// Annotation: `deviceNameFilter` the PV was made from.
pub const DEVICE_NAME_FILTER_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/device-name-filter";
/// Annotation: volume mode the PV was made with.
pub const VOLUME_MODE_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/volume-mode";
/// Annotation: fsType the PV was made with (Filesystem only).
pub const FS_TYPE_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/fs-type";
/// Annotation: the device's `major:minor` at creation.
pub const DEVICE_NUMBER_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/device-number";
/// Annotation: the device's size in bytes at creation.
pub const DEVICE_SIZE_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/device-size";
/// Annotation: the device's stable identity from sysfs at creation, when it has one.
pub const DEVICE_STABLE_ID_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/device-stable-id";
/// Annotation: bytes to zero at the head of the device on cleanup.
pub const WIPE_BYTES_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/wipe-bytes";
/// Annotation: the full node name (the label may hold a hash of it).
pub const NODE_NAME_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/node-name";
/// Finalizer on every PV of ours: the device is wiped before the PV goes,
/// whoever deletes it.
pub const CLEANUP_FINALIZER: &str = "local-pv-provisioner.cybozu.io/cleanup";
/// Annotation: when the program first saw the PV bound to its claim (RFC 3339).
pub const CLAIMED_AT_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/claimed-at";
/// Annotation: the claim (`namespace/name`) last seen bound to the PV.
pub const CLAIMED_BY_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/claimed-by";
/// Annotation: when the PV was released without a wipe, and why.
pub const WIPE_SKIPPED_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/wipe-skipped";
/// Annotation an older version set before the first write of a wipe; a PV
/// carrying it is wiped again.
pub const WIPE_STARTED_AT_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/wipe-started-at";
/// Node label the scheduler matches local PVs' affinity against.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// A PersistentVolume as this program reads it: what every watch, list,
/// get and patch of PVs is decoded into. The same JSON as a
/// `PersistentVolume`, with the parts of its spec the program reads; the
/// rest (node affinity, access modes, reclaim policy, mount options and the
/// two dozen volume sources besides `local`) is skipped while decoding.
/// k8s-openapi's `PersistentVolume` is about 3.5 KB before any string
/// (every volume source is inline), this is a few hundred bytes: the PV
/// store holds one per PV of the node.
///
/// Never sent back whole (a `PUT` of it would drop what it skips): PVs are
/// created from a full `PersistentVolume` and changed by patches of the
/// fields concerned.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct LeanPv {
    /// The PV's metadata.
    pub metadata: ObjectMeta,
    /// The parts of its spec the program reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<LeanPvSpec>,
    /// Its status (phase, reason, message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PersistentVolumeStatus>,
}

/// The parts of a PV's spec the program reads; the fields keep the names
/// and meaning of `PersistentVolumeSpec`'s.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeanPvSpec {
    /// `capacity`: the PV's size (`storage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<BTreeMap<String, Quantity>>,
    /// `claimRef`: the claim the PV is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_ref: Option<ObjectReference>,
    /// `local`: the device's path, for a local PV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalVolumeSource>,
    /// `storageClassName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// `volumeMode` (`Block` or `Filesystem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<String>,
}

impl k8s_openapi::Resource for LeanPv {
    const API_VERSION: &'static str = <PersistentVolume as k8s_openapi::Resource>::API_VERSION;
    const GROUP: &'static str = <PersistentVolume as k8s_openapi::Resource>::GROUP;
    const KIND: &'static str = <PersistentVolume as k8s_openapi::Resource>::KIND;
    const VERSION: &'static str = <PersistentVolume as k8s_openapi::Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str =
        <PersistentVolume as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    type Scope = <PersistentVolume as k8s_openapi::Resource>::Scope;
}

impl k8s_openapi::Metadata for LeanPv {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl From<PersistentVolume> for LeanPv {
    fn from(pv: PersistentVolume) -> Self {
        LeanPv {
            metadata: pv.metadata,
            spec: pv.spec.map(LeanPvSpec::from),
            status: pv.status,
        }
    }
}

impl From<PersistentVolumeSpec> for LeanPvSpec {
    fn from(spec: PersistentVolumeSpec) -> Self {
        LeanPvSpec {
            capacity: spec.capacity,
            claim_ref: spec.claim_ref,
            local: spec.local,
            storage_class_name: spec.storage_class_name,
            volume_mode: spec.volume_mode,
        }
    }
}

/// One annotation of a PV.
pub fn annotation<'a>(pv: &'a LeanPv, key: &str) -> Option<&'a str> {
    pv.metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(key))
        .map(String::as_str)
}

/// Whether a PV carries this program's [`CLEANUP_FINALIZER`].
pub fn has_cleanup_finalizer(pv: &LeanPv) -> bool {
    pv.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|finalizer| finalizer == CLEANUP_FINALIZER)
}

/// A PV's `spec.local.path`, if it is a local PV.
pub fn local_path(pv: &LeanPv) -> Option<&str> {
    pv.spec
        .as_ref()
        .and_then(|spec| spec.local.as_ref())
        .map(|local| local.path.as_str())
}

/// A PV's device class: its class label, else [`DEFAULT_CLASS`].
pub fn class_of(pv: &LeanPv) -> &str {
    pv.metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(DEVICE_CLASS_LABEL))
        .map_or(DEFAULT_CLASS, String::as_str)
}
