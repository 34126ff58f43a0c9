//! The regions of a device that hold data and on-disk signatures, in one
//! place for the two that must agree on them: the probe before a first
//! offer reads them ([`probe_regions`]) and every wipe zeroes at least them
//! ([`wipe_regions`]), so a device this program wiped always probes clean.
//!
//! - the *head*: where filesystems, partition tables, LVM, LUKS and Ceph
//!   keep their first superblock or label;
//! - the copies of the Ceph BlueStore (19.2+) bdev label at 1, 10, 100 and
//!   1000 GiB ([`CEPH_LABEL_OFFSETS`]; upstream 0.5 zeroes the same
//!   offsets);
//! - the *tail*: the last MiB, where GPT backup headers, md 0.90/1.0
//!   superblocks and ZFS labels live.

use std::ops::Range;

use crate::device::blockdev;

/// Bytes the probe reads at the head, the fewest a wipe zeroes there and at
/// each Ceph label offset.
pub const HEAD_BYTES: u64 = 1024 * 1024;
/// Bytes zeroed at the head when the PV records no `wipeBytes`: 100 MiB, as upstream.
pub const DEFAULT_HEAD_BYTES: u64 = crate::objects::spec::DEFAULT_WIPE_BYTES;
/// Bytes read and zeroed at the tail.
pub const TAIL_BYTES: u64 = 1024 * 1024;
/// Bytes the probe reads at each Ceph label offset.
pub const LABEL_COPY_BYTES: u64 = 4096;
/// Offsets of the copies of the Ceph BlueStore bdev label besides offset 0.
pub const CEPH_LABEL_OFFSETS: [u64; 4] = [1 << 30, 10 << 30, 100 << 30, 1000 << 30];

/// The regions a probe reads on a device of `size` bytes, sorted, merged.
pub fn probe_regions(size: u64) -> Vec<Range<u64>> {
    let head = 0..HEAD_BYTES.min(size);
    let mut regions: Vec<Range<u64>> = vec![head];
    for offset in CEPH_LABEL_OFFSETS.into_iter().filter(|o| *o < size) {
        regions.push(offset..(offset + LABEL_COPY_BYTES).min(size));
    }
    // Aligned for O_DIRECT, whatever the device's size.
    let align = blockdev::DIRECT_IO_ALIGN as u64;
    let tail_start = size.saturating_sub(TAIL_BYTES) / align * align;
    match regions.last_mut() {
        Some(last) if tail_start <= last.end => last.end = size,
        _ => regions.push(tail_start..size),
    }
    regions
}

/// The byte ranges a wipe zeroes on a device of `size` bytes, sorted: the
/// head (`head_bytes`, at least [`HEAD_BYTES`]), the same length at
/// each of [`CEPH_LABEL_OFFSETS`] inside the device, and the last
/// [`TAIL_BYTES`], merged where they touch. Ends are rounded to whole
/// logical blocks of `block` bytes and never pass the device's end.
pub fn wipe_regions(size: u64, head_bytes: u64, block: u64) -> Vec<Range<u64>> {
    let round_up = |n: u64| n.div_ceil(block) * block;
    let length = round_up(head_bytes.max(HEAD_BYTES));
    let mut starts: Vec<Range<u64>> = std::iter::once(0)
        .chain(
            CEPH_LABEL_OFFSETS
                .into_iter()
                .filter(|offset| *offset < size),
        )
        .map(|start| start..start.saturating_add(length).min(size))
        .collect();
    starts.push(size.saturating_sub(TAIL_BYTES) / block * block..size);
    starts.sort_by_key(|range| range.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(starts.len());
    for range in starts {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    #![allow(clippy::single_range_in_vec_init)] // expected region lists may hold just one range

    use super::*;

    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * MIB;

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
        assert_eq!(
            wipe_regions(GIB + 50 * MIB, DEFAULT_HEAD_BYTES, 4096),
            vec![0..100 * MIB, GIB..GIB + 50 * MIB]
        );
    }

    #[test]
    fn regions_are_the_head_the_tail_and_the_ceph_label_copies() {
        assert_eq!(probe_regions(MIB / 2), vec![0..MIB / 2]);
        assert_eq!(probe_regions(3 * MIB), vec![0..MIB, 2 * MIB..3 * MIB]);
        assert_eq!(
            probe_regions(12 * GIB),
            vec![
                0..MIB,
                GIB..GIB + 4096,
                10 * GIB..10 * GIB + 4096,
                12 * GIB - MIB..12 * GIB
            ]
        );
        let read: u64 = probe_regions(2000 * GIB)
            .iter()
            .map(|r| r.end - r.start)
            .sum();
        assert_eq!(read, 2 * MIB + 4 * 4096, "bounded whatever the size");
    }
}
