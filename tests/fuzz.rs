//! Property-based fuzzing (proptest) of the code that turns untrusted text
//! into decisions: the PV spec parser and the PV / label name builders.
//! cargo-fuzz would need a nightly toolchain; these run on stable, in CI,
//! with every other test.
//!
//! # Number of cases
//!
//! Each property runs `LPP_FUZZ_CASES` cases (default 2000), e.g. for a
//! longer hunt:
//!
//! ```console
//! LPP_FUZZ_CASES=100000 cargo test --release --test fuzz
//! ```
//!
//! The default keeps this file well under 60 s on 2 cores in a debug build.
//! A failure is shrunk to a minimal input and printed; proptest also saves
//! its seed in `tests/fuzz.proptest-regressions` so later runs replay it
//! first (commit that file with the fix).
//!
//! # Properties
//!
//! - `parse_pv_spec` over arbitrary ConfigMap data (the known keys with
//!   arbitrary, near-valid and huge values, mis-cased and unknown keys) never
//!   panics, and agrees with an independent oracle of what is valid. On
//!   `Ok`: `deviceDir` is absolute, normalised, without `..` and not `/`;
//!   `fsType` is present exactly for `Filesystem`; `wipe_bytes` is a positive
//!   multiple of 4096; the storage class is a DNS-1123 subdomain; unknown
//!   keys are exactly the keys it does not know. On `Err`: the error names
//!   the first invalid key in parse order, and stays short whatever the
//!   input's size (at most [`MAX_ERROR_BYTES`]; the tighter Event budget is
//!   BUG-2 in `tests/bad_inputs.rs`).
//! - `plain_pv_name`, `hashed_pv_name` and `node_label_value` always give
//!   valid names (checked with the Kubernetes regular expressions, not the
//!   crate's own validators), stably.
//! - `assign_pv_names` and `plan` never give two devices of one scan the
//!   same name, never reuse an existing PV's name, and follow the collision
//!   rule (a holder keeps its plain name, every other member is hashed).
//! - `WipeRequest::from_pv` over PVs with arbitrary labels and annotations
//!   only ever builds a request from a PV of this node that records every
//!   identity field; anything else is refused by `OwnedByThisNode` or
//!   `RecordedIdentity`, never a panic.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::LazyLock;

use local_pv_provisioner::blockdev::DeviceNumber;
use local_pv_provisioner::discovery::{Device, Scan};
use local_pv_provisioner::naming::{
    MAX_LABEL_VALUE_LEN, MAX_SUBDOMAIN_LEN, assign_pv_names, hashed_pv_name, is_dns1123_subdomain,
    is_label_value, node_label_value, plain_pv_name, upstream_pv_name,
};
use local_pv_provisioner::plan::{ExistingPv, plan};
use local_pv_provisioner::pv::{NODE_LABEL, NODE_NAME_ANNOTATION, NodeFacts};
use local_pv_provisioner::spec::{
    DEFAULT_STORAGE_CLASS_NAME, DEFAULT_WIPE_BYTES, FsType, KEY_DEVICE_DIR, KEY_DEVICE_NAME_FILTER,
    KEY_FS_TYPE, KEY_STORAGE_CLASS_NAME, KEY_VOLUME_MODE, KEY_WIPE_BYTES, SpecError, VolumeMode,
    WIPE_BYTES_ALIGNMENT, parse_pv_spec,
};
use proptest::collection::{btree_map, btree_set, vec};
use proptest::option;
use proptest::prelude::*;
use regex::Regex;

/// Cases per property when `LPP_FUZZ_CASES` is not set.
const DEFAULT_CASES: u32 = 2000;
/// Hard bound on a spec error's length, whatever the input's size: 200
/// shown characters escaped to at most 10 bytes each, plus key and reason.
const MAX_ERROR_BYTES: usize = 2600;

