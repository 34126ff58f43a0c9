//! Device classes: the `deviceClasses` key of the PV spec ConfigMap, a YAML
//! list in which each entry is one group of disks with its own directory,
//! filter, StorageClass and volume mode, chosen by what a disk is (size,
//! rotational, model, vendor, serial, device type), with labels for its
//! PVs. The flat upstream keys are the one class named [`DEFAULT_CLASS`].
//!
//! An entry takes the flat keys with their meanings and defaults
//! (`deviceDir`, `deviceNameFilter`, `volumeMode`, `fsType`,
//! `storageClassName`, `wipeBytes`, `wipeDevicesWithData`) and these:
//!
//! | key | meaning |
//! |---|---|
//! | `name` | the class, a DNS label; unique in the list |
//! | `minSize`, `maxSize` | the device's exact size is at least / at most this quantity |
//! | `rotational` | `true` or `false`: the kernel's `queue/rotational`; absent: either |
//! | `models`, `vendors`, `serials` | lists of regular expressions (unanchored); one must match the device's model, vendor, serial or WWID |
//! | `deviceTypes` | a subset of `disk`, `part`, `loop`, `dm`, `md`, `mpath`; absent: every type |
//! | `maxDevices` | at most this many PVs of the class on the node |
//! | `labels` | static labels put on every PV of the class |
//! | `nodeLabels` | keys of Node labels copied onto every PV of the class |
//!
//! Unlike the flat keys (whose unknown keys are ignored, as upstream), an
//! entry with an unknown key is refused: a misspelt selector would
//! otherwise select more disks than meant.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use regex::Regex;
use serde_yaml_ng::Value;

use crate::objects::naming::{is_label_key, is_label_value};
use crate::objects::quantity;
use crate::objects::spec::{self, KEY_DEVICE_DIR, PvSpec, SpecError, invalid, parse_regex};

/// ConfigMap key: the YAML list of device classes.
pub const KEY_DEVICE_CLASSES: &str = "deviceClasses";
/// The class of the flat upstream keys, and of PVs that carry no class label.
pub const DEFAULT_CLASS: &str = "default";
/// Class key: the class's name.
pub const KEY_NAME: &str = "name";
/// Class key: the smallest device size selected.
pub const KEY_MIN_SIZE: &str = "minSize";
/// Class key: the largest device size selected.
pub const KEY_MAX_SIZE: &str = "maxSize";
/// Class key: rotational or not.
pub const KEY_ROTATIONAL: &str = "rotational";
/// Class key: regular expressions on the model.
pub const KEY_MODELS: &str = "models";
/// Class key: regular expressions on the vendor.
pub const KEY_VENDORS: &str = "vendors";
/// Class key: regular expressions on the serial or WWID.
pub const KEY_SERIALS: &str = "serials";
/// Class key: the device types selected.
pub const KEY_DEVICE_TYPES: &str = "deviceTypes";
/// Class key: the most PVs of the class on the node.
pub const KEY_MAX_DEVICES: &str = "maxDevices";
/// Class key: static PV labels.
pub const KEY_LABELS: &str = "labels";
/// Class key: Node label keys copied onto the PVs.
pub const KEY_NODE_LABELS: &str = "nodeLabels";

/// Label prefix reserved for this program's own PV labels.
const OWN_PREFIX: &str = "local-pv-provisioner.cybozu.io/";

/// The class-only keys of an entry.
const CLASS_KEYS: [&str; 11] = [
    KEY_NAME,
    KEY_MIN_SIZE,
    KEY_MAX_SIZE,
    KEY_ROTATIONAL,
    KEY_MODELS,
    KEY_VENDORS,
    KEY_SERIALS,
    KEY_DEVICE_TYPES,
    KEY_MAX_DEVICES,
    KEY_LABELS,
    KEY_NODE_LABELS,
];

/// The kind of block device, as `deviceTypes` and the PV label spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeviceType {
    /// A whole disk (SCSI, SATA, NVMe namespace, virtio, …).
    Disk,
    /// A partition of a disk.
    Part,
    /// A loop device.
    Loop,
    /// A device-mapper device (LVM, crypt, …) other than multipath.
    Dm,
    /// A software RAID (md) device.
    Md,
    /// A device-mapper multipath device.
    Mpath,
}

