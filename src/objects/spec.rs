//! The PV spec: which Node annotation names it, the ConfigMap keys it is
//! read from, and their validation. Every error names the key and the value.
//!
//! A ConfigMap holds either the flat upstream keys (one class, named
//! [`DEFAULT_CLASS`]) or a [`KEY_DEVICE_CLASSES`] list
//! ([`crate::objects::classes`]); [`parse_node_spec`] reads either into a
//! [`NodeSpec`], and refuses a ConfigMap that has both.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use regex::{Regex, RegexBuilder};
use thiserror::Error;

pub use crate::objects::classes::{DEFAULT_CLASS, KEY_DEVICE_CLASSES};
use crate::objects::classes::{Selector, parse_device_classes};

/// Node annotation naming the PV spec ConfigMap (same as upstream).
pub const PV_SPEC_CONFIGMAP_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/pv-spec-configmap";

/// ConfigMap key: directory whose entries are candidate devices.
pub const KEY_DEVICE_DIR: &str = "deviceDir";
/// ConfigMap key: regular expression selecting entry names.
pub const KEY_DEVICE_NAME_FILTER: &str = "deviceNameFilter";
/// ConfigMap key: `Filesystem` or `Block`.
pub const KEY_VOLUME_MODE: &str = "volumeMode";
/// ConfigMap key: filesystem type, with `Filesystem` only.
pub const KEY_FS_TYPE: &str = "fsType";
/// ConfigMap key: storage class of the PVs (optional).
pub const KEY_STORAGE_CLASS_NAME: &str = "storageClassName";
/// ConfigMap key: bytes zeroed at the head of a device before its PV is
/// deleted (optional; plain bytes or with a `Ki`, `Mi`, `Gi`, `Ti` suffix).
pub const KEY_WIPE_BYTES: &str = "wipeBytes";
/// Key: `"true"` to wipe a never-seen device that holds data and then offer
/// it (upstream's behaviour); by default such a device is not offered.
pub const KEY_WIPE_DEVICES_WITH_DATA: &str = "wipeDevicesWithData";
/// Key: `Wipe` (default) or `Keep`: what happens to a PV that turns
/// `Released` (recorded on each PV at creation).
pub const KEY_RELEASE_POLICY: &str = "releasePolicy";
/// Key: `Signatures` (default: the head, Ceph label copies and tail) or
/// `Full` (every byte): how a device is wiped (recorded on each PV).
pub const KEY_WIPE_MODE: &str = "wipeMode";
/// Key: bytes per second a `Full` wipe may write (a quantity; optional).
pub const KEY_WIPE_BANDWIDTH: &str = "wipeBandwidth";
/// Key: `"true"` to have the node-cleanup controller delete the claims
/// bound to the PVs of a Node gone for good (recorded on each PV).
pub const KEY_DELETE_CLAIMS_ON_NODE_GONE: &str = "deleteClaimsOnNodeGone";

/// Head bytes zeroed when the ConfigMap sets no `wipeBytes`: 100 MiB, as upstream.
pub const DEFAULT_WIPE_BYTES: u64 = 100 * 1024 * 1024;
/// `wipeBytes` must be a whole number of these, so `O_DIRECT` writes stay aligned.
pub const WIPE_BYTES_ALIGNMENT: u64 = 4096;

/// Storage class used when the ConfigMap names none (upstream's default).
pub const DEFAULT_STORAGE_CLASS_NAME: &str = "local-storage";

/// Longest accepted `deviceDir`, the kernel's `PATH_MAX`.
const MAX_DEVICE_DIR_LEN: usize = 4096;
/// Largest compiled program accepted for `deviceNameFilter`, so a
/// pathological pattern is refused instead of eating the pod's memory.
const MAX_FILTER_PROGRAM_BYTES: usize = 1 << 20;
/// Longest accepted `deviceNameFilter` source text.
const MAX_FILTER_LEN: usize = 4096;

/// How the PVs present the device to pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeMode {
    /// kubelet formats the device with `fsType` and mounts it.
    Filesystem,
    /// The raw block device is handed to the pod.
    Block,
}

impl VolumeMode {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeMode::Filesystem => "Filesystem",
            VolumeMode::Block => "Block",
        }
    }
}

/// Filesystems kubelet may format a Filesystem-mode device with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    /// ext4.
    Ext4,
    /// XFS.
    Xfs,
    /// Btrfs.
    Btrfs,
}

