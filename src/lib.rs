//! `local-pv-provisioner`: a per-node Kubernetes controller that turns the
//! node's local block devices into PersistentVolumes and wipes them when
//! their claims let go. A drop-in for the Go local-pv-provisioner.
//!
//! The pure core decides ([`spec`], [`naming`], [`pv`], [`plan`]); the shell
//! watches, writes and wipes ([`discovery`], [`blockdev`], [`wipe`],
//! [`cleanup`], [`provisioner`], [`watch`], [`events`], [`metrics`]).

#![warn(missing_docs)]

pub mod blockdev;
pub mod cleanup;
pub mod config;
pub mod discovery;
pub mod dry_run;
pub mod events;
pub mod metrics;
pub mod naming;
pub mod plan;
pub mod provisioner;
pub mod pv;
pub mod spec;
pub mod watch;
pub mod wipe;
