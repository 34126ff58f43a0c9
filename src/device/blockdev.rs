//! Kernel facts about block devices, shared by discovery and wiping:
//! device numbers, exact sizes (`BLKGETSIZE64`), logical block sizes, and
//! whether a device is in use (mounted, held by another device, or split
//! into partitions), read from `/proc/self/mountinfo` and `/sys/dev/block`.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The block-device ioctls used here, kept private to this module.
mod ioctl {
    nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
    nix::ioctl_read_bad!(blksszget, 0x1268, std::ffi::c_int);
    nix::ioctl_write_ptr_bad!(blkzeroout, nix::request_code_none!(0x12, 127), [u64; 2]);
}

/// A block device's `major:minor` number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceNumber {
    /// Major number (driver).
    pub major: u32,
    /// Minor number (instance).
    pub minor: u32,
}

impl DeviceNumber {
    /// Splits a raw `dev_t`.
    pub fn from_raw(raw: u64) -> Self {
        DeviceNumber {
            major: nix::sys::stat::major(raw) as u32,
            minor: nix::sys::stat::minor(raw) as u32,
        }
    }

    /// The device's directory in sysfs.
    pub fn sysfs_dir(self) -> PathBuf {
        PathBuf::from(format!("/sys/dev/block/{}:{}", self.major, self.minor))
    }
}

impl fmt::Display for DeviceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl FromStr for DeviceNumber {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (major, minor) = text
            .split_once(':')
            .ok_or_else(|| format!("{text:?} is not major:minor"))?;
        Ok(DeviceNumber {
            major: major
                .parse()
                .map_err(|_| format!("{text:?} is not major:minor"))?,
            minor: minor
                .parse()
                .map_err(|_| format!("{text:?} is not major:minor"))?,
        })
    }
}

/// The device number of `metadata` when it describes a block device.
pub fn block_device_number(metadata: &fs::Metadata) -> Option<DeviceNumber> {
    metadata
        .file_type()
        .is_block_device()
        .then(|| DeviceNumber::from_raw(metadata.rdev()))
}

/// Opens a device read-only without side effects (no exclusive claim, no
/// waiting for removable media).
pub fn open_read_only(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_CLOEXEC | nix::libc::O_NONBLOCK)
        .open(path)
}

/// Exact size in bytes, from the `BLKGETSIZE64` ioctl (never `fstat`, which
/// reports 0 for block devices).
pub fn size_in_bytes(device: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which is valid.
    unsafe { ioctl::blkgetsize64(device.as_raw_fd(), &mut size) }.map_err(io::Error::from)?;
    Ok(size)
}

/// Logical block size in bytes (`BLKSSZGET`): the alignment `O_DIRECT` needs.
pub fn logical_block_size(device: &File) -> io::Result<u64> {
    let mut size: std::ffi::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which is valid.
    unsafe { ioctl::blksszget(device.as_raw_fd(), &mut size) }.map_err(io::Error::from)?;
    u64::try_from(size)
        .ok()
        .filter(|size| *size > 0)
        .ok_or_else(|| io::Error::other(format!("kernel reported logical block size {size}")))
}

/// Asks the kernel to zero `length` bytes at `offset` (`BLKZEROOUT`): the
/// device does it itself where it can (NVMe and SCSI write-zeroes, thin
/// LUNs, loop devices over files), else the kernel writes the zeros. The
/// range must be whole logical blocks. An error of kind `Unsupported`
/// means the device cannot do it: write the zeros instead.
pub fn zero_out(device: &File, offset: u64, length: u64) -> io::Result<()> {
    let range = [offset, length];
    // SAFETY: BLKZEROOUT reads two u64 through the pointer, which is valid.
    match unsafe { ioctl::blkzeroout(device.as_raw_fd(), &range) } {
        Ok(_) => Ok(()),
        Err(errno @ (nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::ENOTTY)) => {
            Err(io::Error::new(io::ErrorKind::Unsupported, errno.desc()))
        }
        Err(errno) => Err(io::Error::from(errno)),
    }
}

