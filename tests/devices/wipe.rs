//! Wiping: the head (`wipeBytes`, 100 MiB by default, at least 1 MiB, or
//! the whole of a smaller device), `wipeBytes` at each Ceph BlueStore label
//! offset inside the device (1, 10, 100 and 1000 GiB) and the last MiB are
//! zeroed and nothing else; a cancelled wipe writes nothing more.

use std::sync::atomic::AtomicBool;

use local_pv_provisioner::device::regions::TAIL_BYTES;
use local_pv_provisioner::device::wipe::{WipeError, ZeroMethod, wipe_device};

use crate::fixture::{MIB, disk0, sparse_disk0, wipe};
use crate::support::loop_device::FILL_BYTE;

#[test]
fn wipe_zeroes_the_first_100_mib_and_the_last_mib_only() {
    let size = 200 * MIB;
    let (device, _dir, request) = disk0(size);

    let report = wipe(&request).expect("wipe succeeds");
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
    let (device, _dir, mut request) = disk0(size);
    assert_eq!(request.head_bytes, 100 * MIB, "the default");
    request.head_bytes = 8 * MIB;
    wipe(&request).unwrap();
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
fn a_head_under_a_mib_is_raised_to_the_mib_a_probe_reads() {
    let size = 8 * MIB;
    let (device, _dir, mut request) = disk0(size);
    request.head_bytes = 4096;
    let report = wipe(&request).unwrap();
    assert_eq!(report.regions, vec![0..MIB, size - TAIL_BYTES..size]);
    assert!(device.read(0, MIB as usize).iter().all(|b| *b == 0));
    assert!(
        device
            .read(MIB, (size - 2 * MIB) as usize)
            .iter()
            .all(|b| *b == FILL_BYTE),
        "byte 1 MiB onward intact"
    );
}

const GIB: u64 = 1024 * MIB;

#[test]
fn the_ceph_label_copies_inside_the_device_are_zeroed_too() {
    // 11 GiB and 4 MiB, sparse: label copies at 1 GiB and 10 GiB lie inside.
    let size = 11 * GIB + 4 * MIB;
    let (device, _dir, request) = sparse_disk0(size);
    let head = 100 * MIB;
    let regions = [
        0..head,
        GIB..GIB + head,
        10 * GIB..10 * GIB + head,
        size - TAIL_BYTES..size,
    ];
    let marker = [FILL_BYTE; 4096];
    for region in &regions {
        for offset in [region.start, region.end - 4096, region.end] {
            if offset + 4096 <= size {
                device.write_at(offset, &marker);
            }
        }
    }
    device.write_at(GIB - 4096, &marker);
    device.write_at(5 * GIB, &marker);

    let report = wipe(&request).expect("wipe succeeds");
    assert_eq!(report.regions, regions.to_vec());
    let zero = |offset: u64| device.read(offset, 4096).iter().all(|b| *b == 0);
    let kept = |offset: u64| device.read(offset, 4096).iter().all(|b| *b == FILL_BYTE);
    for region in &regions {
        assert!(
            zero(region.start) && zero(region.end - 4096),
            "{region:?} zeroed"
        );
    }
    for offset in [head, GIB - 4096, GIB + head, 5 * GIB, 10 * GIB + head] {
        assert!(kept(offset), "byte {offset} outside the regions is intact");
    }
}

#[test]
fn a_device_smaller_than_the_head_is_zeroed_whole() {
    let (device, _dir, request) = disk0(3 * MIB + 512);
    wipe(&request).unwrap();
    assert!(
        device
            .read(0, (3 * MIB + 512) as usize)
            .iter()
            .all(|b| *b == 0)
    );
}

#[test]
fn cancelled_wipe_stops_before_writing_more() {
    let (device, _dir, request) = disk0(16 * MIB);
    let result = wipe_device(
        &request,
        ZeroMethod::WriteZeroes,
        &AtomicBool::new(true),
        &|_| {},
    );
    assert!(matches!(result, Err(WipeError::Cancelled)), "{result:?}");
    assert!(device.read(0, MIB as usize).iter().all(|b| *b == FILL_BYTE));
}
