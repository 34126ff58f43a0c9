//! PV → wipe → fresh PV: a PV that turns `Released` or is deleted gets its
//! device wiped before it goes ([`controller`], deciding each step in
//! [`decide`]); PVs of the Go upstream are adopted first ([`adopt`]); what
//! the flow reports is in [`report`]. Once the PV is gone, the device is
//! offered again by the device → PV flow.
//!
//! Uses: objects, device, observe, api, provision, error.

pub mod adopt;
pub mod controller;
pub mod decide;
pub mod report;
