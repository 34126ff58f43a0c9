//! Discovery and wiping on real loop devices (needs root, as in CI).

mod support;

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, symlink};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;

use local_pv_provisioner::discovery::{Scan, scan_devices};
use local_pv_provisioner::naming::plain_pv_name;
use local_pv_provisioner::pv::{NodeFacts, build_pv};
use local_pv_provisioner::spec::{PvSpec, parse_pv_spec};
use local_pv_provisioner::wipe::{Guard, Owner, TAIL_BYTES, WipeError, WipeRequest, wipe_device};
use regex::Regex;
use support::loop_device::{FILL_BYTE, LoopDevice};

const MIB: u64 = 1024 * 1024;

fn block_spec(dir: &Path) -> PvSpec {
    parse_pv_spec(
        &[
            ("deviceDir", dir.to_str().unwrap()),
            ("deviceNameFilter", "^disk"),
            ("volumeMode", "Block"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    )
    .unwrap()
}

fn node() -> NodeFacts {
    NodeFacts {
        name: "node-a".into(),
        uid: "uid-a".into(),
        hostname: "node-a".into(),
        label_value: "node-a".into(),
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
fn request_for(dir: &Path, name: &str) -> WipeRequest {
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
    WipeRequest::from_pv(&pv, &owner()).expect("our own PV is accepted")
}

/// A directory holding a link `name` to the device.
fn linked(device: &LoopDevice, name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    symlink(&device.path, dir.path().join(name)).unwrap();
    dir
}

fn names(scan: &Scan) -> (Vec<&str>, Vec<(&str, &str)>) {
    (
        scan.devices.iter().map(|d| d.name.as_str()).collect(),
        scan.problems
            .iter()
            .map(|p| (p.name.as_str(), p.reason.as_str()))
            .collect(),
    )
}

#[test]
fn discovery_takes_block_devices_and_reports_everything_else() {
    let device = LoopDevice::filled(64 * MIB + 1024);
    let dir = tempfile::tempdir().unwrap();
    symlink(&device.path, dir.path().join("disk-loop")).unwrap();
    File::create(dir.path().join("disk-file")).unwrap();
    symlink("/dev/null", dir.path().join("disk-char")).unwrap();
    symlink(dir.path().join("nowhere"), dir.path().join("disk-dangling")).unwrap();
    fs::create_dir(dir.path().join("disk-dir")).unwrap();
    symlink(&device.path, dir.path().join("other-name")).unwrap();

    let scan = scan_devices(dir.path(), &Regex::new("^disk").unwrap()).unwrap();
    let (devices, problems) = names(&scan);
    assert_eq!(devices, vec!["disk-loop"]);
    let found = &scan.devices[0];
    assert_eq!(
        found.size_bytes,
        64 * MIB + 1024,
        "exact capacity from BLKGETSIZE64"
    );
    assert_eq!(found.path, dir.path().join("disk-loop"));
    assert_eq!(found.resolved, device.path);
    assert_eq!(found.number.to_string(), device.number());
    assert_eq!(found.in_use, None);
    assert!(
        found.stable_id.as_deref().unwrap().contains("backing.img"),
        "{:?}",
        found.stable_id
    );

    let reason = |name: &str| {
        problems
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| *r)
            .unwrap_or_else(|| panic!("{name} not reported: {problems:?}"))
    };
    assert!(reason("disk-file").contains("regular file"));
    assert!(reason("disk-char").contains("character device"));
    assert!(reason("disk-dangling").contains("dangling symlink"));
    assert!(reason("disk-dir").contains("directory"));
    assert_eq!(
        problems.len(),
        4,
        "non-matching entries are ignored: {problems:?}"
    );
}

#[test]
fn two_entries_for_one_device_give_one_usable_device() {
    let device = LoopDevice::filled(8 * MIB);
    let dir = tempfile::tempdir().unwrap();
    symlink(&device.path, dir.path().join("disk-b")).unwrap();
    symlink(&device.path, dir.path().join("disk-a")).unwrap();
    let scan = scan_devices(dir.path(), &Regex::new("disk").unwrap()).unwrap();
    let (devices, problems) = names(&scan);
    assert_eq!(devices, vec!["disk-a"]);
    assert_eq!(problems.len(), 1);
    assert!(problems[0].1.contains("same device"), "{problems:?}");
}

#[test]
fn mounted_and_partitioned_devices_are_marked_in_use() {
    let mounted = LoopDevice::filled(32 * MIB);
    let status = Command::new("mkfs.ext4")
        .arg("-q")
        .arg(&mounted.path)
        .status()
        .expect("mkfs.ext4 is installed");
    assert!(status.success());
    let mount_point = tempfile::tempdir().unwrap();
    let _mount = Mount::new(&mounted.path, mount_point.path());

    let partitioned = LoopDevice::partitioned(8 * MIB);

    let dir = tempfile::tempdir().unwrap();
    symlink(&mounted.path, dir.path().join("disk-mounted")).unwrap();
    symlink(&partitioned.path, dir.path().join("disk-parted")).unwrap();
    let scan = scan_devices(dir.path(), &Regex::new("disk").unwrap()).unwrap();
    let in_use = |name: &str| {
        scan.devices
            .iter()
            .find(|d| d.name == name)
            .unwrap()
            .in_use
            .clone()
    };
    assert!(in_use("disk-mounted").unwrap().contains("mounted at"));
    assert!(in_use("disk-parted").unwrap().contains("has partitions"));
}

#[test]
fn wipe_zeroes_the_first_100_mib_and_the_last_mib_only() {
    let size = 200 * MIB;
    let device = LoopDevice::filled(size);
    let dir = linked(&device, "disk0");
    let request = request_for(dir.path(), "disk0");

    let report = wipe_device(&request, &AtomicBool::new(false)).expect("wipe succeeds");
    assert_eq!(report.regions, vec![0..100 * MIB, size - TAIL_BYTES..size]);

    let head = device.read(0, (100 * MIB) as usize);
    assert!(head.iter().all(|b| *b == 0), "head zeroed");
    let middle = device.read(100 * MIB, (size - TAIL_BYTES - 100 * MIB) as usize);
    assert!(
        middle.iter().all(|b| *b == FILL_BYTE),
        "byte 100 MiB onward is intact"
    );
    let tail = device.read(size - TAIL_BYTES, TAIL_BYTES as usize);
    assert!(tail.iter().all(|b| *b == 0), "tail zeroed");
}

#[test]
fn wipe_bytes_recorded_on_the_pv_sets_the_head() {
    let size = 64 * MIB;
    let device = LoopDevice::filled(size);
    let dir = linked(&device, "disk0");
    let mut request = request_for(dir.path(), "disk0");
    assert_eq!(request.head_bytes, 100 * MIB, "the default");
    request.head_bytes = 8 * MIB;
    wipe_device(&request, &AtomicBool::new(false)).unwrap();
    assert!(device.read(0, (8 * MIB) as usize).iter().all(|b| *b == 0));
    assert!(
        device
            .read(8 * MIB, (size - 9 * MIB) as usize)
            .iter()
            .all(|b| *b == FILL_BYTE)
    );
    assert!(
        device
            .read(size - MIB, MIB as usize)
            .iter()
            .all(|b| *b == 0)
    );
}

#[test]
fn a_device_smaller_than_the_head_is_zeroed_whole() {
    let device = LoopDevice::filled(3 * MIB + 512);
    let dir = linked(&device, "disk0");
    wipe_device(&request_for(dir.path(), "disk0"), &AtomicBool::new(false)).unwrap();
    assert!(
        device
            .read(0, (3 * MIB + 512) as usize)
            .iter()
            .all(|b| *b == 0)
    );
}

fn assert_refused(
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

#[test]
fn guard_path_inside_device_dir_refuses_other_paths() {
    let device = LoopDevice::filled(8 * MIB);
    let dir = linked(&device, "disk0");
    let request = request_for(dir.path(), "disk0");
    let cancel = AtomicBool::new(false);

    let elsewhere = tempfile::tempdir().unwrap();
    symlink(&device.path, elsewhere.path().join("disk0")).unwrap();
    let mut outside = request.clone();
    outside.path = elsewhere.path().join("disk0");
    assert_refused(
        wipe_device(&outside, &cancel),
        Guard::PathInsideDeviceDir,
        &device,
    );

    let mut dotdot = request.clone();
    dotdot.path = dir
        .path()
        .join("..")
        .join(dir.path().file_name().unwrap())
        .join("disk0");
    assert_refused(
        wipe_device(&dotdot, &cancel),
        Guard::PathInsideDeviceDir,
        &device,
    );

    // The recorded directory itself was replaced by a link to another directory.
    let moved = tempfile::tempdir().unwrap();
    let link_dir = moved.path().join("by-link");
    symlink(elsewhere.path(), &link_dir).unwrap();
    let mut relinked = request.clone();
    relinked.device_dir = link_dir.clone();
    relinked.path = link_dir.join("disk0");
    let result = wipe_device(&relinked, &cancel);
    assert!(
        result.is_ok(),
        "a directory link that stays consistent is followed: {result:?}"
    );
}

#[test]
fn guard_block_device_refuses_a_regular_file() {
    let device = LoopDevice::filled(8 * MIB);
    let dir = linked(&device, "disk0");
    let request = request_for(dir.path(), "disk0");
    fs::remove_file(dir.path().join("disk0")).unwrap();
    symlink(device.backing_file(), dir.path().join("disk0")).unwrap();
    assert_refused(
        wipe_device(&request, &AtomicBool::new(false)),
        Guard::BlockDevice,
        &device,
    );
}

#[test]
fn guard_same_device_refuses_a_changed_identity() {
    let device = LoopDevice::filled(8 * MIB);
    let dir = linked(&device, "disk0");
    let request = request_for(dir.path(), "disk0");
    let cancel = AtomicBool::new(false);

    let mut other_size = request.clone();
    other_size.size_bytes += 512;
    assert_refused(
        wipe_device(&other_size, &cancel),
        Guard::SameDevice,
        &device,
    );

    let mut other_number = request.clone();
    other_number.number.minor += 1000;
    assert_refused(
        wipe_device(&other_number, &cancel),
        Guard::SameDevice,
        &device,
    );

    // Same loop device number and size, different disk underneath.
    device.swap_backing_file();
    assert_refused(wipe_device(&request, &cancel), Guard::SameDevice, &device);
}

#[test]
fn guard_not_mounted_refuses_a_mounted_device() {
    let device = LoopDevice::filled(32 * MIB);
    assert!(
        Command::new("mkfs.ext4")
            .arg("-q")
            .arg(&device.path)
            .status()
            .unwrap()
            .success()
    );
    let dir = linked(&device, "disk0");
    let request = request_for(dir.path(), "disk0");
    let mount_point = tempfile::tempdir().unwrap();
    let mount = Mount::new(&device.path, mount_point.path());
    match wipe_device(&request, &AtomicBool::new(false)) {
        Err(WipeError::Refused {
            guard: Guard::NotMounted,
            ..
        }) => {}
        other => panic!("expected NotMounted refusal, got {other:?}"),
    }
    drop(mount);
    // The filesystem (its superblock at byte 1024) is still there: nothing was zeroed.
    assert!(
        device.read(0, MIB as usize).iter().any(|b| *b != 0),
        "nothing written"
    );
}

#[test]
fn guard_exclusive_open_refuses_a_device_claimed_elsewhere() {
    let device = LoopDevice::filled(8 * MIB);
    let dir = linked(&device, "disk0");
    let request = request_for(dir.path(), "disk0");
    let _claim = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_EXCL)
        .open(&device.path)
        .unwrap();
    assert_refused(
        wipe_device(&request, &AtomicBool::new(false)),
        Guard::ExclusiveOpen,
        &device,
    );
}

#[test]
fn guard_device_lock_refuses_while_another_process_holds_the_lock() {
    let device = LoopDevice::filled(8 * MIB);
    let dir = linked(&device, "disk0");
    let request = request_for(dir.path(), "disk0");
    let holder = File::open(&device.path).unwrap();
    let _lock =
        nix::fcntl::Flock::lock(holder, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    assert_refused(
        wipe_device(&request, &AtomicBool::new(false)),
        Guard::DeviceLock,
        &device,
    );

    let scan = scan_devices(dir.path(), &Regex::new("disk").unwrap()).unwrap();
    assert!(
        scan.devices.is_empty(),
        "discovery skips a device locked by a wipe"
    );
    assert!(
        scan.problems[0].reason.contains("locked"),
        "{:?}",
        scan.problems
    );
}

#[test]
fn cancelled_wipe_stops_before_writing_more() {
    let device = LoopDevice::filled(16 * MIB);
    let dir = linked(&device, "disk0");
    let result = wipe_device(&request_for(dir.path(), "disk0"), &AtomicBool::new(true));
    assert!(matches!(result, Err(WipeError::Cancelled)), "{result:?}");
    assert!(device.read(0, MIB as usize).iter().all(|b| *b == FILL_BYTE));
}

/// A mount that is undone on drop.
struct Mount(std::path::PathBuf);

impl Mount {
    fn new(device: &Path, at: &Path) -> Mount {
        let status = Command::new("mount")
            .arg(device)
            .arg(at)
            .status()
            .expect("mount");
        assert!(status.success(), "mount {} failed", device.display());
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
