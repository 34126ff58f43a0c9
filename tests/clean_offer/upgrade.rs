//! Upgrade from the Go local-pv-provisioner: before the program first
//! starts, PVs exist exactly as the Go upstream makes them (both node
//! labels, its camelCase annotations with a trailing `/` on `deviceDir`, a
//! controlling ownerReference to the Node, capacity as
//! `resource.NewQuantity(bytes, BinarySI)` prints it). The program creates
//! no duplicate for their devices; it adopts each one whose device matches
//! (identity annotations, an `Adopted` Event) — a Released one is then
//! deleted, wiped and offered again as a fresh PV, a Bound or Available one
//! keeps its UID and data — and refuses one whose device size differs from
//! its capacity (one `AdoptionRefused` Event, however often it is looked
//! at): that one stays Released, is not deleted, and its device keeps its
//! data — until the admin puts the disk back to the PV's size, when the
//! next polling pass (no change to the PV) adopts, wipes and offers it.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, PersistentVolume};
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::common::*;
use crate::moments::{Moments, Watch};
use crate::support::loop_device::{FILL_BYTE, LoopDevice};
use crate::support::world::inspect::phase;
use crate::support::world::waits::{WAIT, eventually};
use crate::support::world::{QUICK_POLLING, World, data, polling};

/// The node.
const NODE: &str = "up-a";
/// The upstream's `deviceNameFilter`, also the spec's.
const FILTER: &str = "^disk-";
/// Annotation keys this program records on a PV it made or adopted.
const IDENTITY: [&str; 7] = [
    "node-name",
    "device-dir",
    "device-number",
    "device-size",
    "device-stable-id",
    "wipe-bytes",
    "adopted-at",
];

/// A quantity as Go's `resource.NewQuantity(bytes, resource.BinarySI)`
/// prints it: the largest binary suffix that divides it, else plain bytes.
fn binary_si(bytes: u64) -> String {
    let suffixes = [("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)];
    suffixes
        .iter()
        .find(|(_, shift)| bytes >= 1 << shift && bytes.is_multiple_of(1 << shift))
        .map_or(bytes.to_string(), |(suffix, shift)| {
            format!("{}{suffix}", bytes >> shift)
        })
}

/// The PV the Go upstream makes for `entry` (capacity `bytes`) on `node`,
/// a Filesystem/ext4 spec over the world's directory written as `dir/`.
fn upstream_pv(world: &World, node: &Node, entry: &str, bytes: u64) -> Value {
    let name = node.name_any();
    let dir = format!("{}/", world.dir_text());
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": format!("local-{name}-{entry}"),
            "labels": {
                "local-pv-provisioner.cybozu.com/node": name,
                "local-pv-provisioner.cybozu.io/node": name,
            },
            "annotations": {
                "local-pv-provisioner.cybozu.io/volumeMode": "Filesystem",
                "local-pv-provisioner.cybozu.io/fsType": "ext4",
                "local-pv-provisioner.cybozu.io/deviceDir": dir,
                "local-pv-provisioner.cybozu.io/deviceNameFilter": FILTER,
            },
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "Node", "name": name, "uid": node.uid(),
                "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "capacity": {"storage": binary_si(bytes)},
            "volumeMode": "Filesystem",
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "local-storage",
            "local": {"path": format!("{dir}{entry}"), "fsType": "ext4"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{
                "key": "kubernetes.io/hostname", "operator": "In", "values": [name],
            }]}]}},
        },
    })
}

/// One device of the upgrade and its upstream PV.
struct Upstream {
    entry: &'static str,
    device: Arc<LoopDevice>,
    uid: String,
}

impl Upstream {
    /// A device of `size` bytes, holding data, with an upstream PV whose
    /// capacity says `capacity` bytes, made straight in the store (exactly
    /// that object, not even the world's run label).
    fn make(world: &World, node: &Node, entry: &'static str, size: u64, capacity: u64) -> Self {
        let device = world.attach_linked(entry, size);
        device.fill();
        let pv = world.create_foreign_pv(upstream_pv(world, node, entry, capacity));
        Upstream {
            entry,
            device,
            uid: pv.uid().unwrap(),
        }
    }

    fn name(&self) -> String {
        format!("local-{NODE}-{}", self.entry)
    }

    /// Whether the device still holds only the fill byte.
    fn intact(&self) -> bool {
        self.device.holds_only(FILL_BYTE)
    }
}

