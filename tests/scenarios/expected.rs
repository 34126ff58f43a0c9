//! The PV the first scenario expects: every field the provisioner decides,
//! and the finalizers (its own, then the one admission adds).

use k8s_openapi::api::core::v1::PersistentVolume;
use serde_json::{Value, json};

use crate::MIB;
use crate::support::loop_device::LoopDevice;
use crate::support::world::{CLEANUP_FINALIZER, PV_PROTECTION, hostname_of};

/// Removes what the API server sets alone, leaving what the provisioner
/// decided (and the finalizers, its own and the one admission adds).
pub fn decided_fields(pv: &PersistentVolume) -> Value {
    let mut value = serde_json::to_value(pv).unwrap();
    let metadata = value["metadata"].as_object_mut().unwrap();
    for key in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "generation",
        "managedFields",
    ] {
        metadata.remove(key);
    }
    value.as_object_mut().unwrap().remove("status");
    value
}

/// The PV expected for `disk:a` (16 MiB, device `disk`) in `dir` on
/// `node-a` with UID `node_uid`: every field the provisioner decides.
pub fn expected_disk_a_pv(dir: &str, disk: &LoopDevice, node_uid: &str) -> Value {
    // The kernel's rotational flag of a loop device varies by kernel.
    let name = disk
        .path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let rotational = std::fs::read_to_string(format!("/sys/block/{name}/queue/rotational"))
        .expect("the loop device's rotational flag")
        .trim()
        == "1";
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": "local-node-a-disk-a",
            "labels": {
                "local-pv-provisioner.cybozu.io/node": "node-a",
                "local-pv-provisioner.cybozu.io/device-class": "default",
                "local-pv-provisioner.cybozu.io/device-type": "loop",
                "local-pv-provisioner.cybozu.io/rotational": rotational.to_string(),
            },
            "annotations": {
                "local-pv-provisioner.cybozu.io/device-dir": dir,
                "local-pv-provisioner.cybozu.io/device-name-filter": "^disk",
                "local-pv-provisioner.cybozu.io/volume-mode": "Filesystem",
                "local-pv-provisioner.cybozu.io/fs-type": "xfs",
                "local-pv-provisioner.cybozu.io/device-number": disk.number(),
                "local-pv-provisioner.cybozu.io/device-size": (16 * MIB).to_string(),
                "local-pv-provisioner.cybozu.io/device-stable-id": format!("loop:{}@0", disk.backing_file().display()),
                "local-pv-provisioner.cybozu.io/node-name": "node-a",
                "local-pv-provisioner.cybozu.io/wipe-bytes": "104857600",
                "local-pv-provisioner.cybozu.io/release-policy": "Wipe",
                "local-pv-provisioner.cybozu.io/wipe-mode": "Signatures",
            },
            "finalizers": [CLEANUP_FINALIZER, PV_PROTECTION],
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "Node",
                "name": "node-a",
                "uid": node_uid,
            }],
        },
        "spec": {
            "capacity": {"storage": (16 * MIB).to_string()},
            "volumeMode": "Filesystem",
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "local-storage",
            "local": {"path": format!("{dir}/disk:a"), "fsType": "xfs"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{
                "key": "kubernetes.io/hostname",
                "operator": "In",
                "values": [hostname_of("node-a")],
            }]}]}},
        },
    })
}
