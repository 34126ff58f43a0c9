//! The disk inventory in the API: one `LocalDisk` per matching entry of
//! each class's `deviceDir` on this node, saying what the disk is and
//! whether it is offered, and if not, why ([`desired`], pure), kept so by
//! a writer of its own that writes only what changed ([`writer`]). So
//! `kubectl get localdisks` answers "which disks does the cluster have, and
//! why is this one not offered?" from the API alone, days later.
//!
//! Uses: objects, device, observe, api, discover, provision, cleanup, error, backoff.

pub mod desired;
pub mod writer;
