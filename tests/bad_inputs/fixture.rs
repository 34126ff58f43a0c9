//! The binary tables' view of the test world: a fake world per row with
//! its devices linked as `disk0`, `disk1`, …, the good spec that fixes a
//! row, the tenants' data on the devices, and the checks that nothing was
//! destroyed.
//!
//! The devices start blank: the program offers only a device that probes
//! blank. A row writes the tenants' data ([`LoopDevice::fill`]) where it
//! proves that nothing was written: once a PV exists, or — for a row whose
//! input keeps the program from acting — before the program starts, and
//! then clears it (as an admin clears a disk to have it offered) before
//! fixing the input.

use std::sync::Arc;

use crate::catalogue::{DEVICE_BYTES, assert_untouched};
use crate::support::loop_device::LoopDevice;
use crate::support::provisioner::ProvisionerProcess;
use crate::support::world::inspect::held_terminating;
use crate::support::world::waits::{WAIT, eventually};
use crate::support::world::{Data, QUICK_POLLING, World, polling};

/// One row's world: its own fake API server, node and loop devices.
pub struct RowWorld {
    /// The shared test world.
    pub world: World,
    /// The node the provisioner runs for.
    pub node: String,
    /// The devices, linked as `disk0`, `disk1`, … (or as a row names them).
    pub devices: Vec<Arc<LoopDevice>>,
}

impl RowWorld {
    /// A world with `count` blank devices linked as `disk0`, `disk1`, ….
    pub async fn new(node: &str, count: usize) -> RowWorld {
        let world = World::fake().await;
        let devices = world.attach_disks(count, DEVICE_BYTES);
        RowWorld {
            world,
            node: node.to_string(),
            devices,
        }
    }

    /// A valid Block spec over the world's directory.
    pub fn good_spec(&self) -> Data {
        self.world.block_spec("^disk")
    }

    /// Puts the good spec as ConfigMap `spec` and creates the node
    /// annotated with it.
    pub async fn configure(&self) {
        self.world.put_configmap("spec", self.good_spec()).await;
        self.world.add_node(&self.node, Some("spec")).await;
    }

    /// Starts the provisioner polling every [`QUICK_POLLING`], so that
    /// passes keep coming for the checks that nothing happened, with `env`.
    pub fn start(&self, mut env: Vec<(&'static str, String)>) -> ProvisionerProcess {
        env.push(polling(QUICK_POLLING));
        self.world.start(&self.node, env)
    }

    /// The PV name of entry `entry` (upstream's naming rule).
    pub fn pv_name(&self, entry: &str) -> String {
        format!("local-{}-{entry}", self.node)
    }

    /// Waits until the PV of `entry` exists; returns its UID.
    pub async fn wait_pv(&self, entry: &str) -> String {
        let pv = self.world.wait_for_pv(&self.pv_name(entry)).await;
        pv.metadata.uid.expect("a PV UID")
    }

    /// Writes the tenants' data (the fill byte) over every device.
    pub fn fill_devices(&self) {
        for device in &self.devices {
            device.fill();
        }
    }

    /// Zeroes every device, as an admin clears disks to have them offered.
    pub fn blank_devices(&self) {
        for device in &self.devices {
            device.blank();
        }
    }

    /// Fails unless every device still holds its fill byte.
    pub fn assert_devices_untouched(&self) {
        for device in &self.devices {
            assert_untouched(device);
        }
    }

    /// Writes the tenants' data over every device (their PVs exist), and
    /// checks, after a reconcile pass that began after it, that none was
    /// written to.
    pub async fn fill_and_check_untouched(&self, process: &ProvisionerProcess) {
        self.fill_devices();
        process.wait_for_fresh_passes(1).await;
        self.assert_devices_untouched();
    }

    /// Fails unless PV `name` is still the PV `uid`, not being deleted, and
    /// never got a DELETE.
    pub async fn assert_kept(&self, name: &str, uid: &str) {
        let pv = self.world.pv(name).await.expect("the PV is kept");
        assert_eq!(pv.metadata.uid.as_deref(), Some(uid), "the same PV");
        assert!(
            pv.metadata.deletion_timestamp.is_none(),
            "not being deleted"
        );
        assert_eq!(
            self.world.pv_requests("delete", Some(name)),
            0,
            "never deleted"
        );
    }

    /// Fails unless PV `name` is still the PV `uid`, deleted (by the program)
    /// but held Terminating by the program's finalizer, which it never
    /// removed: a cleanup that cannot run keeps the PV.
    pub async fn assert_held(&self, name: &str, uid: &str) {
        let pv = self.world.pv(name).await.expect("the PV is kept");
        assert_eq!(pv.metadata.uid.as_deref(), Some(uid), "the same PV");
        assert!(held_terminating(&pv), "Terminating, held by the finalizer");
        assert_eq!(
            self.world.finalizer_removals(Some(name)),
            0,
            "never released"
        );
    }

    /// Releases `disk1`'s PV (which holds its tenant's data) and waits until
    /// it is wiped and recreated: the positive signal that this world's
    /// cleanup works and has handled every PV event before it.
    pub async fn control_wipe(&self) {
        let name = self.pv_name("disk1");
        let uid = self.world.pv(&name).await.unwrap().metadata.uid;
        self.world.server().set_pv_phase(&name, "Released");
        self.world
            .wait_for_event_about("Wiped", "PersistentVolume", &name)
            .await;
        eventually("the control PV recreated", WAIT, || async {
            (self.world.pv(&name).await?.metadata.uid != uid).then_some(())
        })
        .await;
        assert!(
            self.devices[1].holds_only(0),
            "the control device is zeroed"
        );
    }
}
