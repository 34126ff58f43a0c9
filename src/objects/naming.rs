//! Names: the PersistentVolume name of a device and the node label value.
//!
//! # The PV naming rule
//!
//! 1. Start with upstream's name: `local-<node>-<device entry name>`, every
//!    character other than ASCII letters, digits, `-` and `.` replaced by `-`.
//! 2. Lowercase it. If the result is a valid DNS-1123 subdomain (at most 253
//!    characters, `[a-z0-9.-]`, every dot-separated part starting and ending
//!    with a letter or digit) it is the *plain name* — identical to
//!    upstream's for every name upstream could create.
//! 3. Otherwise the device gets a *hashed name*: the plain name repaired
//!    (empty or badly delimited parts dropped) and cut to 244 characters, then
//!    `-` and the first 8 hex digits of SHA-256 over the node and the
//!    unmodified entry name (and the class's name, for a class other than
//!    `default`, so two classes' entries of one name hash apart). It is
//!    stable: the same node, class and entry always give the same name.
//! 4. When several devices of one scan share a plain name (within a class
//!    or across classes), a device whose existing PV already carries the
//!    plain name keeps it; every other device of the group gets its hashed
//!    name, and the collision is reported.

use std::collections::{BTreeMap, HashMap};

/// Longest DNS-1123 subdomain (PV names).
pub const MAX_SUBDOMAIN_LEN: usize = 253;
/// Longest label value.
pub const MAX_LABEL_VALUE_LEN: usize = 63;
/// Hex digits of the hash suffix.
const HASH_HEX_DIGITS: usize = 8;

/// Whether `name` is a valid DNS-1123 subdomain, as the API server checks
/// object names.
pub fn is_dns1123_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SUBDOMAIN_LEN
        && name.split('.').all(|part| {
            let bytes = part.as_bytes();
            !bytes.is_empty()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
                && bytes[0] != b'-'
                && bytes[bytes.len() - 1] != b'-'
        })
}

/// Whether `value` is a valid label value.
pub fn is_label_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    if bytes.is_empty() {
        return true;
    }
    bytes.len() <= MAX_LABEL_VALUE_LEN
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether `key` is a valid label key: an optional DNS-1123 subdomain
/// prefix (at most 253 characters) and `/`, then a name of at most 63
/// characters (letters, digits, `-`, `_`, `.`, starting and ending with a
/// letter or digit).
pub fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    prefix.is_none_or(is_dns1123_subdomain) && !name.is_empty() && is_label_value(name)
}

/// `text` made a valid label value: every character other than letters,
/// digits, `-`, `_` and `.` replaced by `_`, cut to 63 characters, and
/// trimmed to start and end with a letter or digit; `None` when nothing is
/// left (a device's model `Samsung SSD 980 PRO 1TB` becomes
/// `Samsung_SSD_980_PRO_1TB`).
pub fn sanitized_label_value(text: &str) -> Option<String> {
    let replaced: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = replaced.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let cut = &trimmed[..trimmed.len().min(MAX_LABEL_VALUE_LEN)];
    let value = cut.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    (!value.is_empty()).then(|| value.to_string())
}

