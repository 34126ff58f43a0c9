//! Table 2: PV objects a Released PV could carry, through
//! `WipeRequest::from_pv` and `wipe_device` on a loop device. Each row is
//! one edit of a PV of ours and the guard that must refuse the wipe.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use local_pv_provisioner::device::wipe::{
    Guard, Owner, WipeError, WipeRequest, ZeroMethod, wipe_device,
};
use local_pv_provisioner::objects::pv::{self, LeanPv};
use serde_json::{Value, json};

use crate::catalogue::{DEVICE_BYTES, assert_untouched, device, root_disk, run_rows};
use crate::support::loop_device::{FILL_BYTE, LoopDevice};

/// The node every PV here belongs to.
const NODE: &str = "node-w";

/// The edit a row makes to a PV of ours for `DIR/disk0`.
enum Edit {
    /// Removes every label.
    NoLabels,
    /// Sets the node label.
    NodeLabel(&'static str),
    /// Removes an annotation.
    Unannotate(&'static str),
    /// Sets an annotation.
    Annotate(&'static str, &'static str),
    /// Removes `spec`.
    NoSpec,
    /// Replaces `spec.local` by a `hostPath` to the same link.
    HostPath,
    /// Sets `spec.local.path` to the text.
    Path(&'static str),
    /// Sets `spec.local.path` to `DIR/<text>` (kept as written).
    PathInDir(&'static str),
    /// Sets `spec.local.path` to the device node, `/dev/loopN`.
    DeviceNode,
    /// Makes it the PV of this machine's root disk (deviceDir `/dev`, its
    /// real `major:minor`, size recorded wrong as a backstop).
    RootDisk,
}

use Edit::*;
use Guard::*;

/// One row: the edit, the guard that must refuse, and what its refusal
/// must say (`""`: anything).
type Row = (&'static str, Edit, Guard, &'static str);

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    vec![
        ("no node label", NoLabels, OwnedByThisNode, ""),
        ("node label of another node", NodeLabel("node-x"), OwnedByThisNode, ""),
        ("node label \"\"", NodeLabel(""), OwnedByThisNode, ""),
        ("our label, node-name annotation missing", Unannotate(pv::NODE_NAME_ANNOTATION), OwnedByThisNode, ""),
        ("our label, node-name annotation of another node", Annotate(pv::NODE_NAME_ANNOTATION, "node-x"), OwnedByThisNode, ""),
        ("no spec", NoSpec, RecordedIdentity, ""),
        ("a hostPath PV (no spec.local)", HostPath, RecordedIdentity, ""),
        ("no device-dir annotation", Unannotate(pv::DEVICE_DIR_ANNOTATION), RecordedIdentity, ""),
        ("device-size abc", Annotate(pv::DEVICE_SIZE_ANNOTATION, "abc"), RecordedIdentity, ""),
        ("device-size -1", Annotate(pv::DEVICE_SIZE_ANNOTATION, "-1"), RecordedIdentity, ""),
        ("device-size 1Mi (not plain bytes)", Annotate(pv::DEVICE_SIZE_ANNOTATION, "1Mi"), RecordedIdentity, ""),
        ("no device-number annotation", Unannotate(pv::DEVICE_NUMBER_ANNOTATION), RecordedIdentity, ""),
        ("device-number 7", Annotate(pv::DEVICE_NUMBER_ANNOTATION, "7"), RecordedIdentity, ""),
        ("device-number a:b", Annotate(pv::DEVICE_NUMBER_ANNOTATION, "a:b"), RecordedIdentity, ""),
        ("wipe-bytes 0", Annotate(pv::WIPE_BYTES_ANNOTATION, "0"), RecordedIdentity, ""),
        ("wipe-bytes 1000", Annotate(pv::WIPE_BYTES_ANNOTATION, "1000"), RecordedIdentity, ""),
        ("wipe-bytes 1Mi (the PV records plain bytes)", Annotate(pv::WIPE_BYTES_ANNOTATION, "1Mi"), RecordedIdentity, ""),
        ("local.path relative (disk0)", Path("disk0"), PathInsideDeviceDir, ""),
        ("local.path DIR/sub/../disk0", PathInDir("sub/../disk0"), PathInsideDeviceDir, ""),
        ("local.path is deviceDir itself", PathInDir(""), PathInsideDeviceDir, ""),
        ("local.path one level deeper (DIR/sub/disk0, a link to the same device)", PathInDir("sub/disk0"), PathInsideDeviceDir, ""),
        ("local.path the device node itself (/dev/loopN, outside deviceDir)", DeviceNode, PathInsideDeviceDir, ""),
        ("device-dir annotation relative", Annotate(pv::DEVICE_DIR_ANNOTATION, "relative/dir"), PathInsideDeviceDir, ""),
        ("local.path a regular file inside deviceDir", PathInDir("disk-file"), BlockDevice, ""),
        ("local.path a missing entry inside deviceDir", PathInDir("disk-gone"), BlockDevice, ""),
        ("device-number of another device", Annotate(pv::DEVICE_NUMBER_ANNOTATION, "1:3"), SameDevice, ""),
        ("stable id of another disk", Annotate(pv::DEVICE_STABLE_ID_ANNOTATION, "wwid:naa.0000"), SameDevice, ""),
        ("of ours for this machine's root disk (deviceDir /dev, its real major:minor; size recorded wrong as a backstop; \
          skipped when / is not on a block device)", RootDisk, NotMounted, "mounted at /"),
    ]
}

/// A Released PV of ours for `device` linked as `dir/disk0`, as JSON to edit.
fn our_pv(dir: &Path, device: &LoopDevice) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": format!("local-{NODE}-disk0"),
            "labels": {pv::NODE_LABEL: NODE},
            "annotations": {
                pv::DEVICE_DIR_ANNOTATION: dir.display().to_string(),
                pv::DEVICE_NUMBER_ANNOTATION: device.number(),
                pv::DEVICE_SIZE_ANNOTATION: DEVICE_BYTES.to_string(),
                pv::NODE_NAME_ANNOTATION: NODE,
                pv::WIPE_BYTES_ANNOTATION: "4096",
            },
        },
        "spec": {
            "capacity": {"storage": DEVICE_BYTES.to_string()},
            "accessModes": ["ReadWriteOnce"],
            "volumeMode": "Block",
            "local": {"path": dir.join("disk0").display().to_string()},
        },
        "status": {"phase": "Released"},
    })
}

