//! `local-pv-provisioner`: a per-node Kubernetes controller that turns the
//! node's local block devices into PersistentVolumes and wipes them when
//! their claims let go. A drop-in for the Go local-pv-provisioner.

pub mod blockdev;
pub mod config;
pub mod discovery;
pub mod naming;
pub mod pv;
pub mod spec;
pub mod wipe;
