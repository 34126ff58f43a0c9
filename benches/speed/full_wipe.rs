//! The full wipe (`wipeMode: Full`, `device::wipe::full`): every guard, the
//! whole device zeroed in chunks with `BLKZEROOUT`, two blocks of every
//! chunk read back, a flush and a progress report every second, and the
//! whole head and tail read back at the end. Compared, on the same 2 GiB
//! loop device, with `blkdiscard -z` (the kernel's `BLKZEROOUT` over the
//! whole device in one call: the bare cost of zeroing, with no
//! verification and no progress) and `dd if=/dev/zero bs=4M oflag=direct
//! conv=fsync`; once with the backing file on this machine's disk (ext4:
//! the loop driver turns `BLKZEROOUT` into `fallocate` zero-range) and once
//! on tmpfs (the kernel writes zero pages). Before each timed run the whole
//! device is written (`dd`, untimed), so every run starts from the same
//! state: a device full of a tenant's data (on ext4 the backing file's
//! extents are all allocated, which zero-range must convert back). Rounds
//! of the three, the order rotating; medians, and the median of each
//! round's ratios. Then one full wipe of a 1 GiB device under `wipeBandwidth`
//! against the limit.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use local_pv_provisioner::device::wipe::{WipeRequest, ZeroMethod, wipe_device};
use local_pv_provisioner::objects::spec::WipeMode;

use crate::devices::ShmLoop;
use crate::options::Options;
use crate::procfs::{Spread, millis};
use crate::support::loop_device::LoopDevice;
use crate::table::{Table, Verdict};
use crate::wipe::request_for;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// The size of the compared devices.
const SIZE: u64 = 2 * GIB;
/// The most the full wipe may take, as a multiple of `blkdiscard -z`'s time.
const TARGET_RATIO: f64 = 1.05;
/// The bandwidth run: a 1 GiB device at 256 MiB/s.
const LIMITED_SIZE: u64 = GIB;
const LIMIT: u64 = 256 * MIB;

/// Runs the section and adds its rows.
pub fn run(options: &Options, table: &mut Table) {
    let disk = LoopDevice::sparse(SIZE);
    add_rows(
        table,
        "backing file on disk (ext4)",
        &disk.path,
        options.full_rounds,
    );
    drop(disk);
    match ShmLoop::sparse(SIZE) {
        Some(tmpfs) => add_rows(
            table,
            "backing file on tmpfs, zeros written",
            &tmpfs.path,
            options.full_rounds,
        ),
        None => table.note("/dev/shm is missing: the tmpfs full-wipe rows are left out"),
    }
    bandwidth_row(table);
}

/// The times of one round.
struct Round {
    full: Duration,
    blkdiscard: Duration,
    dd: Duration,
    /// Progress reports the full wipe made.
    reports: usize,
}

fn add_rows(table: &mut Table, backing: &str, device: &Path, rounds: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let request = request_for(device, dir.path(), &[("wipeMode", "Full")]);
    assert_eq!(request.mode, WipeMode::Full, "the PV records a full wipe");
    let path = device.to_str().expect("UTF-8");
    // Round 0 warms up: the first writes allocate the sparse file.
    let mut measured: Vec<Round> = Vec::new();
    for round in 0..=rounds {
        let mut times = [Duration::ZERO; 3];
        let mut reports = 0;
        for step in 0..3 {
            let which = (step + round) % 3;
            write_all(path);
            times[which] = match which {
                0 => {
                    let (elapsed, made) = full_wipe(&request);
                    reports = made;
                    elapsed
                }
                1 => timed(|| run_tool("blkdiscard", &["-z", path])),
                _ => timed(|| dd_zeros(path)),
            };
        }
        if round > 0 {
            measured.push(Round {
                full: times[0],
                blkdiscard: times[1],
                dd: times[2],
                reports,
            });
        }
    }
    let spread =
        |pick: fn(&Round) -> Duration| Spread::of(&measured.iter().map(pick).collect::<Vec<_>>());
    let ratio = |pick: fn(&Round) -> Duration| {
        let mut ratios: Vec<f64> = measured
            .iter()
            .map(|round| round.full.as_secs_f64() / pick(round).as_secs_f64())
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios[ratios.len() / 2]
    };
    let (full, blkdiscard, dd) = (
        spread(|r| r.full),
        spread(|r| r.blkdiscard),
        spread(|r| r.dd),
    );
    let rate = |d: Duration| SIZE as f64 / MIB as f64 / d.as_secs_f64();
    let over_blkdiscard = ratio(|r| r.blkdiscard);
    let over_dd = ratio(|r| r.dd);
    let reports = measured.last().map_or(0, |round| round.reports);
    table.row(
        format!("full wipe, 2 GiB device; {backing}: vs `blkdiscard -z`"),
        format!(
            "median {} ({:.0} MiB/s), {reports} progress reports; full / blkdiscard -z: {over_blkdiscard:.2} (median of {} rounds' ratios)",
            millis(full.median),
            rate(full.median),
            measured.len()
        ),
        "≤ 1.05 × blkdiscard -z (progress and verification < 5 %)",
        format!(
            "blkdiscard -z, same device: median {} ({:.0} MiB/s)",
            millis(blkdiscard.median),
            rate(blkdiscard.median)
        ),
        Verdict::of(over_blkdiscard <= TARGET_RATIO),
    );
    table.row(
        format!("full wipe, 2 GiB device; {backing}: vs `dd`"),
        format!("full / dd: {over_dd:.2}"),
        "< 1 (faster than dd)",
        format!(
            "dd if=/dev/zero bs=4M oflag=direct conv=fsync, same device: median {} ({:.0} MiB/s)",
            millis(dd.median),
            rate(dd.median)
        ),
        Verdict::of(over_dd < 1.0),
    );
}

