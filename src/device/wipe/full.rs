//! The full wipe (`wipeMode: Full`): every byte of the device zeroed, in
//! chunks, after every guard of the signature wipe passed.
//!
//! - **Zeroing:** each chunk with `BLKZEROOUT` (the kernel offloads it as
//!   Write Zeroes or unmap where the device can), else `O_DIRECT` writes.
//! - **Verification:** after each chunk, two of its blocks are read back
//!   (its first block and one at an offset that differs from chunk to
//!   chunk); at the end, every region the probe before a first offer reads
//!   is read back whole (the first and last MiB, and the Ceph label copies:
//!   [`probe_regions`]), so a device this program wiped always probes
//!   clean. Any non-zero byte fails the wipe.
//! - **Progress:** at most once a second, the device is flushed and the
//!   offset up to which every byte is zeroed, verified and flushed is
//!   reported. Only a flushed offset is ever reported, so a restart that
//!   resumes from the last reported offset (`resume_from`) never skips a
//!   byte; it starts at the chunk boundary at or below that offset.
//! - **Loss of the device:** at every report the recorded path must still
//!   lead to the same device number; a device that went missing or changed
//!   stops the wipe (guard `SameDevice`), and a write error stops it too.
//! - **Bandwidth:** with `wipeBandwidth`, the wipe sleeps between chunks so
//!   that it never writes faster than the limit on average, and chunks are
//!   small enough (about a second's worth) to keep the rate even. Without
//!   a limit, a chunk that took less than [`FAST_CHUNK`] doubles the next
//!   one (up to [`MAX_CHUNK_BYTES`]), so a device that zeroes fast (write
//!   zeroes offloaded, thin provisioning) is not slowed by many small
//!   requests.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{Guard, WipeError, WipeReport, WipeRequest, ZeroMethod, refuse, zero_region};
use crate::device::blockdev::{self, AlignedBuffer};
use crate::device::regions::probe_regions;

/// Bytes zeroed by the first chunk without a bandwidth limit.
pub const CHUNK_BYTES: u64 = 64 << 20;
/// The largest chunk a fast device grows to.
pub const MAX_CHUNK_BYTES: u64 = 1 << 30;
/// A chunk zeroed faster than this doubles the next one (no bandwidth limit).
pub const FAST_CHUNK: Duration = Duration::from_millis(100);
/// The smallest chunk (a bandwidth limit makes chunks of about a second).
const MIN_CHUNK_BYTES: u64 = 1 << 20;
/// Least time between two progress reports (each one flushes the device).
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// The device a full wipe writes, opened and checked by every guard.
pub struct Target<'a> {
    /// What the PV recorded.
    pub request: &'a WipeRequest,
    /// The resolved device path.
    pub path: PathBuf,
    /// The device, opened exclusively and locked.
    pub file: &'a File,
    /// Its size, equal to the recorded one.
    pub size: u64,
    /// Its logical block size.
    pub block: u64,
}

/// The chunk size for a device written at most `bandwidth` bytes a second.
pub fn chunk_bytes(bandwidth: Option<u64>, block: u64) -> u64 {
    let chunk = bandwidth.map_or(CHUNK_BYTES, |rate| rate.clamp(MIN_CHUNK_BYTES, CHUNK_BYTES));
    (chunk / block).max(1) * block
}

/// Where a restarted wipe starts: the chunk boundary at or below the
/// recorded offset (never above it), 0 for an offset past the device.
pub fn resume_offset(recorded: u64, size: u64, chunk: u64) -> u64 {
    if recorded > size {
        return 0;
    }
    recorded / chunk * chunk
}

