//! Unit tests of `deviceClasses`: a valid list, the flat keys as the
//! `default` class, YAML scalars read as text. Every new key's bad inputs
//! are rows of the bad-input catalogue (`tests/bad_inputs/classes_table.rs`).

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

#[test]
fn the_shipped_nvme_and_hdd_sample_is_a_valid_spec() {
    let manifest: serde_yaml_ng::Value = serde_yaml_ng::from_str(include_str!(
        "../../../config/samples/pv-spec-cm-nvme-hdd.yaml"
    ))
    .unwrap();
    let text = manifest["data"]["deviceClasses"].as_str().unwrap();
    let spec = parse_node_spec(&data(&[("deviceClasses", text)])).unwrap();
    let names: Vec<&str> = spec.classes.iter().map(|c| c.class.as_str()).collect();
    assert_eq!(names, ["nvme", "hdd"]);
    assert_eq!(spec.classes[1].max_devices, Some(12));
    assert_eq!(spec.classes[1].selector.min_size, Some(1 << 40));
}
