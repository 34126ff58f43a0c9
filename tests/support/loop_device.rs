//! Real block devices for tests: loop devices over files in a temporary
//! directory, allocated with `losetup -f --show` (never a fixed number) and
//! always detached on drop, even when the test fails.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use std::sync::Mutex;

use nix::fcntl::{Flock, FlockArg};
use tempfile::TempDir;

/// Serialises attaching within this test process, so a device number that
/// [`LoopDevice::swap_backing_file`] frees for a moment is not taken by a
/// concurrent test's `losetup -f`.
static ATTACH_LOCK: Mutex<()> = Mutex::new(());

/// The same across test processes (two `cargo test` runs at once): a file
/// every test process locks with `flock` around the same steps.
const ATTACH_LOCK_FILE: &str = "/tmp/local-pv-provisioner-tests.loop-attach.lock";

/// Holds [`ATTACH_LOCK`] and the lock on [`ATTACH_LOCK_FILE`] until dropped.
struct Attaching {
    _file: Flock<File>,
    _thread: std::sync::MutexGuard<'static, ()>,
}

fn attaching() -> Attaching {
    let thread = lock(&ATTACH_LOCK);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(ATTACH_LOCK_FILE)
        .unwrap_or_else(|error| panic!("cannot open {ATTACH_LOCK_FILE}: {error}"));
    let file = Flock::lock(file, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, error)| panic!("cannot lock {ATTACH_LOCK_FILE}: {error}"));
    Attaching {
        _file: file,
        _thread: thread,
    }
}

/// Byte a test writes over a device as its tenant's data, so zeroing shows.
/// A device is filled only once its PV exists: a device holding data before
/// the program first sees it is never offered.
pub const FILL_BYTE: u8 = 0xA5;

/// A loop device backed by a file of its own.
pub struct LoopDevice {
    /// `/dev/loopN`.
    pub path: PathBuf,
    /// The backing file; replaced by [`Self::swap_backing_file`].
    backing_file: Mutex<PathBuf>,
    partitioned: bool,
    _dir: TempDir,
}

/// Fails the test with a clear message unless it runs as root, which loop
/// devices need (CI runs as root).
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root to attach loop devices: run it as root (CI does)"
    );
}

/// Locks a mutex, also after a panic poisoned it (detaching must still work).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

impl LoopDevice {
    /// A device of `size_bytes` (a multiple of 512) filled with [`FILL_BYTE`].
    pub fn filled(size_bytes: u64) -> LoopDevice {
        Self::attach(size_bytes, false, true)
    }

    /// A device of `size_bytes` backed by a sparse file: zeros, nothing
    /// written, so large devices cost no time; mark regions with [`Self::write_at`].
    pub fn sparse(size_bytes: u64) -> LoopDevice {
        Self::attach(size_bytes, false, false)
    }

    /// A blank device of `size_bytes` attached read-only (`losetup -r`):
    /// the kernel reports it read-only in sysfs (`ro` 1).
    pub fn read_only(size_bytes: u64) -> LoopDevice {
        Self::attach_with(size_bytes, false, false, true)
    }

    /// A device whose content starts with an MBR holding one partition,
    /// which is added with `partx -a` (the test kernel may lack MBR
    /// scanning) and removed with `partx -d` before detaching.
    pub fn partitioned(size_bytes: u64) -> LoopDevice {
        Self::attach(size_bytes, true, true)
    }

    fn attach(size_bytes: u64, partitioned: bool, filled: bool) -> LoopDevice {
        Self::attach_with(size_bytes, partitioned, filled, false)
    }

    fn attach_with(
        size_bytes: u64,
        partitioned: bool,
        filled: bool,
        read_only: bool,
    ) -> LoopDevice {
        require_root();
        let dir = tempfile::tempdir().expect("temporary directory");
        let backing_file = dir.path().join("backing.img");
        if filled {
            write_pattern(&backing_file, size_bytes);
        } else {
            File::create(&backing_file)
                .and_then(|file| file.set_len(size_bytes))
                .expect("sparse backing file");
        }
        if partitioned {
            write_mbr_with_one_partition(&backing_file);
        }
        let attached = {
            let _serialised = attaching();
            let mut losetup = Command::new("losetup");
            if read_only {
                losetup.arg("-r");
            }
            run(losetup.args(["-f", "--show"]).arg(&backing_file))
        };
        let path = PathBuf::from(attached.trim());
        let device = LoopDevice {
            path,
            backing_file: Mutex::new(backing_file),
            partitioned,
            _dir: dir,
        };
        if partitioned {
            run(Command::new("partx").arg("-a").arg(&device.path));
        }
        device
    }

