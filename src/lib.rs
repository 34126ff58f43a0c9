//! `local-pv-provisioner`: a per-node Kubernetes controller that turns the
//! node's local block devices into PersistentVolumes and wipes them when
//! their claims let go. A drop-in for the Go local-pv-provisioner.
//!
//! The code lives in rooms (folders), one per stage of the two flows, in the
//! order data moves through them:
//!
//! - device → PV: [`discover`] finds the devices of `deviceDir`,
//!   [`provision`] decides and creates their PVs;
//! - PV → wipe → fresh PV: [`cleanup`] wipes a released or deleted PV's
//!   device and lets the PV go, after which [`discover`] offers the device
//!   again.
//!
//! Underneath them: [`objects`] (what this program writes on API objects and
//! reads back), [`device`] (the only code that opens a block device: facts,
//! probe, wipe), [`observe`] (Events, metrics, reports, health, the HTTP
//! server) and [`api`] (the watches, every request, the shared context).
//! Above them: [`inventory`] keeps the node's `LocalDisk` objects (the disk
//! inventory), [`controller`] wires one node's controller and runs its loop,
//! [`cli`] holds the `scan` and `status` subcommands. [`config`],
//! [`error`] and [`backoff`] are shared leaves.
//!
//! Each room's `mod.rs` names the rooms it may use in a `Uses:` line;
//! `tests/rooms.rs` fails when an import runs another way or the table has
//! a cycle.

#![warn(missing_docs)]

pub mod api;
pub mod backoff;
pub mod cleanup;
pub mod cli;
pub mod config;
pub mod controller;
pub mod device;
pub mod discover;
pub mod error;
pub mod inventory;
pub mod objects;
pub mod observe;
pub mod provision;
