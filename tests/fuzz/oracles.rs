//! Oracles, written from the Kubernetes rules and the documented ConfigMap
//! format, not from the crate's code: what a valid DNS-1123 subdomain and
//! label value are, and what `parse_pv_spec` must accept for each key.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use local_pv_provisioner::objects::spec::{
    KEY_DEVICE_DIR, KEY_DEVICE_NAME_FILTER, KEY_FS_TYPE, KEY_STORAGE_CLASS_NAME, KEY_VOLUME_MODE,
    KEY_WIPE_BYTES, KEY_WIPE_DEVICES_WITH_DATA,
};
use regex::Regex;

/// Kubernetes' DNS-1123 subdomain: at most 253 characters.
static SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").unwrap()
});
/// Kubernetes' label value: at most 63 characters, may be empty.
static LABEL_VALUE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$").unwrap());

/// Whether `name` is a Kubernetes DNS-1123 subdomain.
pub fn valid_subdomain(name: &str) -> bool {
    name.len() <= 253 && SUBDOMAIN.is_match(name)
}

/// Whether `value` is a Kubernetes label value.
pub fn valid_label_value(value: &str) -> bool {
    value.len() <= 63 && LABEL_VALUE.is_match(value)
}

/// The normalised `deviceDir`, or `None` when it must be refused.
pub fn oracle_device_dir(value: &str) -> Option<String> {
    if value.is_empty()
        || value.len() > 4096
        || value.contains('\0')
        || !value.starts_with('/')
        || value.trim() != value
    {
        return None;
    }
    let parts: Vec<&str> = value
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") {
        return None;
    }
    Some(format!("/{}", parts.join("/")))
}

/// `wipeBytes` in bytes, or `None` when it must be refused.
pub fn oracle_wipe_bytes(value: &str) -> Option<u64> {
    let digits = value.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = value.split_at(digits);
    let multiplier: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    let bytes = number.parse::<u64>().ok()?.checked_mul(multiplier)?;
    (bytes > 0 && bytes % 4096 == 0).then_some(bytes)
}

/// `wipeDevicesWithData`: exactly `"true"` or `"false"`; `None` when it
/// must be refused.
pub fn oracle_wipe_devices_with_data(value: &str) -> Option<bool> {
    match value {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// The keys `parse_pv_spec` knows, in the order it parses them.
pub const KNOWN: [&str; 7] = [
    KEY_DEVICE_DIR,
    KEY_DEVICE_NAME_FILTER,
    KEY_VOLUME_MODE,
    KEY_FS_TYPE,
    KEY_STORAGE_CLASS_NAME,
    KEY_WIPE_BYTES,
    KEY_WIPE_DEVICES_WITH_DATA,
];

/// What the oracle says about each key, in parse order: `Ok(())` when the
/// key is fine, `Err(())` when it must be refused, and for the filter
/// `Ok(())` when present (its compilation is not re-implemented here).
pub fn oracle_verdicts(data: &BTreeMap<String, String>) -> Vec<(&'static str, bool)> {
    let get = |key: &str| data.get(key).map(String::as_str);
    let mode = get(KEY_VOLUME_MODE);
    let fs_ok = match (mode, get(KEY_FS_TYPE)) {
        (Some("Filesystem"), Some(fs)) => ["ext4", "xfs", "btrfs"].contains(&fs),
        (Some("Filesystem"), None) => false,
        (_, None) => true,
        (_, Some(_)) => false,
    };
    vec![
        (
            KEY_DEVICE_DIR,
            get(KEY_DEVICE_DIR).and_then(oracle_device_dir).is_some(),
        ),
        (
            KEY_DEVICE_NAME_FILTER,
            get(KEY_DEVICE_NAME_FILTER).is_some(),
        ),
        (
            KEY_VOLUME_MODE,
            matches!(mode, Some("Filesystem") | Some("Block")),
        ),
        (KEY_FS_TYPE, fs_ok),
        (
            KEY_STORAGE_CLASS_NAME,
            get(KEY_STORAGE_CLASS_NAME).is_none_or(valid_subdomain),
        ),
        (
            KEY_WIPE_BYTES,
            get(KEY_WIPE_BYTES).is_none_or(|v| oracle_wipe_bytes(v).is_some()),
        ),
        (
            KEY_WIPE_DEVICES_WITH_DATA,
            get(KEY_WIPE_DEVICES_WITH_DATA)
                .is_none_or(|v| oracle_wipe_devices_with_data(v).is_some()),
        ),
    ]
}
