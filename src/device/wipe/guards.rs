//! The guards that look at the device itself, in the order the wipe checks
//! them: the path ([`Guard::PathInsideDeviceDir`], [`Guard::BlockDevice`],
//! [`Guard::NotMounted`], [`Guard::NoHolders`]), the exclusive open
//! ([`Guard::ExclusiveOpen`]) and the identity on the open descriptor
//! ([`Guard::SameDevice`]). The PV-level guards are in `request`.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use super::{Guard, WipeError, WipeRequest, refuse};
use crate::device::blockdev::{self, Busy, MountTable, Partitions};

/// Guards [`Guard::PathInsideDeviceDir`] and [`Guard::BlockDevice`],
/// [`Guard::NotMounted`] and [`Guard::NoHolders`]; returns the resolved device.
pub(super) fn check_path(request: &WipeRequest) -> Result<PathBuf, WipeError> {
    let outside = |detail: String| refuse(Guard::PathInsideDeviceDir, detail);
    let path = &request.path;
    if !path.is_absolute()
        || path
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(outside(format!(
            "{} is not a plain absolute path",
            path.display()
        )));
    }
    let parent = path
        .parent()
        .filter(|_| path.file_name().is_some())
        .ok_or_else(|| outside(format!("{} has no parent", path.display())))?;
    if parent != request.device_dir {
        return Err(outside(format!(
            "{} is not directly inside the recorded deviceDir {}",
            path.display(),
            request.device_dir.display()
        )));
    }
    let resolved_parent = fs::canonicalize(parent)
        .map_err(|error| outside(format!("cannot resolve {}: {error}", parent.display())))?;
    let resolved_dir = fs::canonicalize(&request.device_dir).map_err(|error| {
        outside(format!(
            "cannot resolve {}: {error}",
            request.device_dir.display()
        ))
    })?;
    if resolved_parent != resolved_dir {
        return Err(outside(format!(
            "{} resolves outside {}",
            parent.display(),
            resolved_dir.display()
        )));
    }
    let target = fs::canonicalize(path).map_err(|error| {
        refuse(
            Guard::BlockDevice,
            format!("cannot resolve {}: {error}", path.display()),
        )
    })?;
    let metadata = fs::metadata(&target).map_err(|error| {
        refuse(
            Guard::BlockDevice,
            format!("cannot stat {}: {error}", target.display()),
        )
    })?;
    let number = blockdev::block_device_number(&metadata).ok_or_else(|| {
        refuse(
            Guard::BlockDevice,
            format!("{} is not a block device", target.display()),
        )
    })?;
    let mounts = MountTable::read().map_err(|error| {
        refuse(
            Guard::NotMounted,
            format!("cannot read the mount table: {error}"),
        )
    })?;
    match blockdev::busy(number, &mounts, Partitions::AllowUnused) {
        Ok(None) => Ok(target),
        Ok(Some(busy @ Busy::Held { .. })) => Err(refuse(Guard::NoHolders, busy.to_string())),
        Ok(Some(busy)) => Err(refuse(Guard::NotMounted, busy.to_string())),
        Err(error) => Err(refuse(
            Guard::NoHolders,
            format!("cannot tell whether another device holds it: {error}"),
        )),
    }
}

/// Guard [`Guard::ExclusiveOpen`].
pub(super) fn open_exclusive(target: &Path) -> Result<File, WipeError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_DIRECT | nix::libc::O_EXCL | nix::libc::O_CLOEXEC)
        .open(target)
        .map_err(|error| {
            refuse(
                Guard::ExclusiveOpen,
                format!("cannot open {} exclusively: {error}", target.display()),
            )
        })
}

/// Guard [`Guard::SameDevice`], checked on the open descriptor so the device
/// cannot be swapped between the check and the writes. Returns the size.
pub(super) fn check_same_device(
    request: &WipeRequest,
    target: &Path,
    file: &File,
) -> Result<u64, WipeError> {
    let differs = |detail: String| refuse(Guard::SameDevice, detail);
    let metadata = file
        .metadata()
        .map_err(|error| differs(format!("cannot stat the open device: {error}")))?;
    let number = blockdev::block_device_number(&metadata)
        .ok_or_else(|| differs("the open file is not a block device".into()))?;
    if number != request.number {
        return Err(differs(format!(
            "device number is {number}, the PV recorded {}",
            request.number
        )));
    }
    let size = blockdev::size_in_bytes(file)
        .map_err(|error| differs(format!("cannot read the size: {error}")))?;
    if size != request.size_bytes {
        return Err(differs(format!(
            "size is {size} bytes, the PV recorded {}",
            request.size_bytes
        )));
    }
    if let Some(expected) = &request.stable_id {
        match blockdev::stable_id(number) {
            Some(actual) if &actual == expected => {}
            actual => {
                return Err(differs(format!(
                    "stable id is {actual:?}, the PV recorded {expected:?}"
                )));
            }
        }
    }
    let again = fs::canonicalize(&request.path)
        .map_err(|error| differs(format!("{} vanished: {error}", request.path.display())))?;
    if again != target {
        return Err(differs(format!(
            "{} now resolves to {}",
            request.path.display(),
            again.display()
        )));
    }
    Ok(size)
}
