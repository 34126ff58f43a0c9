//! The wipe guards that can be provoked on this machine, each refusing
//! before a byte is written: `PathInsideDeviceDir`, `BlockDevice`,
//! `SameDevice`, `NotMounted`, `ExclusiveOpen` and `DeviceLock` (which
//! discovery honours too).

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, symlink};

use local_pv_provisioner::device::wipe::{Guard, WipeError};
use local_pv_provisioner::discover::devices::scan_devices;
use regex::Regex;

use crate::fixture::{MIB, Mount, assert_refused, disk0, linked, mkfs_ext4, request_for, wipe};
use crate::support::loop_device::LoopDevice;

#[test]
fn guard_path_inside_device_dir_refuses_other_paths() {
    let (device, dir, request) = disk0(8 * MIB);

    let elsewhere = tempfile::tempdir().unwrap();
    symlink(&device.path, elsewhere.path().join("disk0")).unwrap();
    let mut outside = request.clone();
    outside.path = elsewhere.path().join("disk0");
    assert_refused(wipe(&outside), Guard::PathInsideDeviceDir, &device);

    let mut dotdot = request.clone();
    dotdot.path = dir
        .path()
        .join("..")
        .join(dir.path().file_name().unwrap())
        .join("disk0");
    assert_refused(wipe(&dotdot), Guard::PathInsideDeviceDir, &device);

    // The recorded directory itself was replaced by a link to another directory.
    let moved = tempfile::tempdir().unwrap();
    let link_dir = moved.path().join("by-link");
    symlink(elsewhere.path(), &link_dir).unwrap();
    let mut relinked = request.clone();
    relinked.device_dir = link_dir.clone();
    relinked.path = link_dir.join("disk0");
    let result = wipe(&relinked);
    assert!(
        result.is_ok(),
        "a directory link that stays consistent is followed: {result:?}"
    );
}

#[test]
fn guard_block_device_refuses_a_regular_file() {
    let (device, dir, request) = disk0(8 * MIB);
    fs::remove_file(dir.path().join("disk0")).unwrap();
    symlink(device.backing_file(), dir.path().join("disk0")).unwrap();
    assert_refused(wipe(&request), Guard::BlockDevice, &device);
}

#[test]
fn guard_same_device_refuses_a_changed_identity() {
    let (device, _dir, request) = disk0(8 * MIB);

    let mut other_size = request.clone();
    other_size.size_bytes += 512;
    assert_refused(wipe(&other_size), Guard::SameDevice, &device);

    let mut other_number = request.clone();
    other_number.number.minor += 1000;
    assert_refused(wipe(&other_number), Guard::SameDevice, &device);

    // Same loop device number and size, different disk underneath.
    device.swap_backing_file();
    assert_refused(wipe(&request), Guard::SameDevice, &device);
}

#[test]
fn guard_not_mounted_refuses_a_mounted_device() {
    let device = LoopDevice::filled(32 * MIB);
    mkfs_ext4(&device);
    let dir = linked(&device, "disk0");
    let request = request_for(dir.path(), "disk0");
    let mount_point = tempfile::tempdir().unwrap();
    let mount = Mount::new(&device.path, mount_point.path());
    match wipe(&request) {
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
    let (device, _dir, request) = disk0(8 * MIB);
    let _claim = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_EXCL)
        .open(&device.path)
        .unwrap();
    assert_refused(wipe(&request), Guard::ExclusiveOpen, &device);
}

#[test]
fn guard_device_lock_refuses_while_another_process_holds_the_lock() {
    let (device, dir, request) = disk0(8 * MIB);
    let holder = File::open(&device.path).unwrap();
    let _lock =
        nix::fcntl::Flock::lock(holder, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    assert_refused(wipe(&request), Guard::DeviceLock, &device);

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