fn config() -> ProptestConfig {
    let cases = std::env::var("LPP_FUZZ_CASES")
        .ok()
        .map(|text| {
            text.parse()
                .unwrap_or_else(|_| panic!("LPP_FUZZ_CASES={text:?} is not a number"))
        })
        .unwrap_or(DEFAULT_CASES);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Oracles, written from the Kubernetes rules, not from the crate's code
// ---------------------------------------------------------------------------

/// Kubernetes' DNS-1123 subdomain: at most 253 characters.
static SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").unwrap()
});
/// Kubernetes' label value: at most 63 characters, may be empty.
static LABEL_VALUE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$").unwrap());

fn valid_subdomain(name: &str) -> bool {
    name.len() <= 253 && SUBDOMAIN.is_match(name)
}

fn valid_label_value(value: &str) -> bool {
    value.len() <= 63 && LABEL_VALUE.is_match(value)
}

/// The normalised `deviceDir`, or `None` when it must be refused.
fn oracle_device_dir(value: &str) -> Option<String> {
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
fn oracle_wipe_bytes(value: &str) -> Option<u64> {
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

const KNOWN: [&str; 6] = [
    KEY_DEVICE_DIR,
    KEY_DEVICE_NAME_FILTER,
    KEY_VOLUME_MODE,
    KEY_FS_TYPE,
    KEY_STORAGE_CLASS_NAME,
    KEY_WIPE_BYTES,
];

/// What the oracle says about each key, in parse order: `Ok(())` when the
/// key is fine, `Err(())` when it must be refused, and for the filter
/// `Ok(())` when present (its compilation is not re-implemented here).
fn oracle_verdicts(data: &BTreeMap<String, String>) -> Vec<(&'static str, bool)> {
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
    ]
}

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

/// Any text: printable, arbitrary Unicode (controls included), empty.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "\\PC{0,24}",
        any::<String>(),
        "[ \\t\\n\\x00-\\x1f\\x7f]{1,6}",
    ]
}

/// Very long values around and far beyond every length limit.
fn huge(unit: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![4090usize..4100, 70_000usize..70_010]
        .prop_map(move |length| unit.repeat(length).chars().take(length).collect())
}

fn device_dir() -> BoxedStrategy<String> {
    let part = prop_oneof![
        Just(String::new()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("...".to_string()),
        Just("dev".to_string()),
        Just("by-path".to_string()),
        "[a-z0-9 _:.-]{1,8}",
        "\\PC{1,3}",
        Just("a\0b".to_string()),
    ];
    prop_oneof![
        4 => (any::<bool>(), vec(part, 0..6), any::<bool>()).prop_map(|(absolute, parts, trailing)| {
            let mut path = parts.join("/");
            if absolute {
                path.insert(0, '/');
            }
            if trailing {
                path.push('/');
            }
            path
        }),
        1 => text(),
        1 => huge("/dev").prop_map(|tail| format!("/{tail}")),
    ]
    .boxed()
}

fn filter() -> BoxedStrategy<String> {
    prop_oneof![
        6 => "[a-z0-9^$.*+?()\\[\\]{}|\\\\,:-]{0,24}",
        2 => text(),
        1 => (1u32..3000, 1u32..3000).prop_map(|(inner, outer)| format!("(a{{{inner}}}){{{outer}}}")),
        1 => huge("(a|b)*"),
    ]
    .boxed()
}

fn volume_mode() -> BoxedStrategy<String> {
    prop_oneof![
        3 => Just("Filesystem".to_string()),
        3 => Just("Block".to_string()),
        1 => Just("block".to_string()),
        1 => Just("Block ".to_string()),
        1 => text(),
        1 => huge("Block"),
    ]
    .boxed()
}

fn fs_type() -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop_oneof![Just("ext4"), Just("xfs"), Just("btrfs")].prop_map(String::from),
        1 => Just("EXT4".to_string()),
        1 => Just(String::new()),
        1 => text(),
        1 => huge("\u{7f}"),
    ]
    .boxed()
}

