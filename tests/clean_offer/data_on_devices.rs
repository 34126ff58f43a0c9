//! Devices the program has never seen, some holding data: one with an ext4
//! filesystem (`mkfs.ext4`), one with a GPT (`sfdisk`), one with random
//! bytes in the 4 KiB the probe reads at 1 GiB. None is offered: each is an
//! error device with a `DeviceHasData` Event on the Node naming the
//! signature or the offset, once. With `wipeDevicesWithData: "true"` they
//! are wiped and then offered, their probed regions reading zero. A blank
//! device beside them is offered without a single write, by the kernel's
//! count.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;

use ring::rand::{SecureRandom, SystemRandom};

use crate::common::*;
use crate::support::loop_device::LoopDevice;
use crate::support::provisioner::ProvisionerProcess;
use crate::support::world::{QUICK_POLLING, World, polling};

/// Size of the ext4, GPT and blank devices.
const SIZE: u64 = 64 * MIB;
/// Size of the device with random bytes: large enough to have a probed
/// region at 1 GiB.
const NOISE_SIZE: u64 = 2 * GIB;
/// Where the random bytes start: inside the 4 KiB probed at 1 GiB.
const NOISE_AT: u64 = GIB + 512;
/// The node.
const NODE: &str = "data-a";

/// Runs `command` (with `input` on stdin), failing the test on an error.
fn run(command: &mut Command, input: &str) {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The devices of the test: ext4, GPT, random bytes, blank.
struct Disks {
    ext4: Arc<LoopDevice>,
    gpt: Arc<LoopDevice>,
    noise: Arc<LoopDevice>,
    blank: Arc<LoopDevice>,
}

impl Disks {
    fn attach(world: &World) -> Disks {
        let ext4 = blank_disk(world, "ext4", SIZE);
        run(
            Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&ext4.path),
            "",
        );
        let gpt = blank_disk(world, "gpt", SIZE);
        run(
            Command::new("sfdisk").arg("--quiet").arg(&gpt.path),
            "label: gpt\n,,L\n",
        );
        let noise = blank_disk(world, "noise", NOISE_SIZE);
        let mut bytes = [0u8; 512];
        SystemRandom::new().fill(&mut bytes).expect("randomness");
        bytes[0] |= 1;
        noise.write_at(NOISE_AT, &bytes);
        let blank = blank_disk(world, "blank", SIZE);
        Disks {
            ext4,
            gpt,
            noise,
            blank,
        }
    }

    /// The devices holding data, with their entry names and the words
    /// their reason must contain.
    fn with_data(&self) -> [(&Arc<LoopDevice>, &'static str, String); 3] {
        [
            (&self.ext4, "ext4", "holds data (ext2/3/4 signature)".into()),
            (
                &self.gpt,
                "gpt",
                "holds data (GPT partition table signature)".into(),
            ),
            (
                &self.noise,
                "noise",
                format!("holds data: a non-zero byte at offset {NOISE_AT}"),
            ),
        ]
    }

    /// The kernel's write counters, in the order ext4, GPT, noise, blank.
    fn writes(&self) -> [u64; 4] {
        [&self.ext4, &self.gpt, &self.noise, &self.blank].map(|d| writes_completed(d))
    }
}

/// The regions a probe reads on a device of `size` bytes: the first and
/// last MiB, 4 KiB at each Ceph label offset inside.
fn probed(size: u64) -> Vec<Span> {
    let mut spans = vec![span(0, MIB), span(size - MIB, MIB)];
    spans.extend(
        [GIB, 10 * GIB]
            .into_iter()
            .filter(|o| *o < size)
            .map(|o| span(o, 4096)),
    );
    spans
}

/// Starts the program for Node `node` over the world's devices (a Block
/// spec, `wipeDevicesWithData` unset) with quick polls.
async fn start(world: &World, node: &str) -> ProvisionerProcess {
    world.put_configmap("spec", world.block_spec(".*")).await;
    world.add_node(node, Some("spec")).await;
    world.start(node, vec![polling(QUICK_POLLING)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_with_data_are_offered_only_once_wiped_and_blank_ones_without_a_write() {
    let world = World::fake().await;
    let disks = Disks::attach(&world);
    let before = disks.writes();
    let process = start(&world, NODE).await;

    wait_available(&world, "local-data-a-blank").await;
    assert_eq!(
        disks.writes()[3],
        before[3],
        "the blank device offered without a write"
    );
    process.wait_metric("devices_with_data", 3.0).await;
    process.wait_metric("error_devices", 3.0).await;
    process.wait_metric("available_devices", 1.0).await;
    let reports = wait_for_publishes(&world, "DeviceHasData", "Node", NODE, 3).await;
    let note = reports[0].note.clone().unwrap_or_default();
    let named = disks.with_data().into_iter().any(|(_, entry, reason)| {
        note.contains(&world.dir().join(entry).display().to_string()) && note.contains(&reason)
    });
    assert!(named, "the report names a device and its reason: {note}");
    // Once per device, never offered: the signal is the passes after the reports.
    process.wait_for_fresh_passes(3).await;
    let reports = events_with(&world, "DeviceHasData", "Node", NODE).await;
    assert_eq!(
        publishes(&reports),
        3,
        "one report per device: {reports:#?}"
    );
    assert_eq!(world.pv_names().await, vec!["local-data-a-blank"]);
    assert_eq!(world.pv_requests("create", None), 1);
    assert_eq!(disks.writes(), before, "nothing written to any device");

    let mut spec = world.block_spec(".*");
    spec.insert("wipeDevicesWithData".into(), "true".into());
    world.put_configmap("spec", spec).await;
    for entry in ["ext4", "gpt", "noise"] {
        wait_available(&world, &format!("local-data-a-{entry}")).await;
    }
    for (disk, entry, _) in disks.with_data() {
        let size = std::fs::metadata(disk.backing_file()).unwrap().len();
        assert!(
            spans_zeroed(disk, &probed(size)),
            "{entry}: the probed regions read zero"
        );
    }
    process.wait_metric("devices_with_data", 0.0).await;
    process.wait_metric("error_devices", 0.0).await;
    process.wait_metric("available_devices", 4.0).await;
    assert_eq!(world.pvs().await.len(), 4);
    let after = disks.writes();
    assert!(
        (0..3).all(|i| after[i] > before[i]),
        "wiped: {before:?} -> {after:?}"
    );
    assert_eq!(after[3], before[3], "the blank device never written");
}

/// Every device holding data is named in its own `DeviceHasData` Event.
/// Found failing on cf75726: kube's event `Recorder` keys an Event by type,
/// reason, action, reporter and regarding object — not by its note — so the
/// second and third device's report became a `series` PATCH of the first
/// device's Event and their names and reasons reached no Event at all
/// (`InvalidVolume`, `DeviceSkipped` and a changed `PVSpecInvalid` were hit
/// the same way). Events are now created one by one (`src/observe/events.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_with_data_is_named_in_a_device_has_data_event() {
    let world = World::fake().await;
    let disks = Disks::attach(&world);
    let _process = start(&world, "data-b").await;
    let reports = wait_for_publishes(&world, "DeviceHasData", "Node", "data-b", 3).await;
    let notes: Vec<String> = reports.iter().filter_map(|e| e.note.clone()).collect();
    for (_, entry, reason) in disks.with_data() {
        let path = world.dir().join(entry).display().to_string();
        assert!(
            notes
                .iter()
                .any(|n| n.contains(&path) && n.contains(&reason)),
            "no DeviceHasData Event names {path} ({reason}); three reports were \
             published, the Events are: {reports:#?}"
        );
    }
}
