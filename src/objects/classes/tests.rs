//! Unit tests of `deviceClasses`: a valid list, and every new key's bad
//! inputs refused with a message naming the entry, the key and the value.

use std::collections::BTreeMap;

use super::*;
use crate::objects::spec::{DEFAULT_WIPE_BYTES, VolumeMode, parse_node_spec};

const NVME_AND_HDD: &str = r#"
- name: nvme
  deviceDir: /dev/disk/by-id
  deviceNameFilter: "^nvme-"
  volumeMode: Block
  storageClassName: local-nvme
  rotational: false
  minSize: 100Gi
  deviceTypes: [disk]
  models: ["Samsung", "INTEL"]
  labels: {tier: fast}
  nodeLabels: [topology.kubernetes.io/zone]
- name: hdd
  deviceDir: /dev/disk/by-path
  deviceNameFilter: "-ata-"
  volumeMode: Filesystem
  fsType: xfs
  storageClassName: local-hdd
  rotational: true
  minSize: 1T
  maxSize: 20Ti
  maxDevices: 8
  wipeBytes: 1Gi
  wipeDevicesWithData: true
"#;

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn an_nvme_and_hdd_node_parses_into_two_classes() {
    let spec = parse_node_spec(&data(&[("deviceClasses", NVME_AND_HDD)])).unwrap();
    assert!(spec.listed);
    let [nvme, hdd] = spec.classes.as_slice() else {
        panic!("{:?}", spec.classes);
    };
    assert_eq!(nvme.class, "nvme");
    assert_eq!(nvme.volume_mode, VolumeMode::Block);
    assert_eq!(nvme.selector.rotational, Some(false));
    assert_eq!(nvme.selector.min_size, Some(100 << 30));
    assert_eq!(
        nvme.selector.device_types,
        BTreeSet::from([DeviceType::Disk])
    );
    assert_eq!(nvme.selector.models.len(), 2);
    assert_eq!(nvme.labels["tier"], "fast");
    assert_eq!(nvme.node_labels, ["topology.kubernetes.io/zone"]);
    assert_eq!(nvme.wipe_bytes, DEFAULT_WIPE_BYTES);
    assert_eq!(hdd.class, "hdd");
    assert_eq!(hdd.fs_type.map(|fs| fs.as_str()), Some("xfs"));
    assert_eq!(hdd.selector.min_size, Some(1_000_000_000_000));
    assert_eq!(hdd.selector.max_size, Some(20 << 40));
    assert_eq!(hdd.max_devices, Some(8));
    assert_eq!(hdd.wipe_bytes, 1 << 30);
    assert!(hdd.wipe_devices_with_data);
}

#[test]
fn the_flat_keys_are_the_default_class() {
    let spec = parse_node_spec(&data(&[
        ("deviceDir", "/dev/disk/by-id"),
        ("deviceNameFilter", ".*"),
        ("volumeMode", "Block"),
    ]))
    .unwrap();
    assert!(!spec.listed);
    assert_eq!(spec.classes.len(), 1);
    assert_eq!(spec.classes[0].class, DEFAULT_CLASS);
    assert!(spec.classes[0].selector.is_empty());
}

#[test]
fn flat_keys_beside_device_classes_are_refused() {
    let error = parse_node_spec(&data(&[
        ("deviceClasses", NVME_AND_HDD),
        ("deviceDir", "/dev"),
    ]))
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("cannot stand beside the flat keys (deviceDir)"),
        "{error}"
    );
}

/// One entry with `extra` lines added to a valid minimal class.
fn one(extra: &str) -> String {
    format!(
        "- name: c\n  deviceDir: /dev/disk/by-id\n  deviceNameFilter: \".*\"\n  volumeMode: Block\n{extra}"
    )
}