fn storage_class() -> BoxedStrategy<String> {
    prop_oneof![
        2 => "[a-z0-9.-]{0,20}",
        1 => "[a-z]{250,256}",
        1 => text(),
    ]
    .boxed()
}

fn wipe_bytes() -> BoxedStrategy<String> {
    let unit = prop_oneof![
        Just(""),
        Just("Ki"),
        Just("Mi"),
        Just("Gi"),
        Just("Ti"),
        Just("Pi"),
        Just("ki"),
        Just("MB"),
        Just(" "),
    ];
    prop_oneof![
        2 => (1u64..(1 << 20)).prop_map(|blocks| (blocks * 4096).to_string()),
        2 => (any::<u64>(), unit.clone()).prop_map(|(n, unit)| format!("{n}{unit}")),
        2 => ("[0-9]{0,25}", unit).prop_map(|(n, unit)| format!("{n}{unit}")),
        1 => text(),
        1 => huge("9"),
    ]
    .boxed()
}

/// Keys that are not known, or near misses of known ones.
fn other_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("DeviceDir".to_string()),
        Just("devicedir".to_string()),
        Just("deviceDir ".to_string()),
        Just("storageClass".to_string()),
        Just("futureKey".to_string()),
        "[a-zA-Z.]{0,12}",
        text(),
    ]
}

prop_compose! {
    /// ConfigMap data: each known key present most of the time with a
    /// key-specific value, plus unknown keys, and sometimes a known key
    /// with arbitrary text.
    fn spec_data()(
        dir in option::weighted(0.9, device_dir()),
        filter in option::weighted(0.9, filter()),
        mode in option::weighted(0.9, volume_mode()),
        fs in option::weighted(0.5, fs_type()),
        class in option::weighted(0.3, storage_class()),
        wipe in option::weighted(0.4, wipe_bytes()),
        others in btree_map(other_key(), text(), 0..4),
        raw in option::weighted(0.15, (0..KNOWN.len(), text())),
    ) -> BTreeMap<String, String> {
        let mut data = others;
        for (key, value) in [
            (KEY_DEVICE_DIR, dir),
            (KEY_DEVICE_NAME_FILTER, filter),
            (KEY_VOLUME_MODE, mode),
            (KEY_FS_TYPE, fs),
            (KEY_STORAGE_CLASS_NAME, class),
            (KEY_WIPE_BYTES, wipe),
        ] {
            if let Some(value) = value {
                data.insert(key.to_string(), value);
            }
        }
        if let Some((index, value)) = raw {
            data.insert(KNOWN[index].to_string(), value);
        }
        data
    }
}

/// Node names as Kubernetes allows them: DNS subdomains up to 253 characters.
fn node_name() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?){0,3}",
        1 => "[a-z]{55,70}",
        1 => "[a-z]{240,253}",
        1 => "[a-z0-9]{1,60}(\\.[a-z0-9]{1,60}){3}[a-z0-9]{0,10}",
    ]
    .prop_map(|mut name: String| {
        name.truncate(253);
        while name.ends_with(['.', '-']) {
            name.pop();
        }
        name
    })
    .prop_filter("a valid node name", |name| valid_subdomain(name))
    .boxed()
}

/// Directory entry names: anything but `/` and NUL, at most 255 bytes.
fn entry_name() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[a-zA-Z0-9._:-]{1,40}",
        2 => "[a-c]{1,2}([-_:.A-C][a-c]{1,2}){0,2}",
        1 => "[-._]{1,4}[a-z0-9]{0,4}[-._]{0,4}",
        1 => "\\PC{1,20}",
        1 => any::<String>(),
        1 => "[a-z]{240,255}",
    ]
    .prop_map(|name: String| {
        let mut name: String = name.chars().filter(|c| *c != '/' && *c != '\0').collect();
        while name.len() > 255 {
            name.pop();
        }
        name
    })
    .prop_filter("a file name", |name| {
        !name.is_empty() && name != "." && name != ".."
    })
    .boxed()
}

