//! The guarded wipe: the only code that opens a device for writing.
//!
//! A wipe zeroes these regions (see [`wipe_regions`], shared with the
//! probe in [`crate::device::regions`]) with the kernel's
//! `BLKZEROOUT` (offloaded to the device where it can: NVMe and SCSI
//! write-zeroes, thin LUNs, loop devices over files) or, where the device
//! does not support it, `O_DIRECT` writes; it flushes them, and reads back
//! the first and last logical block of each region to prove they are zero:
//!
//! - the *head*: the first `wipeBytes` (100 MiB by default; never less than
//!   the 1 MiB that [`crate::device::probe`] reads, so a device this program wiped
//!   always probes clean), or the whole device when it is smaller;
//! - `wipeBytes` at each of 1 GiB, 10 GiB, 100 GiB and 1000 GiB that lies
//!   inside the device, where Ceph BlueStore (19.2+) keeps copies of its
//!   bdev label (upstream 0.5 zeroes the same offsets);
//! - the *tail*: the last 1 MiB, where GPT backup headers, md 0.90/1.0
//!   superblocks and ZFS labels live.
//!
//! Regions that touch are merged. The cost is bounded by the number of
//! regions, not the device size: at most 5 × `wipeBytes` + 1 MiB.
//!
//! Before the first byte is written every [`Guard`] must pass, in this
//! order; the first that fails refuses the wipe and is reported by name:
//!
//! | guard | refuses when |
//! |---|---|
//! | [`Guard::OwnedByThisNode`] | the PV lacks our node label, or names another node |
//! | [`Guard::RecordedIdentity`] | the PV records no usable device dir, size or path |
//! | [`Guard::PathInsideDeviceDir`] | `local.path` is not an entry directly inside the recorded `deviceDir` (after resolving `..` and symlinks of the directory) |
//! | [`Guard::BlockDevice`] | the entry does not resolve to a block device |
//! | [`Guard::NotMounted`] | the device or one of its partitions is mounted (in this mount namespace) |
//! | [`Guard::NoHolders`] | another device (LVM, dm, md) holds it or a partition |
//! | [`Guard::ExclusiveOpen`] | `open(O_EXCL)` fails: the kernel knows it is in use (mounted anywhere, claimed by a driver) |
//! | [`Guard::DeviceLock`] | another process holds the device's `flock` (a second provisioner pod) |
//! | [`Guard::SameDevice`] | the opened device's `major:minor`, size or stable id differ from those recorded on the PV, or the path moved to another device while it was being opened |

use std::fmt;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use thiserror::Error;

use crate::device::blockdev::{self, AlignedBuffer};
use crate::device::regions::wipe_regions;
use crate::objects::spec::WipeMode;

/// Size of one write.
const CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// One check that must pass before a device is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Guard {
    /// The PV is labelled for this node and records this node's name.
    OwnedByThisNode,
    /// The PV records the device dir, path and size it was created from.
    RecordedIdentity,
    /// `local.path` is an entry directly inside the recorded `deviceDir`.
    PathInsideDeviceDir,
    /// The entry resolves to a block device.
    BlockDevice,
    /// Neither the device nor a partition of it is mounted.
    NotMounted,
    /// No other block device holds the device or a partition of it.
    NoHolders,
    /// The device opens with `O_EXCL`.
    ExclusiveOpen,
    /// This process holds the device's exclusive advisory lock.
    DeviceLock,
    /// The device is the one recorded on the PV.
    SameDevice,
}

impl Guard {
    /// Every guard, in the order they are checked.
    pub const ALL: [Guard; 9] = [
        Guard::OwnedByThisNode,
        Guard::RecordedIdentity,
        Guard::PathInsideDeviceDir,
        Guard::BlockDevice,
        Guard::NotMounted,
        Guard::NoHolders,
        Guard::ExclusiveOpen,
        Guard::DeviceLock,
        Guard::SameDevice,
    ];

    /// The guard's name in Events, logs and the metric label.
    pub fn name(self) -> &'static str {
        match self {
            Guard::OwnedByThisNode => "OwnedByThisNode",
            Guard::RecordedIdentity => "RecordedIdentity",
            Guard::PathInsideDeviceDir => "PathInsideDeviceDir",
            Guard::BlockDevice => "BlockDevice",
            Guard::NotMounted => "NotMounted",
            Guard::NoHolders => "NoHolders",
            Guard::ExclusiveOpen => "ExclusiveOpen",
            Guard::DeviceLock => "DeviceLock",
            Guard::SameDevice => "SameDevice",
        }
    }
}

impl fmt::Display for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a wipe did not complete. In every case the PV must be kept.
#[derive(Debug, Error)]
pub enum WipeError {
    /// A guard refused the wipe; nothing was written.
    #[error("wipe refused by guard {guard}: {detail}")]
    Refused {
        /// The guard that refused.
        guard: Guard,
        /// What it saw.
        detail: String,
    },
    /// Writing, flushing or verifying failed part-way.
    #[error("wipe failed while {step}: {source}")]
    Io {
        /// What was being done.
        step: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Shutdown was requested; the device is partly zeroed and the PV stays
    /// Released for the next run.
    #[error("wipe cancelled by shutdown")]
    Cancelled,
}

pub mod full;
mod guards;
mod request;

use guards::{check_path, check_same_device, open_exclusive};
pub use request::{Owner, WipeRequest};

fn refuse(guard: Guard, detail: impl Into<String>) -> WipeError {
    WipeError::Refused {
        guard,
        detail: detail.into(),
    }
}

/// How a wipe writes its zeros first (flag `--wipe-method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ZeroMethod {
    /// The kernel's `BLKZEROOUT` (offloaded to the device where it can;
    /// `O_DIRECT` writes where the device does not support it).
    #[value(name = "zeroout")]
    WriteZeroes,
    /// `O_DIRECT` writes from a zeroed buffer, for devices whose
    /// write-zeroes is slow or not trusted.
    #[value(name = "writes")]
    DirectWrites,
}

