//! Loop devices for the benchmark: many small blank (sparse) ones, attached
//! one by one with `losetup -f --show` (the test fixture; timed, as
//! attaching 1000 takes a while and is not part of any measure), linked
//! into a device directory, and always detached when dropped; and loop
//! devices over tmpfs, which the kernel zeroes by writing.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::loop_device::LoopDevice;

/// Attached devices and what attaching them cost.
pub struct Pool {
    /// The devices, detached on drop.
    pub devices: Vec<LoopDevice>,
    /// Time to attach them all.
    pub attach_time: Duration,
}

impl Pool {
    /// Attaches `count` blank devices of `size` bytes over sparse files.
    pub fn attach(count: usize, size: u64) -> Pool {
        let started = Instant::now();
        let devices = (0..count)
            .map(|index| {
                if index > 0 && index % 100 == 0 {
                    eprintln!("bench: {index} loop devices attached");
                }
                LoopDevice::sparse(size)
            })
            .collect();
        Pool {
            devices,
            attach_time: started.elapsed(),
        }
    }

    /// Links the first `count` devices into `dir` as `<prefix>0000`,
    /// `<prefix>0001`, ...
    pub fn link(&self, dir: &Path, prefix: &str, count: usize) {
        for (index, device) in self.devices.iter().take(count).enumerate() {
            symlink(&device.path, dir.join(format!("{prefix}{index:04}"))).expect("device link");
        }
    }

    /// Links the first `count` devices into `dir` split across `classes`
    /// name prefixes, in turn: `c0-0000`, `c1-0001`, `c2-0002`, `c0-0003`, ...
    pub fn link_split(&self, dir: &Path, classes: usize, count: usize) {
        for (index, device) in self.devices.iter().take(count).enumerate() {
            let entry = format!("c{}-{index:04}", index % classes);
            symlink(&device.path, dir.join(entry)).expect("device link");
        }
    }

    /// Detaches every device; returns how long it took.
    pub fn detach(self) -> Duration {
        let started = Instant::now();
        drop(self.devices);
        started.elapsed()
    }
}

/// A new temporary directory for device links.
pub fn link_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("lpp-bench-{name}-"))
        .tempdir()
        .expect("device directory")
}

/// A loop device over a sparse file in `/dev/shm` (tmpfs), which has no
/// `fallocate` zero-range: the loop driver then turns off its write-zeroes
/// support and the kernel answers `BLKZEROOUT` by writing zero pages, as
/// for a disk without a write-zeroes command. Detached and removed on drop.
pub struct ShmLoop {
    /// `/dev/loopN`.
    pub path: PathBuf,
    file: PathBuf,
}

impl ShmLoop {
    /// A device of `size` bytes, or `None` when `/dev/shm` is not there.
    pub fn sparse(size: u64) -> Option<ShmLoop> {
        if !Path::new("/dev/shm").is_dir() {
            return None;
        }
        let file =
            Path::new("/dev/shm").join(format!("lpp-bench-{}-{size}.img", std::process::id()));
        std::fs::File::create(&file)
            .and_then(|f| f.set_len(size))
            .expect("sparse file in /dev/shm");
        let output = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&file)
            .output()
            .expect("losetup");
        assert!(
            output.status.success(),
            "losetup failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        Some(ShmLoop { path, file })
    }
}

impl Drop for ShmLoop {
    fn drop(&mut self) {
        let detached = Command::new("losetup").arg("-d").arg(&self.path).status();
        if !matches!(detached, Ok(status) if status.success()) {
            eprintln!("warning: could not detach {}", self.path.display());
        }
        let _ = std::fs::remove_file(&self.file);
    }
}
