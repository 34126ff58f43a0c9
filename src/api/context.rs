//! What the provisioning loop and the cleanup controller share: the
//! settings, this node's identity, the API requests, the reporter, the
//! store of this node's PVs, the devices being wiped and the shutdown flag.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::runtime::reflector::Store;
use tokio::sync::{Notify, watch};

use crate::api::requests::ApiRequests;
use crate::backoff::{BackoffTable, CLEANUP_RETRY};
use crate::config::ControllerSettings;
use crate::device::blockdev::DeviceNumber;
use crate::observe::history::DeviceHistory;
use crate::observe::report::Reporter;

/// UIDs of PVs this process did something to, kept while the PVs are in
/// the store (each new entry forgets those that are gone).
#[derive(Default)]
struct UidMemory(Mutex<BTreeSet<String>>);

impl UidMemory {
    /// Remembers `uid`; forgets the UIDs not in `live`.
    fn remember(&self, uid: &str, live: &BTreeSet<String>) {
        let mut uids = self.0.lock().expect("uid memory lock");
        uids.retain(|uid| live.contains(uid));
        uids.insert(uid.to_string());
    }

    fn contains(&self, uid: &str) -> bool {
        self.0.lock().expect("uid memory lock").contains(uid)
    }
}

/// Shared state of one node's controller.
pub struct Context {
    /// The validated flags.
    pub settings: ControllerSettings,
    /// The value of this node's PV label.
    pub label_value: String,
    /// Every PV and Node request.
    pub api: ApiRequests,
    /// Events, logs and metrics of single happenings.
    pub reporter: Reporter,
    /// This node's PVs, kept current by the shared PV watch.
    pub pvs: Store<PersistentVolume>,
    /// Wakes the provisioning loop.
    pub trigger: Arc<Notify>,
    /// Devices with a wipe in flight.
    pub wipes: WipesInFlight,
    /// Turns of full wipes (`--max-concurrent-wipes` at once).
    pub full_wipes: tokio::sync::Semaphore,
    /// Set at shutdown: wipes stop between two writes.
    pub cancel: Arc<AtomicBool>,
    /// PVs (by UID) whose cleanup failed, waiting for their retry.
    pub cleanup_backoff: Mutex<BackoffTable<String>>,
    /// How many times the PV watch has listed (a new list invalidates
    /// what was confirmed against the old one).
    pub pv_relists: Arc<AtomicU64>,
    /// PVs (by UID) this process released after their cleanup: a lagging
    /// watch event about one of them is ignored.
    released: UidMemory,
    /// PVs (by UID) this process sent a successful `DELETE` for: until the
    /// watch shows their deletion, a stale view of one of them as Released
    /// sends no second `DELETE`.
    deletes_sent: UidMemory,
    /// Histories of devices whose PV went, until their next PV carries them.
    histories: Mutex<HashMap<String, DeviceHistory>>,
    /// Whether the node is paused (no usable PV spec, or no Node): no PV is
    /// created, wiped or deleted. Set by the reconciler; true until its first run.
    pub paused: watch::Sender<bool>,
}

impl Context {
    /// Shared state over the given parts.
    pub fn new(
        settings: ControllerSettings,
        api: ApiRequests,
        reporter: Reporter,
        pvs: Store<PersistentVolume>,
        pv_relists: Arc<AtomicU64>,
        trigger: Arc<Notify>,
    ) -> Self {
        let full_wipes = usize::from(settings.max_concurrent_wipes);
        Context {
            label_value: crate::objects::naming::node_label_value(&settings.node_name),
            settings,
            api,
            reporter,
            pvs,
            pv_relists,
            trigger,
            wipes: WipesInFlight::default(),
            full_wipes: tokio::sync::Semaphore::new(full_wipes),
            cancel: Arc::new(AtomicBool::new(false)),
            cleanup_backoff: Mutex::new(BackoffTable::new(CLEANUP_RETRY)),
            released: UidMemory::default(),
            deletes_sent: UidMemory::default(),
            histories: Mutex::default(),
            paused: watch::Sender::new(true),
        }
    }

    /// Pauses or resumes the node.
    pub fn set_paused(&self, paused: bool) {
        self.paused.send_if_modified(|current| {
            let changed = *current != paused;
            *current = paused;
            changed
        });
    }

    /// Records that the PV `uid` was released after its cleanup; forgets
    /// the UIDs no longer in the store.
    pub fn mark_released(&self, uid: &str) {
        self.released.remember(uid, &self.live_uids());
    }

    /// Records that this process deleted the PV `uid` (the API server
    /// accepted the `DELETE`); forgets the UIDs no longer in the store.
    pub fn mark_delete_sent(&self, uid: &str) {
        self.deletes_sent.remember(uid, &self.live_uids());
    }

    /// Whether this process already deleted the PV `uid`.
    pub fn delete_sent(&self, uid: &str) -> bool {
        self.deletes_sent.contains(uid)
    }

    /// The UIDs of the PVs in the store.
    fn live_uids(&self) -> BTreeSet<String> {
        self.pvs
            .state()
            .iter()
            .filter_map(|pv| pv.metadata.uid.clone())
            .collect()
    }

    /// Whether this process released the PV `uid` after its cleanup.
    pub fn is_released(&self, uid: &str) -> bool {
        self.released.contains(uid)
    }

    /// Keeps the history of the device of `pv` (which goes) for its next PV.
    pub fn keep_history(&self, pv: &PersistentVolume, history: DeviceHistory) {
        if let Some(key) = crate::observe::history::device_key_of(pv) {
            self.histories
                .lock()
                .expect("histories lock")
                .insert(key, history);
        }
    }

    /// The history kept for the device `key`, if any.
    pub fn history_for(&self, key: &str) -> Option<DeviceHistory> {
        self.histories
            .lock()
            .expect("histories lock")
            .get(key)
            .cloned()
    }

    /// Forgets the history of the device `key` (its new PV carries it).
    pub fn forget_history(&self, key: &str) {
        self.histories.lock().expect("histories lock").remove(key);
    }

    /// Whether the node is paused.
    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }
}

/// The devices being wiped: discovery must not offer them, and two PVs of
/// one device are never wiped at once.
#[derive(Debug, Default)]
pub struct WipesInFlight {
    devices: Mutex<BTreeSet<DeviceNumber>>,
}

impl WipesInFlight {
    /// Claims `device` for a wipe; `false` when one is already in flight.
    pub fn claim(&self, device: DeviceNumber) -> bool {
        self.devices.lock().expect("wipes lock").insert(device)
    }

    /// Releases `device` after its wipe.
    pub fn release(&self, device: DeviceNumber) {
        self.devices.lock().expect("wipes lock").remove(&device);
    }

    /// The devices being wiped now.
    pub fn snapshot(&self) -> BTreeSet<DeviceNumber> {
        self.devices.lock().expect("wipes lock").clone()
    }
}
