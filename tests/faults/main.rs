//! API fault tolerance: the real binary against the fake API server (over
//! HTTP, through a kubeconfig) while the server misbehaves — 500 bursts on
//! PV create, list, watch, delete and patch, 409 conflicts on create and
//! delete, watch expiry (410 Gone), watch streams cut between and in the
//! middle of events, slow responses, and the server restarting with its
//! store or empty — on real loop devices. Needs root, as in CI.
//!
//! Every test checks the same invariants besides its own:
//! - never two PVs for one device (checked on every poll of every wait), and
//!   in the end exactly one PV per device, each created by one successful
//!   POST;
//! - no PV released without a completed wipe: a Released PV is DELETEd
//!   first and stays Terminating under the provisioner's finalizer; the
//!   server's request observer reads the device at the moment each
//!   finalizer removal arrives and records whether it was zeroed; a PV whose
//!   wipe is refused keeps its finalizer;
//! - no new PV for a device before the old one's finalizer went (in the
//!   order the server answered);
//! - no wipe of a device whose PV is not Released: the devices of Available
//!   and Bound PVs still hold their tenant's data (written once the PVs
//!   exist) at the end;
//! - every Released PV is deleted, wiped, released and recreated once the
//!   faults stop.
//!
//! The controller runs with its default intervals (poll 5 min), so every
//! recovery shown here is driven by watches and retry backoff, not by a
//! timer that happens to be short in tests. Each test has its own server,
//! node name and devices ([`fixture::FaultWorld`]).
//!
//! Kube's client retries 503, 429 and 504 by itself, so failures the
//! controller must see are injected as 500 (and 409).
//!
//! - `api_errors`: failed and conflicting creates, DELETEs and finalizer
//!   removals, and a stale Released state;
//! - `watches`: cut, expired and slow watches;
//! - `outages`: server restarts and outages, and readiness.

#[path = "../support/mod.rs"]
mod support;

mod api_errors;
mod fixture;
mod outages;
mod watches;
