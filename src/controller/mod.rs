//! One node's controller, wired: the watches, the cleanup controller, the
//! Event sender and the provisioning loop ([`provisioner`]), one reconcile
//! from snapshot to report ([`reconcile`]), and keeping the process small
//! ([`memory`]).
//!
//! Uses: objects, device, observe, api, discover, provision, cleanup, config.

pub mod memory;
pub mod provisioner;
pub mod reconcile;