/// `dd if=/dev/zero bs=4M oflag=direct conv=fsync` over the whole device.
fn dd_zeros(path: &str) {
    run_tool(
        "dd",
        &[
            "if=/dev/zero",
            &format!("of={path}"),
            "bs=4M",
            &format!("count={}", SIZE / (4 * MIB)),
            "oflag=direct",
            "conv=fsync,notrunc",
            "status=none",
        ],
    );
}

/// Writes every byte of the device (a tenant's data: a byte pattern, so
/// the blocks are allocated and not zero), untimed.
fn write_all(path: &str) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open the device");
    let chunk = vec![0xA5u8; (4 * MIB) as usize];
    for offset in (0..SIZE).step_by(chunk.len()) {
        std::os::unix::fs::FileExt::write_all_at(&file, &chunk, offset).expect("write the device");
    }
    file.sync_all().expect("flush the device");
}

/// One full wipe; its time and how many progress reports it made.
fn full_wipe(request: &WipeRequest) -> (Duration, usize) {
    let reports = AtomicUsize::new(0);
    let cancel = AtomicBool::new(false);
    let started = Instant::now();
    wipe_device(request, ZeroMethod::WriteZeroes, &cancel, &|_| {
        reports.fetch_add(1, Ordering::Relaxed);
    })
    .expect("full wipe");
    (started.elapsed(), reports.load(Ordering::Relaxed))
}

fn timed(run: impl FnOnce()) -> Duration {
    let started = Instant::now();
    run();
    started.elapsed()
}

fn run_tool(tool: &str, args: &[&str]) {
    let status = Command::new(tool)
        .args(args)
        .status()
        .unwrap_or_else(|error| panic!("{tool} is installed (util-linux, coreutils): {error}"));
    assert!(status.success(), "{tool} {args:?} failed");
}

/// A full wipe of a 1 GiB device at `wipeBandwidth: 256Mi`.
fn bandwidth_row(table: &mut Table) {
    let device = LoopDevice::sparse(LIMITED_SIZE);
    let dir = tempfile::tempdir().expect("tempdir");
    let limit = LIMIT.to_string();
    let request = request_for(
        &device.path,
        dir.path(),
        &[("wipeMode", "Full"), ("wipeBandwidth", limit.as_str())],
    );
    assert_eq!(request.bandwidth, Some(LIMIT));
    let (elapsed, _) = full_wipe(&request);
    let achieved = LIMITED_SIZE as f64 / elapsed.as_secs_f64();
    let share = achieved / LIMIT as f64;
    table.row(
        "full wipe, 1 GiB device under `wipeBandwidth: 256Mi`: achieved rate",
        format!(
            "{:.1} MiB/s in {} ({:.0} % of the limit)",
            achieved / MIB as f64,
            millis(elapsed),
            share * 100.0
        ),
        "≤ the limit, and ≥ 90 % of it",
        "256 MiB/s",
        Verdict::of((0.90..=1.0).contains(&share)),
    );
}
