//! Device → facts, the first stage of the device → PV flow: the entries of
//! `deviceDir` that match the filter, resolved to block devices with their
//! exact size ([`devices`]), kept between scans ([`cache`]), watched with
//! inotify ([`dir_watch`]), and scanned as one step of a reconcile
//! ([`scanner`]). Writes nothing.
//!
//! Uses: objects, device.

pub mod cache;
pub mod devices;
pub mod dir_watch;
pub mod scanner;
