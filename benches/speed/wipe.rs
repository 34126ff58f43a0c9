//! The program's guarded wipe (`wipe_device`: every guard, the regions of
//! [`wipe_regions`] with `BLKZEROOUT` or `O_DIRECT` writes, `fdatasync`,
//! the read-back) against the reference `dd if=/dev/zero bs=1M
//! oflag=direct conv=fsync` writing the same regions of the same device,
//! one `dd` per region. Three region sets, each on a sparse loop device:
//! 1 GiB (head + tail), 12 GiB (head, 1 GiB, 10 GiB, tail) and 1100 GiB
//! (head, 1, 10, 100 and 1000 GiB, tail); each once with its backing file
//! on this machine's disk (ext4: the loop driver turns `BLKZEROOUT` into
//! `fallocate` zero-range, so nothing is written) and once on tmpfs
//! (`/dev/shm`: no zero-range, the kernel writes zero pages, as for a disk
//! without a write-zeroes command). One warm-up round of each, then
//! rounds of both back to back (which goes first alternates); medians, and
//! the median of the rounds' wipe / `dd` ratios, which the verdict uses: this
//! machine is shared, and a load that changes during the run moves both
//! halves of a round alike.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use local_pv_provisioner::device::regions::{DEFAULT_HEAD_BYTES, wipe_regions};
use local_pv_provisioner::device::wipe::{Owner, WipeReport, WipeRequest, ZeroMethod, wipe_device};
use local_pv_provisioner::discover::devices::scan_devices;
use local_pv_provisioner::objects::naming::plain_pv_name;
use local_pv_provisioner::objects::spec::parse_pv_spec;
use local_pv_provisioner::provision::build::{NodeFacts, build_pv};

use crate::devices::ShmLoop;
use crate::options::Options;
use crate::procfs::{Spread, millis};
use crate::support::loop_device::LoopDevice;
use crate::table::{Table, Verdict};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// The sizes of the three devices, and what their region set is called.
const SETS: [(u64, &str); 3] = [
    (GIB, "1 GiB device: head + tail"),
    (12 * GIB, "12 GiB device: head, 1 GiB, 10 GiB, tail"),
    (
        1100 * GIB,
        "1100 GiB device: head, 1, 10, 100, 1000 GiB, tail",
    ),
];
/// The most the wipe may take, as a multiple of `dd`'s time.
const TARGET_RATIO: f64 = 1.10;

/// Where a device's backing file lives.
#[derive(Debug, Clone, Copy)]
enum Backing {
    /// A sparse file on this machine's disk (the test fixture).
    Disk,
    /// A sparse file in `/dev/shm`.
    Tmpfs,
}

/// Runs the section and adds a row per region set and backing.
pub fn run(options: &Options, table: &mut Table) {
    for backing in [Backing::Disk, Backing::Tmpfs] {
        for (size, name) in SETS {
            let Some(result) = compare(size, backing, options.wipe_rounds) else {
                table.note("/dev/shm is missing: the tmpfs wipe rows are left out");
                return;
            };
            add_row(table, name, backing, result);
        }
    }
}

/// The row of one region set on one backing.
fn add_row(table: &mut Table, name: &str, backing: Backing, result: Compared) {
    let backing = match backing {
        Backing::Disk => "backing file on disk (ext4)",
        Backing::Tmpfs => "backing file on tmpfs, zeros written",
    };
    let Compared {
        ours,
        reference,
        paired,
        report,
    } = result;
    let ratio = ours.median.as_secs_f64() / reference.median.as_secs_f64();
    let written: u64 = report.regions.iter().map(|r| r.end - r.start).sum();
    let rate = |d: Duration| written as f64 / MIB as f64 / d.as_secs_f64();
    table.row(
        format!(
            "wipe, {name}; {backing} ({} MiB in {} regions, {:?})",
            written / MIB,
            report.regions.len(),
            report.method
        ),
        format!(
            "median {} ({:.0} MiB/s); wipe / dd: {paired:.2} (median of the rounds' ratios; ratio of the medians {ratio:.2})",
            millis(ours.median),
            rate(ours.median)
        ),
        "≤ 1.10 × dd",
        format!(
            "dd bs=1M oflag=direct conv=fsync, same regions: median {} ({:.0} MiB/s)",
            millis(reference.median),
            rate(reference.median)
        ),
        Verdict::of(paired <= TARGET_RATIO),
    );
}

