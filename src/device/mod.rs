//! The only code that opens a block device: kernel facts ([`blockdev`],
//! and what a device is, from sysfs: [`facts`]),
//! the regions a probe reads and a wipe zeroes ([`regions`]), the read-only
//! probe before a first offer ([`probe`]) and the guarded wipe ([`wipe`]).
//! Blocking: callers run it off the async runtime.
//!
//! Uses: objects.

pub mod blockdev;
pub mod facts;
pub mod probe;
pub mod regions;
pub mod wipe;
