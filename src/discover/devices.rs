//! Device discovery: the entries directly inside `deviceDir` whose names
//! match the filter, resolved to block devices with their exact size.
//! Matching entries that cannot be used become [`DeviceProblem`]s with a
//! reason; nothing here writes to a device.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use regex::Regex;
use thiserror::Error;

use crate::device::blockdev::{self, DeviceNumber, MountTable, Partitions};
use crate::device::facts::{DeviceFacts, read_facts};

/// A usable block device found under `deviceDir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The entry's file name in `deviceDir`.
    pub name: String,
    /// The entry's path under `deviceDir` (what the PV records).
    pub path: PathBuf,
    /// Where the entry resolves to, e.g. `/dev/sdb`.
    pub resolved: PathBuf,
    /// The device's `major:minor`.
    pub number: DeviceNumber,
    /// Exact size in bytes.
    pub size_bytes: u64,
    /// Why the device is busy (mounted, held, partitioned), if it is. A busy
    /// device keeps an existing PV but never gets a new one.
    pub in_use: Option<String>,
    /// A stable identity from sysfs (WWID, serial, loop backing file), if any.
    pub stable_id: Option<String>,
    /// What the kernel says the device is (read once, when inspected).
    pub facts: DeviceFacts,
}

/// What kind of problem keeps a device from getting a PV; each kind is
/// reported with its own Event reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProblemKind {
    /// Unusable (`DeviceSkipped`).
    #[default]
    Skipped,
    /// In use: mounted, held, partitioned or opened exclusively elsewhere
    /// (`DeviceSkipped`).
    InUse,
    /// Never offered by rule: read-only, removable, selected by two
    /// classes, or beyond its class's `maxDevices` (`DeviceSkipped`).
    Ineligible,
    /// Holds data and was never offered (`DeviceHasData`).
    HasData,
    /// The API server refused its PV (`InvalidVolume`).
    Refused,
    /// No class selects it (its size, type or model is not what any class
    /// asks for): not an error, logged once and not counted as an error
    /// device.
    Excluded,
}

/// A matching entry that cannot become a PV, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceProblem {
    /// The entry's file name (lossily decoded when not UTF-8).
    pub name: String,
    /// The entry's path.
    pub path: PathBuf,
    /// Human-readable reason.
    pub reason: String,
    /// The block device the entry leads to, when it got that far.
    pub number: Option<DeviceNumber>,
    /// How it is reported.
    pub kind: ProblemKind,
    /// The device class it was found for, when it is one class's.
    pub class: Option<String>,
}

/// The result of one scan of `deviceDir`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Usable devices, sorted by entry name.
    pub devices: Vec<Device>,
    /// Unusable matching entries, sorted by entry name.
    pub problems: Vec<DeviceProblem>,
}

