//! Cleanup and first offer, end to end: the real binary against the fake
//! API server over HTTP and real loop devices (needs root, as in CI). Every
//! PV carries the program's cleanup finalizer, and whoever deletes a PV —
//! the program after its claim let go, an admin by hand, the garbage
//! collector after the Node went away — its device is wiped before the
//! finalizer goes; a device never seen before is offered only when it is
//! blank; a PV of the Go upstream is adopted or refused. Two tests guard
//! against defects these tests found (per-device Events folded into one, a
//! lagging watch wiping a device twice).
//!
//! - `common`: contract names, tenant data, write counters, claims, waits;
//! - `moments`: what a device held when each DELETE, finalizer removal and
//!   create arrived at the server;
//! - `deleted_by_hand`: Released (program running, program stopped) and
//!   Bound PVs deleted by hand;
//! - `node_gone`: the Node deleted (its PVs collected) and registered again;
//! - `data_on_devices`: devices with a filesystem, a partition table or
//!   stray bytes are not offered until `wipeDevicesWithData`; a blank one is
//!   offered without a write (one test fails: a product bug, the reports of
//!   several devices collapse into one Event);
//! - `ceph`: the BlueStore label copies at 1 GiB and 10 GiB are wiped, the
//!   bytes between the regions are not;
//! - `refused_create`: one PV refused by the API server (403, 422) leaves
//!   the others and readiness alone, reported once;
//! - `stale_cache`: a PV watch that lags behind its writes (fails: a
//!   product bug, the device of one release is wiped twice);
//! - `upgrade`: PVs of the Go upstream are adopted, cleaned and offered
//!   again, or refused when their device does not match;
//! - `vanished`: PVs that change and go at once under a lagging watch cost
//!   the cleanup controller no later event;
//! - `lifecycle`: `releasePolicy: Keep` keeps a Released PV's data until a
//!   wipe is asked for; `wipeMode: Full` zeroes every byte with progress,
//!   resumes after SIGKILL from the recorded offset, and stops when the
//!   device goes missing.

#[path = "../support/mod.rs"]
mod support;

mod ceph;
mod common;
mod data_on_devices;
mod deleted_by_hand;
mod lifecycle;
mod moments;
mod node_gone;
mod refused_create;
mod stale_cache;
mod upgrade;
mod vanished;
