//! The reasons of this program's Kubernetes Events, and the formats of the
//! notes another reader parses (`status` rebuilds a node's error devices
//! and device count from them). The controller writes and `status` reads
//! through these, so the two cannot drift apart.

/// A PV was created for a device.
pub const PROVISIONED: &str = "Provisioned";
/// A claim was seen bound to a PV.
pub const CLAIMED: &str = "Claimed";
/// A PV's claim let go; it is deleted for its wipe.
pub const RELEASED: &str = "Released";
/// A PV being deleted waits for its claim.
pub const WAITING_FOR_CLAIM: &str = "WaitingForClaim";
/// A wipe started.
pub const WIPE_STARTED: &str = "WipeStarted";
/// A device was wiped and verified.
pub const WIPED: &str = "Wiped";
/// A Released PV is kept with its data (release policy `Keep`).
pub const KEPT: &str = "Kept";
/// A full wipe's progress (at most every few minutes).
pub const WIPE_PROGRESS: &str = "WipeProgress";
/// A PV of a Node gone for good was released without a wipe.
pub const NODE_GONE: &str = "NodeGone";
/// A never-claimed PV was released without a wipe.
pub const WIPE_SKIPPED: &str = "WipeSkipped";
/// A guard refused a wipe.
pub const WIPE_REFUSED: &str = "WipeRefused";
/// A wipe failed part-way.
pub const WIPE_FAILED: &str = "WipeFailed";
/// A PV of the Go upstream got its device identity recorded.
pub const ADOPTED: &str = "Adopted";
/// A PV of the Go upstream whose device is ambiguous.
pub const ADOPTION_REFUSED: &str = "AdoptionRefused";
/// A PV labelled for this node that names another.
pub const NOT_OURS: &str = "NotOurs";
/// The API server denied a write (RBAC or an admission policy).
pub const WRITE_DENIED: &str = "WriteDenied";
/// A PV's device is missing.
pub const DEVICE_MISSING: &str = "DeviceMissing";
/// A kept PV's device is present again.
pub const DEVICE_RETURNED: &str = "DeviceReturned";
/// A matching device gets no PV (note: [`device_note`]).
pub const DEVICE_SKIPPED: &str = "DeviceSkipped";
/// A matching device holds data and is not offered (note: [`device_note`]).
pub const DEVICE_HAS_DATA: &str = "DeviceHasData";
/// The API server refused a device's PV (note: [`invalid_volume_note`]).
pub const INVALID_VOLUME: &str = "InvalidVolume";
/// The node's device count (note: [`devices_discovered_note`]).
pub const DEVICES_DISCOVERED: &str = "DevicesDiscovered";
/// The node's PV spec is in force.
pub const PV_SPEC_APPLIED: &str = "PVSpecApplied";
/// The node has no PV spec ConfigMap.
pub const PV_SPEC_NOT_CONFIGURED: &str = "PVSpecNotConfigured";
/// The node's PV spec ConfigMap does not exist.
pub const PV_SPEC_NOT_FOUND: &str = "PVSpecNotFound";
/// The node's PV spec ConfigMap is invalid.
pub const PV_SPEC_INVALID: &str = "PVSpecInvalid";
/// The spec's `deviceDir` cannot be read.
pub const DEVICE_DIR_UNREADABLE: &str = "DeviceDirUnreadable";
/// The Node object is not found.
pub const NODE_MISSING: &str = "NodeMissing";
/// A class takes devices by kernel-assigned names that change across reboots.
pub const UNSTABLE_DEVICE_PATH: &str = "UnstableDevicePath";

/// Reasons of the Node Events naming a device that gets no PV.
pub const DEVICE_REASONS: [&str; 3] = [DEVICE_SKIPPED, DEVICE_HAS_DATA, INVALID_VOLUME];
/// Reasons of the Node Events saying where the node's PV spec stands.
pub const SPEC_REASONS: [&str; 6] = [
    PV_SPEC_APPLIED,
    PV_SPEC_NOT_CONFIGURED,
    PV_SPEC_NOT_FOUND,
    PV_SPEC_INVALID,
    DEVICE_DIR_UNREADABLE,
    NODE_MISSING,
];

/// What separates the path from the reason in a [`device_note`].
pub const GETS_NO_PV: &str = " gets no PersistentVolume: ";
/// What opens the path at the end of an [`invalid_volume_note`].
pub const DEVICE_OPENING: &str = " (device ";
/// How a [`devices_discovered_note`] ends.
pub const WITHOUT_ONE: &str = " without one";

/// The note of a `DeviceSkipped` or `DeviceHasData` Event.
pub fn device_note(path: &str, reason: &str) -> String {
    format!("{path}{GETS_NO_PV}{reason}")
}

/// The note of an `InvalidVolume` Event.
pub fn invalid_volume_note(reason: &str, path: &str) -> String {
    format!("{reason}{DEVICE_OPENING}{path})")
}

/// The note of a `DevicesDiscovered` Event.
pub fn devices_discovered_note(usable: usize, without: usize) -> String {
    format!(
        "{usable} device(s) usable (with or getting a PersistentVolume), {without}{WITHOUT_ONE}"
    )
}
