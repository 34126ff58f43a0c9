//! The subcommands besides the controller: the `scan` dry run ([`scan`])
//! and the read-only `status` report ([`status`], also `kubectl local-pv`).
//!
//! Uses: objects, device, observe, discover, provision, cleanup, config.

pub mod scan;
pub mod status;
