//! The check before a device's first offer: every device the plan would
//! give a PV is probed ([`crate::device::probe`]) first. A blank device is offered;
//! one that holds data is not (a `DeviceHasData` problem naming the
//! signature), unless the spec says `wipeDevicesWithData: "true"`, in which
//! case it is wiped through the guarded [`crate::device::wipe`] path, probed again
//! and then offered. Probe results of devices that hold data are kept by
//! identity until the next full rescan (the poll), so a PV event does not
//! read every such device again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::device::blockdev::DeviceNumber;
use crate::device::probe::{ProbeResult, probe_device};
use crate::device::wipe::{WipeError, WipeRequest, ZeroMethod, wipe_device};
use crate::discover::devices::{Device, DeviceProblem, ProblemKind};
use crate::objects::spec::{PvSpec, WipeMode};

/// What a device's identity is for the cache: number, size, stable id.
type Identity = (DeviceNumber, u64, Option<String>);

fn identity(device: &Device) -> Identity {
    (device.number, device.size_bytes, device.stable_id.clone())
}

/// The verdict on one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Blank: offer it.
    Offer,
    /// Not offered, for this reason.
    NotOffered(DeviceProblem),
}

/// Probe results of devices that hold data, by identity.
#[derive(Debug, Default)]
pub struct FirstOffers {
    holding_data: HashMap<Identity, ProbeResult>,
}

/// What a first-offer check needs from the spec.
#[derive(Debug, Clone)]
pub struct OfferRules {
    /// `deviceDir` (the wipe's path guard).
    pub device_dir: std::path::PathBuf,
    /// Wipe a device that holds data, then offer it.
    pub wipe_with_data: bool,
    /// Bytes zeroed per region by such a wipe.
    pub wipe_bytes: u64,
    /// How such a wipe writes its zeros first.
    pub method: ZeroMethod,
}

impl OfferRules {
    /// The rules of `spec`, wiping with `method`.
    pub fn of(spec: &PvSpec, method: ZeroMethod) -> Self {
        OfferRules {
            device_dir: spec.device_dir.clone(),
            wipe_with_data: spec.wipe_devices_with_data,
            wipe_bytes: spec.wipe_bytes,
            method,
        }
    }
}

impl FirstOffers {
    /// Forgets every result: the next check probes again (a full rescan).
    pub fn forget(&mut self) {
        self.holding_data.clear();
    }

    /// Keeps only the results of `candidates`.
    pub fn retain<'a>(&mut self, candidates: impl IntoIterator<Item = &'a Device>) {
        let keep: Vec<Identity> = candidates.into_iter().map(identity).collect();
        self.holding_data.retain(|key, _| keep.contains(key));
    }

    /// The cached result for `device`, when it is known to hold data and
    /// `rules` do not ask for a wipe.
    pub fn known(&self, device: &Device, rules: &OfferRules) -> Option<ProbeResult> {
        if rules.wipe_with_data {
            return None;
        }
        self.holding_data.get(&identity(device)).cloned()
    }

    /// Remembers a result (only "holds data" is kept).
    pub fn record(&mut self, device: &Device, result: &ProbeResult) {
        if matches!(result, ProbeResult::HoldsData { .. }) {
            self.holding_data.insert(identity(device), result.clone());
        }
    }
}

/// Probes `device` (and wipes it first when `rules` say so) off the async
/// runtime. `Err`: it could not be probed; try again later.
pub async fn check(
    device: Device,
    rules: OfferRules,
    cancel: Arc<AtomicBool>,
) -> Result<ProbeResult, String> {
    let job = move || examine(&device, &rules, &cancel);
    tokio::task::spawn_blocking(job)
        .await
        .unwrap_or_else(|error| Err(error.to_string()))
}

/// Probes one device; with `wipe_with_data`, wipes one that holds data and
/// probes it again (blocking).
fn examine(
    device: &Device,
    rules: &OfferRules,
    cancel: &AtomicBool,
) -> Result<ProbeResult, String> {
    let probed = probe_device(&device.resolved)
        .map_err(|error| format!("cannot probe {}: {error}", device.resolved.display()))?;
    if !rules.wipe_with_data || !matches!(probed, ProbeResult::HoldsData { .. }) {
        return Ok(probed);
    }
    tracing::info!(device = %device.path.display(), "wiping a device that holds data before its first offer (wipeDevicesWithData)");
    let request = WipeRequest {
        pv_name: format!("(none: first offer of {})", device.path.display()),
        path: device.path.clone(),
        device_dir: rules.device_dir.clone(),
        number: device.number,
        size_bytes: device.size_bytes,
        stable_id: device.stable_id.clone(),
        head_bytes: rules.wipe_bytes,
        mode: WipeMode::Signatures,
        bandwidth: None,
        resume_from: 0,
    };
    match wipe_device(&request, rules.method, cancel, &|_| {}) {
        Ok(_) => probe_device(&device.resolved).map_err(|error| {
            format!(
                "cannot probe {} after its wipe: {error}",
                device.resolved.display()
            )
        }),
        Err(error @ WipeError::Cancelled) => Err(error.to_string()),
        Err(error) => Ok(ProbeResult::InUse(format!(
            "wiping it before its first offer failed: {error}"
        ))),
    }
}

/// The verdict a probe result gives `device`.
pub fn verdict(device: &Device, result: &ProbeResult) -> Verdict {
    let Some(reason) = result.refusal() else {
        return Verdict::Offer;
    };
    let kind = match result {
        ProbeResult::HoldsData { .. } => ProblemKind::HasData,
        ProbeResult::InUse(_) => ProblemKind::InUse,
        ProbeResult::Blank => ProblemKind::Skipped,
    };
    let reason = match kind {
        ProblemKind::HasData => format!(
            "{reason}; never offered (set wipeDevicesWithData: \"true\" in the PV spec ConfigMap to wipe such devices, or wipe it by hand)"
        ),
        _ => reason,
    };
    Verdict::NotOffered(DeviceProblem {
        name: device.name.clone(),
        path: device.path.clone(),
        reason,
        number: Some(device.number),
        kind,
        class: None,
    })
}
