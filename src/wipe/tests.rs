//! Unit tests of the wipe's regions and buffer.
#![allow(clippy::single_range_in_vec_init)] // expected region lists may hold just one range

use super::*;

const MIB: u64 = 1024 * 1024;

#[test]
fn regions_for_a_large_device_are_head_and_tail() {
    assert_eq!(
        wipe_regions(1024 * MIB, DEFAULT_HEAD_BYTES, 512),
        vec![0..100 * MIB, 1023 * MIB..1024 * MIB]
    );
}

#[test]
fn small_devices_are_zeroed_whole() {
    assert_eq!(
        wipe_regions(50 * MIB, DEFAULT_HEAD_BYTES, 4096),
        vec![0..50 * MIB]
    );
    assert_eq!(
        wipe_regions(101 * MIB, DEFAULT_HEAD_BYTES, 4096),
        vec![0..101 * MIB]
    );
    assert_eq!(
        wipe_regions(512 * 3, DEFAULT_HEAD_BYTES, 512),
        vec![0..512 * 3]
    );
}

#[test]
fn the_head_is_never_less_than_what_the_probe_reads() {
    assert_eq!(
        wipe_regions(64 * MIB, 4096, 4096),
        vec![0..MIB, 63 * MIB..64 * MIB]
    );
}

#[test]
fn head_is_rounded_up_to_whole_blocks() {
    assert_eq!(
        wipe_regions(64 * MIB, 3 * MIB + 1000, 4096),
        vec![0..3 * MIB + 4096, 63 * MIB..64 * MIB]
    );
}

#[test]
fn ceph_label_copies_inside_the_device_are_zeroed_too() {
    const GIB: u64 = 1024 * MIB;
    let head = DEFAULT_HEAD_BYTES;
    assert_eq!(
        wipe_regions(12 * GIB, head, 4096),
        vec![
            0..head,
            GIB..GIB + head,
            10 * GIB..10 * GIB + head,
            12 * GIB - MIB..12 * GIB
        ]
    );
    let huge = 2000 * GIB;
    let regions = wipe_regions(huge, head, 4096);
    assert_eq!(regions.len(), 6, "head, four copies, tail: {regions:?}");
    let written: u64 = regions.iter().map(|r| r.end - r.start).sum();
    assert_eq!(
        written,
        5 * head + MIB,
        "bounded by the regions, not the size"
    );
}

#[test]
fn a_copy_at_the_end_of_the_device_merges_with_the_tail() {
    const GIB: u64 = 1024 * MIB;
    assert_eq!(
        wipe_regions(GIB + 50 * MIB, DEFAULT_HEAD_BYTES, 4096),
        vec![0..100 * MIB, GIB..GIB + 50 * MIB]
    );
}

#[test]
fn guard_names_are_distinct() {
    let names: std::collections::HashSet<_> = Guard::ALL.iter().map(|g| g.name()).collect();
    assert_eq!(names.len(), Guard::ALL.len());
}
