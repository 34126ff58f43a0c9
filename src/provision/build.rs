//! The PersistentVolume of a device: the whole desired object built from
//! the node's facts, the device's class and the discovered device, with the
//! labels and annotations of [`crate::objects::pv`] that recognise it later.
//!
//! Its labels: this node's label, the class, what the kernel says the
//! device is (type, rotational, model made a valid label value), the
//! class's static labels, and the class's `nodeLabels` copied from the
//! Node. A Node label the class names but the Node lacks is left out (and
//! logged by the caller once, see [`missing_node_labels`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LocalVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolume,
    PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::discover::devices::Device;
use crate::objects::naming::sanitized_label_value;
use crate::objects::pv::{
    CLEANUP_FINALIZER, DELETE_CLAIMS_ON_NODE_GONE_ANNOTATION, DEVICE_CLASS_LABEL,
    DEVICE_DIR_ANNOTATION, DEVICE_NAME_FILTER_ANNOTATION, DEVICE_NUMBER_ANNOTATION,
    DEVICE_SIZE_ANNOTATION, DEVICE_STABLE_ID_ANNOTATION, DEVICE_TYPE_LABEL, FS_TYPE_ANNOTATION,
    HOSTNAME_LABEL, MODEL_LABEL, NODE_LABEL, NODE_NAME_ANNOTATION, RELEASE_POLICY_ANNOTATION,
    ROTATIONAL_LABEL, VOLUME_MODE_ANNOTATION, WIPE_BANDWIDTH_ANNOTATION, WIPE_BYTES_ANNOTATION,
    WIPE_MODE_ANNOTATION,
};
use crate::objects::spec::PvSpec;

/// What the PV builder needs to know about the Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// The Node's name.
    pub name: String,
    /// The live Node's UID (a wrong UID makes the garbage collector delete the PV).
    pub uid: String,
    /// The Node's `kubernetes.io/hostname` label, else its name.
    pub hostname: String,
    /// Value of [`NODE_LABEL`] for this node.
    pub label_value: String,
    /// The Node's labels (a class's `nodeLabels` are copied from them).
    pub labels: BTreeMap<String, String>,
}

/// The keys of `class`'s `nodeLabels` that the Node does not carry: left
/// off its PVs.
pub fn missing_node_labels<'a>(node: &NodeFacts, class: &'a PvSpec) -> Vec<&'a str> {
    class
        .node_labels
        .iter()
        .filter(|key| !node.labels.contains_key(*key))
        .map(String::as_str)
        .collect()
}

/// The labels of the PV of `device` in `class`.
fn labels(node: &NodeFacts, class: &PvSpec, device: &Device) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = class.labels.clone();
    for key in &class.node_labels {
        if let Some(value) = node.labels.get(key) {
            labels.insert(key.clone(), value.clone());
        }
    }
    let facts = &device.facts;
    if let Some(kind) = facts.device_type {
        labels.insert(DEVICE_TYPE_LABEL.to_string(), kind.as_str().to_string());
    }
    if let Some(rotational) = facts.rotational {
        labels.insert(ROTATIONAL_LABEL.to_string(), rotational.to_string());
    }
    if let Some(model) = facts.model.as_deref().and_then(sanitized_label_value) {
        labels.insert(MODEL_LABEL.to_string(), model);
    }
    labels.insert(DEVICE_CLASS_LABEL.to_string(), class.class.clone());
    labels.insert(NODE_LABEL.to_string(), node.label_value.clone());
    labels
}

