//! What a block device is, read from the kernel (sysfs), never guessed from
//! its name: read-only, removable, rotational, model, vendor, serial and
//! the kind of device. Read once per device when discovery inspects it and
//! kept with the device cache, so a reconcile reads no sysfs file again.
//!
//! A fact the kernel does not expose or that cannot be read is `None`; a
//! selector that needs it fails closed (the device is not offered, and the
//! reason names the fact). A partition takes the facts of its disk (model,
//! vendor, serial, rotational, removable), and is read-only when either it
//! or its disk is.

use std::fs;
use std::path::{Path, PathBuf};

use crate::device::blockdev::DeviceNumber;
use crate::objects::classes::DeviceType;

/// What the kernel says a device is; `None` where it says nothing or the
/// file cannot be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFacts {
    /// `ro`: writes are refused.
    pub read_only: Option<bool>,
    /// `removable`: removable media (USB sticks, card readers, optical).
    pub removable: Option<bool>,
    /// `queue/rotational`: a spinning disk.
    pub rotational: Option<bool>,
    /// `device/model`, trimmed.
    pub model: Option<String>,
    /// `device/vendor`, trimmed.
    pub vendor: Option<String>,
    /// `device/serial` or `serial`, else the WWID (`wwid`, `device/wwid`).
    pub serial: Option<String>,
    /// The kind of device.
    pub device_type: Option<DeviceType>,
}

/// Reads the facts of `device` from `/sys/dev/block/MAJ:MIN` (blocking).
pub fn read_facts(device: DeviceNumber) -> DeviceFacts {
    read_facts_in(&device.sysfs_dir())
}

/// Reads the facts of the device whose sysfs directory is `sysfs`.
pub fn read_facts_in(sysfs: &Path) -> DeviceFacts {
    let Ok(own) = fs::canonicalize(sysfs) else {
        return DeviceFacts::default();
    };
    let is_partition = own.join("partition").exists();
    // A partition's disk is its parent directory in sysfs.
    let disk: PathBuf = if is_partition {
        own.parent().map_or_else(|| own.clone(), Path::to_path_buf)
    } else {
        own.clone()
    };
    let own_ro = flag(&own, "ro");
    let read_only = if is_partition {
        match (own_ro, flag(&disk, "ro")) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        }
    } else {
        own_ro
    };
    DeviceFacts {
        read_only,
        removable: flag(&disk, "removable"),
        rotational: flag(&disk, "queue/rotational"),
        model: text(&disk, "device/model"),
        vendor: text(&disk, "device/vendor"),
        serial: ["device/serial", "serial", "wwid", "device/wwid"]
            .into_iter()
            .find_map(|relative| text(&disk, relative)),
        device_type: Some(device_type(&own, is_partition)),
    }
}

/// The kind of the device at `own` (its canonical sysfs directory).
fn device_type(own: &Path, is_partition: bool) -> DeviceType {
    if is_partition {
        return DeviceType::Part;
    }
    if own.join("dm").is_dir() {
        let multipath = text(own, "dm/uuid").is_some_and(|uuid| uuid.starts_with("mpath-"));
        return if multipath {
            DeviceType::Mpath
        } else {
            DeviceType::Dm
        };
    }
    if own.join("md").is_dir() {
        return DeviceType::Md;
    }
    let named_loop = own
        .file_name()
        .is_some_and(|name| name.to_string_lossy().starts_with("loop"));
    if own.join("loop").is_dir() || named_loop {
        return DeviceType::Loop;
    }
    DeviceType::Disk
}

/// A sysfs file's trimmed text; `None` when absent, unreadable or empty.
fn text(dir: &Path, relative: &str) -> Option<String> {
    fs::read_to_string(dir.join(relative))
        .ok()
        .map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty())
}

/// A sysfs `0`/`1` file.
fn flag(dir: &Path, relative: &str) -> Option<bool> {
    match text(dir, relative)?.as_str() {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, relative: &str, text: &str) {
        let path = dir.join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn a_disk_reads_its_own_facts() {
        let root = tempfile::tempdir().unwrap();
        let disk = root.path().join("sda");
        write(&disk, "ro", "0\n");
        write(&disk, "removable", "0\n");
        write(&disk, "queue/rotational", "1\n");
        write(&disk, "device/model", "ST4000NM0035-1V4  \n");
        write(&disk, "device/vendor", "ATA     \n");
        write(&disk, "wwid", "naa.5000c500a1b2c3d4\n");
        assert_eq!(
            read_facts_in(&disk),
            DeviceFacts {
                read_only: Some(false),
                removable: Some(false),
                rotational: Some(true),
                model: Some("ST4000NM0035-1V4".into()),
                vendor: Some("ATA".into()),
                serial: Some("naa.5000c500a1b2c3d4".into()),
                device_type: Some(DeviceType::Disk),
            }
        );
    }

    #[test]
    fn a_partition_takes_its_disks_facts_and_either_read_only_flag() {
        let root = tempfile::tempdir().unwrap();
        let disk = root.path().join("nvme0n1");
        write(&disk, "ro", "1\n");
        write(&disk, "removable", "0\n");
        write(&disk, "queue/rotational", "0\n");
        write(&disk, "device/model", "Samsung SSD 980 PRO 1TB\n");
        write(&disk, "device/serial", "S5GXNF0R123456\n");
        let part = disk.join("nvme0n1p1");
        write(&part, "partition", "1\n");
        write(&part, "ro", "0\n");
        let facts = read_facts_in(&part);
        assert_eq!(facts.device_type, Some(DeviceType::Part));
        assert_eq!(facts.read_only, Some(true), "the disk is read-only");
        assert_eq!(facts.rotational, Some(false));
        assert_eq!(facts.model.as_deref(), Some("Samsung SSD 980 PRO 1TB"));
        assert_eq!(facts.serial.as_deref(), Some("S5GXNF0R123456"));
        assert_eq!(facts.vendor, None, "NVMe has no vendor file");
    }

    #[test]
    fn device_mapper_md_and_loop_devices_are_told_apart() {
        let root = tempfile::tempdir().unwrap();
        let mpath = root.path().join("dm-0");
        write(
            &mpath,
            "dm/uuid",
            "mpath-3600508b400105e210000900000490000\n",
        );
        let crypt = root.path().join("dm-1");
        write(&crypt, "dm/uuid", "CRYPT-LUKS2-abc\n");
        let md = root.path().join("md0");
        write(&md, "md/level", "raid1\n");
        let looped = root.path().join("loop3");
        write(&looped, "loop/backing_file", "/var/disk.img\n");
        assert_eq!(read_facts_in(&mpath).device_type, Some(DeviceType::Mpath));
        assert_eq!(read_facts_in(&crypt).device_type, Some(DeviceType::Dm));
        assert_eq!(read_facts_in(&md).device_type, Some(DeviceType::Md));
        let facts = read_facts_in(&looped);
        assert_eq!(facts.device_type, Some(DeviceType::Loop));
        assert_eq!(facts.read_only, None, "no ro file: unknown, not writable");
        assert_eq!(facts.model, None);
    }

    #[test]
    fn a_missing_directory_knows_nothing() {
        assert_eq!(
            read_facts_in(Path::new("/nonexistent/sys/dev/block/1:2")),
            DeviceFacts::default()
        );
    }
}