/// The mounts visible to this process, by device number.
#[derive(Debug, Clone, Default)]
pub struct MountTable {
    mount_points: HashMap<DeviceNumber, String>,
}

impl MountTable {
    /// Reads `/proc/self/mountinfo`. In a container this is the container's
    /// mount namespace: mounts made only on the host are not listed, which
    /// is why the wipe also opens the device with `O_EXCL`.
    pub fn read() -> io::Result<Self> {
        Ok(Self::parse(&fs::read_to_string("/proc/self/mountinfo")?))
    }

    /// Parses mountinfo text (field 3 is `major:minor`, field 5 the mount point).
    pub fn parse(text: &str) -> Self {
        let mount_points = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let device = fields.nth(2)?.parse().ok()?;
                let mount_point = fields.nth(1)?.to_string();
                Some((device, mount_point))
            })
            .collect();
        MountTable { mount_points }
    }

    /// Where the device is mounted, if it is.
    pub fn mount_point(&self, device: DeviceNumber) -> Option<&str> {
        self.mount_points.get(&device).map(String::as_str)
    }
}

/// Why a block device is busy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Busy {
    /// The device (or one of its partitions) is mounted.
    Mounted {
        /// The device or partition name.
        what: String,
        /// Where it is mounted.
        mount_point: String,
    },
    /// Another block device (LVM, device mapper, md, bcache) holds it or one of its partitions.
    Held {
        /// The device or partition name.
        what: String,
        /// The holders' names.
        holders: Vec<String>,
    },
    /// The disk is split into partitions.
    Partitioned {
        /// The partitions' names.
        partitions: Vec<String>,
    },
}

impl fmt::Display for Busy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Busy::Mounted { what, mount_point } => write!(f, "{what} is mounted at {mount_point}"),
            Busy::Held { what, holders } => write!(f, "{what} is held by {}", holders.join(", ")),
            Busy::Partitioned { partitions } => {
                write!(f, "has partitions {}", partitions.join(", "))
            }
        }
    }
}

/// Whether a device's partitions count as use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitions {
    /// A partitioned disk is busy: discovery never hands one out.
    CountAsUse,
    /// Partitions are fine unless one is mounted or held: the wipe erases a
    /// partition table that a pod wrote.
    AllowUnused,
}

/// Whether a device is busy — mounted, held by another device, or
/// partitioned when `partitions` says so — judged from the mount table and
/// sysfs; `Ok(None)` when it looks free. Fails closed: when sysfs cannot be
/// read, the answer is an error, never "free".
pub fn busy(
    device: DeviceNumber,
    mounts: &MountTable,
    partitions: Partitions,
) -> io::Result<Option<Busy>> {
    let sysfs = device.sysfs_dir();
    if let Some(busy) = mounted_or_held("the device", device, &sysfs, mounts)? {
        return Ok(Some(busy));
    }
    let mut children = Vec::new();
    for child in directory_names(&sysfs)? {
        if sysfs.join(&child).join("partition").exists() {
            children.push(child);
        }
    }
    for child in &children {
        let child_dir = sysfs.join(child);
        let child_number = fs::read_to_string(child_dir.join("dev"))
            .ok()
            .and_then(|text| text.trim().parse().ok());
        if let Some(number) = child_number
            && let Some(busy) =
                mounted_or_held(&format!("partition {child}"), number, &child_dir, mounts)?
        {
            return Ok(Some(busy));
        }
    }
    if partitions == Partitions::CountAsUse && !children.is_empty() {
        return Ok(Some(Busy::Partitioned {
            partitions: children,
        }));
    }
    Ok(None)
}

fn mounted_or_held(
    what: &str,
    device: DeviceNumber,
    sysfs: &Path,
    mounts: &MountTable,
) -> io::Result<Option<Busy>> {
    if let Some(mount_point) = mounts.mount_point(device) {
        return Ok(Some(Busy::Mounted {
            what: what.to_string(),
            mount_point: mount_point.to_string(),
        }));
    }
    let holders = directory_names(&sysfs.join("holders"))?;
    Ok((!holders.is_empty()).then(|| Busy::Held {
        what: what.to_string(),
        holders,
    }))
}

