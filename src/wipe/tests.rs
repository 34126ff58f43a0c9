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
fn head_is_rounded_up_to_whole_blocks() {
    assert_eq!(
        wipe_regions(64 * MIB, 1000, 4096),
        vec![0..4096, 63 * MIB..64 * MIB]
    );
}

#[test]
fn aligned_buffer_is_aligned_and_zero() {
    let mut buffer = AlignedZeros::new(3 * 4096);
    let slice = buffer.as_mut();
    assert_eq!(slice.as_ptr() as usize % DIRECT_IO_ALIGN, 0);
    assert_eq!(slice.len(), 3 * 4096);
    assert!(slice.iter().all(|b| *b == 0));
}

#[test]
fn guard_names_are_distinct() {
    let names: std::collections::HashSet<_> = Guard::ALL.iter().map(|g| g.name()).collect();
    assert_eq!(names.len(), Guard::ALL.len());
}