/// Upstream's name: `local-<node>-<device>` with characters other than
/// ASCII letters, digits, `-` and `.` replaced by `-`.
pub fn upstream_pv_name(node: &str, device: &str) -> String {
    format!("local-{node}-{device}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The plain name (rule steps 1–2), or `None` when it is not a valid name.
pub fn plain_pv_name(node: &str, device: &str) -> Option<String> {
    let name = upstream_pv_name(node, device).to_ascii_lowercase();
    is_dns1123_subdomain(&name).then_some(name)
}

/// The hashed name (rule step 3): always a valid DNS-1123 subdomain.
pub fn hashed_pv_name(node: &str, device: &str) -> String {
    hashed_pv_name_of(node, &[node, device], device)
}

/// The repaired, cut plain name of `device` with the hash of `hashed`.
fn hashed_pv_name_of(node: &str, hashed: &[&str], device: &str) -> String {
    let lowered = upstream_pv_name(node, device).to_ascii_lowercase();
    let repaired: Vec<&str> = lowered
        .split('.')
        .map(|part| part.trim_matches('-'))
        .filter(|part| !part.is_empty())
        .collect();
    let mut prefix = repaired.join(".");
    prefix.truncate(MAX_SUBDOMAIN_LEN - 1 - HASH_HEX_DIGITS);
    let prefix = prefix.trim_end_matches(['-', '.']);
    format!("{prefix}-{}", short_hash(hashed))
}

/// The node label value: the node name when it is a valid label value,
/// else its first 54 characters (ending alphanumeric) and a hash suffix.
pub fn node_label_value(node: &str) -> String {
    if is_label_value(node) {
        return node.to_string();
    }
    let mut prefix: String = node
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(MAX_LABEL_VALUE_LEN - 1 - HASH_HEX_DIGITS)
        .collect();
    while prefix.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        prefix.pop();
    }
    let hash = short_hash(&[node]);
    if prefix.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        format!("{prefix}-{hash}")
    } else {
        hash
    }
}

/// First 8 hex digits of SHA-256 over the parts, each followed by a NUL.
fn short_hash(parts: &[&str]) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        context.update(part.as_bytes());
        context.update(&[0]);
    }
    let digest = context.finish();
    digest.as_ref()[..HASH_HEX_DIGITS / 2]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The hashed name of a device of `class`: [`hashed_pv_name`] for the
/// `default` class (the flat keys, so names made before classes hold), the
/// class's name hashed in too for any other.
pub fn hashed_class_pv_name(node: &str, class: &str, device: &str) -> String {
    if class == crate::objects::classes::DEFAULT_CLASS {
        return hashed_pv_name(node, device);
    }
    hashed_pv_name_of(node, &[node, class, device], device)
}

/// The name of the `LocalDisk` of the entry `entry` at `path` on `node`:
/// the plain PV name of the entry (so a disk and its PV share a name), or
/// when that is not a valid name, a hashed one over the node and the path
/// (entries of one name in two directories get two names).
pub fn disk_name(node: &str, path: &str, entry: &str) -> String {
    plain_pv_name(node, entry).unwrap_or_else(|| hashed_pv_name_of(node, &[node, path], entry))
}

/// The hashed `LocalDisk` name of `path`, for an entry whose plain name
/// another entry of the node already has.
pub fn hashed_disk_name(node: &str, path: &str, entry: &str) -> String {
    hashed_pv_name_of(node, &[node, path], entry)
}

/// One device to name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameRequest<'a> {
    /// What the name is assigned under (unique: the device's path).
    pub key: &'a str,
    /// The device's class.
    pub class: &'a str,
    /// The device's entry name in its class's `deviceDir`.
    pub entry: &'a str,
}

/// Names chosen for the devices of one scan.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NameAssignment {
    /// PV name for each device, by its request's key.
    pub names: BTreeMap<String, String>,
    /// Groups of entry names that shared a plain name (reported to the admin).
    pub collisions: Vec<Vec<String>>,
    /// Entry names left without a unique name even after hashing (a hash
    /// collision): they get no PV and are reported as error devices.
    pub unnamed: Vec<String>,
}

