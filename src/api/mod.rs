//! This node's side of the API server: the client ([`client`]), the narrow watches and their stores
//! ([`watch`]), every request about PVs and the Node ([`requests`]), and the
//! state the provisioning loop and the cleanup controller share over them
//! ([`context`]).
//!
//! Uses: objects, device, observe, config, error, backoff.

pub mod client;
pub mod context;
pub mod requests;
pub mod watch;