impl DeviceType {
    /// Every type, in the order `deviceTypes` lists them.
    pub const ALL: [DeviceType; 6] = [
        DeviceType::Disk,
        DeviceType::Part,
        DeviceType::Loop,
        DeviceType::Dm,
        DeviceType::Md,
        DeviceType::Mpath,
    ];

    /// The spelling in `deviceTypes` and in the PV label.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceType::Disk => "disk",
            DeviceType::Part => "part",
            DeviceType::Loop => "loop",
            DeviceType::Dm => "dm",
            DeviceType::Md => "md",
            DeviceType::Mpath => "mpath",
        }
    }

    /// The type spelled `text`, if it is one.
    pub fn parse(text: &str) -> Option<DeviceType> {
        DeviceType::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

impl fmt::Display for DeviceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a class selects besides its directory and name filter. The empty
/// selector selects every device.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// Smallest size in bytes.
    pub min_size: Option<u64>,
    /// Largest size in bytes.
    pub max_size: Option<u64>,
    /// Rotational or not; `None`: either.
    pub rotational: Option<bool>,
    /// One must match the model.
    pub models: Vec<Regex>,
    /// One must match the vendor.
    pub vendors: Vec<Regex>,
    /// One must match the serial or WWID.
    pub serials: Vec<Regex>,
    /// The types selected; empty: every type.
    pub device_types: BTreeSet<DeviceType>,
}

impl PartialEq for Selector {
    fn eq(&self, other: &Self) -> bool {
        fn sources(list: &[Regex]) -> Vec<&str> {
            list.iter().map(Regex::as_str).collect()
        }
        self.min_size == other.min_size
            && self.max_size == other.max_size
            && self.rotational == other.rotational
            && sources(&self.models) == sources(&other.models)
            && sources(&self.vendors) == sources(&other.vendors)
            && sources(&self.serials) == sources(&other.serials)
            && self.device_types == other.device_types
    }
}

impl Selector {
    /// Whether the selector selects every device.
    pub fn is_empty(&self) -> bool {
        *self == Selector::default()
    }
}

/// Parses the `deviceClasses` value: a YAML list of class entries, each a
/// valid class, with distinct names.
pub fn parse_device_classes(text: &str) -> Result<Vec<PvSpec>, SpecError> {
    let classes_error = |reason: String| SpecError::Classes { reason };
    let value: Value = serde_yaml_ng::from_str(text).map_err(|error| {
        classes_error(format!(
            "is not valid YAML: {}",
            error.to_string().lines().next().unwrap_or_default()
        ))
    })?;
    let Value::Sequence(entries) = value else {
        return Err(classes_error(
            "must be a YAML list of classes (each entry a map with a name)".into(),
        ));
    };
    if entries.is_empty() {
        return Err(classes_error("must list at least one class".into()));
    }
    let mut classes: Vec<PvSpec> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let class = parse_class(entry).map_err(|error| SpecError::InClass {
            entry: entry_label(index, entry),
            source: Box::new(error),
        })?;
        if let Some(first) = classes.iter().position(|other| other.class == class.class) {
            return Err(classes_error(format!(
                "entries {} and {} are both named {:?}: class names must be unique",
                first + 1,
                index + 1,
                class.class
            )));
        }
        classes.push(class);
    }
    Ok(classes)
}

/// How an entry is named in errors: its position, and its name when it has one.
fn entry_label(index: usize, entry: &Value) -> String {
    match entry.get(KEY_NAME).and_then(Value::as_str) {
        Some(name) => format!("{} ({name:?})", index + 1),
        None => (index + 1).to_string(),
    }
}

