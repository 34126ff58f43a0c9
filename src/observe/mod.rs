//! What the storage admin sees: Kubernetes Events ([`events`]), Prometheus
//! metrics ([`metrics`]), the reporter every flow tells what happened
//! ([`report`]), who uses which disk ([`volumes`]) and what each device had
//! before ([`history`]), readiness ([`health`]) and the HTTP endpoints
//! ([`server`]). The flows' own messages live in their rooms
//! (`provision::report`, `cleanup::report`).
//!
//! Uses: objects, error.

pub mod events;
pub mod health;
pub mod history;
pub mod metrics;
pub mod report;
pub mod server;
pub mod volumes;
