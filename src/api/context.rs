//! What the provisioning loop and the cleanup controller share: the
//! settings, this node's identity, the API requests, the reporter, the
//! store of this node's PVs, the devices being wiped and the shutdown flag.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::reflector::Store;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::api::requests::ApiRequests;
use crate::backoff::{BackoffTable, CLEANUP_RETRY};
use crate::config::ControllerSettings;
use crate::device::blockdev::DeviceNumber;
use crate::objects::pv::LeanPv;
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
    pub pvs: Store<LeanPv>,
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
        pvs: Store<LeanPv>,
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
    pub fn keep_history(&self, pv: &LeanPv, history: DeviceHistory) {
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

/// How long a finished wipe is remembered: longer than any scan takes, so
/// a scan that found the device locked by it still knows whose lock it was.
const FINISHED_WIPE_MEMORY: Duration = Duration::from_secs(60);

/// The devices being wiped: discovery must not offer them, and two PVs of
/// one device are never wiped at once.
#[derive(Debug, Default)]
pub struct WipesInFlight {
    devices: Mutex<WipeRecord>,
}

/// The wipes running now, and when each recently finished one ended.
#[derive(Debug, Default)]
struct WipeRecord {
    running: BTreeSet<DeviceNumber>,
    finished: Vec<(DeviceNumber, Instant)>,
}

impl WipesInFlight {
    /// Claims `device` for a wipe; `false` when one is already in flight.
    pub fn claim(&self, device: DeviceNumber) -> bool {
        self.devices
            .lock()
            .expect("wipes lock")
            .running
            .insert(device)
    }

    /// Releases `device` after its wipe (and after its device lock is let go).
    pub fn release(&self, device: DeviceNumber) {
        let now = Instant::now();
        let mut record = self.devices.lock().expect("wipes lock");
        record.running.remove(&device);
        record
            .finished
            .retain(|(_, ended)| now.duration_since(*ended) < FINISHED_WIPE_MEMORY);
        record.finished.push((device, now));
    }

    /// The devices one of our wipes held at some moment since `since`:
    /// those being wiped now and those whose wipe ended after it. A scan
    /// that began at `since` may have found any of them locked by our own
    /// wipe, even when that wipe has ended by the time the scan is read.
    pub fn since(&self, since: Instant) -> BTreeSet<DeviceNumber> {
        let record = self.devices.lock().expect("wipes lock");
        let ended_since = record
            .finished
            .iter()
            .filter(|(_, ended)| *ended >= since)
            .map(|(device, _)| *device);
        record.running.iter().copied().chain(ended_since).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wipe_that_ended_during_a_scan_still_counts_for_that_scan() {
        let wipes = WipesInFlight::default();
        let device = DeviceNumber { major: 7, minor: 3 };
        let other = DeviceNumber { major: 7, minor: 4 };
        assert!(wipes.claim(device));
        assert!(!wipes.claim(device), "one wipe per device at a time");
        let scan_began = Instant::now();
        assert_eq!(wipes.since(scan_began), BTreeSet::from([device]));
        wipes.release(device);
        assert_eq!(
            wipes.since(scan_began),
            BTreeSet::from([device]),
            "the scan that began while the wipe held the device still knows it"
        );
        let next_scan = Instant::now();
        assert!(
            wipes.since(next_scan).is_empty(),
            "a scan that began after the wipe ended sees the device free"
        );
        assert!(wipes.claim(device), "released devices can be claimed again");
        assert!(wipes.claim(other));
        assert_eq!(wipes.since(next_scan), BTreeSet::from([device, other]));
    }
}
