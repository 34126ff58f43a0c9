//! What every device test uses: the Block-mode PV spec over a directory of
//! links, this node and its owner identity, the wipe request the controller
//! would build for a linked device, `mkfs.ext4` and mounts undone on drop,
//! and the check that a refused wipe wrote nothing.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use local_pv_provisioner::device::wipe::{
    Guard, Owner, WipeError, WipeReport, WipeRequest, ZeroMethod, wipe_device,
};
use local_pv_provisioner::discover::devices::scan_devices;
use local_pv_provisioner::objects::naming::plain_pv_name;
use local_pv_provisioner::objects::spec::{PvSpec, parse_pv_spec};
use local_pv_provisioner::provision::build::{NodeFacts, build_pv};

use tempfile::TempDir;

use crate::support::loop_device::{FILL_BYTE, LoopDevice};
use crate::support::world::data;

pub const MIB: u64 = 1024 * 1024;

fn block_spec(dir: &Path) -> PvSpec {
    parse_pv_spec(&data(&[
        ("deviceDir", dir.to_str().unwrap()),
        ("deviceNameFilter", "^disk"),
        ("volumeMode", "Block"),
    ]))
    .unwrap()
}

fn node() -> NodeFacts {
    NodeFacts {
        name: "node-a".into(),
        uid: "uid-a".into(),
        hostname: "node-a".into(),
        label_value: "node-a".into(),
        labels: Default::default(),
    }
}

fn owner() -> Owner<'static> {
    Owner {
        node_name: "node-a",
        label_value: "node-a",
    }
}

/// Scans `dir` and builds the wipe request the controller would build for
/// the PV of entry `name`.
pub fn request_for(dir: &Path, name: &str) -> WipeRequest {
    let spec = block_spec(dir);
    let scan = scan_devices(dir, &spec.device_name_filter).unwrap();
    let device = scan
        .devices
        .iter()
        .find(|d| d.name == name)
        .expect("device discovered");
    let pv = build_pv(
        &node(),
        &spec,
        device,
        &plain_pv_name("node-a", name).unwrap(),
    );
    WipeRequest::from_pv(&pv.into(), &owner()).expect("our own PV is accepted")
}

/// A directory holding a link `name` to the device.
pub fn linked(device: &LoopDevice, name: &str) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    symlink(&device.path, dir.path().join(name)).unwrap();
    dir
}

/// A loop device of `size` bytes filled with [`FILL_BYTE`], linked as
/// `disk0` in a new directory, and the wipe request for its PV.
pub fn disk0(size: u64) -> (LoopDevice, TempDir, WipeRequest) {
    let device = LoopDevice::filled(size);
    let dir = linked(&device, "disk0");
    let request = request_for(dir.path(), "disk0");
    (device, dir, request)
}

/// A blank (sparse) loop device of `size` bytes, linked as `disk0` in a
/// new directory, and the wipe request for its PV: for devices too large
/// to fill, marked where it matters with [`LoopDevice::write_at`].
pub fn sparse_disk0(size: u64) -> (LoopDevice, TempDir, WipeRequest) {
    let device = LoopDevice::sparse(size);
    let dir = linked(&device, "disk0");
    let request = request_for(dir.path(), "disk0");
    (device, dir, request)
}

/// Wipes as the controller does, never cancelled.
pub fn wipe(request: &WipeRequest) -> Result<WipeReport, WipeError> {
    wipe_device(
        request,
        ZeroMethod::WriteZeroes,
        &AtomicBool::new(false),
        &|_| {},
    )
}

/// Makes an ext4 filesystem on `device`.
pub fn mkfs_ext4(device: &LoopDevice) {
    let status = Command::new("mkfs.ext4")
        .arg("-q")
        .arg(&device.path)
        .status()
        .expect("mkfs.ext4 is installed");
    assert!(status.success());
}

/// Asserts that `result` is a refusal by `expected` and that the first MiB
/// of `device` still holds the fill byte.
pub fn assert_refused(
    result: Result<impl std::fmt::Debug, WipeError>,
    expected: Guard,
    device: &LoopDevice,
) {
    match result {
        Err(WipeError::Refused { guard, detail }) => assert_eq!(guard, expected, "{detail}"),
        other => panic!("expected refusal by {expected}, got {other:?}"),
    }
    assert!(
        device.read(0, MIB as usize).iter().all(|b| *b == FILL_BYTE),
        "nothing written"
    );
}

/// A mount that is undone on drop.
pub struct Mount(PathBuf);

impl Mount {
    pub fn new(device: &Path, at: &Path) -> Mount {
        Self::run(&[device.as_os_str(), at.as_os_str()])
    }

    /// A bind mount of the directory `from` at `at`.
    pub fn bind(from: &Path, at: &Path) -> Mount {
        Self::run(&["--bind".as_ref(), from.as_os_str(), at.as_os_str()])
    }

    fn run(args: &[&std::ffi::OsStr]) -> Mount {
        let status = Command::new("mount").args(args).status().expect("mount");
        assert!(status.success(), "mount {args:?} failed");
        Mount(PathBuf::from(args[args.len() - 1]))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
