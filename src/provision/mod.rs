//! Facts → PV, the second stage of the device → PV flow: which PV spec
//! applies to the node ([`node_spec`]), which PVs to create and which
//! devices to report ([`plan`], [`device_loss`]), the PV object
//! ([`build`]), the probe before a device's first offer ([`first_offer`]),
//! the creates ([`create`]) and what the flow reports ([`report`]).
//!
//! Uses: objects, device, observe, api, discover, backoff.

pub mod build;
pub mod classes;
pub mod create;
pub mod device_loss;
pub mod first_offer;
pub mod node_spec;
pub mod plan;
pub mod report;
