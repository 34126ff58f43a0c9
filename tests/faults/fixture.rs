//! The fault tests' view of the test world: one node with `count` devices
//! linked as `disk0`, `disk1`, ..., the request witness, and the invariants
//! every fault test checks on the fake server's store (read directly, so
//! inspection neither uses up fault rules nor shows in the request log).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, PersistentVolume};
use kube::ResourceExt;

use crate::support::loop_device::{FILL_BYTE, LoopDevice};
use crate::support::provisioner::ProvisionerProcess;
use crate::support::world::World;
use crate::support::world::inspect::{held_terminating, phase};
use crate::support::world::waits::{WAIT, eventually};
use crate::support::world::witness::{Seen, Witness, Write, is_finalizer_removal};

/// The PV annotation recording the device's `major:minor`.
const DEVICE_NUMBER: &str = "local-pv-provisioner.cybozu.io/device-number";
/// Every test device: small, so a wipe zeroes all of it in a moment.
const DEVICE_SIZE: u64 = 8 * 1024 * 1024;

/// One fault test's world; see the module documentation.
pub struct FaultWorld {
    /// The shared test world.
    pub world: World,
    /// The node the provisioner runs for.
    pub node: &'static str,
    /// The node's devices, `disk0` first.
    pub devices: Vec<Arc<LoopDevice>>,
    /// What the server saw as requests arrived.
    pub witness: Arc<Witness>,
    /// UID of the live Node object.
    pub node_uid: String,
}

impl FaultWorld {
    /// A fake world with `count` blank devices, the objects an operator
    /// would create, and the request witness.
    pub async fn new(node: &'static str, count: usize) -> FaultWorld {
        let world = World::fake().await;
        let devices = world.attach_disks(count, DEVICE_SIZE);
        let by_pv: BTreeMap<String, Arc<LoopDevice>> = devices
            .iter()
            .enumerate()
            .map(|(index, device)| (format!("local-{node}-disk{index}"), device.clone()))
            .collect();
        let witness = world.witness(by_pv);
        let mut faults = FaultWorld {
            world,
            node,
            devices,
            witness,
            node_uid: String::new(),
        };
        faults.create_cluster_objects().await;
        faults
    }

    /// Creates the Block PV spec ConfigMap and the annotated Node (and the
    /// namespace, when the server lost its store), as an operator would.
    pub async fn create_cluster_objects(&mut self) {
        let namespace = self.world.namespace().to_string();
        if self
            .world
            .get::<Namespace>(None, &namespace)
            .await
            .is_none()
        {
            self.world.create_namespace().await;
        }
        let spec = self.world.block_spec("^disk[0-9]+$");
        self.world.put_configmap("pv-spec", spec).await;
        let node = self.world.add_node(self.node, Some("pv-spec")).await;
        self.node_uid = node.uid().expect("Node UID");
    }

    /// Starts the provisioner with its default intervals.
    pub fn start(&self) -> ProvisionerProcess {
        self.world.start(self.node, vec![])
    }

    /// [`Self::new`], the provisioner started, an Available PV for every
    /// device, and then the tenants' data ([`FILL_BYTE`]) on every device.
    pub async fn running(node: &'static str, count: usize) -> (FaultWorld, ProvisionerProcess) {
        let faults = FaultWorld::new(node, count).await;
        let process = faults.start();
        faults.wait_all_available().await;
        faults.fill_all();
        (faults, process)
    }

    /// Writes the tenants' data ([`FILL_BYTE`]) over every device; only once
    /// their PVs exist, as a device holding data is never offered.
    pub fn fill_all(&self) {
        for device in &self.devices {
            device.fill();
        }
    }

    /// The PV name of device `index`.
    pub fn pv_name(&self, index: usize) -> String {
        format!("local-{}-disk{index}", self.node)
    }

    /// Every PV in the store.
    pub async fn pvs(&self) -> Vec<PersistentVolume> {
        self.world.pvs().await
    }

    /// UID and phase of device `index`'s PV, unless missing or being deleted.
    pub async fn live_pv(&self, index: usize) -> Option<(String, String)> {
        let pv = self.world.pv(&self.pv_name(index)).await?;
        if pv.metadata.deletion_timestamp.is_some() {
            return None;
        }
        Some((pv.uid()?, phase(&pv).to_string()))
    }

    /// Fails the test when two PVs name the same device (by recorded
    /// `major:minor` or by path).
    pub async fn assert_no_two_pvs_per_device(&self) {
        let mut numbers = BTreeSet::new();
        let mut paths = BTreeSet::new();
        for pv in self.pvs().await {
            let name = pv.name_any();
            let number = pv
                .annotations()
                .get(DEVICE_NUMBER)
                .cloned()
                .unwrap_or_default();
            let path = pv.spec.and_then(|spec| spec.local).map(|local| local.path);
            assert!(
                numbers.insert(number.clone()),
                "two PVs for device {number} (second: {name})"
            );
            assert!(
                paths.insert(path.clone()),
                "two PVs for path {path:?} (second: {name})"
            );
        }
    }

    /// Waits until `done` holds, checking on every poll that no device has
    /// two PVs.
    pub async fn wait_until<F, Fut>(&self, what: &str, done: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        eventually(what, WAIT, || async {
            self.assert_no_two_pvs_per_device().await;
            done().await.then_some(())
        })
        .await;
    }

    /// Waits until every device has an Available PV.
    pub async fn wait_all_available(&self) {
        self.wait_until("an Available PV for every device", || async {
            for index in 0..self.devices.len() {
                if self
                    .live_pv(index)
                    .await
                    .is_none_or(|(_, phase)| phase != "Available")
                {
                    return false;
                }
            }
            true
        })
        .await;
    }