/// Parses one class entry.
fn parse_class(entry: &Value) -> Result<PvSpec, SpecError> {
    let Value::Mapping(map) = entry else {
        return Err(invalid(
            KEY_NAME,
            &scalar_text(entry),
            "a class must be a map of keys (name, deviceDir, …)",
        ));
    };
    let mut flat: BTreeMap<String, String> = BTreeMap::new();
    let mut own: BTreeMap<&'static str, &Value> = BTreeMap::new();
    for (key, value) in map {
        let Some(key) = key.as_str() else {
            return Err(invalid(
                KEY_NAME,
                &scalar_text(key),
                "class keys must be strings",
            ));
        };
        if let Some(known) = CLASS_KEYS.into_iter().find(|known| *known == key) {
            own.insert(known, value);
        } else if let Some(known) = spec::KNOWN_KEYS.into_iter().find(|known| *known == key) {
            flat.insert(key.to_string(), string(known, value)?);
        } else {
            return Err(invalid(
                KEY_NAME,
                key,
                format!(
                    "unknown key in a class (known: {}, {})",
                    spec::KNOWN_KEYS.join(", "),
                    CLASS_KEYS.join(", ")
                ),
            ));
        }
    }
    let name = match own.get(KEY_NAME) {
        None => return Err(SpecError::MissingKey { key: KEY_NAME }),
        Some(value) => string(KEY_NAME, value)?,
    };
    if !is_dns_label(&name) {
        return Err(invalid(
            KEY_NAME,
            &name,
            "must be a DNS label (lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)",
        ));
    }
    if !flat.contains_key(KEY_DEVICE_DIR) {
        return Err(SpecError::MissingKey {
            key: KEY_DEVICE_DIR,
        });
    }
    let mut class = spec::parse_pv_spec(&flat)?;
    class.class = name;
    class.selector = parse_selector(&own)?;
    class.max_devices = own
        .get(KEY_MAX_DEVICES)
        .map(|value| whole_number(KEY_MAX_DEVICES, value))
        .transpose()?;
    class.labels = own
        .get(KEY_LABELS)
        .map(|value| parse_labels(value))
        .transpose()?
        .unwrap_or_default();
    class.node_labels = own
        .get(KEY_NODE_LABELS)
        .map(|value| parse_node_labels(value))
        .transpose()?
        .unwrap_or_default();
    Ok(class)
}

/// The selector keys of an entry.
fn parse_selector(own: &BTreeMap<&'static str, &Value>) -> Result<Selector, SpecError> {
    let size = |key: &'static str| {
        own.get(key)
            .map(|value| {
                let text = scalar_text(value);
                quantity::bytes(&text)
                    .filter(|_| !matches!(value, Value::Sequence(_) | Value::Mapping(_)))
                    .ok_or_else(|| {
                        invalid(
                            key,
                            &text,
                            "must be a quantity of bytes (for example 100Gi, 1T or 500107862016)",
                        )
                    })
            })
            .transpose()
    };
    let (min_size, max_size) = (size(KEY_MIN_SIZE)?, size(KEY_MAX_SIZE)?);
    if let (Some(min), Some(max)) = (min_size, max_size)
        && min > max
    {
        return Err(invalid(
            KEY_MIN_SIZE,
            &min.to_string(),
            format!("is larger than maxSize ({max} bytes): the class would select nothing"),
        ));
    }
    let rotational = match own.get(KEY_ROTATIONAL) {
        None => None,
        Some(Value::Bool(flag)) => Some(*flag),
        Some(Value::String(text)) if text == "true" || text == "false" => Some(text == "true"),
        Some(other) => {
            return Err(invalid(
                KEY_ROTATIONAL,
                &scalar_text(other),
                "must be true or false",
            ));
        }
    };
    let patterns = |key: &'static str| -> Result<Vec<Regex>, SpecError> {
        match own.get(key) {
            None => Ok(Vec::new()),
            Some(value) => strings(key, value, "a list of regular expressions")?
                .iter()
                .map(|pattern| parse_regex(key, pattern))
                .collect(),
        }
    };
    let device_types = match own.get(KEY_DEVICE_TYPES) {
        None => BTreeSet::new(),
        Some(value) => {
            let names = strings(KEY_DEVICE_TYPES, value, "a list of device types")?;
            if names.is_empty() {
                return Err(invalid(
                    KEY_DEVICE_TYPES,
                    "[]",
                    "must name at least one type (leave it out to select every type)",
                ));
            }
            names
                .iter()
                .map(|name| {
                    DeviceType::parse(name).ok_or_else(|| {
                        invalid(
                            KEY_DEVICE_TYPES,
                            name,
                            "is not a device type (disk, part, loop, dm, md, mpath)",
                        )
                    })
                })
                .collect::<Result<_, _>>()?
        }
    };
    Ok(Selector {
        min_size,
        max_size,
        rotational,
        models: patterns(KEY_MODELS)?,
        vendors: patterns(KEY_VENDORS)?,
        serials: patterns(KEY_SERIALS)?,
        device_types,
    })
}