/// Asserts that `pv` carries every identity annotation, with its device's.
fn assert_adopted(pv: &PersistentVolume, disk: &Upstream, size: u64) {
    let key = |k: &str| format!("local-pv-provisioner.cybozu.io/{k}");
    for k in IDENTITY {
        assert!(
            annotation(pv, &key(k)).is_some(),
            "{k} on {}: {pv:?}",
            disk.entry
        );
    }
    assert_eq!(annotation(pv, &key("node-name")), Some(NODE));
    let number = disk.device.number();
    assert_eq!(annotation(pv, &key("device-number")), Some(number.as_str()));
    assert_eq!(
        annotation(pv, &key("device-size")),
        Some(size.to_string().as_str())
    );
    assert!(has_finalizer(pv, CLEANUP_FINALIZER), "{pv:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_pvs_are_adopted_cleaned_and_offered_or_refused() {
    let world = World::fake().await;
    let spec = [
        ("deviceDir", world.dir_text()),
        ("deviceNameFilter", FILTER.into()),
        ("volumeMode", "Filesystem".into()),
        ("fsType", "ext4".into()),
    ];
    let spec: Vec<(&str, &str)> = spec.iter().map(|(k, v)| (*k, v.as_str())).collect();
    world.put_configmap("spec", data(&spec)).await;
    let node = world.add_node(NODE, Some("spec")).await;
    let odd_size = 16 * MIB + 512;
    let released = Upstream::make(&world, &node, "disk-released", 64 * MIB, 64 * MIB);
    let bound = Upstream::make(&world, &node, "disk-bound", 32 * MIB, 32 * MIB);
    let odd = Upstream::make(&world, &node, "disk-odd", odd_size, odd_size);
    let resized = Upstream::make(&world, &node, "disk-resized", 48 * MIB, 32 * MIB);
    let server = world.server();
    for (disk, claim) in [(&released, "old"), (&bound, "app"), (&resized, "older")] {
        server.bind_pv(&disk.name(), world.namespace(), claim);
    }
    server.set_pv_phase(&released.name(), "Released");
    server.set_pv_phase(&resized.name(), "Released");
    wait_available(&world, &odd.name()).await;
    let head_and_tail = |size| vec![span(0, MIB), span(size - MIB, MIB)];
    let watch = Watch {
        pv: released.name(),
        device: released.device.clone(),
        spans: head_and_tail(64 * MIB),
    };
    let moments = Moments::install(&world, vec![watch]);
    let process = world.start(NODE, vec![polling(QUICK_POLLING)]);

    for disk in [&released, &bound, &odd] {
        world
            .wait_for_event_about("Adopted", "PersistentVolume", &disk.name())
            .await;
    }
    let fresh = wait_recreated(&world, &released.name(), &released.uid).await;
    moments.assert_wiped_before_release_and_offer(&released.name());
    assert_identity_recorded(&world, &released);
    let dir = world.dir_text();
    let made_by_us = Some(dir.as_str());
    assert_eq!(
        annotation(&fresh, "local-pv-provisioner.cybozu.io/device-dir"),
        made_by_us
    );
    for (disk, size) in [(&bound, 32 * MIB), (&odd, odd_size)] {
        let pv = world.pv(&disk.name()).await.expect("kept");
        assert_eq!(pv.uid().as_deref(), Some(disk.uid.as_str()), "the same PV");
        assert_adopted(&pv, disk, size);
        assert!(disk.intact(), "{}: its data is kept", disk.entry);
    }
    assert_refused(&world, &process, &resized).await;
    assert_adopted_once_identifiable(&world, &resized).await;
    let mut names = world.pv_names().await;
    names.sort();
    let mut expected: Vec<String> = [&bound, &odd, &released, &resized]
        .iter()
        .map(|d| d.name())
        .collect();
    expected.sort();
    assert_eq!(names, expected, "one PV per device, no duplicate");
    // The fake logs a request just after serving it: a PV can be read
    // before its POST is in the log.
    eventually("both re-offers' POSTs logged", WAIT, || async {
        (world.pv_requests("create", None) >= 2).then_some(())
    })
    .await;
    assert_eq!(world.pv_requests("create", None), 2, "only the re-offers");
}

/// The Released PV got its device's identity recorded (a PATCH the
/// request log kept) before it was deleted.
fn assert_identity_recorded(world: &World, disk: &Upstream) {
    let patches = world.requests("patch", "persistentvolumes");
    let number = disk.device.number();
    let recorded = patches.iter().any(|r| {
        let annotations = r.body.as_ref().map(|b| &b["metadata"]["annotations"]);
        r.object_name() == Some(disk.name().as_str())
            && annotations.is_some_and(|a| {
                a["local-pv-provisioner.cybozu.io/device-number"] == number.as_str()
                    && a["local-pv-provisioner.cybozu.io/node-name"] == NODE
            })
    });
    assert!(recorded, "identity of {} recorded: {patches:?}", disk.entry);
}

/// The PV whose device does not match is refused once, kept Released and
/// never deleted; its device keeps its data.
async fn assert_refused(
    world: &World,
    process: &crate::support::provisioner::ProvisionerProcess,
    resized: &Upstream,
) {
    let name = resized.name();
    let event = world
        .wait_for_event_about("AdoptionRefused", "PersistentVolume", &name)
        .await;
    let note = event.note.unwrap_or_default();
    let why = format!("is {} bytes but the PV's capacity is 32Mi", 48 * MIB);
    assert!(note.contains(&why), "{note}");
    let refused = process.labelled_sample("wipe_failures_total", "reason", "NotAdoptable");
    process.wait_sample_at_least(&refused, 1.0).await;
    // Looked at again after a change: the passes after it are the signal.
    touch_pv(world, &name).await;
    process.wait_for_fresh_passes(2).await;
    reported_once(world, "AdoptionRefused", "PersistentVolume", &name).await;
    let pv = world.pv(&name).await.expect("kept");
    assert_eq!(pv.uid().as_deref(), Some(resized.uid.as_str()));
    assert_eq!(phase(&pv), "Released");
    assert!(pv.metadata.deletion_timestamp.is_none(), "never deleted");
    assert_eq!(world.pv_requests("delete", Some(&name)), 0);
    assert!(resized.intact(), "its device keeps its data");
}

/// The refused PV's disk is put back to the PV's capacity. Nothing about the
/// PV changes, so only the cleanup controller's pass each polling interval
/// can look at it again: it is adopted, deleted, wiped and offered again.
async fn assert_adopted_once_identifiable(world: &World, resized: &Upstream) {
    let name = resized.name();
    resized.device.resize(32 * MIB);
    world
        .wait_for_event_about("Adopted", "PersistentVolume", &name)
        .await;
    let fresh = wait_recreated(world, &name, &resized.uid).await;
    let size = annotation(&fresh, "local-pv-provisioner.cybozu.io/device-size");
    assert_eq!(size, Some((32 * MIB).to_string().as_str()), "{fresh:?}");
    assert!(
        resized.device.read(0, MIB as usize).iter().all(|b| *b == 0),
        "the head was wiped before the device was offered again"
    );
}
