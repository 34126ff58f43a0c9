//! Who uses which disk, seen from outside: the real binary against the fake
//! API server over HTTP and real loop devices (needs root, as in CI), its
//! live `/metrics` page parsed, its Events read from the server. Issue 10:
//! per-volume metrics kept in step with the watches (and gone with the PV),
//! the pods on the node that mount a volume's claim, the create and wipe
//! histograms, the failure counters by reason, each volume's story as
//! Events sent once per happening (never again for a standing condition,
//! checked after fresh reconcile passes), a device's history carried from
//! PV to PV, and `promtool check metrics` on a live page.
//!
//! - `page`: the `/metrics` page parsed into samples, and waits on series;
//! - `common`: a node with blank devices, pods, Events by PV UID, a device
//!   held open or made read-only;
//! - `lifecycle`: one device from Available through Bound (with pods),
//!   Released and wiped to a new PV, in metrics and Events;
//! - `failures`: creates refused and unreachable, wipes refused by a guard
//!   and failing on I/O, counted by reason and reported once while they
//!   fail the same way;
//! - `device_loss`: devices unplugged and plugged back: `DeviceMissing`,
//!   `DeviceReturned`, `WipeSkipped`, `DevicesDiscovered` on change only;
//! - `history`: two tenants of one device in a row, in the third PV's history;
//! - `burst`: a pass that creates many PVs tells it in one Node Event, a
//!   single new disk on its PV;
//! - `connections`: after a start's burst of requests the program keeps
//!   its watches and a few idle connections open, not every one it opened;
//! - `healthy`: a healthy node's page (and node-cleanup's) has every family
//!   the dashboard and the alert rules read, the failure counters at 0;
//! - `proportional`: a claim binding is shown per PV without a reconcile
//!   pass, a PV that goes brings one;
//! - `promtool`: `promtool check metrics` on a live page after a lifecycle,
//!   and on a page with every metric family (`promtool_run` runs it).

#[path = "../support/mod.rs"]
mod support;

// The clean-offer scenarios' helpers (a binding world, blank disks, claims,
// waits on PVs), shared rather than copied.
#[allow(dead_code)]
#[path = "../clean_offer/common.rs"]
mod clean_offer;

mod burst;
mod common;
mod connections;
mod device_loss;
mod failures;
mod healthy;
mod history;
mod lifecycle;
mod page;
mod promtool;
mod promtool_run;
mod proportional;
