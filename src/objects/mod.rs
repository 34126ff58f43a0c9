//! What this program writes on Kubernetes objects and reads back: the PV
//! spec ConfigMap's keys and their validation ([`spec`], its device
//! classes in [`classes`]), the names of PVs
//! and label values ([`naming`]), the labels, annotations and finalizer of
//! its PVs ([`pv`]), the `LocalDisk` inventory objects
//! ([`localdisk`]), Kubernetes quantities ([`quantity`]) and the reasons
//! and notes of its Events ([`reasons`]). Plain data and pure functions.
//!
//! Uses: nothing.

pub mod classes;
pub mod localdisk;
pub mod naming;
pub mod pv;
pub mod quantity;
pub mod reasons;
pub mod spec;