/// Applies `edit` to `pv`; `false` when the row cannot run here (no root
/// disk visible).
fn apply(edit: &Edit, pv: &mut Value, dir: &Path) -> bool {
    let annotations = &mut pv["metadata"]["annotations"];
    match edit {
        NoLabels => pv["metadata"]["labels"] = json!({}),
        NodeLabel(value) => pv["metadata"]["labels"][pv::NODE_LABEL] = json!(value),
        Unannotate(key) => {
            annotations.as_object_mut().unwrap().remove(*key);
        }
        Annotate(key, value) => annotations[*key] = json!(value),
        NoSpec => {
            pv.as_object_mut().unwrap().remove("spec");
        }
        HostPath => {
            pv["spec"].as_object_mut().unwrap().remove("local");
            pv["spec"]["hostPath"] = json!({"path": dir.join("disk0")});
        }
        Path(path) => pv["spec"]["local"]["path"] = json!(path),
        PathInDir(rest) => {
            pv["spec"]["local"]["path"] =
                json!(format!("{}/{rest}", dir.display()).trim_end_matches('/'))
        }
        DeviceNode => {
            let number = annotations[pv::DEVICE_NUMBER_ANNOTATION]
                .as_str()
                .unwrap()
                .to_string();
            let minor = number.split(':').nth(1).unwrap().to_string();
            pv["spec"]["local"]["path"] = json!(format!("/dev/loop{minor}"));
        }
        RootDisk => {
            let Some((disk, number)) = root_disk() else {
                println!("/ is not on a visible block device: root-disk row skipped");
                return false;
            };
            annotations[pv::DEVICE_DIR_ANNOTATION] = json!("/dev");
            annotations[pv::DEVICE_NUMBER_ANNOTATION] = json!(number);
            annotations[pv::DEVICE_SIZE_ANNOTATION] = json!("512");
            annotations
                .as_object_mut()
                .unwrap()
                .remove(pv::WIPE_BYTES_ANNOTATION);
            pv["spec"] = json!({"local": {"path": disk.display().to_string()}});
        }
    }
    true
}

/// Builds the request from the edited PV and, when accepted, runs the
/// wipe: it must be refused by `guard`, saying `says`, and write nothing.
fn check(edit: &Edit, guard: Guard, says: &str, dir: &Path, device: &LoopDevice) {
    let mut pv = our_pv(dir, device);
    if !apply(edit, &mut pv, dir) {
        return;
    }
    let pv: LeanPv = serde_json::from_value(pv).unwrap();
    let owner = Owner {
        node_name: NODE,
        label_value: NODE,
    };
    let result = WipeRequest::from_pv(&pv, &owner).and_then(|request| {
        wipe_device(
            &request,
            ZeroMethod::WriteZeroes,
            &AtomicBool::new(false),
            &|_| {},
        )
    });
    match result {
        Err(WipeError::Refused {
            guard: refused,
            detail,
        }) => {
            assert_eq!(refused, guard, "{detail}");
            assert!(!detail.is_empty() && detail.contains(says), "{detail}");
        }
        other => panic!("expected a refusal by {guard}, got {other:?}"),
    }
    assert_untouched(device);
    assert_eq!(
        fs::read(dir.join("disk-file")).unwrap(),
        vec![FILL_BYTE; 4096]
    );
}

#[test]
fn wipe_request_table() {
    crate::support::loop_device::require_root();
    let device = device();
    let dir = tempfile::tempdir().unwrap();
    symlink(&device.path, dir.path().join("disk0")).unwrap();
    fs::write(dir.path().join("disk-file"), vec![FILL_BYTE; 4096]).unwrap();
    fs::create_dir(dir.path().join("sub")).unwrap();
    symlink(&device.path, dir.path().join("sub").join("disk0")).unwrap();

    // The unedited PV is accepted (its wipe would run): each row's refusal
    // comes from its edit alone.
    let unedited: LeanPv = serde_json::from_value(our_pv(dir.path(), &device)).unwrap();
    let owner = Owner {
        node_name: NODE,
        label_value: NODE,
    };
    let request = WipeRequest::from_pv(&unedited, &owner).expect("the unedited PV is ours");
    assert_eq!(request.head_bytes, 4096);

    let label = |(input, _, guard, _): &Row| {
        (
            format!("Released PV: {input}"),
            format!("refused by {guard}, device untouched"),
        )
    };
    let run = |(_, edit, guard, says): &Row| check(edit, *guard, says, dir.path(), &device);
    run_rows(
        "PV objects (WipeRequest::from_pv, wipe_device)",
        rows(),
        label,
        run,
    );
}
