//! What the end-to-end suite expects of a PV and of a device: the fields the
//! provisioner decides for the PV of a device, the check that a PV has
//! exactly those, and reads and writes through a block device.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use k8s_openapi::api::core::v1::{Node, PersistentVolume};
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::support::loop_device::LoopDevice;
use crate::support::world::{
    CLEANUP_FINALIZER, Data, HOSTNAME_LABEL, NODE_LABEL, PV_PROTECTION, World,
};

/// `deviceNameFilter` of the suite's ConfigMaps: the links it makes.
pub const DEVICE_FILTER: &str = "^disk[0-9]+$";
/// Prefix of the provisioner's PV annotations.
const ANNOTATION_PREFIX: &str = "local-pv-provisioner.cybozu.io/";
/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;
/// Bytes a wipe zeroes at the head of a device (the default `wipeBytes`).
pub const HEAD_BYTES: u64 = 100 * MIB;

/// The data of a Block-mode PV spec ConfigMap over `dir`, of the run's
/// storage class.
pub fn block_spec(world: &World, dir: &Path) -> Data {
    let mut spec = world.block_spec_over(dir, DEVICE_FILTER);
    spec.insert("storageClassName".into(), world.run().into());
    spec
}

/// Checks that every field of `expected` is in `actual` with the same value:
/// objects may hold more keys, arrays must have the same length with each
/// element matching, scalars must be equal. `Err` names the first
/// difference by its JSON path.
fn contains(actual: &Value, expected: &Value, path: &str) -> Result<(), String> {
    match (actual, expected) {
        (Value::Object(actual), Value::Object(expected)) => {
            for (key, value) in expected {
                let inner = format!("{path}.{key}");
                match actual.get(key) {
                    Some(found) => contains(found, value, &inner)?,
                    None => return Err(format!("{inner} is missing; expected {value}")),
                }
            }
            Ok(())
        }
        (Value::Array(actual), Value::Array(expected)) if actual.len() == expected.len() => {
            for (index, (found, value)) in actual.iter().zip(expected).enumerate() {
                contains(found, value, &format!("{path}[{index}]"))?;
            }
            Ok(())
        }
        _ if actual == expected => Ok(()),
        _ => Err(format!("{path} is {actual}; expected {expected}")),
    }
}

/// `loop:<backing file>@<offset>`, the stable id the provisioner records for
/// a loop device when sysfs names its backing file; `None` otherwise.
fn loop_stable_id(device: &LoopDevice) -> Option<String> {
    let name = device.path.file_name()?.to_str()?;
    let sysfs = Path::new("/sys/class/block").join(name).join("loop");
    let backing = std::fs::read_to_string(sysfs.join("backing_file")).ok()?;
    let offset = std::fs::read_to_string(sysfs.join("offset"))
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|_| "0".to_string());
    Some(format!("loop:{}@{offset}", backing.trim()))
}

/// The provisioner's annotations on the PV of `device`, linked in `dir`, on
/// Node `node_name`.
fn expected_annotations(dir: &Path, device: &LoopDevice, node_name: &str, size: u64) -> Value {
    let mut annotations = json!({
        "local-pv-provisioner.cybozu.io/device-dir": dir.display().to_string(),
        "local-pv-provisioner.cybozu.io/device-name-filter": DEVICE_FILTER,
        "local-pv-provisioner.cybozu.io/volume-mode": "Block",
        "local-pv-provisioner.cybozu.io/device-number": device.number(),
        "local-pv-provisioner.cybozu.io/device-size": size.to_string(),
        "local-pv-provisioner.cybozu.io/node-name": node_name,
        "local-pv-provisioner.cybozu.io/wipe-bytes": HEAD_BYTES.to_string(),
        "local-pv-provisioner.cybozu.io/release-policy": "Wipe",
        "local-pv-provisioner.cybozu.io/wipe-mode": "Signatures",
    });
    if let Some(stable_id) = loop_stable_id(device) {
        annotations["local-pv-provisioner.cybozu.io/device-stable-id"] = json!(stable_id);
    }
    annotations
}