#[test]
fn every_new_key_refuses_bad_input_naming_the_entry_key_and_value() {
    let cases: Vec<(String, &[&str])> = vec![
        ("not: a list".into(), &["\"deviceClasses\"", "YAML list"]),
        ("[]".into(), &["at least one class"]),
        ("- [".into(), &["not valid YAML"]),
        (
            "- just-a-string".into(),
            &["entry 1", "a class must be a map"],
        ),
        (
            one("  name2: x\n"),
            &["entry 1 (\"c\")", "unknown key in a class", "\"name2\""],
        ),
        (
            "- {deviceDir: /dev, deviceNameFilter: x, volumeMode: Block}".into(),
            &["entry 1", "key \"name\" is missing"],
        ),
        (
            "- {name: Fast_SSD, deviceDir: /dev, deviceNameFilter: x, volumeMode: Block}".into(),
            &["\"name\"", "DNS label", "\"Fast_SSD\""],
        ),
        (
            format!("{}{}", one(""), one("")),
            &["entries 1 and 2", "unique"],
        ),
        (
            "- {name: c, deviceNameFilter: x, volumeMode: Block}".into(),
            &["key \"deviceDir\" is missing"],
        ),
        (one("  volumeMode2: Block\n"), &["unknown key"]),
        (
            one("  minSize: big\n"),
            &["\"minSize\"", "quantity of bytes", "\"big\""],
        ),
        (one("  maxSize: [1]\n"), &["\"maxSize\"", "quantity"]),
        (one("  minSize: 1.5\n"), &["\"minSize\"", "quantity"]),
        (
            one("  minSize: 2Ti\n  maxSize: 1Ti\n"),
            &["\"minSize\"", "larger than maxSize"],
        ),
        (
            one("  rotational: yes\n"),
            &["\"rotational\"", "true or false"],
        ),
        (
            one("  rotational: 1\n"),
            &["\"rotational\"", "true or false"],
        ),
        (
            one("  models: Samsung\n"),
            &["\"models\"", "list of regular expressions"],
        ),
        (
            one("  vendors: [\"(\"]\n"),
            &["\"vendors\"", "not a valid regular expression"],
        ),
        (
            one("  serials: [\" x\"]\n"),
            &["\"serials\"", "white space"],
        ),
        (
            one("  deviceTypes: [disk, nvme]\n"),
            &["\"deviceTypes\"", "\"nvme\"", "not a device type"],
        ),
        (
            one("  deviceTypes: []\n"),
            &["\"deviceTypes\"", "at least one type"],
        ),
        (
            one("  deviceTypes: disk\n"),
            &["\"deviceTypes\"", "list of device types"],
        ),
        (one("  maxDevices: 0\n"), &["\"maxDevices\"", "at least 1"]),
        (
            one("  maxDevices: two\n"),
            &["\"maxDevices\"", "whole number"],
        ),
        (one("  labels: [a]\n"), &["\"labels\"", "map of label keys"]),
        (
            one(&format!("  labels: {{tier: {}}}\n", "x".repeat(64))),
            &["\"labels\"", "not a valid label value", "\"tier\""],
        ),
        (
            one("  labels: {\"bad key!\": x}\n"),
            &["\"labels\"", "not a valid label key"],
        ),
        (
            one("  labels: {local-pv-provisioner.cybozu.io/node: x}\n"),
            &["\"labels\"", "this program's own"],
        ),
        (
            one("  nodeLabels: zone\n"),
            &["\"nodeLabels\"", "list of Node label keys"],
        ),
        (
            one("  nodeLabels: [\"-zone\"]\n"),
            &["\"nodeLabels\"", "not a valid label key"],
        ),
        (
            one("  volumeMode: [Block]\n").replace("  volumeMode: Block\n", ""),
            &["\"volumeMode\"", "single value"],
        ),
        (
            one("  wipeBytes: 1000\n"),
            &["\"wipeBytes\"", "multiple of 4096"],
        ),
    ];
    for (yaml, wanted) in cases {
        let error = parse_node_spec(&data(&[("deviceClasses", &yaml)]))
            .expect_err(&yaml)
            .to_string();
        for part in wanted {
            assert!(error.contains(part), "{yaml:?}: {error:?} lacks {part:?}");
        }
    }
}

#[test]
fn yaml_numbers_and_booleans_are_read_as_the_flat_keys_read_text() {
    let spec = parse_node_spec(&data(&[(
        "deviceClasses",
        &one("  wipeBytes: 1048576\n  wipeDevicesWithData: false\n  maxDevices: \"3\"\n  rotational: \"true\"\n"),
    )]))
    .unwrap();
    let class = &spec.classes[0];
    assert_eq!(class.wipe_bytes, 1 << 20);
    assert!(!class.wipe_devices_with_data);
    assert_eq!(class.max_devices, Some(3));
    assert_eq!(class.selector.rotational, Some(true));
}
