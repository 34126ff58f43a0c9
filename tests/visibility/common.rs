//! What the visibility scenarios share beyond the clean-offer helpers
//! (`clean_offer::common`, reused as is): a node with blank devices and the
//! program running on it, pods on (and off) the node that mount claims,
//! the Events of one PV by its UID (a PV made again for the same device
//! keeps its name, so the name alone cannot tell two tenants' PVs apart),
//! the labels of `volume_info`, and the check that a device was held back
//! from the wipe while a test needs it to be.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use serde_json::json;

use crate::clean_offer::{binding_world, blank_disk};
use crate::page::wait_rows;
use crate::support::loop_device::LoopDevice;
use crate::support::provisioner::ProvisionerProcess;
use crate::support::world::waits::{WAIT, eventually};
use crate::support::world::{Data, World};

pub const MIB: u64 = 1024 * 1024;

/// Size of every device of these scenarios.
pub const SIZE: u64 = 64 * MIB;
/// `wipeBytes` of the spec: 4 MiB, so the regions are `0-4MiB` and the last MiB.
pub const WIPE_BYTES: u64 = 4 * MIB;
/// The regions a wipe of one device zeroes, as the history records them.
pub const REGIONS: &str = "0-4194304,66060288-67108864";
/// The default storage class of the PVs.
pub const STORAGE_CLASS: &str = "local-storage";

/// The labels of `volume_info` (besides `node`) as issue 10 names them.
pub const INFO_LABELS: &str =
    "persistentvolume device storage_class volume_mode phase claim_namespace claim_name";
/// The labels of `volume_info` a test compares, in the order of
/// [`INFO_LABELS`] (checked by `page`'s test).
pub const INFO_KEYS: [&str; 7] = local_pv_provisioner::observe::metrics::VOLUME_INFO_LABELS;
/// The labels of `volume_consumer_info` a test compares.
pub const CONSUMER_KEYS: [&str; 3] = ["persistentvolume", "pod_namespace", "pod"];

/// A node `node` with blank devices and the program running on it. The
/// process is dropped (killed) before the world (its devices).
pub struct Node {
    pub process: ProvisionerProcess,
    pub world: World,
    pub node: String,
    pub disks: Vec<Arc<LoopDevice>>,
}

/// The PV spec of these scenarios: Block over the world's directory, 4 MiB heads.
pub fn spec(world: &World) -> Data {
    let mut spec = world.block_spec(".*");
    spec.insert("wipeBytes".into(), WIPE_BYTES.to_string());
    spec
}

/// Attaches a blank device per entry of `entries`, sets up Node `node` with
/// the spec, runs `before_start` (e.g. to install faults) and starts the
/// program with `env`. The fake's PV binder is on.
pub async fn node_with(
    node: &str,
    entries: &[&str],
    env: Vec<(&str, String)>,
    before_start: impl FnOnce(&World),
) -> Node {
    let world = binding_world().await;
    let disks = entries
        .iter()
        .map(|entry| blank_disk(&world, entry, SIZE))
        .collect();
    world.put_configmap("spec", spec(&world)).await;
    world.add_node(node, Some("spec")).await;
    before_start(&world);
    let process = world.start(node, env);
    Node {
        process,
        world,
        node: node.to_string(),
        disks,
    }
}

impl Node {
    /// The PV name of device entry `entry`.
    pub fn pv_name(&self, entry: &str) -> String {
        format!("local-{}-{entry}", self.node)
    }

    /// The `device` label of entry `entry`: the entry's path, as on the PV.
    pub fn device(&self, entry: &str) -> String {
        self.world.dir().join(entry).display().to_string()
    }

    /// `[("node", node)]`, the selector of this node's series.
    pub fn on_node(&self) -> [(&str, &str); 1] {
        [("node", self.node.as_str())]
    }
}

impl Node {
    /// Waits until `volume_info` of the node is exactly the one series of
    /// `entry`'s PV in `phase`, with claim `claim` (`("", "")`: none).
    pub async fn wait_volume(&self, entry: &str, phase: &str, claim: (&str, &str)) {
        let (name, device) = (self.pv_name(entry), self.device(entry));
        let row = [
            name.as_str(),
            &device,
            STORAGE_CLASS,
            "Block",
            phase,
            claim.0,
            claim.1,
        ];
        self.wait_volume_rows(&[&row]).await;
    }

    /// Waits until the node's `volume_info` series, seen through
    /// [`INFO_KEYS`], are exactly `rows`.
    pub async fn wait_volume_rows(&self, rows: &[&[&str]]) {
        let with = self.on_node();
        wait_rows(&self.process, "volume_info", &with, &INFO_KEYS, rows).await;
    }

    /// Waits until the node's `volume_consumer_info` series, seen through
    /// [`CONSUMER_KEYS`], are exactly `rows`.
    pub async fn wait_consumers(&self, rows: &[&[&str]]) {
        let with = self.on_node();
        wait_rows(
            &self.process,
            "volume_consumer_info",
            &with,
            &CONSUMER_KEYS,
            rows,
        )
        .await;
    }
}