/// The fields the provisioner decides for the PV of `device`, linked as
/// `dir/entry`, on `node`.
pub fn expected_pv(
    node: &Node,
    dir: &Path,
    entry: &str,
    device: &LoopDevice,
    class: &str,
) -> Value {
    let node_name = node.name_any();
    let size = std::fs::metadata(device.backing_file())
        .expect("backing file")
        .len();
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": format!("local-{node_name}-{entry}"),
            "labels": {NODE_LABEL: node_name},
            "annotations": expected_annotations(dir, device, &node_name, size),
            // The provisioner's, then the one admission adds.
            "finalizers": [CLEANUP_FINALIZER, PV_PROTECTION],
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "Node",
                "name": node_name,
                "uid": node.uid().expect("Node UID"),
            }],
        },
        "spec": {
            "capacity": {"storage": size.to_string()},
            "volumeMode": "Block",
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": class,
            "local": {"path": dir.join(entry).display().to_string()},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{
                "key": HOSTNAME_LABEL,
                "operator": "In",
                "values": [node.labels()[HOSTNAME_LABEL].clone()],
            }]}]}},
        },
    })
}

/// Asserts that `pv` has exactly the provisioner's part of `expected`: every
/// expected field (the finalizers in the order the API server returns
/// them), no other provisioner annotation but the device's history (carried
/// when the device had a PV before; `tests/visibility` checks its content),
/// no `fsType`, and an ownerReference without `blockOwnerDeletion`.
pub fn assert_pv_shape(pv: &PersistentVolume, expected: &Value) {
    let name = pv.name_any();
    let actual = serde_json::to_value(pv).expect("PV as JSON");
    if let Err(difference) = contains(&actual, expected, "pv") {
        panic!("PV {name} has the wrong shape: {difference}\n{actual:#}");
    }
    let ours: BTreeSet<&str> = pv
        .annotations()
        .keys()
        .map(String::as_str)
        .filter(|key| key.starts_with(ANNOTATION_PREFIX))
        .filter(|key| *key != "local-pv-provisioner.cybozu.io/history")
        .collect();
    let wanted: BTreeSet<&str> = expected["metadata"]["annotations"]
        .as_object()
        .expect("annotations")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(ours, wanted, "PV {name}: the provisioner's annotations");
    assert!(
        actual.pointer("/spec/local/fsType").is_none(),
        "PV {name}: a Block PV has no fsType"
    );
    assert!(
        actual
            .pointer("/metadata/ownerReferences/0/blockOwnerDeletion")
            .is_none(),
        "PV {name}: blockOwnerDeletion is left unset"
    );
}

/// Writes `data` at `offset` through the block device at `path` and flushes
/// it to the device.
pub fn write_through(path: &Path, offset: u64, data: &[u8]) {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|error| panic!("opening {} for writing: {error}", path.display()));
    file.write_all_at(data, offset)
        .unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
    file.sync_all()
        .unwrap_or_else(|error| panic!("flushing {}: {error}", path.display()));
}

/// Reads `length` bytes at `offset` through the block device at `path`.
pub fn read_through(path: &Path, offset: u64, length: usize) -> Vec<u8> {
    let file =
        File::open(path).unwrap_or_else(|error| panic!("opening {}: {error}", path.display()));
    let mut buffer = vec![0u8; length];
    file.read_exact_at(&mut buffer, offset)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
    buffer
}

/// Whether every byte is `value` (compared a block at a time: a byte loop
/// is slow in a debug build).
pub fn all(bytes: &[u8], value: u8) -> bool {
    let block = [value; 4096];
    bytes
        .chunks(block.len())
        .all(|chunk| chunk == &block[..chunk.len()])
}