/// `labels`: a map of valid label keys (not this program's own) to valid values.
fn parse_labels(value: &Value) -> Result<BTreeMap<String, String>, SpecError> {
    let Value::Mapping(map) = value else {
        return Err(invalid(
            KEY_LABELS,
            &scalar_text(value),
            "must be a map of label keys to values",
        ));
    };
    let mut labels = BTreeMap::new();
    for (key, value) in map {
        let key = string(KEY_LABELS, key)?;
        let value = string(KEY_LABELS, value)?;
        check_label_key(KEY_LABELS, &key)?;
        if !is_label_value(&value) {
            return Err(invalid(
                KEY_LABELS,
                &value,
                format!(
                    "the value of label {key:?} is not a valid label value (at most 63 characters: letters, digits, '-', '_' and '.', starting and ending with a letter or digit)"
                ),
            ));
        }
        labels.insert(key, value);
    }
    Ok(labels)
}

/// `nodeLabels`: a list of valid label keys (not this program's own).
fn parse_node_labels(value: &Value) -> Result<Vec<String>, SpecError> {
    let keys = strings(KEY_NODE_LABELS, value, "a list of Node label keys")?;
    for key in &keys {
        check_label_key(KEY_NODE_LABELS, key)?;
    }
    Ok(keys)
}

fn check_label_key(config_key: &'static str, key: &str) -> Result<(), SpecError> {
    if !is_label_key(key) {
        return Err(invalid(
            config_key,
            key,
            "is not a valid label key (an optional DNS subdomain prefix and '/', then at most 63 characters: letters, digits, '-', '_' and '.')",
        ));
    }
    if key.starts_with(OWN_PREFIX) {
        return Err(invalid(
            config_key,
            key,
            format!("labels under {OWN_PREFIX} are this program's own"),
        ));
    }
    Ok(())
}

/// A single value as text (what the flat parser reads): a string as it
/// is, a number or a boolean as YAML writes it.
fn string(key: &'static str, value: &Value) -> Result<String, SpecError> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Number(number) => Ok(number.to_string()),
        Value::Bool(flag) => Ok(flag.to_string()),
        other => Err(invalid(
            key,
            &scalar_text(other),
            "must be a single value (a string, number or boolean)",
        )),
    }
}

/// A list of strings.
fn strings(key: &'static str, value: &Value, what: &str) -> Result<Vec<String>, SpecError> {
    let Value::Sequence(items) = value else {
        return Err(invalid(key, &scalar_text(value), format!("must be {what}")));
    };
    items.iter().map(|item| string(key, item)).collect()
}

/// A whole number of at least 1.
fn whole_number(key: &'static str, value: &Value) -> Result<usize, SpecError> {
    let text = scalar_text(value);
    match value {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => text.parse().ok(),
        _ => None,
    }
    .and_then(|number| usize::try_from(number).ok())
    .filter(|number| *number >= 1)
    .ok_or_else(|| invalid(key, &text, "must be a whole number of at least 1"))
}

/// A YAML value as shown in an error.
fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => serde_yaml_ng::to_string(other)
            .map(|text| text.trim_end().to_string())
            .unwrap_or_default(),
    }
}

/// Whether `name` is a DNS-1123 label.
fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

#[cfg(test)]
mod tests;