/// Why the directory itself could not be scanned.
#[derive(Debug, Error)]
#[error("cannot read deviceDir {dir}: {source}")]
pub struct DiscoveryError {
    /// The directory.
    pub dir: PathBuf,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

/// A matching entry's name, and whether the name itself is usable.
pub type MatchingName = (String, Result<(), String>);

/// What inspecting one entry found.
pub type Inspected = Result<Device, Unusable>;

/// The mount table, or why it could not be read (then nothing is judged free).
pub type Mounts = Result<MountTable, String>;

/// Reads the mount table for a batch of inspections; fails closed.
pub fn read_mounts() -> Mounts {
    MountTable::read().map_err(|error| {
        format!("cannot tell whether it is in use: cannot read the mount table: {error}")
    })
}

/// The names directly inside `dir` that match `filter` anywhere
/// (unanchored, like upstream), sorted.
pub fn matching_names(dir: &Path, filter: &Regex) -> Result<Vec<MatchingName>, DiscoveryError> {
    let failed = |source| DiscoveryError {
        dir: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(failed)? {
        if let Some(name) = matching_name(&entry.map_err(failed)?.file_name(), filter) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// `raw` as a matching name, when it matches `filter`; a name that is not
/// UTF-8 matches by its lossy form and is unusable.
pub fn matching_name(raw: &std::ffi::OsStr, filter: &Regex) -> Option<MatchingName> {
    match raw.to_str() {
        Some(name) => filter.is_match(name).then(|| (name.to_string(), Ok(()))),
        None => {
            let lossy = raw.to_string_lossy().into_owned();
            filter
                .is_match(&lossy)
                .then(|| (lossy, Err("the entry name is not valid UTF-8".to_string())))
        }
    }
}

/// Inspects the entry `name` of `dir`.
pub fn inspect_entry(dir: &Path, name: &MatchingName, mounts: &Mounts) -> Inspected {
    let (name, check) = name;
    check.clone().map_err(Unusable::from)?;
    inspect(&dir.join(name), name, mounts.as_ref())
}

/// Assembles inspected entries (in name order) into a scan. Entries that
/// resolve to a device another entry already resolved to are reported as
/// aliases: the first name in sorted order is the usable one, so one disk
/// never gets two PVs.
pub fn assemble<'a>(
    dir: &Path,
    entries: impl IntoIterator<Item = (&'a String, &'a Inspected)>,
) -> Scan {
    let mut scan = Scan::default();
    let mut first_name_of: BTreeMap<DeviceNumber, &String> = BTreeMap::new();
    for (name, inspected) in entries {
        let path = dir.join(name);
        match inspected {
            Ok(device) => match first_name_of.get(&device.number) {
                Some(first) => scan.problems.push(DeviceProblem {
                    reason: format!("same device {} as entry {first:?}", device.number),
                    number: Some(device.number),
                    name: name.clone(),
                    path,
                    kind: ProblemKind::Skipped,
                    class: None,
                }),
                None => {
                    first_name_of.insert(device.number, name);
                    scan.devices.push(device.clone());
                }
            },
            Err(Unusable { reason, number }) => scan.problems.push(DeviceProblem {
                name: name.clone(),
                path,
                reason: reason.clone(),
                number: *number,
                kind: ProblemKind::Skipped,
                class: None,
            }),
        }
    }
    scan
}

/// Scans `dir` (first level only) for entries whose name matches `filter`
/// anywhere (unanchored, like upstream): every matching entry is inspected
/// (symlinks resolved, only block devices count) and [assembled](assemble).
pub fn scan_devices(dir: &Path, filter: &Regex) -> Result<Scan, DiscoveryError> {
    Ok(assemble(dir, inspect_all(dir, filter)?.iter()))
}

/// Every entry of `dir` whose name matches `filter`, inspected, by name.
pub fn inspect_all(
    dir: &Path,
    filter: &Regex,
) -> Result<BTreeMap<String, Inspected>, DiscoveryError> {
    let names = matching_names(dir, filter)?;
    let mounts = read_mounts();
    Ok(names
        .iter()
        .map(|name| (name.0.clone(), inspect_entry(dir, name, &mounts)))
        .collect())
}

/// Why an entry cannot be used, and its device when it got that far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unusable {
    /// Why.
    pub reason: String,
    /// The block device, when the entry led to one.
    pub number: Option<DeviceNumber>,
}

impl From<String> for Unusable {
    fn from(reason: String) -> Self {
        Unusable {
            reason,
            number: None,
        }
    }
}

/// Inspects one entry.
fn inspect(
    path: &Path,
    name: &str,
    mounts: Result<&MountTable, &String>,
) -> Result<Device, Unusable> {
    let resolved = fs::canonicalize(path).map_err(|error| match error.kind() {
        io::ErrorKind::NotFound => "dangling symlink".to_string(),
        _ => format!("cannot resolve: {error}"),
    })?;
    let metadata = fs::metadata(&resolved)
        .map_err(|error| format!("cannot stat {}: {error}", resolved.display()))?;
    let number = blockdev::block_device_number(&metadata).ok_or_else(|| {
        let kind = if metadata.is_dir() {
            "a directory"
        } else if metadata.is_file() {
            "a regular file"
        } else {
            "a character device, socket or pipe"
        };
        format!("not a block device ({} is {kind})", resolved.display())
    })?;
    let unusable = |reason: String| Unusable {
        reason,
        number: Some(number),
    };
    let file = blockdev::open_read_only(&resolved)
        .map_err(|error| unusable(format!("cannot open {}: {error}", resolved.display())))?;
    // A shared lock: it fails only while a wipe (which holds the exclusive
    // lock) runs on this device, possibly in another provisioner pod.
    let locked = Flock::lock(file, FlockArg::LockSharedNonblock).map_err(|_| {
        unusable(format!(
            "{} is locked by a wipe in progress",
            resolved.display()
        ))
    })?;
    let size_bytes = blockdev::size_in_bytes(&locked).map_err(|error| {
        unusable(format!(
            "cannot read the size of {}: {error}",
            resolved.display()
        ))
    })?;
    drop(locked);
    if size_bytes == 0 {
        return Err(unusable(format!(
            "{} has size 0 (no medium?)",
            resolved.display()
        )));
    }
    let mounts = mounts.map_err(|error| unusable(error.clone()))?;
    let in_use = blockdev::busy(number, mounts, Partitions::CountAsUse)
        .map_err(|error| unusable(format!("cannot tell whether it is in use: {error}")))?;
    Ok(Device {
        name: name.to_string(),
        path: path.to_path_buf(),
        resolved,
        number,
        size_bytes,
        in_use: in_use.map(|busy| busy.to_string()),
        stable_id: blockdev::stable_id(number),
        facts: read_facts(number),
    })
}