impl FsType {
    /// The spelling used in `spec.local.fsType`.
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
            FsType::Btrfs => "btrfs",
        }
    }
}

/// What happens to a PV of this program that turns `Released`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReleasePolicy {
    /// Its device is wiped and offered again (upstream's behaviour).
    #[default]
    Wipe,
    /// It stays `Released` with its data until an admin asks for a wipe
    /// (annotation `wipe-requested: "true"`) or deletes it.
    Keep,
}

impl ReleasePolicy {
    /// The spelling in the ConfigMap and on the PV.
    pub fn as_str(self) -> &'static str {
        match self {
            ReleasePolicy::Wipe => "Wipe",
            ReleasePolicy::Keep => "Keep",
        }
    }

    /// The policy spelled `text`, if it is one.
    pub fn parse(text: &str) -> Option<ReleasePolicy> {
        [ReleasePolicy::Wipe, ReleasePolicy::Keep]
            .into_iter()
            .find(|policy| policy.as_str() == text)
    }
}

/// How much of a device a wipe zeroes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WipeMode {
    /// The regions that hold signatures: the head, the Ceph label copies,
    /// the tail.
    #[default]
    Signatures,
    /// Every byte of the device, with progress that survives restarts.
    Full,
}

impl WipeMode {
    /// The spelling in the ConfigMap and on the PV.
    pub fn as_str(self) -> &'static str {
        match self {
            WipeMode::Signatures => "Signatures",
            WipeMode::Full => "Full",
        }
    }

    /// The mode spelled `text`, if it is one.
    pub fn parse(text: &str) -> Option<WipeMode> {
        [WipeMode::Signatures, WipeMode::Full]
            .into_iter()
            .find(|mode| mode.as_str() == text)
    }
}

/// A validated PV spec: one device class.
#[derive(Debug, Clone)]
pub struct PvSpec {
    /// The class's name ([`DEFAULT_CLASS`] for the flat keys).
    pub class: String,
    /// Absolute, normalised directory whose entries are candidate devices.
    pub device_dir: PathBuf,
    /// The filter as written in the ConfigMap.
    pub device_name_filter_source: String,
    /// The compiled filter; matched unanchored against entry names like upstream.
    pub device_name_filter: Regex,
    /// Volume mode of the PVs.
    pub volume_mode: VolumeMode,
    /// Filesystem type; present exactly when the mode is Filesystem.
    pub fs_type: Option<FsType>,
    /// Storage class of the PVs.
    pub storage_class_name: String,
    /// Bytes zeroed at the head of the device on cleanup.
    pub wipe_bytes: u64,
    /// Whether a never-seen device holding data is wiped and offered.
    pub wipe_devices_with_data: bool,
    /// What happens to a Released PV.
    pub release_policy: ReleasePolicy,
    /// How much of a device a wipe zeroes.
    pub wipe_mode: WipeMode,
    /// Bytes per second a full wipe may write.
    pub wipe_bandwidth: Option<u64>,
    /// Whether the claims of the PVs of a Node gone for good are deleted.
    pub delete_claims_on_node_gone: bool,
    /// What the class selects besides the directory and the name filter.
    pub selector: Selector,
    /// At most this many PVs of the class on the node.
    pub max_devices: Option<usize>,
    /// Static labels put on every PV of the class.
    pub labels: BTreeMap<String, String>,
    /// Keys of Node labels copied onto every PV of the class.
    pub node_labels: Vec<String>,
    /// Keys present in the ConfigMap that this version does not know;
    /// they are reported and ignored so newer upstream keys do not break it.
    pub unknown_keys: Vec<String>,
}

impl PartialEq for PvSpec {
    fn eq(&self, other: &Self) -> bool {
        self.class == other.class
            && self.device_dir == other.device_dir
            && self.device_name_filter_source == other.device_name_filter_source
            && self.volume_mode == other.volume_mode
            && self.fs_type == other.fs_type
            && self.storage_class_name == other.storage_class_name
            && self.wipe_bytes == other.wipe_bytes
            && self.wipe_devices_with_data == other.wipe_devices_with_data
            && self.release_policy == other.release_policy
            && self.wipe_mode == other.wipe_mode
            && self.wipe_bandwidth == other.wipe_bandwidth
            && self.delete_claims_on_node_gone == other.delete_claims_on_node_gone
            && self.unknown_keys == other.unknown_keys
            && self.selector == other.selector
            && self.max_devices == other.max_devices
            && self.labels == other.labels
            && self.node_labels == other.node_labels
    }
}