/// A wipe request for `device`, built as the program builds it: the device
/// scanned through a link in a directory, its PV, the request from the PV.
pub fn request_for(device: &Path, dir: &Path, extra: &[(&str, &str)]) -> WipeRequest {
    symlink(device, dir.join("bench0")).expect("link");
    let data = [
        ("deviceDir", dir.to_str().expect("UTF-8")),
        ("deviceNameFilter", "^bench"),
        ("volumeMode", "Block"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let spec = parse_pv_spec(&data).expect("spec");
    let scan = scan_devices(dir, &spec.device_name_filter).expect("scan");
    let node = NodeFacts {
        name: "bench".into(),
        uid: "uid".into(),
        hostname: "bench".into(),
        label_value: "bench".into(),
        labels: Default::default(),
    };
    let pv = build_pv(
        &node,
        &spec,
        &scan.devices[0],
        &plain_pv_name("bench", "bench0").expect("name"),
    );
    let owner = Owner {
        node_name: "bench",
        label_value: "bench",
    };
    WipeRequest::from_pv(&pv.into(), &owner).expect("request")
}

/// `dd` writing zeros over `region` of `device`, 1 MiB at a time.
fn dd(device: &str, region: &std::ops::Range<u64>) {
    assert!(
        region.start.is_multiple_of(MIB) && region.end.is_multiple_of(MIB),
        "regions are whole MiB here"
    );
    let status = Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={device}"),
            "bs=1M",
            &format!("count={}", (region.end - region.start) / MIB),
            &format!("seek={}", region.start / MIB),
            "oflag=direct",
            "conv=fsync,notrunc",
            "status=none",
        ])
        .status()
        .expect("dd is installed");
    assert!(status.success(), "dd failed");
}

/// Alternates the wipe and `dd` on one sparse device of `size` bytes;
/// `None` when the backing is not available.
fn compare(size: u64, backing: Backing, rounds: usize) -> Option<Compared> {
    let (_disk, _tmpfs, device): (Option<LoopDevice>, Option<ShmLoop>, PathBuf) = match backing {
        Backing::Disk => {
            let device = LoopDevice::sparse(size);
            let path = device.path.clone();
            (Some(device), None, path)
        }
        Backing::Tmpfs => {
            let device = ShmLoop::sparse(size)?;
            let path = device.path.clone();
            (None, Some(device), path)
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let request = request_for(&device, dir.path(), &[]);
    let path = device.to_str().expect("UTF-8").to_string();
    let regions = wipe_regions(size, DEFAULT_HEAD_BYTES, 512);
    let cancel = AtomicBool::new(false);
    let mut ours: Vec<Duration> = Vec::new();
    let mut reference: Vec<Duration> = Vec::new();
    let mut report = None;
    let wipe = || {
        let started = Instant::now();
        let done = wipe_device(&request, ZeroMethod::WriteZeroes, &cancel, &|_| {}).expect("wipe");
        assert_eq!(done.regions, regions, "the wipe's regions");
        (started.elapsed(), done)
    };
    let reference_dd = || {
        let started = Instant::now();
        for region in &regions {
            dd(&path, region);
        }
        started.elapsed()
    };
    // Round 0 is the warm-up: the first writes allocate the sparse file.
    // Odd rounds run the wipe first, even rounds `dd` first.
    for round in 0..=rounds {
        let (wiped, dd_time, done) = if round % 2 == 1 {
            let (wiped, done) = wipe();
            (wiped, reference_dd(), done)
        } else {
            let dd_time = reference_dd();
            let (wiped, done) = wipe();
            (wiped, dd_time, done)
        };
        report = Some(done);
        if round > 0 {
            ours.push(wiped);
            reference.push(dd_time);
        }
    }
    Some(Compared::of(&ours, &reference, report.expect("a wipe")))
}

/// What the rounds of one region set showed.
struct Compared {
    /// The wipe's times.
    ours: Spread,
    /// `dd`'s times.
    reference: Spread,
    /// The median of each round's wipe / `dd` ratio (the two ran back to
    /// back, so a load that changes over the run cancels out).
    paired: f64,
    /// What the last wipe did.
    report: WipeReport,
}

impl Compared {
    fn of(ours: &[Duration], reference: &[Duration], report: WipeReport) -> Compared {
        let mut ratios: Vec<f64> = ours
            .iter()
            .zip(reference)
            .map(|(a, b)| a.as_secs_f64() / b.as_secs_f64())
            .collect();
        ratios.sort_by(f64::total_cmp);
        Compared {
            ours: Spread::of(ours),
            reference: Spread::of(reference),
            paired: ratios[ratios.len() / 2],
            report,
        }
    }
}