/// Applies the naming rule to every device of one scan.
///
/// `existing_plain_holders` maps a PV name to the key of the device whose
/// existing PV already holds it, so an existing PV keeps its name when a
/// colliding device appears later.
pub fn assign_pv_names<'a>(
    node: &str,
    devices: impl IntoIterator<Item = NameRequest<'a>>,
    existing_plain_holders: &HashMap<String, String>,
) -> NameAssignment {
    let mut by_plain: BTreeMap<String, Vec<NameRequest<'a>>> = BTreeMap::new();
    let mut assignment = NameAssignment::default();
    let hashed = |device: &NameRequest<'_>| hashed_class_pv_name(node, device.class, device.entry);
    for device in devices {
        match plain_pv_name(node, device.entry) {
            Some(plain) => by_plain.entry(plain).or_default().push(device),
            None => {
                assignment
                    .names
                    .insert(device.key.to_string(), hashed(&device));
            }
        }
    }
    for (plain, group) in by_plain {
        if let [device] = group.as_slice() {
            assignment.names.insert(device.key.to_string(), plain);
            continue;
        }
        let holder = existing_plain_holders.get(&plain);
        for device in &group {
            let name = if holder.is_some_and(|holder| holder == device.key) {
                plain.clone()
            } else {
                hashed(device)
            };
            assignment.names.insert(device.key.to_string(), name);
        }
        assignment.collisions.push(
            group
                .iter()
                .map(|device| device.entry.to_string())
                .collect(),
        );
    }
    let mut users: HashMap<&str, usize> = HashMap::new();
    for name in assignment.names.values() {
        *users.entry(name.as_str()).or_default() += 1;
    }
    let unnamed: Vec<String> = assignment
        .names
        .iter()
        .filter(|(_, name)| users[name.as_str()] > 1)
        .map(|(device, _)| device.clone())
        .collect();
    for device in &unnamed {
        assignment.names.remove(device);
    }
    assignment.unnamed = unnamed;
    assignment
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn upstream_example_keeps_upstream_name() {
        assert_eq!(
            plain_pv_name("node1", "pci-0000:3b:00.0-ata-1").as_deref(),
            Some("local-node1-pci-0000-3b-00.0-ata-1")
        );
        assert_eq!(
            plain_pv_name("minikube-worker", "loop0").as_deref(),
            Some("local-minikube-worker-loop0")
        );
    }

    #[test]
    fn invalid_plain_names_get_hashed() {
        assert_eq!(plain_pv_name("n", "-.x"), None);
        assert_eq!(plain_pv_name("n", "x-"), None);
        let hashed = hashed_pv_name("n", "x-");
        assert!(is_dns1123_subdomain(&hashed), "{hashed}");
        assert!(hashed.starts_with("local-n-x-"), "{hashed}");
        assert_eq!(hashed, hashed_pv_name("n", "x-"), "stable");
    }

    #[test]
    fn uppercase_is_lowercased() {
        assert_eq!(
            plain_pv_name("Node1", "SDA").as_deref(),
            Some("local-node1-sda")
        );
    }

    #[test]
    fn long_names_are_cut_and_hashed() {
        let node = "n".repeat(200);
        let device = "d".repeat(100);
        assert_eq!(plain_pv_name(&node, &device), None);
        let name = hashed_pv_name(&node, &device);
        assert_eq!(name.len(), 253);
        assert!(is_dns1123_subdomain(&name));
        assert_ne!(name, hashed_pv_name(&node, &"d".repeat(101)));
    }

    fn in_default(entries: &[&'static str]) -> Vec<NameRequest<'static>> {
        entries
            .iter()
            .map(|entry| NameRequest {
                key: entry,
                class: "default",
                entry,
            })
            .collect()
    }

    #[test]
    fn two_classes_entries_of_one_name_hash_apart() {
        let requests = [
            NameRequest {
                key: "/a/disk0",
                class: "fast",
                entry: "disk0",
            },
            NameRequest {
                key: "/b/disk0",
                class: "bulk",
                entry: "disk0",
            },
        ];
        let names = assign_pv_names("n", requests, &HashMap::new());
        assert_eq!(
            names.collisions,
            vec![vec!["disk0".to_string(), "disk0".to_string()]]
        );
        assert_ne!(names.names["/a/disk0"], names.names["/b/disk0"]);
        assert!(names.unnamed.is_empty());
        assert_eq!(
            hashed_class_pv_name("n", "default", "x-"),
            hashed_pv_name("n", "x-")
        );
    }

    #[test]
    fn colliding_devices_all_get_hashed_unless_one_holds_the_plain_name() {
        let devices = in_default(&["A_B", "a:b", "a-b"]);
        let fresh = assign_pv_names("n", devices.clone(), &HashMap::new());
        assert_eq!(fresh.collisions.len(), 1);
        let names: HashSet<_> = fresh.names.values().collect();
        assert_eq!(names.len(), 3);
        assert!(!names.contains(&"local-n-a-b".to_string()));

        let held = HashMap::from([("local-n-a-b".to_string(), "a-b".to_string())]);
        let kept = assign_pv_names("n", devices, &held);
        assert_eq!(kept.names["a-b"], "local-n-a-b");
        assert_ne!(kept.names["A_B"], "local-n-a-b");
        assert_eq!(
            kept.names["A_B"], fresh.names["A_B"],
            "hashed names are stable"
        );
    }

    #[test]
    fn label_keys_and_sanitized_values() {
        assert!(is_label_key("topology.kubernetes.io/zone"));
        assert!(is_label_key("rack"));
        assert!(!is_label_key("Topology.io/zone"));
        assert!(!is_label_key("zone/"));
        assert!(!is_label_key(&"a".repeat(64)));
        assert_eq!(
            sanitized_label_value("Samsung SSD 980 PRO 1TB").as_deref(),
            Some("Samsung_SSD_980_PRO_1TB")
        );
        assert_eq!(sanitized_label_value("  ATA  ").as_deref(), Some("ATA"));
        assert_eq!(sanitized_label_value("///"), None);
        let long =
            sanitized_label_value(&format!("{}-{}", "x".repeat(62), "y".repeat(10))).unwrap();
        assert_eq!(long, "x".repeat(62), "cut to 63, then no trailing '-'");
        assert!(is_label_value(&long));
    }

    #[test]
    fn label_values() {
        assert_eq!(node_label_value("node1"), "node1");
        let long = format!("{}.example.com", "a".repeat(60));
        let value = node_label_value(&long);
        assert!(is_label_value(&value), "{value}");
        assert_eq!(value.len(), 63);
        assert_ne!(
            value,
            node_label_value(&format!("{}.example.org", "a".repeat(60)))
        );
        assert!(is_label_value(&node_label_value(&"-".repeat(100))));
    }

    fn device_name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9._:-]{1,40}",
            "\\PC{1,20}",
            "[a-z]{1,300}",
            "[-.]{1,5}[a-z0-9]{0,5}[-.]{0,5}",
        ]
    }

    fn node_name() -> impl Strategy<Value = String> {
        prop_oneof!["[a-z0-9]([-a-z0-9.]{0,60}[a-z0-9])?", "[a-z]{200,253}"]
    }

    proptest! {
        #[test]
        fn every_name_is_a_valid_subdomain(node in node_name(), device in device_name()) {
            let name = plain_pv_name(&node, &device).unwrap_or_else(|| hashed_pv_name(&node, &device));
            prop_assert!(is_dns1123_subdomain(&name), "{name}");
            prop_assert!(name.len() <= MAX_SUBDOMAIN_LEN);
        }

        #[test]
        fn distinct_devices_never_share_a_name(
            node in node_name(),
            devices in proptest::collection::btree_set(device_name(), 1..12),
            holder_index in any::<prop::sample::Index>(),
        ) {
            let devices: Vec<&str> = devices.iter().map(String::as_str).collect();
            let holder = holder_index.get(&devices);
            let existing = plain_pv_name(&node, holder)
                .map(|plain| HashMap::from([(plain, holder.to_string())]))
                .unwrap_or_default();
            let requests = devices.iter().map(|entry| NameRequest { key: entry, class: "default", entry });
            let assignment = assign_pv_names(&node, requests, &existing);
            let names: HashSet<&String> = assignment.names.values().collect();
            prop_assert_eq!(names.len(), assignment.names.len());
            prop_assert_eq!(assignment.names.len() + assignment.unnamed.len(), devices.len());
            for name in names {
                prop_assert!(is_dns1123_subdomain(name), "{}", name);
            }
        }

        #[test]
        fn label_values_are_always_valid(node in "\\PC{0,300}") {
            prop_assert!(is_label_value(&node_label_value(&node)));
        }
    }
}
