//! The wipe request: what a PV of ours records about its device, read and
//! checked by the [`Guard::OwnedByThisNode`] and [`Guard::RecordedIdentity`]
//! guards before anything else happens.

use std::path::PathBuf;

use super::{Guard, WipeError, refuse};
use crate::device::blockdev::DeviceNumber;
use crate::device::regions::DEFAULT_HEAD_BYTES;
use crate::objects::pv::{self, LeanPv};
use crate::objects::spec::WipeMode;

/// Everything a wipe needs, taken from the PV and checked by the
/// [`Guard::OwnedByThisNode`] and [`Guard::RecordedIdentity`] guards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WipeRequest {
    /// The PV's name (for reports).
    pub pv_name: String,
    /// `spec.local.path`.
    pub path: PathBuf,
    /// The `deviceDir` recorded when the PV was created.
    pub device_dir: PathBuf,
    /// The device number recorded at creation.
    pub number: DeviceNumber,
    /// The device's size recorded at creation (the PV's exact capacity).
    pub size_bytes: u64,
    /// The stable id recorded at creation, if the device had one.
    pub stable_id: Option<String>,
    /// Bytes to zero at the head.
    pub head_bytes: u64,
    /// Signature regions, or every byte.
    pub mode: WipeMode,
    /// Bytes per second a full wipe may write.
    pub bandwidth: Option<u64>,
    /// The offset a full wipe recorded as done before a restart (0: none).
    pub resume_from: u64,
}

/// Facts about this node that decide whether a PV is ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner<'a> {
    /// This node's name.
    pub node_name: &'a str,
    /// The node label value of this node.
    pub label_value: &'a str,
}

impl WipeRequest {
    /// Reads a PV of ours into a request, or refuses it.
    pub fn from_pv(pv: &LeanPv, owner: &Owner<'_>) -> Result<Self, WipeError> {
        check_owner(pv, owner)?;
        read_identity(pv)
    }
}

/// Guard [`Guard::OwnedByThisNode`]: our node label and node-name annotation.
fn check_owner(pv: &LeanPv, owner: &Owner<'_>) -> Result<(), WipeError> {
    let label = pv
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(pv::NODE_LABEL));
    if label.map(String::as_str) != Some(owner.label_value) {
        return Err(refuse(
            Guard::OwnedByThisNode,
            format!(
                "label {} is {label:?}, not {:?}",
                pv::NODE_LABEL,
                owner.label_value
            ),
        ));
    }
    let annotations = pv.metadata.annotations.clone().unwrap_or_default();
    let recorded_node = annotations.get(pv::NODE_NAME_ANNOTATION);
    if recorded_node.map(String::as_str) != Some(owner.node_name) {
        return Err(refuse(
            Guard::OwnedByThisNode,
            format!(
                "annotation {} is {recorded_node:?}, not {:?}",
                pv::NODE_NAME_ANNOTATION,
                owner.node_name
            ),
        ));
    }
    Ok(())
}

/// Guard [`Guard::RecordedIdentity`]: the path, device dir, number, size
/// and wipe size recorded on the PV.
fn read_identity(pv: &LeanPv) -> Result<WipeRequest, WipeError> {
    let name = pv.metadata.name.clone().unwrap_or_default();
    let annotations = pv.metadata.annotations.clone().unwrap_or_default();
    let missing = |what: &str| {
        refuse(
            Guard::RecordedIdentity,
            format!("the PV does not record {what}"),
        )
    };
    let spec = pv.spec.as_ref().ok_or_else(|| missing("a spec"))?;
    let path = spec
        .local
        .as_ref()
        .map(|local| PathBuf::from(&local.path))
        .ok_or_else(|| missing("spec.local.path"))?;
    let device_dir = annotations
        .get(pv::DEVICE_DIR_ANNOTATION)
        .map(PathBuf::from)
        .ok_or_else(|| missing(pv::DEVICE_DIR_ANNOTATION))?;
    let size_text = annotations
        .get(pv::DEVICE_SIZE_ANNOTATION)
        .ok_or_else(|| missing(pv::DEVICE_SIZE_ANNOTATION))?;
    let size_bytes: u64 = size_text.parse().map_err(|_| {
        refuse(
            Guard::RecordedIdentity,
            format!("{} is {size_text:?}", pv::DEVICE_SIZE_ANNOTATION),
        )
    })?;
    let number = annotations
        .get(pv::DEVICE_NUMBER_ANNOTATION)
        .map(|text| {
            text.parse::<DeviceNumber>().map_err(|error| {
                refuse(
                    Guard::RecordedIdentity,
                    format!("{}: {error}", pv::DEVICE_NUMBER_ANNOTATION),
                )
            })
        })
        .ok_or_else(|| missing(pv::DEVICE_NUMBER_ANNOTATION))??;
    let head_bytes = match annotations.get(pv::WIPE_BYTES_ANNOTATION) {
        None => DEFAULT_HEAD_BYTES,
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|bytes| *bytes > 0 && bytes % crate::objects::spec::WIPE_BYTES_ALIGNMENT == 0)
            .ok_or_else(|| {
                refuse(
                    Guard::RecordedIdentity,
                    format!("{} is {text:?}", pv::WIPE_BYTES_ANNOTATION),
                )
            })?,
    };
    Ok(WipeRequest {
        pv_name: name,
        path,
        device_dir,
        number,
        size_bytes,
        stable_id: annotations.get(pv::DEVICE_STABLE_ID_ANNOTATION).cloned(),
        head_bytes,
        // An unreadable mode wipes everything: never less than was asked.
        mode: annotations
            .get(pv::WIPE_MODE_ANNOTATION)
            .map_or(WipeMode::Signatures, |text| {
                WipeMode::parse(text).unwrap_or(WipeMode::Full)
            }),
        bandwidth: annotations
            .get(pv::WIPE_BANDWIDTH_ANNOTATION)
            .and_then(|text| text.parse().ok())
            .filter(|rate| *rate > 0),
        resume_from: annotations
            .get(pv::WIPE_PROGRESS_ANNOTATION)
            .and_then(|text| recorded_progress(text, size_bytes))
            .unwrap_or(0),
    })
}

/// The `DONE` of a `wipe-progress` value `DONE/TOTAL` for a device of
/// `size` bytes; `None` when it is not one of this device's.
pub fn recorded_progress(text: &str, size: u64) -> Option<u64> {
    let (done, total) = text.split_once('/')?;
    let (done, total): (u64, u64) = (done.parse().ok()?, total.parse().ok()?);
    (total == size && done <= total).then_some(done)
}