/// The annotations recording what a PV was made from.
fn recorded_annotations(
    node: &NodeFacts,
    spec: &PvSpec,
    device: &Device,
) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::from([
        (
            DEVICE_DIR_ANNOTATION.to_string(),
            spec.device_dir.display().to_string(),
        ),
        (
            DEVICE_NAME_FILTER_ANNOTATION.to_string(),
            spec.device_name_filter_source.clone(),
        ),
        (
            VOLUME_MODE_ANNOTATION.to_string(),
            spec.volume_mode.as_str().to_string(),
        ),
        (
            DEVICE_NUMBER_ANNOTATION.to_string(),
            device.number.to_string(),
        ),
        (
            DEVICE_SIZE_ANNOTATION.to_string(),
            device.size_bytes.to_string(),
        ),
        (NODE_NAME_ANNOTATION.to_string(), node.name.clone()),
        (
            WIPE_BYTES_ANNOTATION.to_string(),
            spec.wipe_bytes.to_string(),
        ),
    ]);
    if let Some(stable_id) = &device.stable_id {
        annotations.insert(DEVICE_STABLE_ID_ANNOTATION.to_string(), stable_id.clone());
    }
    if let Some(fs_type) = spec.fs_type {
        annotations.insert(FS_TYPE_ANNOTATION.to_string(), fs_type.as_str().to_string());
    }
    // The lifecycle in force now: a later ConfigMap edit never changes the
    // fate of data already written.
    annotations.insert(
        RELEASE_POLICY_ANNOTATION.to_string(),
        spec.release_policy.as_str().to_string(),
    );
    annotations.insert(
        WIPE_MODE_ANNOTATION.to_string(),
        spec.wipe_mode.as_str().to_string(),
    );
    if let Some(bandwidth) = spec.wipe_bandwidth {
        annotations.insert(WIPE_BANDWIDTH_ANNOTATION.to_string(), bandwidth.to_string());
    }
    if spec.delete_claims_on_node_gone {
        annotations.insert(
            DELETE_CLAIMS_ON_NODE_GONE_ANNOTATION.to_string(),
            "true".to_string(),
        );
    }
    annotations
}