/// Entries of one directory, built to collide: names that differ only in
/// case and in the characters sanitising turns into `-`.
fn colliding_entries() -> impl Strategy<Value = BTreeSet<String>> {
    (
        "[a-c]{1,3}",
        "[a-c]{1,3}",
        btree_set(
            (
                any::<bool>(),
                prop_oneof![Just('-'), Just('_'), Just(':'), Just('+'), Just('é')],
            ),
            1..5,
        ),
        btree_set(entry_name(), 0..6),
    )
        .prop_map(|(head, tail, variants, mut others)| {
            for (upper, separator) in variants {
                let head = if upper {
                    head.to_uppercase()
                } else {
                    head.clone()
                };
                others.insert(format!("{head}{separator}{tail}"));
            }
            others
        })
}

// ---------------------------------------------------------------------------
// The spec parser
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn spec_parser_agrees_with_the_oracle(data in spec_data()) {
        let verdicts = oracle_verdicts(&data);
        match parse_pv_spec(&data) {
            Ok(spec) => {
                for (key, ok) in &verdicts {
                    prop_assert!(ok, "accepted although {key} is invalid: {data:?}");
                }
                // deviceDir: absolute, normalised, no `..`, not `/`.
                let dir = spec.device_dir.to_str().expect("UTF-8");
                prop_assert_eq!(Some(dir.to_string()), oracle_device_dir(&data[KEY_DEVICE_DIR]));
                prop_assert!(spec.device_dir.is_absolute());
                prop_assert!(dir != "/" && !dir.ends_with('/') && !dir.contains("//"));
                prop_assert!(!dir.split('/').any(|part| part == ".." || part == "."));
                // The filter is the source, unanchored.
                prop_assert_eq!(&spec.device_name_filter_source, &data[KEY_DEVICE_NAME_FILTER]);
                prop_assert_eq!(spec.device_name_filter.as_str(), data[KEY_DEVICE_NAME_FILTER].as_str());
                // fsType present exactly for Filesystem.
                match spec.volume_mode {
                    VolumeMode::Filesystem => {
                        prop_assert_eq!(data[KEY_VOLUME_MODE].as_str(), "Filesystem");
                        let fs = spec.fs_type.expect("fsType with Filesystem");
                        prop_assert_eq!(fs.as_str(), data[KEY_FS_TYPE].as_str());
                    }
                    VolumeMode::Block => {
                        prop_assert_eq!(data[KEY_VOLUME_MODE].as_str(), "Block");
                        prop_assert_eq!(spec.fs_type, None::<FsType>);
                        prop_assert!(!data.contains_key(KEY_FS_TYPE));
                    }
                }
                // Storage class.
                match data.get(KEY_STORAGE_CLASS_NAME) {
                    Some(class) => prop_assert_eq!(&spec.storage_class_name, class),
                    None => prop_assert_eq!(spec.storage_class_name.as_str(), DEFAULT_STORAGE_CLASS_NAME),
                }
                prop_assert!(valid_subdomain(&spec.storage_class_name));
                // wipeBytes: a positive multiple of 4096.
                prop_assert!(spec.wipe_bytes > 0 && spec.wipe_bytes % WIPE_BYTES_ALIGNMENT == 0);
                match data.get(KEY_WIPE_BYTES) {
                    Some(text) => prop_assert_eq!(Some(spec.wipe_bytes), oracle_wipe_bytes(text)),
                    None => prop_assert_eq!(spec.wipe_bytes, DEFAULT_WIPE_BYTES),
                }
                // Unknown keys: exactly the others, reported.
                let unknown: Vec<String> = data.keys().filter(|k| !KNOWN.contains(&k.as_str())).cloned().collect();
                prop_assert_eq!(&spec.unknown_keys, &unknown);
                // Deterministic.
                prop_assert_eq!(Some(spec), parse_pv_spec(&data).ok());
            }
            Err(error) => {
                let message = error.to_string();
                let key = match &error {
                    SpecError::MissingKey { key } => {
                        prop_assert!(!data.contains_key(*key), "{key} is present: {message}");
                        *key
                    }
                    SpecError::InvalidValue { key, .. } => {
                        prop_assert!(data.contains_key(*key), "{key} is absent: {message}");
                        *key
                    }
                };
                prop_assert!(message.contains(&format!("{key:?}")), "{}", message);
                prop_assert!(message.len() <= MAX_ERROR_BYTES, "{} bytes: {}", message.len(), message);
                // The refused key is the first one the oracle finds invalid,
                // or the filter (whose compilation the oracle leaves alone)
                // with everything before it valid.
                let first_bad = verdicts.iter().find(|(_, ok)| !ok).map(|(key, _)| *key);
                let position = |k: &str| KNOWN.iter().position(|known| *known == k).unwrap();
                if key == KEY_DEVICE_NAME_FILTER && data.contains_key(KEY_DEVICE_NAME_FILTER) {
                    prop_assert!(first_bad.is_none_or(|bad| position(bad) >= position(key)), "{message} / {first_bad:?}");
                } else {
                    prop_assert_eq!(Some(key), first_bad, "{}", message);
                }
            }
        }
    }

    #[test]
    fn wipe_bytes_alone_agrees_with_the_oracle(value in wipe_bytes()) {
        let data: BTreeMap<String, String> = [
            (KEY_DEVICE_DIR, "/dev/disk"),
            (KEY_DEVICE_NAME_FILTER, "x"),
            (KEY_VOLUME_MODE, "Block"),
            (KEY_WIPE_BYTES, value.as_str()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let parsed = parse_pv_spec(&data).map(|spec| spec.wipe_bytes).ok();
        prop_assert_eq!(parsed, oracle_wipe_bytes(&value));
    }
}

/// Unicode-class repetitions cost ~0.1 s each to compile (or refuse) in a
/// debug build, so they get a fiftieth of the cases.
fn unicode_bomb_config() -> ProptestConfig {
    let mut config = config();
    config.cases = (config.cases / 50).max(8);
    config
}

proptest! {
    #![proptest_config(unicode_bomb_config())]

    #[test]
    fn unicode_class_repetitions_are_compiled_or_refused_as_too_complex(
        class in prop_oneof![Just("\\w"), Just("\\d"), Just("(?i)\\p{L}"), Just("[^a]")],
        count in 1u32..200,
    ) {
        let filter = format!("{class}{{{count}}}");
        let data: BTreeMap<String, String> = [
            (KEY_DEVICE_DIR, "/dev/disk"),
            (KEY_DEVICE_NAME_FILTER, filter.as_str()),
            (KEY_VOLUME_MODE, "Block"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        match parse_pv_spec(&data) {
            Ok(spec) => prop_assert_eq!(spec.device_name_filter.as_str(), filter.as_str()),
            Err(error) => prop_assert!(error.to_string().contains("too complex"), "{}", error),
        }
    }
}

// ---------------------------------------------------------------------------
// The name builders
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn pv_names_are_always_valid_and_stable(node in node_name(), entry in entry_name()) {
        let lowered = upstream_pv_name(&node, &entry).to_ascii_lowercase();
        match plain_pv_name(&node, &entry) {
            Some(plain) => {
                prop_assert!(valid_subdomain(&plain), "{}", plain);
                prop_assert_eq!(&plain, &lowered);
            }
            None => prop_assert!(!valid_subdomain(&lowered), "{} was valid", lowered),
        }
        let hashed = hashed_pv_name(&node, &entry);
        prop_assert!(valid_subdomain(&hashed), "{}", hashed);
        prop_assert!(hashed.len() <= MAX_SUBDOMAIN_LEN);
        prop_assert!(hashed.starts_with("local"), "{}", hashed);
        let (_, suffix) = hashed.rsplit_once('-').expect("a hash suffix");
        prop_assert!(suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_hexdigit()), "{}", hashed);
        prop_assert_eq!(&hashed, &hashed_pv_name(&node, &entry), "stable");
        // The crate's validator agrees with Kubernetes' expression.
        prop_assert_eq!(is_dns1123_subdomain(&lowered), valid_subdomain(&lowered));
    }

    #[test]
    fn any_text_gives_valid_names(node in text(), entry in text()) {
        let name = plain_pv_name(&node, &entry).unwrap_or_else(|| hashed_pv_name(&node, &entry));
        prop_assert!(valid_subdomain(&name), "{:?} {:?} -> {}", node, entry, name);
    }

    #[test]
    fn node_label_values_are_always_valid(node in prop_oneof![node_name(), text(), "[-_.]{60,70}".boxed()]) {
        let value = node_label_value(&node);
        prop_assert!(valid_label_value(&value), "{:?} -> {:?}", node, value);
        prop_assert!(value.len() <= MAX_LABEL_VALUE_LEN);
        prop_assert_eq!(&value, &node_label_value(&node), "stable");
        if valid_label_value(&node) {
            prop_assert_eq!(&value, &node);
        } else {
            prop_assert_ne!(&value, &node);
            prop_assert!(!value.is_empty(), "an invalid name never maps to the empty value");
        }
        prop_assert_eq!(is_label_value(&node), valid_label_value(&node));
    }

    #[test]
    fn no_two_devices_of_a_scan_share_a_name(
        node in node_name(),
        entries in prop_oneof![colliding_entries(), btree_set(entry_name(), 1..12)],
        holders in vec(any::<prop::sample::Index>(), 0..3),
    ) {
        let entries: Vec<&str> = entries.iter().map(String::as_str).collect();
        // Existing PVs holding plain names: some by entries of this scan.
        let existing: HashMap<String, String> = holders
            .iter()
            .filter_map(|index| {
                let entry = index.get(&entries);
                plain_pv_name(&node, entry).map(|plain| (plain, entry.to_string()))
            })
            .collect();
        let assignment = assign_pv_names(&node, entries.iter().copied(), &existing);
        // Every entry exactly once, named or reported.
        let named: BTreeSet<&str> = assignment.names.keys().map(String::as_str).collect();
        let unnamed: BTreeSet<&str> = assignment.unnamed.iter().map(String::as_str).collect();
        prop_assert!(named.is_disjoint(&unnamed));
        prop_assert_eq!(named.len() + unnamed.len(), entries.len());
        // Distinct, valid names, each the entry's plain or hashed name.
        let distinct: HashSet<&String> = assignment.names.values().collect();
        prop_assert_eq!(distinct.len(), assignment.names.len());
        let mut groups: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
        for entry in &entries {
            if let Some(plain) = plain_pv_name(&node, entry) {
                groups.entry(plain).or_default().insert(entry);
            }
        }
        for (entry, name) in &assignment.names {
            prop_assert!(valid_subdomain(name), "{}", name);
            let plain = plain_pv_name(&node, entry);
            let shared = plain.as_ref().is_some_and(|plain| groups[plain].len() > 1);
            let holder = plain.as_ref().is_some_and(|plain| existing.get(plain) == Some(entry));
            if plain.is_some() && (!shared || holder) {
                prop_assert_eq!(Some(name), plain.as_ref(), "{} keeps its plain name", entry);
            } else {
                prop_assert_eq!(name, &hashed_pv_name(&node, entry), "{} is hashed", entry);
            }
        }
        // Collisions: exactly the groups sharing a plain name.
        let reported: BTreeSet<BTreeSet<&str>> = assignment
            .collisions
            .iter()
            .map(|group| group.iter().map(String::as_str).collect())
            .collect();
        let expected: BTreeSet<BTreeSet<&str>> =
            groups.into_values().filter(|group| group.len() > 1).collect();
        prop_assert_eq!(reported, expected);
    }

    #[test]
    fn plan_never_creates_a_duplicate_or_reuses_a_name(
        node in node_name(),
        entries in prop_oneof![colliding_entries(), btree_set(entry_name(), 1..10)],
        covered in vec(any::<bool>(), 10),
        foreign in vec(any::<prop::sample::Index>(), 0..3),
    ) {
        let dir = PathBuf::from("/dev/disk/by-fuzz");
        let facts = NodeFacts {
            name: node.clone(),
            uid: "uid".into(),
            hostname: node.clone(),
            label_value: node_label_value(&node),
        };
        let spec = parse_pv_spec(
            &[(KEY_DEVICE_DIR, "/dev/disk/by-fuzz"), (KEY_DEVICE_NAME_FILTER, ""), (KEY_VOLUME_MODE, "Block")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .unwrap();
        let entries: Vec<&String> = entries.iter().collect();
        let devices: Vec<Device> = entries
            .iter()
            .enumerate()
            .map(|(index, name)| Device {
                name: name.to_string(),
                path: dir.join(name),
                resolved: PathBuf::from(format!("/dev/fake{index}")),
                number: DeviceNumber { major: 7, minor: index as u32 },
                size_bytes: 1 << 30,
                in_use: None,
                stable_id: None,
            })
            .collect();
        // Existing PVs: some devices already have theirs; some names are
        // held by PVs for paths elsewhere.
        let mut existing = Vec::new();
        for (device, has_pv) in devices.iter().zip(&covered) {
            if *has_pv {
                existing.push(ExistingPv {
                    name: plain_pv_name(&node, &device.name).unwrap_or_else(|| hashed_pv_name(&node, &device.name)),
                    path: Some(device.path.clone()),
                    number: Some(device.number),
                    phase: Some("Available".into()),
                    claimed: false,
                    deleting: false,
                });
            }
        }
        for index in &foreign {
            let device = index.get(&devices);
            let name = plain_pv_name(&node, &device.name).unwrap_or_else(|| hashed_pv_name(&node, &device.name));
            if !existing.iter().any(|pv| pv.name == name) {
                existing.push(ExistingPv {
                    name,
                    path: Some(PathBuf::from("/elsewhere/x")),
                    number: None,
                    phase: Some("Available".into()),
                    claimed: false,
                    deleting: false,
                });
            }
        }
        let scan = Scan { devices: devices.clone(), problems: vec![] };
        let decided = plan(&facts, &spec, &scan, &existing, &BTreeSet::new());

        let existing_names: HashSet<&str> = existing.iter().map(|pv| pv.name.as_str()).collect();
        let covered_paths: HashSet<&PathBuf> = existing.iter().filter_map(|pv| pv.path.as_ref()).collect();
        let mut names = HashSet::new();
        let mut paths = HashSet::new();
        for pv in &decided.create {
            let name = pv.metadata.name.clone().unwrap();
            prop_assert!(valid_subdomain(&name), "{}", name);
            prop_assert!(names.insert(name.clone()), "two PVs named {}", name);
            prop_assert!(!existing_names.contains(name.as_str()), "{} reuses an existing name", name);
            let path = PathBuf::from(&pv.spec.as_ref().unwrap().local.as_ref().unwrap().path);
            prop_assert!(!covered_paths.contains(&path), "{} already has a PV", path.display());
            prop_assert!(paths.insert(path.clone()), "two PVs for {}", path.display());
            prop_assert_eq!(path.parent(), Some(dir.as_path()));
            let labels = pv.metadata.labels.as_ref().unwrap();
            prop_assert!(valid_label_value(&labels[NODE_LABEL]));
            prop_assert_eq!(&pv.metadata.annotations.as_ref().unwrap()[NODE_NAME_ANNOTATION], &node);
        }
        // Every device is accounted for exactly once.
        let already = devices.iter().filter(|d| covered_paths.contains(&d.path)).count();
        prop_assert_eq!(decided.available, already + decided.create.len());
        prop_assert_eq!(decided.available + decided.problems.len(), devices.len());
    }
}

// ---------------------------------------------------------------------------
// PV objects read back for a wipe
// ---------------------------------------------------------------------------

/// An annotation or label value: ours, near-valid, or anything.
fn recorded(ours: &'static str) -> impl Strategy<Value = Option<String>> {
    option::weighted(
        0.85,
        prop_oneof![
            3 => Just(ours.to_string()),
            1 => "[0-9:]{0,12}",
            1 => text(),
        ],
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn wipe_requests_come_only_from_whole_pvs_of_ours(
        label in recorded("node-f"),
        node_name in recorded("node-f"),
        device_dir in recorded("/dev/disk/by-fuzz"),
        number in recorded("7:3"),
        size in recorded("1048576"),
        wipe in option::weighted(0.5, prop_oneof![wipe_bytes(), Just("4096".to_string())]),
        path in option::weighted(0.9, prop_oneof![Just("/dev/disk/by-fuzz/disk0".to_string()), text()]),
    ) {
        use local_pv_provisioner::pv::{
            DEVICE_DIR_ANNOTATION, DEVICE_NUMBER_ANNOTATION, DEVICE_SIZE_ANNOTATION,
            WIPE_BYTES_ANNOTATION,
        };
        use local_pv_provisioner::wipe::{Guard, Owner, WipeError, WipeRequest};
        let mut labels = serde_json::Map::new();
        if let Some(label) = &label {
            labels.insert(NODE_LABEL.into(), label.clone().into());
        }
        let mut annotations = serde_json::Map::new();
        for (key, value) in [
            (NODE_NAME_ANNOTATION, &node_name),
            (DEVICE_DIR_ANNOTATION, &device_dir),
            (DEVICE_NUMBER_ANNOTATION, &number),
            (DEVICE_SIZE_ANNOTATION, &size),
            (WIPE_BYTES_ANNOTATION, &wipe),
        ] {
            if let Some(value) = value {
                annotations.insert(key.into(), value.clone().into());
            }
        }
        let mut pv = serde_json::json!({
            "metadata": {"name": "pv", "labels": labels, "annotations": annotations},
            "spec": {},
        });
        if let Some(path) = &path {
            pv["spec"]["local"] = serde_json::json!({"path": path});
        }
        let pv = serde_json::from_value(pv).unwrap();
        let owner = Owner { node_name: "node-f", label_value: "node-f" };
        match WipeRequest::from_pv(&pv, &owner) {
            Ok(request) => {
                prop_assert_eq!(label.as_deref(), Some("node-f"));
                prop_assert_eq!(node_name.as_deref(), Some("node-f"));
                prop_assert_eq!(Some(request.path.to_str().unwrap()), path.as_deref());
                prop_assert_eq!(Some(request.device_dir.to_str().unwrap()), device_dir.as_deref());
                prop_assert_eq!(size.as_deref().map(str::parse::<u64>), Some(Ok(request.size_bytes)));
                prop_assert_eq!(number.as_deref().map(str::parse::<DeviceNumber>), Some(Ok(request.number)));
                prop_assert!(request.head_bytes > 0 && request.head_bytes % 4096 == 0);
                match &wipe {
                    Some(text) => prop_assert_eq!(text.parse::<u64>().ok(), Some(request.head_bytes)),
                    None => prop_assert_eq!(request.head_bytes, DEFAULT_WIPE_BYTES),
                }
            }
            Err(WipeError::Refused { guard, detail }) => {
                let owned = label.as_deref() == Some("node-f") && node_name.as_deref() == Some("node-f");
                let expected = if owned { Guard::RecordedIdentity } else { Guard::OwnedByThisNode };
                prop_assert_eq!(guard, expected, "{}", detail);
            }
            Err(other) => prop_assert!(false, "reading a PV can only refuse: {other:?}"),
        }
    }
}
