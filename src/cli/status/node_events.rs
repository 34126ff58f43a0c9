//! What the controller's Events on a Node say about it: the error devices,
//! where its PV spec stands, and its last device count. Pure.
//!
//! The controller publishes a Node Event once per change: `DeviceSkipped`
//! and `DeviceHasData` (note `<path> gets no PersistentVolume: <reason>`),
//! `InvalidVolume` (note `<reason> (device <path>)`), `DevicesDiscovered`
//! (`N device(s) usable (…), M without one`) and the spec state
//! (`PVSpecApplied`, `PVSpecNotConfigured`, `PVSpecNotFound`,
//! `PVSpecInvalid`, `DeviceDirUnreadable`, `NodeMissing`). An error device
//! is the latest such Event per device path, unless something newer shows
//! it was resolved: a PV for that path created at or after it, or a newer
//! `DevicesDiscovered` counting no device without a PV. Events expire (one
//! hour by default), so a device reported earlier and unchanged since is
//! not seen; the last count tells how many there were.

use std::collections::BTreeMap;

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::objects::reasons::{
    DEVICE_OPENING, DEVICE_REASONS, DEVICES_DISCOVERED, GETS_NO_PV, INVALID_VOLUME, SPEC_REASONS,
    WITHOUT_ONE,
};
use crate::observe::events::CONTROLLER_NAME;

/// One Event of this program about a Node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeEvent {
    /// The regarded Node's name.
    pub node: String,
    /// `reason`.
    pub reason: String,
    /// `note`.
    pub note: String,
    /// `eventTime`, else the deprecated last timestamp, else its creation.
    pub time: Option<Timestamp>,
    /// The Event's name (orders Events of the same time).
    pub name: String,
}

/// A device that gets no PV, as the latest Event about it says.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDevice {
    /// The device entry's path.
    pub device: String,
    /// The Event's reason (`DeviceSkipped`, `DeviceHasData`, `InvalidVolume`).
    pub reason: String,
    /// Why, from the Event's note.
    pub message: String,
    /// When it was reported (RFC 3339).
    pub at: Option<String>,
}

/// A standing condition of the node: the latest Event of its kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The Event's reason.
    pub reason: String,
    /// Its note.
    pub message: String,
    /// When it was reported (RFC 3339).
    pub at: Option<String>,
}

/// The controller's last device count on the node.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceCount {
    /// Devices with or getting a PV.
    pub usable: Option<u64>,
    /// Matching devices without one (the error devices).
    pub without_pv: Option<u64>,
    /// When it was counted (RFC 3339).
    pub at: Option<String>,
}

/// What a node's Events say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeReport {
    /// The error devices, by path.
    pub error_devices: Vec<ErrorDevice>,
    /// Where the PV spec stands.
    pub spec: Option<Condition>,
    /// The last device count.
    pub count: Option<DeviceCount>,
}

/// A timestamp as `status` prints it: RFC 3339 to the second, UTC.
pub fn format_time(time: Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// This program's Events about Nodes, by Node name, oldest first.
pub fn by_node(events: &[Event]) -> BTreeMap<String, Vec<NodeEvent>> {
    let mut nodes: BTreeMap<String, Vec<NodeEvent>> = BTreeMap::new();
    for event in events {
        let Some(regarding) = &event.regarding else {
            continue;
        };
        if event.reporting_controller.as_deref() != Some(CONTROLLER_NAME)
            || regarding.kind.as_deref() != Some("Node")
        {
            continue;
        }
        let Some(node) = regarding.name.clone() else {
            continue;
        };
        let time = event
            .event_time
            .as_ref()
            .map(|time| time.0)
            .or(event.deprecated_last_timestamp.as_ref().map(|time| time.0))
            .or(event
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|time| time.0));
        nodes.entry(node.clone()).or_default().push(NodeEvent {
            node,
            reason: event.reason.clone().unwrap_or_default(),
            note: event.note.clone().unwrap_or_default(),
            time,
            name: event.metadata.name.clone().unwrap_or_default(),
        });
    }
    for events in nodes.values_mut() {
        events.sort_by(|a, b| (a.time, &a.name).cmp(&(b.time, &b.name)));
    }
    nodes
}

/// The device path and the reason an error-device Event's note names.
pub fn device_of(reason: &str, note: &str) -> Option<(String, String)> {
    if reason == INVALID_VOLUME {
        let body = note.strip_suffix(')')?;
        let (message, path) = body.rsplit_once(DEVICE_OPENING)?;
        return Some((path.to_string(), message.to_string()));
    }
    let (path, message) = note.split_once(GETS_NO_PV)?;
    Some((path.to_string(), message.to_string()))
}

/// `(usable, without)` from a `DevicesDiscovered` note.
fn counts_of(note: &str) -> (Option<u64>, Option<u64>) {
    let usable = note
        .split_whitespace()
        .next()
        .and_then(|word| word.parse().ok());
    let without = note
        .strip_suffix(WITHOUT_ONE)
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|word| word.parse().ok());
    (usable, without)
}

/// What `events` (one node's, oldest first) say; `pv_created` tells when
/// the node's PV for a device path was created, if it has one.
pub fn summarize(
    events: &[NodeEvent],
    pv_created: impl Fn(&str) -> Option<Timestamp>,
) -> NodeReport {
    let mut latest: BTreeMap<String, (&NodeEvent, String)> = BTreeMap::new();
    let mut spec = None;
    let mut count: Option<&NodeEvent> = None;
    for event in events {
        let reason = event.reason.as_str();
        if DEVICE_REASONS.contains(&reason) {
            if let Some((path, message)) = device_of(reason, &event.note) {
                latest.insert(path, (event, message));
            }
        } else if SPEC_REASONS.contains(&reason) {
            spec = Some(event);
        } else if reason == DEVICES_DISCOVERED {
            count = Some(event);
        }
    }
    let none_left_at = count
        .filter(|event| counts_of(&event.note).1 == Some(0))
        .and_then(|event| event.time);
    let error_devices = latest
        .into_iter()
        .filter(|(path, (event, _))| {
            let got_pv = pv_created(path)
                .zip(event.time)
                .is_some_and(|(created, at)| created >= at);
            let counted_none = none_left_at
                .zip(event.time)
                .is_some_and(|(counted, at)| counted > at);
            !got_pv && !counted_none
        })
        .map(|(device, (event, message))| ErrorDevice {
            device,
            reason: event.reason.clone(),
            message,
            at: event.time.map(format_time),
        })
        .collect();
    NodeReport {
        error_devices,
        spec: spec.map(|event| Condition {
            reason: event.reason.clone(),
            message: event.note.clone(),
            at: event.time.map(format_time),
        }),
        count: count.map(|event| {
            let (usable, without_pv) = counts_of(&event.note);
            DeviceCount {
                usable,
                without_pv,
                at: event.time.map(format_time),
            }
        }),
    }
}
