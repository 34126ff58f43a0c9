//! What the fake API server saw at the moment a request arrived: for every
//! PV DELETE, whether the PV's device was zeroed then; for every PV create,
//! when it came. Read from the server's request observer, so no test has to
//! catch the moment by polling.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{World, lock};
use crate::support::fake_api::RecordedRequest;
use crate::support::loop_device::LoopDevice;

/// Bytes at each end of a device that must be zero for it to count as wiped.
const CHECKED_BYTES: usize = 1024 * 1024;

/// A DELETE of a PV as the server saw it arrive.
#[derive(Debug, Clone)]
pub struct DeleteSeen {
    /// The PV's name.
    pub pv: String,
    /// The first and last MiB of the PV's device were all zero.
    pub device_zeroed: bool,
}

/// The records of a world's request observer.
#[derive(Default)]
pub struct Witness {
    deletes: Mutex<Vec<DeleteSeen>>,
    creations: Mutex<Vec<Instant>>,
}

impl Witness {
    /// Every PV DELETE seen so far.
    pub fn deletes(&self) -> Vec<DeleteSeen> {
        lock(&self.deletes).clone()
    }

    /// When each PV create (POST) arrived, oldest first.
    pub fn creations(&self) -> Vec<Instant> {
        lock(&self.creations).clone()
    }

    fn record(&self, request: &RecordedRequest, devices: &BTreeMap<String, Arc<LoopDevice>>) {
        if request.resource != "persistentvolumes" {
            return;
        }
        match request.verb.as_str() {
            "create" => lock(&self.creations).push(Instant::now()),
            "delete" => {
                let pv = request.name.clone().unwrap_or_default();
                let device_zeroed = devices.get(&pv).is_some_and(|device| ends_zeroed(device));
                lock(&self.deletes).push(DeleteSeen { pv, device_zeroed });
            }
            _ => {}
        }
    }
}

/// Whether the first and the last MiB of `device` are zero.
fn ends_zeroed(device: &LoopDevice) -> bool {
    let size = std::fs::metadata(device.backing_file())
        .map(|metadata| metadata.len())
        .unwrap_or_default();
    if size < CHECKED_BYTES as u64 {
        return false;
    }
    let zero = |offset| device.read(offset, CHECKED_BYTES).iter().all(|b| *b == 0);
    zero(0) && zero(size - CHECKED_BYTES as u64)
}

impl World {
    /// Installs the fake server's request observer: it records every PV
    /// create and, for every PV DELETE, whether the device that `devices`
    /// names for that PV was zeroed at that moment.
    pub fn witness(&self, devices: BTreeMap<String, Arc<LoopDevice>>) -> Arc<Witness> {
        let witness = Arc::new(Witness::default());
        let records = witness.clone();
        self.server()
            .observe_requests(move |request| records.record(request, &devices));
        witness
    }
}