    /// Waits until device `index` has an Available PV whose UID is not
    /// `old_uid`: the Released PV was wiped, deleted and offered again.
    pub async fn wait_recreated(&self, index: usize, old_uid: &str) {
        let what = format!("{} wiped, deleted and recreated", self.pv_name(index));
        self.wait_until(&what, || async {
            self.live_pv(index)
                .await
                .is_some_and(|(uid, phase)| uid != old_uid && phase == "Available")
        })
        .await;
    }

    /// UID of device `index`'s current PV.
    pub async fn uid(&self, index: usize) -> String {
        self.live_pv(index).await.expect("a live PV").0
    }

    /// UID of device `index`'s PV while it is Terminating and held by the
    /// provisioner's finalizer; `None` otherwise.
    pub async fn held_uid(&self, index: usize) -> Option<String> {
        let pv = self.world.pv(&self.pv_name(index)).await?;
        held_terminating(&pv).then(|| pv.uid()).flatten()
    }

    /// Marks device `index`'s PV Released, as the PV controller does when
    /// its claim is deleted; returns the PV's UID.
    pub async fn release(&self, index: usize) -> String {
        let uid = self.uid(index).await;
        self.world
            .server()
            .set_pv_phase(&self.pv_name(index), "Released");
        uid
    }

    /// Releases device `index`'s PV and waits until it is wiped, deleted
    /// and offered again.
    pub async fn recycle(&self, index: usize) {
        let uid = self.release(index).await;
        self.wait_recreated(index, &uid).await;
    }

    /// Binds device `index`'s PV to a claim.
    pub fn bind(&self, index: usize) {
        let claim = format!("claim-{index}");
        self.world
            .server()
            .bind_pv(&self.pv_name(index), "default", &claim);
    }

    /// PV POSTs the server answered with 201 Created.
    pub fn pv_creations(&self) -> usize {
        let posts = self.world.requests("create", "persistentvolumes");
        posts.iter().filter(|r| r.status == 201).count()
    }

    /// The DELETEs of PV `name` seen so far.
    pub fn deletes_of(&self, name: &str) -> Vec<Seen> {
        self.witness.of(name, Write::Delete)
    }

    /// The removals of the provisioner's finalizer from PV `name` seen so far.
    pub fn releases_of(&self, name: &str) -> Vec<Seen> {
        self.witness.of(name, Write::FinalizerRemoval)
    }

    /// The HTTP statuses the server answered the removals of the
    /// provisioner's finalizer from PV `name` with, in order.
    pub fn release_answers(&self, name: &str) -> Vec<u16> {
        let requests = self.world.server().requests();
        requests
            .iter()
            .filter(|r| is_finalizer_removal(r) && r.name.as_deref() == Some(name))
            .map(|r| r.status)
            .collect()
    }

    /// Fails unless device `index` still holds the tenant's data everywhere.
    pub fn assert_intact(&self, index: usize) {
        assert!(
            self.devices[index].holds_only(FILL_BYTE),
            "device of {} was written to although its PV was never Released",
            self.pv_name(index)
        );
    }

    /// Fails unless the provisioner wiped nothing and released nothing:
    /// the signal for devices that hold no data (a zero written over zeros
    /// cannot show).
    pub async fn assert_nothing_wiped(&self, process: &ProvisionerProcess) {
        assert_eq!(process.value("wipes_total").await, Some(0.0));
        assert!(
            self.witness
                .seen()
                .iter()
                .all(|seen| matches!(seen.write, Write::Create)),
            "no PV deleted or released"
        );
    }

    /// Fails unless device `index` is all zero (a wipe zeroes the whole of
    /// a device this small).
    pub fn assert_wiped(&self, index: usize) {
        let name = self.pv_name(index);
        assert!(
            self.devices[index].holds_only(0),
            "device of {name} is not zeroed"
        );
    }

    /// Waits until the Node has been told about as many devices holding
    /// data as `entries` names (occurrences of the Event reason
    /// `DeviceHasData`), then fails unless each entry is named.
    pub async fn assert_reported_holding_data(&self, entries: &[&str]) {
        let notes = eventually("the DeviceHasData reports", WAIT, || async {
            let seen = self
                .world
                .occurrences("DeviceHasData", "Node", self.node)
                .await;
            let reports: i32 = seen.iter().map(|(_, count)| count).sum();
            (reports >= entries.len() as i32).then_some(seen)
        })
        .await;
        // One Event per device: kube's Event Recorder, once used, folded
        // Events of one reason about one object into a series that kept the
        // first note, so every device after the first went unnamed.
        for entry in entries {
            assert!(
                notes
                    .iter()
                    .any(|(note, _)| note.contains(&format!("/{entry} "))),
                "no DeviceHasData Event names {entry} (one per device is promised): {notes:?}"
            );
        }
    }

    /// The end state every test shares: one PV per device, each created by
    /// exactly one successful POST (`expected_creations` in all, counting
    /// recreations), no finalizer removed before the device was wiped, and
    /// no PV created again before the old one's finalizer went.
    pub async fn assert_settled(&self, expected_creations: usize) {
        self.assert_no_two_pvs_per_device().await;
        assert_eq!(
            self.pvs().await.len(),
            self.devices.len(),
            "one PV per device"
        );
        assert_eq!(
            self.pv_creations(),
            expected_creations,
            "PVs created (201 answers to POST)"
        );
        self.witness.assert_released_only_when_zeroed();
        self.world.assert_recreated_only_after_release();
    }
}
