//! The check before a device's first offer: every device the plan would
//! give a PV is probed ([`crate::probe`]) first. A blank device is offered;
//! one that holds data is not (a `DeviceHasData` problem naming the
//! signature), unless the spec says `wipeDevicesWithData: "true"`, in which
//! case it is wiped through the guarded [`crate::wipe`] path, probed again
//! and then offered. Probe results of devices that hold data are kept by
//! identity until the next full rescan (the poll), so a PV event does not
//! read every such device again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use futures::StreamExt;

use crate::blockdev::DeviceNumber;
use crate::discovery::{Device, DeviceProblem, ProblemKind};
use crate::probe::{ProbeResult, probe_device};
use crate::spec::PvSpec;
use crate::wipe::{WipeError, WipeRequest, wipe_device};

/// Probes (or wipes) running at once.
const CONCURRENT_PROBES: usize = 8;

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

impl FirstOffers {
    /// Forgets every result: the next check probes again (a full rescan).
    pub fn forget(&mut self) {
        self.holding_data.clear();
    }

    /// Judges `candidates` (probing those not known to hold data, at most
    /// [`CONCURRENT_PROBES`] at a time); with `spec.wipe_devices_with_data`
    /// a device holding data is wiped first. `cancel` stops wipes at shutdown.
    pub async fn judge(
        &mut self,
        candidates: Vec<Device>,
        spec: &PvSpec,
        cancel: &Arc<AtomicBool>,
    ) -> Vec<(Device, Verdict)> {
        let keep: Vec<Identity> = candidates.iter().map(identity).collect();
        self.holding_data.retain(|key, _| keep.contains(key));
        let known = self.holding_data.clone();
        let wipe_with_data = spec.wipe_devices_with_data;
        let wipe_bytes = spec.wipe_bytes;
        let device_dir = spec.device_dir.clone();
        let judged: Vec<(Device, ProbeResult)> = futures::stream::iter(candidates)
            .map(|device| {
                let known = known.get(&identity(&device)).cloned();
                let cancel = cancel.clone();
                let device_dir = device_dir.clone();
                async move {
                    let result = match known {
                        Some(result) if !wipe_with_data => result,
                        _ => {
                            let job = move || {
                                examine(&device, &device_dir, wipe_with_data, wipe_bytes, &cancel)
                                    .map(|r| (device, r))
                            };
                            match tokio::task::spawn_blocking(job).await {
                                Ok(done) => return done,
                                Err(error) => return Err(error.to_string()),
                            }
                        }
                    };
                    Ok((device, result))
                }
            })
            .buffer_unordered(CONCURRENT_PROBES)
            .filter_map(|judged| async move { judged.ok() })
            .collect()
            .await;
        judged
            .into_iter()
            .map(|(device, result)| {
                if matches!(result, ProbeResult::HoldsData { .. }) {
                    self.holding_data.insert(identity(&device), result.clone());
                }
                let verdict = verdict(&device, &result);
                (device, verdict)
            })
            .collect()
    }
}

/// Probes one device; with `wipe_with_data`, wipes one that holds data and
/// probes it again (blocking).
fn examine(
    device: &Device,
    device_dir: &std::path::Path,
    wipe_with_data: bool,
    wipe_bytes: u64,
    cancel: &AtomicBool,
) -> Result<ProbeResult, String> {
    let probed = probe_device(&device.resolved)
        .map_err(|error| format!("cannot probe {}: {error}", device.resolved.display()))?;
    if !wipe_with_data || !matches!(probed, ProbeResult::HoldsData { .. }) {
        return Ok(probed);
    }
    tracing::info!(device = %device.path.display(), "wiping a device that holds data before its first offer (wipeDevicesWithData)");
    let request = WipeRequest::for_first_offer(device, device_dir, wipe_bytes);
    match wipe_device(&request, cancel) {
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

fn verdict(device: &Device, result: &ProbeResult) -> Verdict {
    let Some(reason) = result.refusal() else {
        return Verdict::Offer;
    };
    let kind = match result {
        ProbeResult::HoldsData { .. } => ProblemKind::HasData,
        _ => ProblemKind::Skipped,
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
    })
}