/// Builds the PV for `device` named `name`.
pub fn build_pv(node: &NodeFacts, spec: &PvSpec, device: &Device, name: &str) -> PersistentVolume {
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels(node, spec, device)),
            annotations: Some(recorded_annotations(node, spec, device)),
            finalizers: Some(vec![CLEANUP_FINALIZER.to_string()]),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".to_string(),
                kind: "Node".to_string(),
                name: node.name.clone(),
                uid: node.uid.clone(),
                block_owner_deletion: None,
                controller: None,
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([(
                "storage".to_string(),
                Quantity(device.size_bytes.to_string()),
            )])),
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            persistent_volume_reclaim_policy: Some("Retain".to_string()),
            storage_class_name: Some(spec.storage_class_name.clone()),
            volume_mode: Some(spec.volume_mode.as_str().to_string()),
            local: Some(LocalVolumeSource {
                path: device.path.display().to_string(),
                fs_type: spec.fs_type.map(|fs_type| fs_type.as_str().to_string()),
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: HOSTNAME_LABEL.to_string(),
                            operator: "In".to_string(),
                            values: Some(vec![node.hostname.clone()]),
                        }]),
                        match_fields: None,
                    }],
                }),
            }),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::blockdev::DeviceNumber;
    use crate::device::facts::DeviceFacts;
    use crate::objects::classes::{DeviceType, parse_device_classes};
    use crate::objects::spec::parse_pv_spec;
    use std::path::PathBuf;

    fn spec(pairs: &[(&str, &str)]) -> PvSpec {
        parse_pv_spec(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .unwrap()
    }

    fn device() -> Device {
        Device {
            name: "pci-0000:3b:00.0-ata-1".into(),
            path: PathBuf::from("/dev/disk/by-path/pci-0000:3b:00.0-ata-1"),
            resolved: PathBuf::from("/dev/sdb"),
            number: DeviceNumber {
                major: 8,
                minor: 16,
            },
            size_bytes: 107_374_182_400,
            in_use: None,
            stable_id: Some("wwid:naa.5000c500a1b2c3d4".into()),
            facts: DeviceFacts {
                read_only: Some(false),
                removable: Some(false),
                rotational: Some(true),
                model: Some("ST4000NM0035 1V4".into()),
                vendor: Some("ATA".into()),
                serial: Some("naa.5000c500a1b2c3d4".into()),
                device_type: Some(DeviceType::Disk),
            },
        }
    }

    fn node() -> NodeFacts {
        NodeFacts {
            name: "node1".into(),
            uid: "a958d5a1-2644-4e26-abb3-f810576b2f7f".into(),
            hostname: "node1.example".into(),
            label_value: "node1".into(),
            labels: BTreeMap::from([
                ("topology.kubernetes.io/zone".into(), "zone-a".into()),
                ("kubernetes.io/hostname".into(), "node1.example".into()),
            ]),
        }
    }

    #[test]
    fn block_pv_matches_the_upstream_shape_exactly() {
        let spec = spec(&[
            ("deviceDir", "/dev/disk/by-path/"),
            ("deviceNameFilter", ".*"),
            ("volumeMode", "Block"),
        ]);
        let pv = build_pv(
            &node(),
            &spec,
            &device(),
            "local-node1-pci-0000-3b-00.0-ata-1",
        );
        let expected = serde_json::json!({
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": "local-node1-pci-0000-3b-00.0-ata-1",
                "labels": {
                    "local-pv-provisioner.cybozu.io/node": "node1",
                    "local-pv-provisioner.cybozu.io/device-class": "default",
                    "local-pv-provisioner.cybozu.io/device-type": "disk",
                    "local-pv-provisioner.cybozu.io/rotational": "true",
                    "local-pv-provisioner.cybozu.io/model": "ST4000NM0035_1V4",
                },
                "annotations": {
                    "local-pv-provisioner.cybozu.io/device-dir": "/dev/disk/by-path",
                    "local-pv-provisioner.cybozu.io/device-name-filter": ".*",
                    "local-pv-provisioner.cybozu.io/volume-mode": "Block",
                    "local-pv-provisioner.cybozu.io/device-number": "8:16",
                    "local-pv-provisioner.cybozu.io/device-size": "107374182400",
                    "local-pv-provisioner.cybozu.io/node-name": "node1",
                    "local-pv-provisioner.cybozu.io/wipe-bytes": "104857600",
                    "local-pv-provisioner.cybozu.io/device-stable-id": "wwid:naa.5000c500a1b2c3d4",
                    "local-pv-provisioner.cybozu.io/release-policy": "Wipe",
                    "local-pv-provisioner.cybozu.io/wipe-mode": "Signatures",
                },
                "finalizers": ["local-pv-provisioner.cybozu.io/cleanup"],
                "ownerReferences": [{
                    "apiVersion": "v1",
                    "kind": "Node",
                    "name": "node1",
                    "uid": "a958d5a1-2644-4e26-abb3-f810576b2f7f",
                }],
            },
            "spec": {
                "capacity": {"storage": "107374182400"},
                "volumeMode": "Block",
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "local-storage",
                "local": {"path": "/dev/disk/by-path/pci-0000:3b:00.0-ata-1"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{
                    "key": "kubernetes.io/hostname",
                    "operator": "In",
                    "values": ["node1.example"],
                }]}]}},
            },
        });
        assert_eq!(serde_json::to_value(&pv).unwrap(), expected);
    }

    #[test]
    fn filesystem_pv_records_fs_type() {
        let spec = spec(&[
            ("deviceDir", "/dev/disk/by-id"),
            ("deviceNameFilter", "^nvme"),
            ("volumeMode", "Filesystem"),
            ("fsType", "xfs"),
            ("storageClassName", "fast"),
        ]);
        let pv = build_pv(&node(), &spec, &device(), "x");
        let pv_spec = pv.spec.unwrap();
        assert_eq!(pv_spec.local.unwrap().fs_type.as_deref(), Some("xfs"));
        assert_eq!(pv_spec.volume_mode.as_deref(), Some("Filesystem"));
        assert_eq!(pv_spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(pv.metadata.annotations.unwrap()[FS_TYPE_ANNOTATION], "xfs");
    }

    #[test]
    fn a_class_labels_its_pvs_with_static_and_copied_node_labels() {
        let class = &parse_device_classes(
            r#"
- name: bulk
  deviceDir: /dev/disk/by-id
  deviceNameFilter: "^ata-"
  volumeMode: Block
  storageClassName: local-hdd
  labels: {tier: cold}
  nodeLabels: [topology.kubernetes.io/zone, topology.kubernetes.io/rack]
"#,
        )
        .unwrap()[0];
        let pv = build_pv(&node(), class, &device(), "x");
        let labels = pv.metadata.labels.unwrap();
        assert_eq!(
            labels["local-pv-provisioner.cybozu.io/device-class"],
            "bulk"
        );
        assert_eq!(labels["tier"], "cold");
        assert_eq!(labels["topology.kubernetes.io/zone"], "zone-a");
        assert!(
            !labels.contains_key("topology.kubernetes.io/rack"),
            "the Node has none"
        );
        assert_eq!(
            missing_node_labels(&node(), class),
            vec!["topology.kubernetes.io/rack"]
        );
        assert_eq!(
            pv.spec.unwrap().storage_class_name.as_deref(),
            Some("local-hdd")
        );
    }
}
