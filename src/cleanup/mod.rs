//! PV → wipe → fresh PV: a PV that turns `Released` or is deleted gets its
//! device wiped before it goes ([`controller`], deciding each step in
//! [`decide`]); PVs of the Go upstream are adopted first ([`adopt`]); a
//! full wipe's progress is reported while it runs ([`progress`]); what
//! the flow reports is in [`report`]. Once the PV is gone, the device is
//! offered again by the device → PV flow. The PVs of a Node gone for good
//! are released without a wipe by the `node-cleanup` mode, which decides
//! each step in [`node_gone`].
//!
//! Uses: objects, device, observe, api, provision, error.

pub mod adopt;
pub mod controller;
pub mod decide;
pub mod node_gone;
pub mod progress;
pub mod report;