/// A stable identity of the device from sysfs, where the kernel exposes
/// one: the WWID or serial of a disk, the UUID of a device-mapper or md
/// device, the backing file of a loop device. Partitions carry their
/// disk's identity plus the partition number.
pub fn stable_id(device: DeviceNumber) -> Option<String> {
    let sysfs = device.sysfs_dir();
    let read = |relative: &str| {
        fs::read_to_string(sysfs.join(relative))
            .ok()
            .map(|text| text.trim().to_string())
            .filter(|text| !text.is_empty())
    };
    if let Some(partition) = read("partition") {
        let disk = fs::canonicalize(&sysfs).ok()?.parent()?.join("dev");
        let disk_number: DeviceNumber = fs::read_to_string(disk).ok()?.trim().parse().ok()?;
        return stable_id(disk_number).map(|id| format!("{id} part{partition}"));
    }
    let sources = [
        ("wwid", "wwid"),
        ("device/wwid", "wwid"),
        ("serial", "serial"),
        ("device/serial", "serial"),
        ("dm/uuid", "dm-uuid"),
        ("md/uuid", "md-uuid"),
    ];
    for (relative, kind) in sources {
        if let Some(value) = read(relative) {
            return Some(format!("{kind}:{value}"));
        }
    }
    let backing_file = read("loop/backing_file")?;
    let offset = read("loop/offset").unwrap_or_else(|| "0".to_string());
    Some(format!("loop:{backing_file}@{offset}"))
}

/// The sorted entry names of a sysfs directory; an error names the directory.
fn directory_names(dir: &Path) -> io::Result<Vec<String>> {
    let entries = fs::read_dir(dir).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("cannot read {}: {error}", dir.display()),
        )
    })?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("cannot read {}: {error}", dir.display()),
            )
        })?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Buffer alignment for `O_DIRECT` (at least any logical block size in use).
pub const DIRECT_IO_ALIGN: usize = 4096;

/// A zero-filled buffer whose start is aligned for `O_DIRECT`, carved out of
/// a slightly larger vector so no unsafe allocation is needed.
pub struct AlignedBuffer {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuffer {
    /// A buffer of `len` zero bytes.
    pub fn zeroed(len: usize) -> Self {
        let storage = vec![0u8; len + DIRECT_IO_ALIGN];
        let start = storage.as_ptr().align_offset(DIRECT_IO_ALIGN);
        AlignedBuffer {
            storage,
            start,
            len,
        }
    }

    /// The aligned bytes.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffer_is_aligned_and_zero() {
        let mut buffer = AlignedBuffer::zeroed(3 * 4096);
        let slice = buffer.bytes_mut();
        assert_eq!(slice.as_ptr() as usize % DIRECT_IO_ALIGN, 0);
        assert_eq!(slice.len(), 3 * 4096);
        assert!(slice.iter().all(|b| *b == 0));
    }

    #[test]
    fn device_numbers_round_trip() {
        let number: DeviceNumber = "259:12".parse().unwrap();
        assert_eq!(
            number,
            DeviceNumber {
                major: 259,
                minor: 12
            }
        );
        assert_eq!(number.to_string(), "259:12");
        assert!("259".parse::<DeviceNumber>().is_err());
        assert!("a:b".parse::<DeviceNumber>().is_err());
    }

    #[test]
    fn mountinfo_lines_parse() {
        let table = MountTable::parse(
            "22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n\
             40 22 7:3 / /mnt/data rw - xfs /dev/loop3 rw\n\
             garbage\n",
        );
        assert_eq!(
            table.mount_point(DeviceNumber { major: 7, minor: 3 }),
            Some("/mnt/data")
        );
        assert_eq!(
            table.mount_point(DeviceNumber {
                major: 253,
                minor: 1
            }),
            Some("/")
        );
        assert_eq!(table.mount_point(DeviceNumber { major: 7, minor: 4 }), None);
    }
}