/// A node's whole spec: its device classes, in the ConfigMap's order.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    /// The classes; one named [`DEFAULT_CLASS`] for the flat keys.
    pub classes: Vec<PvSpec>,
    /// Whether the classes came from [`KEY_DEVICE_CLASSES`].
    pub listed: bool,
    /// Keys beside [`KEY_DEVICE_CLASSES`] that this version does not know
    /// (reported and ignored); the flat keys' unknown keys are on their class.
    pub unknown_keys: Vec<String>,
}

/// Why a PV spec ConfigMap was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpecError {
    /// A required key is absent.
    #[error("key {key:?} is missing")]
    MissingKey {
        /// The key.
        key: &'static str,
    },
    /// A `deviceClasses` entry is invalid.
    #[error("deviceClasses entry {entry}: {source}")]
    InClass {
        /// The entry's position (from 1) and name.
        entry: String,
        /// What is wrong with it.
        #[source]
        source: Box<SpecError>,
    },
    /// `deviceClasses` as a whole is invalid, or sits beside the flat keys.
    #[error("key \"deviceClasses\": {reason}")]
    Classes {
        /// Why.
        reason: String,
    },
    /// A key holds a value that is not accepted. The reason comes before
    /// the value so a shortened message still says what is wrong.
    #[error("key {key:?}: {reason} (value {value})")]
    InvalidValue {
        /// The key.
        key: &'static str,
        /// The offending value, quoted and shortened for logs.
        value: ShownValue,
        /// Why it is refused.
        reason: String,
    },
}

/// A ConfigMap value as shown in an error: quoted with control characters
/// escaped, and cut to 200 bytes of that, so a huge or binary value cannot
/// flood logs and Events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShownValue(String);

impl ShownValue {
    fn new(value: &str) -> Self {
        const MAX_SHOWN: usize = 200;
        let quoted = format!("{value:?}");
        if quoted.len() <= MAX_SHOWN {
            return ShownValue(quoted);
        }
        let mut end = MAX_SHOWN;
        while !quoted.is_char_boundary(end) {
            end -= 1;
        }
        ShownValue(format!("{}… ({} bytes)", &quoted[..end], value.len()))
    }
}

impl fmt::Display for ShownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The error of `key` holding `value`, refused for `reason`.
pub(crate) fn invalid(key: &'static str, value: &str, reason: impl Into<String>) -> SpecError {
    SpecError::InvalidValue {
        key,
        value: ShownValue::new(value),
        reason: reason.into(),
    }
}

/// The flat keys this version knows.
pub(crate) const KNOWN_KEYS: [&str; 11] = [
    KEY_RELEASE_POLICY,
    KEY_WIPE_MODE,
    KEY_WIPE_BANDWIDTH,
    KEY_DELETE_CLAIMS_ON_NODE_GONE,
    KEY_WIPE_BYTES,
    KEY_WIPE_DEVICES_WITH_DATA,
    KEY_DEVICE_DIR,
    KEY_DEVICE_NAME_FILTER,
    KEY_VOLUME_MODE,
    KEY_FS_TYPE,
    KEY_STORAGE_CLASS_NAME,
];

/// Parses the `data` of a PV spec ConfigMap: the flat keys as the class
/// [`DEFAULT_CLASS`], or the [`KEY_DEVICE_CLASSES`] list; never both.
pub fn parse_node_spec(data: &BTreeMap<String, String>) -> Result<NodeSpec, SpecError> {
    let Some(listed) = data.get(KEY_DEVICE_CLASSES) else {
        let class = parse_pv_spec(data)?;
        return Ok(NodeSpec {
            classes: vec![class],
            listed: false,
            unknown_keys: Vec::new(),
        });
    };
    let flat: Vec<&str> = KNOWN_KEYS
        .into_iter()
        .filter(|key| data.contains_key(*key))
        .collect();
    if !flat.is_empty() {
        return Err(SpecError::Classes {
            reason: format!(
                "cannot stand beside the flat keys ({}): move them into a class (the flat keys are the class named {DEFAULT_CLASS:?})",
                flat.join(", ")
            ),
        });
    }
    Ok(NodeSpec {
        classes: parse_device_classes(listed)?,
        listed: true,
        unknown_keys: data
            .keys()
            .filter(|key| *key != KEY_DEVICE_CLASSES)
            .cloned()
            .collect(),
    })
}