/// Creates Pod `name` in the world's namespace on Node `node`, mounting
/// claim `claim` (and a scratch volume that is no claim). Nothing runs it:
/// the program only sees it.
pub async fn create_pod(world: &World, name: &str, node: &str, claim: &str) {
    let object = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": world.namespace()},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "app", "image": "registry.example/app:1",
                            "volumeDevices": [{"name": "data", "devicePath": "/dev/xvda"}]}],
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": claim}},
                {"name": "scratch", "emptyDir": {}},
            ],
        },
    });
    world.create::<Pod>(object).await;
}

/// Deletes Pod `name` of the world's namespace.
pub async fn delete_pod(world: &World, name: &str) {
    let namespace = world.namespace().to_string();
    world.delete::<Pod>(Some(&namespace), name, None).await;
}

/// The Events with `reason` about the object with UID `uid`.
pub async fn events_of(world: &World, reason: &str, uid: &str) -> Vec<Event> {
    world
        .events()
        .await
        .into_iter()
        .filter(|event| event.reason.as_deref() == Some(reason))
        .filter(|event| event.regarding.as_ref().and_then(|r| r.uid.as_deref()) == Some(uid))
        .collect()
}

/// Waits for an Event `reason` about the object with UID `uid`; returns its note.
pub async fn wait_event_of(world: &World, reason: &str, uid: &str) -> String {
    let what = format!("an Event {reason} about UID {uid}");
    let event = eventually(&what, WAIT, || async {
        events_of(world, reason, uid).await.into_iter().next()
    })
    .await;
    event.note.unwrap_or_default()
}

/// Asserts that each of `reasons` was published exactly once about UID
/// `uid` (a happening reported once, a standing condition not repeated).
pub async fn assert_once(world: &World, reasons: &[&str], uid: &str) {
    for reason in reasons {
        let events = events_of(world, reason, uid).await;
        let notes: Vec<&str> = events.iter().filter_map(|e| e.note.as_deref()).collect();
        assert_eq!(events.len(), 1, "{reason} about UID {uid} once: {notes:#?}");
    }
}

/// Asserts that none of `reasons` was published about UID `uid`.
pub async fn assert_never(world: &World, reasons: &[&str], uid: &str) {
    for reason in reasons {
        let events = events_of(world, reason, uid).await;
        assert!(
            events.is_empty(),
            "no {reason} about UID {uid}: {events:#?}"
        );
    }
}

/// The notes of the Events `reason` about Node `node`, oldest first.
pub async fn node_notes(world: &World, reason: &str, node: &str) -> Vec<String> {
    let mut events: Vec<Event> = world
        .events_about("Node", node)
        .await
        .into_iter()
        .filter(|event| event.reason.as_deref() == Some(reason))
        .collect();
    events.sort_by_key(|event| event.event_time.as_ref().map(|t| t.0));
    events
        .into_iter()
        .map(|event| event.note.unwrap_or_default())
        .collect()
}

/// Asserts that `notes` (one reason, oldest first) never repeat the one
/// before: an Event sent on change only.
pub fn assert_changes_only(notes: &[String], what: &str) {
    for pair in notes.windows(2) {
        assert_ne!(
            pair[0], pair[1],
            "{what} repeated without a change: {notes:#?}"
        );
    }
}

/// The device opened with `O_EXCL`, as a tenant's process or a filesystem
/// holding it would: every wipe of it is refused by `ExclusiveOpen` while
/// this lives.
pub struct Held(File);

/// Holds `device` (see [`Held`]).
pub fn hold(device: &LoopDevice) -> Held {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_EXCL)
        .open(&device.path)
        .expect("open the device exclusively");
    Held(file)
}

impl Held {
    /// Lets the device go.
    pub fn release(self) {
        drop(self.0);
    }
}

/// `device` made read-only (`blockdev --setro`): a wipe opens it, and its
/// first write fails with EPERM. Writable again on drop, also when the test
/// fails.
pub struct ReadOnly<'a>(&'a LoopDevice);

fn blockdev(flag: &str, device: &LoopDevice) {
    let status = Command::new("blockdev")
        .arg(flag)
        .arg(&device.path)
        .status()
        .expect("run blockdev");
    assert!(
        status.success(),
        "blockdev {flag} {}",
        device.path.display()
    );
}

/// Makes `device` read-only (see [`ReadOnly`]).
pub fn read_only(device: &LoopDevice) -> ReadOnly<'_> {
    blockdev("--setro", device);
    ReadOnly(device)
}

impl ReadOnly<'_> {
    /// Makes the device writable again.
    pub fn writable(self) {
        blockdev("--setrw", self.0);
    }
}

impl Drop for ReadOnly<'_> {
    fn drop(&mut self) {
        // Also after a failed test; a failure here must not abort the unwinding.
        let _ = Command::new("blockdev")
            .arg("--setrw")
            .arg(&self.0.path)
            .status();
    }
}
