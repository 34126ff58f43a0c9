//! The disk inventory (`LocalDisk`s), end to end: the real binary against
//! the fake API server over HTTP and real loop devices (needs root, as in
//! CI). The fake serves the product's CRD as a real server does: a create
//! drops `.status`, every write is pruned to the schema and validated
//! against it (422 otherwise), objects owned by a deleted Node are
//! collected, and `kubectl get localdisks -o wide` gets the server-side
//! Table of the CRD's printer columns, which these tests read with the real
//! `kubectl`.
//!
//! - `lifecycle`: one disk through claim → release → wipe → a new offer,
//!   read as `kubectl` prints it, one object patched all along;
//! - `refusals`: each disk that is not offered (`HasData`, `InUse`,
//!   `Excluded` read-only, `Excluded` by two classes, `Missing`) with its
//!   reason;
//! - `writes`: a restart rewrites nothing, a Node deleted takes its
//!   LocalDisks with it, a cluster without the CRD still gets its PVs, and
//!   the fake refuses a status its schema does not allow.

#[path = "../support/mod.rs"]
mod support;

// The clean-offer scenarios' helpers (one blank disk, claims, waits); this
// binary uses a few of them.
#[allow(dead_code)]
#[path = "../clean_offer/common.rs"]
mod common;

mod disks;
mod lifecycle;
mod refusals;
mod writes;