/// Parses and validates the flat keys of a PV spec ConfigMap (one class,
/// [`DEFAULT_CLASS`]); unknown keys are kept to be reported.
pub fn parse_pv_spec(data: &BTreeMap<String, String>) -> Result<PvSpec, SpecError> {
    let required = |key: &'static str| {
        data.get(key)
            .map(String::as_str)
            .ok_or(SpecError::MissingKey { key })
    };

    let device_dir = parse_device_dir(required(KEY_DEVICE_DIR)?)?;
    let filter_source = required(KEY_DEVICE_NAME_FILTER)?;
    let device_name_filter = parse_regex(KEY_DEVICE_NAME_FILTER, filter_source)?;
    let volume_mode = match required(KEY_VOLUME_MODE)? {
        "Filesystem" => VolumeMode::Filesystem,
        "Block" => VolumeMode::Block,
        other => {
            return Err(invalid(
                KEY_VOLUME_MODE,
                other,
                "must be \"Filesystem\" or \"Block\"",
            ));
        }
    };
    let fs_type = parse_fs_type(volume_mode, data.get(KEY_FS_TYPE).map(String::as_str))?;
    let storage_class_name = match data.get(KEY_STORAGE_CLASS_NAME) {
        None => DEFAULT_STORAGE_CLASS_NAME.to_string(),
        Some(name) if crate::objects::naming::is_dns1123_subdomain(name) => name.clone(),
        Some(name) => {
            return Err(invalid(
                KEY_STORAGE_CLASS_NAME,
                name,
                "must be a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most 253 characters)",
            ));
        }
    };
    let wipe_bytes = match data.get(KEY_WIPE_BYTES) {
        None => DEFAULT_WIPE_BYTES,
        Some(value) => parse_wipe_bytes(value)?,
    };
    let wipe_devices_with_data = parse_flag(data, KEY_WIPE_DEVICES_WITH_DATA)?;
    let release_policy = match data.get(KEY_RELEASE_POLICY) {
        None => ReleasePolicy::default(),
        Some(text) => ReleasePolicy::parse(text)
            .ok_or_else(|| invalid(KEY_RELEASE_POLICY, text, "must be \"Wipe\" or \"Keep\""))?,
    };
    let wipe_mode = match data.get(KEY_WIPE_MODE) {
        None => WipeMode::default(),
        Some(text) => WipeMode::parse(text)
            .ok_or_else(|| invalid(KEY_WIPE_MODE, text, "must be \"Signatures\" or \"Full\""))?,
    };
    let wipe_bandwidth = data
        .get(KEY_WIPE_BANDWIDTH)
        .map(|text| {
            crate::objects::quantity::bytes(text)
                .filter(|bytes| *bytes >= MIN_WIPE_BANDWIDTH)
                .ok_or_else(|| {
                    invalid(
                        KEY_WIPE_BANDWIDTH,
                        text,
                        "must be bytes per second, at least 1Mi (a quantity such as 200Mi)",
                    )
                })
        })
        .transpose()?;
    let delete_claims_on_node_gone = parse_flag(data, KEY_DELETE_CLAIMS_ON_NODE_GONE)?;
    let unknown_keys = data
        .keys()
        .filter(|key| !KNOWN_KEYS.contains(&key.as_str()))
        .cloned()
        .collect();
    Ok(PvSpec {
        class: DEFAULT_CLASS.to_string(),
        selector: Selector::default(),
        max_devices: None,
        labels: BTreeMap::new(),
        node_labels: Vec::new(),
        device_dir,
        device_name_filter_source: filter_source.to_string(),
        device_name_filter,
        volume_mode,
        fs_type,
        storage_class_name,
        wipe_bytes,
        wipe_devices_with_data,
        release_policy,
        wipe_mode,
        wipe_bandwidth,
        delete_claims_on_node_gone,
        unknown_keys,
    })
}

/// The smallest `wipeBandwidth`: 1 MiB/s.
const MIN_WIPE_BANDWIDTH: u64 = 1 << 20;

/// A `"true"`/`"false"` key, `false` when absent.
fn parse_flag(data: &BTreeMap<String, String>, key: &'static str) -> Result<bool, SpecError> {
    match data.get(key).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(invalid(key, other, "must be \"true\" or \"false\"")),
    }
}

