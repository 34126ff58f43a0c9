//! What the fake API server saw at the moment a request arrived: for every
//! PV write, whether the PV's device was zeroed then; for every PV create,
//! when it came. Read from the server's request observer, so no test has to
//! catch the moment by polling.
//!
//! The cleanup is gated by the finalizer [`CLEANUP_FINALIZER`]: a Released
//! PV is DELETEd first (it stays Terminating), its device is wiped, and only
//! then is the finalizer removed (a JSON patch `test` + `remove`), which lets
//! the PV go. So the write that must come after the wipe is the finalizer's
//! removal, and a new PV for the device must come after that.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;

use super::{CLEANUP_FINALIZER, World, lock};
use crate::support::fake_api::RecordedRequest;
use crate::support::loop_device::LoopDevice;

/// Bytes at each end of a device that must be zero for it to count as wiped.
const CHECKED_BYTES: u64 = 1024 * 1024;
/// Bytes checked at each Ceph BlueStore label offset inside the device.
const LABEL_BYTES: u64 = 4096;
/// Where Ceph BlueStore keeps copies of its label besides offset 0.
const CEPH_LABEL_OFFSETS: [u64; 4] = [1 << 30, 10 << 30, 100 << 30, 1000 << 30];

/// What a PV request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// A POST.
    Create,
    /// A DELETE.
    Delete,
    /// A PATCH removing [`CLEANUP_FINALIZER`].
    FinalizerRemoval,
}

/// A PV write as the server saw it arrive.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The PV's name.
    pub pv: String,
    /// What it was.
    pub write: Write,
    /// The PV's device was zeroed then: its first and last MiB, and 4 KiB
    /// at each Ceph label offset inside it.
    pub device_zeroed: bool,
    /// When it arrived.
    pub at: Instant,
}

/// The records of a world's request observer.
#[derive(Default)]
pub struct Witness {
    seen: Mutex<Vec<Seen>>,
}

/// Whether `request` is a PATCH removing [`CLEANUP_FINALIZER`] from a PV:
/// kube-runtime's JSON patch `test` (the finalizer at an index) + `remove`.
pub fn is_finalizer_removal(request: &RecordedRequest) -> bool {
    if request.resource != "persistentvolumes" || request.verb != "patch" {
        return false;
    }
    let Some(Value::Array(operations)) = &request.body else {
        return false;
    };
    let op = |operation: &Value, name: &str| operation["op"] == name;
    operations
        .iter()
        .any(|o| op(o, "test") && o["value"] == CLEANUP_FINALIZER)
        && operations.iter().any(|o| op(o, "remove"))
}

impl Witness {
    /// Every PV write seen so far, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.seen).clone()
    }

    /// The writes of `write` to PV `pv`.
    pub fn of(&self, pv: &str, write: Write) -> Vec<Seen> {
        let seen = self.seen();
        seen.into_iter()
            .filter(|s| s.pv == pv && s.write == write)
            .collect()
    }

    /// When each PV create (POST) arrived, oldest first.
    pub fn creations(&self) -> Vec<Instant> {
        let seen = self.seen();
        seen.iter()
            .filter(|s| s.write == Write::Create)
            .map(|s| s.at)
            .collect()
    }

    /// Fails unless PV `pv` was DELETEd while its device still held data,
    /// and its finalizer removed only after that, with the device zeroed:
    /// the finalizer-gated cleanup's order.
    pub fn assert_deleted_then_released(&self, pv: &str) {
        let seen = self.seen();
        let first = |write| seen.iter().position(|s| s.pv == pv && s.write == write);
        let (delete, release) = (first(Write::Delete), first(Write::FinalizerRemoval));
        assert!(
            delete.is_some() && delete < release,
            "PV {pv}: the DELETE comes before the wipe and the release: {seen:?}"
        );
        assert!(
            delete.is_some_and(|at| !seen[at].device_zeroed),
            "PV {pv}: DELETEd while its device still held data: {seen:?}"
        );
        self.assert_released_only_when_zeroed();
    }

    /// Fails naming every finalizer removal that arrived while the PV's
    /// device was not wiped.
    pub fn assert_released_only_when_zeroed(&self) {
        let unwiped: Vec<String> = self
            .seen()
            .into_iter()
            .filter(|s| s.write == Write::FinalizerRemoval && !s.device_zeroed)
            .map(|s| s.pv)
            .collect();
        assert!(
            unwiped.is_empty(),
            "the finalizer of {unwiped:?} was removed while the device was not wiped"
        );
    }

    fn record(&self, request: &RecordedRequest, devices: &BTreeMap<String, Arc<LoopDevice>>) {
        if request.resource != "persistentvolumes" {
            return;
        }
        let write = match request.verb.as_str() {
            "create" => Write::Create,
            "delete" => Write::Delete,
            _ if is_finalizer_removal(request) => Write::FinalizerRemoval,
            _ => return,
        };
        let pv = match write {
            Write::Create => request
                .body
                .as_ref()
                .and_then(|body| body["metadata"]["name"].as_str())
                .unwrap_or_default()
                .to_string(),
            _ => request.name.clone().unwrap_or_default(),
        };
        let device_zeroed = devices.get(&pv).is_some_and(|device| zeroed(device));
        lock(&self.seen).push(Seen {
            pv,
            write,
            device_zeroed,
            at: Instant::now(),
        });
    }
}

/// Whether the first and the last MiB of `device`, and 4 KiB at each Ceph
/// label offset inside it, are zero: what a wipe zeroes at least, and what
/// a probe before an offer reads.
pub fn zeroed(device: &LoopDevice) -> bool {
    let size = std::fs::metadata(device.backing_file())
        .map(|metadata| metadata.len())
        .unwrap_or_default();
    if size < CHECKED_BYTES {
        return false;
    }
    let zero =
        |offset: u64, length: u64| device.read(offset, length as usize).iter().all(|b| *b == 0);
    zero(0, CHECKED_BYTES)
        && zero(size - CHECKED_BYTES, CHECKED_BYTES)
        && CEPH_LABEL_OFFSETS
            .iter()
            .filter(|offset| **offset + LABEL_BYTES <= size)
            .all(|offset| zero(*offset, LABEL_BYTES))
}

impl World {
    /// Installs the fake server's request observer: it records every PV
    /// create, DELETE and finalizer removal and, for each, whether the
    /// device that `devices` names for that PV was zeroed at that moment.
    pub fn witness(&self, devices: BTreeMap<String, Arc<LoopDevice>>) -> Arc<Witness> {
        let witness = Arc::new(Witness::default());
        let records = witness.clone();
        self.server()
            .observe_requests(move |request| records.record(request, &devices));
        witness
    }

    /// Fails unless every PV created (201) under a name that was created
    /// before came after a successful removal of the old PV's finalizer
    /// (200), in the order the server answered them: no new PV for a
    /// device while the old one may still be there.
    pub fn assert_recreated_only_after_release(&self) {
        let mut released: BTreeMap<String, bool> = BTreeMap::new();
        for request in self.server().requests() {
            if request.resource != "persistentvolumes" {
                continue;
            }
            let name = request.name.clone().or_else(|| {
                let body = request.body.as_ref()?;
                body["metadata"]["name"].as_str().map(String::from)
            });
            let Some(name) = name else { continue };
            if request.verb == "create" && request.status == 201 {
                if let Some(was_released) = released.insert(name.clone(), false) {
                    assert!(
                        was_released,
                        "PV {name} was created again before the old one's finalizer was removed"
                    );
                }
            } else if is_finalizer_removal(&request) && request.status == 200 {
                released.entry(name).and_modify(|r| *r = true);
            }
        }
    }
}