    /// Reads `length` bytes at `offset` of the device's content (through the
    /// backing file, which the loop driver writes through to).
    pub fn read(&self, offset: u64, length: usize) -> Vec<u8> {
        let mut file = File::open(self.backing_file()).expect("open backing file");
        file.seek(SeekFrom::Start(offset)).expect("seek");
        let mut buffer = vec![0u8; length];
        file.read_exact(&mut buffer).expect("read backing file");
        buffer
    }

    /// The file behind the device now.
    pub fn backing_file(&self) -> PathBuf {
        lock(&self.backing_file).clone()
    }

    /// Whether every byte of the device's content is `value` (read through
    /// the backing file a MiB at a time).
    pub fn holds_only(&self, value: u8) -> bool {
        let mut file = File::open(self.backing_file()).expect("open backing file");
        let mut chunk = vec![0u8; 1 << 20];
        loop {
            let length = file.read(&mut chunk).expect("read backing file");
            if length == 0 {
                return true;
            }
            if chunk[..length].iter().any(|byte| *byte != value) {
                return false;
            }
        }
    }

    /// Swaps the backing file for a new one of the same size: same device
    /// number and size, different device underneath.
    pub fn swap_backing_file(&self) {
        let mut backing_file = lock(&self.backing_file);
        let size = fs::metadata(&*backing_file).expect("stat").len();
        let replacement = backing_file.with_file_name("replacement.img");
        write_pattern(&replacement, size);
        let _serialised = attaching();
        run(Command::new("losetup").arg("-d").arg(&self.path));
        run(Command::new("losetup").arg(&self.path).arg(&replacement));
        *backing_file = replacement;
    }

    /// Shrinks or grows the device to `size_bytes` (its backing file
    /// truncated, then `losetup --set-capacity`), as an admin resizing a disk.
    pub fn resize(&self, size_bytes: u64) {
        let backing_file = self.backing_file();
        OpenOptions::new()
            .write(true)
            .open(&backing_file)
            .and_then(|file| file.set_len(size_bytes))
            .expect("resize backing file");
        run(Command::new("losetup")
            .arg("--set-capacity")
            .arg(&self.path));
    }

    /// Writes [`FILL_BYTE`] over the whole device, as a tenant writing its
    /// data (through the backing file, which the loop driver reads through).
    pub fn fill(&self) {
        overwrite(&self.backing_file(), FILL_BYTE);
    }

    /// Zeroes the whole device, as an admin clearing a disk before it is
    /// offered (through the backing file).
    pub fn blank(&self) {
        overwrite(&self.backing_file(), 0);
    }

    /// Writes `bytes` at `offset` of the device's content (through the backing file).
    pub fn write_at(&self, offset: u64, bytes: &[u8]) {
        let file = OpenOptions::new()
            .write(true)
            .open(self.backing_file())
            .expect("open backing file");
        file.write_all_at(bytes, offset)
            .expect("write backing file");
        file.sync_all().expect("sync backing file");
    }

    /// The device's `major:minor` as the kernel reports it.
    pub fn number(&self) -> String {
        let name = self.path.file_name().unwrap().to_str().unwrap();
        fs::read_to_string(format!("/sys/class/block/{name}/dev"))
            .expect("sysfs dev")
            .trim()
            .to_string()
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if self.partitioned {
            let _ = Command::new("partx").arg("-d").arg(&self.path).status();
        }
        let status = Command::new("losetup").arg("-d").arg(&self.path).status();
        if !matches!(status, Ok(status) if status.success()) {
            eprintln!("warning: could not detach {}", self.path.display());
        }
    }
}

/// Writes an MBR with one Linux partition of 2 MiB at sector 2048.
fn write_mbr_with_one_partition(backing_file: &Path) {
    let mut mbr = [0u8; 512];
    let entry = &mut mbr[446..462];
    entry[4] = 0x83;
    entry[8..12].copy_from_slice(&2048u32.to_le_bytes());
    entry[12..16].copy_from_slice(&4096u32.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    let file = OpenOptions::new()
        .write(true)
        .open(backing_file)
        .expect("open");
    file.write_all_at(&mbr, 0).expect("write MBR");
}

fn write_pattern(path: &Path, size_bytes: u64) {
    assert_eq!(size_bytes % 512, 0, "loop devices are whole sectors");
    File::create(path)
        .and_then(|file| file.set_len(size_bytes))
        .expect("create backing file");
    overwrite(path, FILL_BYTE);
}

/// Writes `value` over every byte of the existing file at `path`, a MiB at
/// a time, and flushes it.
fn overwrite(path: &Path, value: u8) {
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open backing file");
    let size = file.metadata().expect("stat backing file").len();
    let chunk = vec![value; 1 << 20];
    let mut left = size;
    while left > 0 {
        let length = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..length])
            .expect("write backing file");
        left -= length as u64;
    }
    file.sync_all().expect("sync backing file");
}