/// `fsType`: required with Filesystem, refused with Block.
fn parse_fs_type(
    volume_mode: VolumeMode,
    value: Option<&str>,
) -> Result<Option<FsType>, SpecError> {
    Ok(match (volume_mode, value) {
        (VolumeMode::Filesystem, None) => return Err(SpecError::MissingKey { key: KEY_FS_TYPE }),
        (VolumeMode::Filesystem, Some("ext4")) => Some(FsType::Ext4),
        (VolumeMode::Filesystem, Some("xfs")) => Some(FsType::Xfs),
        (VolumeMode::Filesystem, Some("btrfs")) => Some(FsType::Btrfs),
        (VolumeMode::Filesystem, Some(other)) => {
            return Err(invalid(
                KEY_FS_TYPE,
                other,
                "must be \"ext4\", \"xfs\" or \"btrfs\"",
            ));
        }
        (VolumeMode::Block, None) => None,
        (VolumeMode::Block, Some(other)) => {
            return Err(invalid(
                KEY_FS_TYPE,
                other,
                "must not be set when volumeMode is \"Block\"",
            ));
        }
    })
}

fn parse_wipe_bytes(value: &str) -> Result<u64, SpecError> {
    let (number, unit) = match value.find(|c: char| !c.is_ascii_digit()) {
        Some(split) => value.split_at(split),
        None => (value, ""),
    };
    if number.is_empty() {
        return Err(invalid(
            KEY_WIPE_BYTES,
            value,
            "must be a whole number of bytes, optionally with a Ki, Mi, Gi or Ti suffix",
        ));
    }
    let multiplier: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => {
            return Err(invalid(
                KEY_WIPE_BYTES,
                value,
                "must be a whole number of bytes, optionally with a Ki, Mi, Gi or Ti suffix",
            ));
        }
    };
    let bytes = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| {
            invalid(
                KEY_WIPE_BYTES,
                value,
                "is not a number of bytes that fits in 64 bits",
            )
        })?;
    if bytes == 0 || bytes % WIPE_BYTES_ALIGNMENT != 0 {
        return Err(invalid(
            KEY_WIPE_BYTES,
            value,
            "must be a positive multiple of 4096 bytes",
        ));
    }
    Ok(bytes)
}

fn parse_device_dir(value: &str) -> Result<PathBuf, SpecError> {
    if value.is_empty() {
        return Err(invalid(KEY_DEVICE_DIR, value, "must not be empty"));
    }
    if value.len() > MAX_DEVICE_DIR_LEN {
        return Err(invalid(KEY_DEVICE_DIR, value, "is longer than 4096 bytes"));
    }
    if value.contains('\0') {
        return Err(invalid(KEY_DEVICE_DIR, value, "contains a NUL byte"));
    }
    if value.trim() != value {
        return Err(invalid(KEY_DEVICE_DIR, value, PADDED));
    }
    let path = Path::new(value);
    if !path.is_absolute() {
        return Err(invalid(KEY_DEVICE_DIR, value, "must be an absolute path"));
    }
    let mut normalised = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => normalised.push(part),
            Component::ParentDir => {
                return Err(invalid(KEY_DEVICE_DIR, value, "must not contain \"..\""));
            }
            Component::Prefix(_) => {
                return Err(invalid(KEY_DEVICE_DIR, value, "is not a Unix path"));
            }
        }
    }
    if normalised == Path::new("/") {
        return Err(invalid(
            KEY_DEVICE_DIR,
            value,
            "must not be the root directory",
        ));
    }
    Ok(normalised)
}

/// Why a value with white space at either end is refused.
const PADDED: &str = "has white space at the start or end (a YAML block scalar adds a trailing newline: quote the value)";

/// A regular expression of `key` (the name filter, a class's selectors),
/// bounded in length and compiled size.
pub(crate) fn parse_regex(key: &'static str, value: &str) -> Result<Regex, SpecError> {
    if value.trim() != value {
        return Err(invalid(key, value, PADDED));
    }
    if value.len() > MAX_FILTER_LEN {
        return Err(invalid(key, value, "is longer than 4096 bytes"));
    }
    RegexBuilder::new(value)
        .size_limit(MAX_FILTER_PROGRAM_BYTES)
        .dfa_size_limit(MAX_FILTER_PROGRAM_BYTES)
        .build()
        .map_err(|error| {
            let reason = match error {
                regex::Error::CompiledTooBig(_) => {
                    "is too complex (compiled size over 1 MiB)".to_string()
                }
                other => format!(
                    "is not a valid regular expression: {}",
                    last_line(&other.to_string())
                ),
            };
            invalid(key, value, reason)
        })
}

fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or(text).trim()
}

#[cfg(test)]
mod tests;
