//! `local-pv-provisioner`: a per-node Kubernetes controller that turns the
//! node's local block devices into PersistentVolumes and wipes them when
//! their claims let go. A drop-in for the Go local-pv-provisioner.
//!
//! Two flows, each through small modules in the order data moves:
//!
//! - provisioning: [`watch`] → [`node_spec`] → [`discovery`] (with
//!   [`blockdev`]) → [`device_loss`] → [`plan`] (with [`naming`], [`pv`]) →
//!   [`apply`] → [`report`], run by [`reconcile`] in the loop of
//!   [`provisioner`];
//! - cleanup: [`cleanup`] → [`wipe`] → [`apply`] → [`report`], after which
//!   the device is offered again by the provisioning flow.
//!
//! Shared: [`config`], [`spec`], [`context`], [`backoff`], [`error`],
//! [`events`], [`metrics`], [`health`], [`server`]; [`dry_run`] is the
//! `scan` subcommand, [`status`] the read-only `status` report (`kubectl
//! local-pv`).

#![warn(missing_docs)]

pub mod adopt;
pub mod apply;
pub mod backoff;
pub mod blockdev;
pub mod cleanup;
pub mod config;
pub mod context;
pub mod device_cache;
pub mod device_events;
pub mod device_loss;
pub mod discovery;
pub mod dry_run;
pub mod error;
pub mod events;
pub mod first_offer;
pub mod health;
pub mod history;
pub mod memory;
pub mod metrics;
pub mod naming;
pub mod node_reports;
pub mod node_spec;
pub mod plan;
pub mod probe;
pub mod provision;
pub mod provisioner;
pub mod pv;
pub mod reconcile;
pub mod report;
pub mod scanner;
pub mod server;
pub mod spec;
pub mod status;
pub mod volumes;
pub mod watch;
pub mod wipe;