/// What a completed wipe did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WipeReport {
    /// The device written (resolved path).
    pub device: PathBuf,
    /// Byte ranges zeroed, in order (a full wipe: the whole device).
    pub regions: Vec<Range<u64>>,
    /// How the zeros were written.
    pub method: ZeroMethod,
    /// Time taken.
    pub elapsed: Duration,
    /// The offset a full wipe resumed from (0: it started at the beginning).
    pub resumed_from: u64,
}

/// Checks every guard, then zeroes (with `method` first), flushes and
/// verifies what the request's mode covers: the signature regions, or
/// every byte ([`full`]). `progress` hears, for a full wipe, each offset up
/// to which the device is zeroed, verified and flushed.
///
/// Blocking: run it on a blocking thread. `cancel` is checked between
/// writes so shutdown does not wait for a whole wipe.
pub fn wipe_device(
    request: &WipeRequest,
    method: ZeroMethod,
    cancel: &AtomicBool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<WipeReport, WipeError> {
    let started = Instant::now();
    let target = check_path(request)?;
    let file = open_exclusive(&target)?;
    let locked = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        refuse(
            Guard::DeviceLock,
            format!(
                "{} is locked by another process ({errno})",
                target.display()
            ),
        )
    })?;
    let size = check_same_device(request, &target, &locked)?;
    let block = blockdev::logical_block_size(&locked).map_err(|source| WipeError::Io {
        step: "reading the logical block size".into(),
        source,
    })?;
    if request.mode == WipeMode::Full {
        return full::wipe_whole(
            full::Target {
                request,
                path: target,
                file: &locked,
                size,
                block,
            },
            method,
            cancel,
            progress,
        );
    }
    let regions = wipe_regions(size, request.head_bytes, block);
    let mut buffer = None;
    let mut method = method;
    for region in &regions {
        zero_region(&locked, region.clone(), &mut method, &mut buffer, cancel)?;
    }
    locked.sync_data().map_err(|source| WipeError::Io {
        step: "flushing".into(),
        source,
    })?;
    let mut window = AlignedBuffer::zeroed(block as usize);
    for region in &regions {
        verify_zeroed(&locked, region, block, window.bytes_mut())?;
    }
    Ok(WipeReport {
        device: target,
        regions,
        method,
        elapsed: started.elapsed(),
        resumed_from: 0,
    })
}

/// Zeroes `region` with one `BLKZEROOUT` while the device supports it, else
/// with `O_DIRECT` writes of a buffer at a time (so shutdown can stop it
/// between two); a device that refuses `BLKZEROOUT` switches `method` for
/// the rest. A full wipe calls it chunk by chunk.
fn zero_region(
    file: &File,
    region: Range<u64>,
    method: &mut ZeroMethod,
    zeros: &mut Option<AlignedBuffer>,
    cancel: &AtomicBool,
) -> Result<(), WipeError> {
    let mut offset = region.start;
    while offset < region.end {
        if cancel.load(Ordering::Relaxed) {
            return Err(WipeError::Cancelled);
        }
        // One BLKZEROOUT covers the whole region (the kernel splits it as
        // the device needs); direct writes go a buffer at a time.
        let length = match *method {
            ZeroMethod::WriteZeroes => region.end - offset,
            ZeroMethod::DirectWrites => (region.end - offset).min(CHUNK_BYTES as u64),
        };
        if *method == ZeroMethod::WriteZeroes {
            match blockdev::zero_out(file, offset, length) {
                Ok(()) => {
                    offset += length;
                    continue;
                }
                Err(error) if error.kind() == io::ErrorKind::Unsupported => {
                    *method = ZeroMethod::DirectWrites;
                    continue;
                }
                Err(source) => {
                    return Err(WipeError::Io {
                        step: format!("zeroing {length} bytes at offset {offset}"),
                        source,
                    });
                }
            }
        }
        let zeros = zeros.get_or_insert_with(|| AlignedBuffer::zeroed(CHUNK_BYTES));
        file.write_all_at(&zeros.bytes_mut()[..length as usize], offset)
            .map_err(|source| WipeError::Io {
                step: format!("writing {length} bytes at offset {offset}"),
                source,
            })?;
        offset += length;
    }
    Ok(())
}

fn verify_zeroed(
    file: &File,
    region: &Range<u64>,
    block: u64,
    buffer: &mut [u8],
) -> Result<(), WipeError> {
    let block_len = block as usize;
    for offset in [region.start, region.end - block] {
        let window = &mut buffer[..block_len];
        file.read_exact_at(window, offset)
            .map_err(|source| WipeError::Io {
                step: format!("reading back offset {offset}"),
                source,
            })?;
        if window.iter().any(|byte| *byte != 0) {
            return Err(WipeError::Io {
                step: format!("verifying offset {offset}"),
                source: io::Error::other("the block read back is not zero"),
            });
        }
        window.fill(0);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
