//! Input strategies: arbitrary and near-valid ConfigMap values for every
//! key of the PV spec, whole ConfigMap data, node names as Kubernetes
//! allows them, and directory entry names (some built to collide once
//! sanitised).

use std::collections::{BTreeMap, BTreeSet};

use local_pv_provisioner::objects::spec::{
    KEY_DEVICE_DIR, KEY_DEVICE_NAME_FILTER, KEY_FS_TYPE, KEY_STORAGE_CLASS_NAME, KEY_VOLUME_MODE,
    KEY_WIPE_BYTES, KEY_WIPE_DEVICES_WITH_DATA,
};
use proptest::collection::{btree_map, btree_set, vec};
use proptest::option;
use proptest::prelude::*;

use crate::oracles::{KNOWN, valid_subdomain};

/// Any text: printable, arbitrary Unicode (controls included), empty.
pub fn text() -> impl Strategy<Value = String> {
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

pub fn wipe_bytes() -> BoxedStrategy<String> {
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

/// `wipeDevicesWithData`: the two accepted values, near misses, anything.
pub fn wipe_devices_with_data() -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop_oneof![Just("true"), Just("false")].prop_map(String::from),
        2 => prop_oneof![
            Just("True"), Just("FALSE"), Just("yes"), Just("1"), Just("true "), Just(""),
        ]
        .prop_map(String::from),
        1 => text(),
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
        Just("wipeDeviceWithData".to_string()),
        "[a-zA-Z.]{0,12}",
        text(),
    ]
}

prop_compose! {
    /// ConfigMap data: each known key present most of the time with a
    /// key-specific value, plus unknown keys, and sometimes a known key
    /// with arbitrary text.
    pub fn spec_data()(
        dir in option::weighted(0.9, device_dir()),
        filter in option::weighted(0.9, filter()),
        mode in option::weighted(0.9, volume_mode()),
        fs in option::weighted(0.5, fs_type()),
        class in option::weighted(0.3, storage_class()),
        wipe in option::weighted(0.4, wipe_bytes()),
        with_data in option::weighted(0.3, wipe_devices_with_data()),
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
            (KEY_WIPE_DEVICES_WITH_DATA, with_data),
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
pub fn node_name() -> BoxedStrategy<String> {
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
pub fn entry_name() -> BoxedStrategy<String> {
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
pub fn colliding_entries() -> impl Strategy<Value = BTreeSet<String>> {
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
