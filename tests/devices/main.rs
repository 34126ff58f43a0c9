//! Discovery and wiping on real loop devices (`losetup -f --show`, always
//! detached); needs root, as in CI.
//!
//! - `fixture`: the PV spec, node and owner every test uses, the wipe
//!   request the controller would build for a linked device, mounts, and the
//!   check that a refused wipe wrote nothing;
//! - `discovery`: what a scan takes, what it reports and what it marks in
//!   use;
//! - `wipe`: the regions a wipe zeroes (the head, at least 1 MiB; the Ceph
//!   label copies inside the device; the tail) and leaves alone, and
//!   cancellation;
//! - `guards`: every wipe guard that can be provoked on this machine;
//! - `cache`: incremental discovery keeps what it learnt about usable
//!   devices and looks at unusable ones again;
//! - `events`: the inotify watch through a bind mount (a pod's hostPath `/dev`);
//! - `scan`: the `scan` dry run groups its output by device class.

#[path = "../support/mod.rs"]
mod support;

mod cache;
mod discovery;
mod events;
mod fixture;
mod guards;
mod scan;
mod wipe;
