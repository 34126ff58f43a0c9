//! Incremental discovery on real devices: what was learnt about a usable
//! device is kept, so a scan with nothing changed reads no device, a changed
//! entry is read again, and a device locked by a wipe is looked at again on
//! the next scan even though its entry did not change.

use std::os::unix::fs::symlink;

use local_pv_provisioner::discover::cache::{Changes, DeviceCache};
use nix::fcntl::{Flock, FlockArg};
use regex::Regex;

use crate::fixture::MIB;
use crate::support::loop_device::LoopDevice;

fn names(list: &[&str]) -> Changes {
    Changes::Entries(list.iter().map(std::ffi::OsString::from).collect())
}

#[test]
fn usable_devices_are_not_read_again_until_their_entry_changes() {
    let first = LoopDevice::sparse(8 * MIB);
    let second = LoopDevice::sparse(8 * MIB);
    let dir = tempfile::tempdir().unwrap();
    symlink(&first.path, dir.path().join("disk0")).unwrap();
    let filter = Regex::new("^disk").unwrap();
    let mut cache = DeviceCache::default();
    let scan = cache.scan(dir.path(), &filter, Changes::None).unwrap();
    assert_eq!((scan.devices.len(), cache.last_inspected), (1, 1));
    let scan = cache.scan(dir.path(), &filter, Changes::None).unwrap();
    assert_eq!(scan.devices.len(), 1);
    assert_eq!(cache.last_inspected, 0, "nothing changed: no device read");
    symlink(&second.path, dir.path().join("disk1")).unwrap();
    let scan = cache.scan(dir.path(), &filter, names(&["disk1"])).unwrap();
    assert_eq!(
        (scan.devices.len(), cache.last_inspected),
        (2, 1),
        "only the new entry read"
    );
    assert!(cache.leads_to_block_device("disk0"));
}

#[test]
fn a_device_locked_by_a_wipe_is_looked_at_again_without_an_entry_change() {
    let device = LoopDevice::sparse(8 * MIB);
    let dir = tempfile::tempdir().unwrap();
    symlink(&device.path, dir.path().join("disk0")).unwrap();
    let filter = Regex::new("^disk").unwrap();
    let mut cache = DeviceCache::default();
    let lock = Flock::lock(
        std::fs::File::open(&device.path).unwrap(),
        FlockArg::LockExclusiveNonblock,
    )
    .expect("the wipe's lock");
    let scan = cache.scan(dir.path(), &filter, Changes::None).unwrap();
    assert!(
        scan.problems[0].reason.contains("locked by a wipe"),
        "{scan:?}"
    );
    assert!(cache.leads_to_block_device("disk0"), "locked, not missing");
    drop(lock);
    let scan = cache.scan(dir.path(), &filter, Changes::None).unwrap();
    assert_eq!(
        scan.devices.len(),
        1,
        "usable once the wipe let go: {scan:?}"
    );
}
