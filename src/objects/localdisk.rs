//! The `LocalDisk` custom resource (`localdisks.local-pv-provisioner.cybozu.io`,
//! `v1alpha1`, cluster-scoped, short name `ld`): one object per matching
//! entry of each device class's `deviceDir` on each node, written by that
//! node's provisioner, saying what the disk is and whether it is offered,
//! and if not, why. Its CRD is `config/crd/` (and the chart's `crds/`).
//!
//! The type is written by hand rather than derived, so no schema generator
//! joins the build: the CRD's schema is the YAML file, and
//! `tests/inventory` checks that every status this program writes is valid
//! against it.

use std::borrow::Cow;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::ClusterResourceScope;
use serde::{Deserialize, Serialize};

/// The API group of `LocalDisk`.
pub const GROUP: &str = "local-pv-provisioner.cybozu.io";
/// Its version.
pub const VERSION: &str = "v1alpha1";
/// Its kind.
pub const KIND: &str = "LocalDisk";
/// Its plural.
pub const PLURAL: &str = "localdisks";

/// A local disk of a node, as its provisioner sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LocalDisk {
    /// `LocalDisk` of this group and version.
    #[serde(rename = "apiVersion", default)]
    pub api_version: String,
    /// `LocalDisk`.
    #[serde(default)]
    pub kind: String,
    /// The object's metadata: its name, node and class labels, the Node as owner.
    pub metadata: ObjectMeta,
    /// What the provisioner says of the disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<LocalDiskStatus>,
}

impl kube::Resource for LocalDisk {
    type DynamicType = ();
    type Scope = ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(KIND)
    }

    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(GROUP)
    }

    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(VERSION)
    }

    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(PLURAL)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Where a disk stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DiskState {
    /// A PV of it is offered (`Available`).
    #[default]
    Available,
    /// Its PV is bound to a claim.
    Bound,
    /// Its PV is `Released` and waits for its wipe.
    Released,
    /// Its PV is `Released` and kept with its data (`releasePolicy: Keep`).
    Kept,
    /// It is being wiped before its PV goes.
    Wiping,
    /// It holds data and was never offered.
    HasData,
    /// Something else uses it (mounted, held, partitioned, opened exclusively).
    InUse,
    /// No class offers it, by choice or by rule (not selected, read-only,
    /// removable, two classes, `maxDevices`).
    Excluded,
    /// Its PV's device is missing.
    Missing,
    /// It cannot be used, for the reason given.
    Error,
}

impl DiskState {
    /// The spelling in the object.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskState::Available => "Available",
            DiskState::Bound => "Bound",
            DiskState::Released => "Released",
            DiskState::Kept => "Kept",
            DiskState::Wiping => "Wiping",
            DiskState::HasData => "HasData",
            DiskState::InUse => "InUse",
            DiskState::Excluded => "Excluded",
            DiskState::Missing => "Missing",
            DiskState::Error => "Error",
        }
    }

    /// Whether a PV of this program stands for the disk.
    pub fn is_offered(self) -> bool {
        matches!(
            self,
            DiskState::Available
                | DiskState::Bound
                | DiskState::Released
                | DiskState::Kept
                | DiskState::Wiping
        )
    }
}

impl fmt::Display for DiskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The last wipe of a disk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastWipe {
    /// When it finished (RFC 3339).
    pub time: String,
    /// What it zeroed (`Signatures` or `Full`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// How long it took.
    pub duration_seconds: f64,
}

/// One condition of a disk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskCondition {
    /// `Offered`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `True` or `False`.
    pub status: String,
    /// The state, when not offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the node's provisioner says of a disk. Every field it cannot tell
/// is left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalDiskStatus {
    /// The node.
    pub node: String,
    /// The entry in the class's `deviceDir` (a PV's `spec.local.path`).
    pub path: String,
    /// `major:minor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// A stable identity from sysfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_id: Option<String>,
    /// The model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The vendor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// The serial, else the WWID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// `disk`, `part`, `loop`, `dm`, `md` or `mpath`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    /// Exact size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// The size for people (`1Ti`, `3725Gi`, or bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Whether it spins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotational: Option<bool>,
    /// The device class that found it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// Where it stands.
    pub state: DiskState,
    /// Why, in a sentence a person can act on.
    pub reason: String,
    /// Its PV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume: Option<String>,
    /// The claim bound to its PV, `namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    /// Its last wipe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_wipe: Option<LastWipe>,
    /// How many wipes it has had.
    #[serde(default)]
    pub wipe_count: u64,
    /// A running full wipe's `DONE/TOTAL` bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wipe_progress: Option<String>,
    /// `Offered`: whether a PV of this program stands for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<DiskCondition>,
}
