//! Wipe throughput on a real loop device, against `dd oflag=direct` writing
//! the same regions of the same device in the same run.
//!
//! Run as root: `cargo bench --bench wipe` (prints a Markdown table).

// The test fixture, of which the benchmark needs only the plain device.
#[allow(dead_code)]
#[path = "../tests/support/loop_device.rs"]
mod loop_device;

use std::os::unix::fs::symlink;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use local_pv_provisioner::discovery::scan_devices;
use local_pv_provisioner::naming::plain_pv_name;
use local_pv_provisioner::pv::{NodeFacts, build_pv};
use local_pv_provisioner::spec::parse_pv_spec;
use local_pv_provisioner::wipe::{DEFAULT_HEAD_BYTES, Owner, TAIL_BYTES, WipeRequest, wipe_device};
use loop_device::LoopDevice;

const MIB: u64 = 1024 * 1024;
const DEVICE_BYTES: u64 = 1024 * MIB;
const ROUNDS: usize = 7;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn dd(device: &str, block_size: u64, count: u64, seek_blocks: u64) {
    let status = Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={device}"),
            &format!("bs={block_size}"),
            &format!("count={count}"),
            &format!("seek={seek_blocks}"),
            "oflag=direct",
            "conv=fsync,notrunc",
            "status=none",
        ])
        .status()
        .expect("dd is installed");
    assert!(status.success(), "dd failed");
}

fn main() {
    let device = LoopDevice::filled(DEVICE_BYTES);
    let dir = tempfile::tempdir().expect("tempdir");
    symlink(&device.path, dir.path().join("bench0")).expect("link");
    let data = [
        ("deviceDir", dir.path().to_str().unwrap()),
        ("deviceNameFilter", "bench"),
        ("volumeMode", "Block"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let spec = parse_pv_spec(&data).expect("spec");
    let scan = scan_devices(dir.path(), &spec.device_name_filter).expect("scan");
    let node = NodeFacts {
        name: "bench".into(),
        uid: "uid".into(),
        hostname: "bench".into(),
        label_value: "bench".into(),
    };
    let pv = build_pv(
        &node,
        &spec,
        &scan.devices[0],
        &plain_pv_name("bench", "bench0").unwrap(),
    );
    let request = WipeRequest::from_pv(
        &pv,
        &Owner {
            node_name: "bench",
            label_value: "bench",
        },
    )
    .expect("request");
    let path = device.path.to_str().unwrap().to_string();
    let written = DEFAULT_HEAD_BYTES + TAIL_BYTES;

    let mut ours = Vec::new();
    let mut reference = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        wipe_device(&request, &AtomicBool::new(false)).expect("wipe");
        ours.push(started.elapsed());

        let started = Instant::now();
        dd(&path, 4 * MIB, DEFAULT_HEAD_BYTES / (4 * MIB), 0);
        dd(&path, MIB, 1, DEVICE_BYTES / MIB - 1);
        reference.push(started.elapsed());
    }
    let rate = |elapsed: Duration| written as f64 / MIB as f64 / elapsed.as_secs_f64();
    let ours = median(ours);
    let reference = median(reference);
    println!(
        "Wipe of a {} MiB loop device: head {} MiB + tail {} MiB, median of {ROUNDS} rounds",
        DEVICE_BYTES / MIB,
        DEFAULT_HEAD_BYTES / MIB,
        TAIL_BYTES / MIB
    );
    println!();
    println!("| method | median time | throughput |");
    println!("|---|---|---|");
    println!(
        "| local-pv-provisioner wipe (O_DIRECT, 8 MiB writes, fdatasync, read-back check) | {:.1} ms | {:.0} MiB/s |",
        ours.as_secs_f64() * 1e3,
        rate(ours)
    );
    println!(
        "| dd if=/dev/zero bs=4M oflag=direct conv=fsync (head) + bs=1M (tail) | {:.1} ms | {:.0} MiB/s |",
        reference.as_secs_f64() * 1e3,
        rate(reference)
    );
    println!();
    println!(
        "ratio (wipe / dd): {:.2}",
        ours.as_secs_f64() / reference.as_secs_f64()
    );
}