/// Zeroes, verifies and flushes every byte of `target` from the request's
/// resume offset on, reporting progress; see the module documentation.
pub fn wipe_whole(
    target: Target<'_>,
    method: ZeroMethod,
    cancel: &AtomicBool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<WipeReport, WipeError> {
    let started = Instant::now();
    let Target {
        request,
        path,
        file,
        size,
        block,
    } = target;
    let mut chunk = chunk_bytes(request.bandwidth, block);
    let resumed_from = resume_offset(request.resume_from, size, chunk);
    let mut method = method;
    let mut zeros = None;
    let mut window = AlignedBuffer::zeroed(block as usize);
    let mut offset = resumed_from;
    let mut last_report = Instant::now();
    let throttle_start = Instant::now();
    while offset < size {
        let end = (offset + chunk).min(size);
        let zeroing = Instant::now();
        zero_region(file, offset..end, &mut method, &mut zeros, cancel)?;
        if request.bandwidth.is_none() && zeroing.elapsed() < FAST_CHUNK {
            chunk = (chunk * 2).min(MAX_CHUNK_BYTES);
        }
        verify_sample(file, offset..end, block, window.bytes_mut())?;
        offset = end;
        if let Some(rate) = request.bandwidth {
            throttle(offset - resumed_from, rate, throttle_start, cancel)?;
        }
        if last_report.elapsed() >= REPORT_EVERY || offset == size {
            flush(file)?;
            still_there(request)?;
            progress(offset);
            last_report = Instant::now();
        }
    }
    flush(file)?;
    verify_probed_regions(file, size)?;
    Ok(WipeReport {
        device: path,
        regions: std::iter::once(0..size).collect(),
        method,
        elapsed: started.elapsed(),
        resumed_from,
    })
}

fn flush(file: &File) -> Result<(), WipeError> {
    file.sync_data().map_err(|source| WipeError::Io {
        step: "flushing".into(),
        source,
    })
}

/// Guard [`Guard::SameDevice`] again, mid-wipe: the recorded path still
/// leads to the recorded device.
fn still_there(request: &WipeRequest) -> Result<(), WipeError> {
    let number = std::fs::metadata(&request.path)
        .ok()
        .and_then(|metadata| blockdev::block_device_number(&metadata));
    match number {
        Some(number) if number == request.number => Ok(()),
        Some(number) => Err(refuse(
            Guard::SameDevice,
            format!(
                "{} now leads to device {number}, not {} (changed mid-wipe); the wipe stopped",
                request.path.display(),
                request.number
            ),
        )),
        None => Err(refuse(
            Guard::SameDevice,
            format!(
                "{} no longer leads to a block device (went missing mid-wipe); the wipe stopped",
                request.path.display()
            ),
        )),
    }
}

/// Sleeps so that `written` bytes since `since` stay at or under `rate`
/// bytes a second, waking for `cancel`.
fn throttle(written: u64, rate: u64, since: Instant, cancel: &AtomicBool) -> Result<(), WipeError> {
    let due = Duration::from_secs_f64(written as f64 / rate as f64);
    while since.elapsed() < due {
        if cancel.load(Ordering::Relaxed) {
            return Err(WipeError::Cancelled);
        }
        std::thread::sleep((due - since.elapsed()).min(Duration::from_millis(100)));
    }
    Ok(())
}

/// Reads back the first block of `chunk` and one more whose place differs
/// from chunk to chunk.
fn verify_sample(
    file: &File,
    chunk: Range<u64>,
    block: u64,
    window: &mut [u8],
) -> Result<(), WipeError> {
    let blocks = (chunk.end - chunk.start) / block;
    // A multiplicative hash of the chunk's start spreads the samples.
    let pick = chunk.start.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    let sampled = chunk.start + (pick % blocks.max(1)) * block;
    for offset in [chunk.start, sampled] {
        check_zero(file, offset, &mut window[..block as usize])?;
    }
    Ok(())
}

/// Reads back, whole, every region the probe reads.
fn verify_probed_regions(file: &File, size: u64) -> Result<(), WipeError> {
    let mut window = AlignedBuffer::zeroed(MIN_CHUNK_BYTES as usize);
    for region in probe_regions(size) {
        let mut offset = region.start;
        while offset < region.end {
            let length = (region.end - offset).min(MIN_CHUNK_BYTES);
            // O_DIRECT reads whole blocks: a region's end is block-aligned
            // (the device's size is a whole number of blocks).
            check_zero(file, offset, &mut window.bytes_mut()[..length as usize])?;
            offset += length;
        }
    }
    Ok(())
}

fn check_zero(file: &File, offset: u64, window: &mut [u8]) -> Result<(), WipeError> {
    file.read_exact_at(window, offset)
        .map_err(|source| WipeError::Io {
            step: format!("reading back offset {offset}"),
            source,
        })?;
    if window.iter().any(|byte| *byte != 0) {
        return Err(WipeError::Io {
            step: format!("verifying offset {offset}"),
            source: std::io::Error::other("the bytes read back are not zero"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_follow_the_bandwidth_within_bounds_and_whole_blocks() {
        assert_eq!(chunk_bytes(None, 512), CHUNK_BYTES);
        assert_eq!(chunk_bytes(Some(10 << 20), 4096), 10 << 20);
        assert_eq!(chunk_bytes(Some(1 << 30), 4096), CHUNK_BYTES);
        assert_eq!(chunk_bytes(Some((3 << 20) + 100), 4096), 3 << 20);
    }

    #[test]
    fn a_restart_resumes_at_or_below_the_recorded_offset() {
        let chunk = 64 << 20;
        assert_eq!(resume_offset(0, 256 << 20, chunk), 0);
        assert_eq!(resume_offset((100 << 20) + 7, 256 << 20, chunk), 64 << 20);
        assert_eq!(resume_offset(128 << 20, 256 << 20, chunk), 128 << 20);
        assert_eq!(resume_offset(256 << 20, 256 << 20, chunk), 256 << 20);
        assert_eq!(
            resume_offset(300 << 20, 256 << 20, chunk),
            0,
            "past the end: start over"
        );
    }
}
