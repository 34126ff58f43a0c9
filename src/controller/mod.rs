//! One node's controller, wired: the watches, the cleanup controller, the
//! Event sender and the provisioning loop ([`provisioner`]), one reconcile
//! from snapshot to report ([`reconcile`]), the released and kept PV
//! gauges it keeps per PV ([`pv_counts`]), and keeping the process small
//! ([`memory`]). The `node-cleanup` mode, which releases the PVs of Nodes
//! gone for good under leader election, is wired in [`node_cleanup`].
//!
//! Uses: objects, device, observe, api, discover, provision, cleanup, inventory, config, error.

pub mod memory;
pub mod node_cleanup;
pub mod provisioner;
pub mod pv_counts;
pub mod reconcile;
