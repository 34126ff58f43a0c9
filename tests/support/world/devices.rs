//! A world's devices: directories of links (the `deviceDir`s the PV spec
//! ConfigMaps name) and the loop devices behind them, attached with
//! `losetup -f --show` and kept until teardown detaches them.
//!
//! Every device a world attaches is blank (a sparse file: zeros), because
//! the program offers only a device that probes blank. A test that proves a
//! device was wiped, or was not touched, writes its tenant's data with
//! [`LoopDevice::fill`] once the device's PV exists.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tempfile::TempDir;

use super::{Data, World, data, lock};
use crate::support::loop_device::LoopDevice;

/// A new temporary directory for device links, named after the run.
pub(super) fn new_dir(run: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("{run}-devices-"))
        .tempdir()
        .expect("device directory")
}

impl World {
    /// The world's first device directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// [`Self::dir`] as text, as a ConfigMap holds it.
    pub fn dir_text(&self) -> String {
        self.dir.display().to_string()
    }

    /// Another device directory, removed at teardown.
    pub fn new_device_dir(&self) -> PathBuf {
        let dir = new_dir(&self.run);
        let path = dir.path().to_path_buf();
        lock(&self.device_dirs).push(dir);
        path
    }

    /// Keeps `device` until teardown and hands out a shared handle.
    fn keep(&self, device: LoopDevice) -> Arc<LoopDevice> {
        let device = Arc::new(device);
        lock(&self.devices).push(device.clone());
        device
    }

    /// Attaches a blank loop device of `size` bytes (a sparse file: zeros,
    /// so large devices cost no time).
    pub fn attach(&self, size: u64) -> Arc<LoopDevice> {
        self.keep(LoopDevice::sparse(size))
    }

    /// Attaches a blank loop device of `size` bytes read-only.
    pub fn attach_read_only(&self, size: u64) -> Arc<LoopDevice> {
        self.keep(LoopDevice::read_only(size))
    }

    /// Links `device` as `dir/entry`.
    pub fn link_in(&self, dir: &Path, entry: &str, device: &LoopDevice) {
        symlink(&device.path, dir.join(entry)).expect("device link");
    }

    /// Links `device` as `entry` in [`Self::dir`].
    pub fn link(&self, entry: &str, device: &LoopDevice) {
        self.link_in(&self.dir, entry, device);
    }

    /// Removes the link `entry` from [`Self::dir`], as udev does when a disk
    /// is unplugged.
    pub fn unlink(&self, entry: &str) {
        std::fs::remove_file(self.dir.join(entry)).expect("remove device link");
    }

    /// Attaches a blank device of `size` bytes and links it as `entry` in
    /// [`Self::dir`].
    pub fn attach_linked(&self, entry: &str, size: u64) -> Arc<LoopDevice> {
        let device = self.attach(size);
        self.link(entry, &device);
        device
    }

    /// Attaches `count` blank devices of `size` bytes linked as `disk0`,
    /// `disk1`, ... in [`Self::dir`].
    pub fn attach_disks(&self, count: usize, size: u64) -> Vec<Arc<LoopDevice>> {
        (0..count)
            .map(|index| self.attach_linked(&format!("disk{index}"), size))
            .collect()
    }

    /// A Block-mode PV spec over `dir` with filter `filter`.
    pub fn block_spec_over(&self, dir: &Path, filter: &str) -> Data {
        data(&[
            ("deviceDir", &dir.display().to_string()),
            ("deviceNameFilter", filter),
            ("volumeMode", "Block"),
        ])
    }

    /// A Block-mode PV spec over [`Self::dir`] with filter `filter`.
    pub fn block_spec(&self, filter: &str) -> Data {
        self.block_spec_over(&self.dir, filter)
    }
}
