//! Discovery: a scan takes the block devices among the matching entries and
//! reports every other entry with its reason, gives a device named twice
//! once, and marks mounted and partitioned devices in use.

use std::fs::{self, File};
use std::os::unix::fs::symlink;

use local_pv_provisioner::discover::devices::{Scan, scan_devices};
use regex::Regex;

use crate::fixture::{MIB, Mount, mkfs_ext4};
use crate::support::loop_device::LoopDevice;

/// The names of the devices found, and of the problems with their reasons.
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
    mkfs_ext4(&mounted);
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
