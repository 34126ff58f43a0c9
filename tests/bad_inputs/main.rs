//! The bad-input catalogue: every kind of wrong input this controller can
//! meet, each with the outcome it must give and the proof that nothing was
//! destroyed. Needs root (loop devices), as in CI.
//!
//! Seven tables, one test each. A table is data: a list of rows, each its
//! input and the outcome it must give, run by one function per table
//! (`catalogue`); every table prints itself (run with `--nocapture` to read
//! it) and fails naming every row that did not hold:
//!
//! | module (test) | driven through | rows |
//! |---|---|---|
//! | `spec_table` | `spec::parse_pv_spec` | ConfigMap data: missing, unknown and mis-cased keys, bad paths, regexes, modes, sizes, huge values |
//! | `classes_table` (`device_classes_table`) | `spec::parse_node_spec` | `deviceClasses`: wrong types, bad regexes, `minSize` > `maxSize`, unknown `deviceTypes`, label values too long, unknown keys, duplicate names |
//! | `wipe_table` (`wipe_request_table`) | `WipeRequest::from_pv` and `wipe_device` on a loop device | PV objects a Released PV could carry |
//! | `tree_table` (`device_tree_table`) | `discovery::scan_devices` and `plan::plan` on real directories and loop devices (`tree_layout`) | link loops, links out, 5000 entries, colliding, unicode and non-UTF-8 names |
//! | `spec_binary_table` (`configmap_and_annotation_table`) | the real binary against the fake API server, in the test world (`fixture`) | the same mistakes as a user makes them: Events, metrics, no PV, then the fix |
//! | `api_table` (`api_object_table`) | the real binary | PVs edited, bound, foreign or of another node; colliding entry names |
//! | `node_table` (`node_name_table`) | the real binary, restarted | node names too long for a label value |
//!
//! A row's expected outcome is either a clear error naming what is wrong or
//! a documented choice. "Nothing destroyed" is proven, depending on the row,
//! by: no PV create/delete request in the fake server's request log, the
//! PV's UID, resourceVersion and finalizers unchanged (a PV whose wipe is
//! refused is deleted by the program but stays Terminating under its
//! finalizer, never released), and the loop device still holding its
//! tenant's data (the fill byte) in every block; a check that nothing
//! happened waits first for a reconcile pass that began after the change
//! (the `reconciles_total` counter), or for a control PV's wipe. A device
//! holding data is never offered, so the data is written once the device's
//! PV exists, or, where the input keeps the program from acting, before it
//! starts; such a row clears the device (as an admin would) before it fixes
//! the input and waits for the PV, which shows the setup would have
//! produced a PV if the input had been good.
//!
//! Rows that exposed a bug when the catalogue was written assert the right
//! behaviour through [`fixed_bug`], which names the finding if it comes back
//! (all were fixed; none destroyed anything):
//!
//! - BUG-1: `wipeBytes` `""` or a bare unit (`Mi`) was refused as "not a
//!   number of bytes that fits in 64 bits" instead of "must be a whole
//!   number of bytes".
//! - BUG-2: a spec error showed 200 *characters* of the value, escaped;
//!   control characters escape to 5–10 bytes each, so the message could reach
//!   ~2 kB and the Event note (cut at 1000 bytes) lost the reason.
//! - BUG-3: a node annotation that is not a valid object name (`spec,other`)
//!   made the ConfigMap watch's field selector invalid and nothing was
//!   reported.
//! - BUG-4: kube's Event Recorder names Events `<regarding name>.<16 hex
//!   digits>`; for a Node or PV name over 236 characters every Event was refused.
//! - BUG-5: a device whose PV name is taken by a foreign PV was counted in
//!   `error_devices` and in `available_devices`.
//! - UNCLEAR-1: a `deviceDir` that does not exist (a typo, or a trailing
//!   newline from a YAML `|` scalar) yielded no devices and was logged at
//!   debug level only; now white space around `deviceDir` and
//!   `deviceNameFilter` is refused, and a missing `deviceDir` is a warning
//!   and part of the `PVSpecApplied` note.
//! - UNCLEAR-2 (fixed): a Released PV labelled for this node but recording
//!   another node's name was refused with a `WipeRefused` Event naming
//!   `OwnedByThisNode`; once the cleanup looked only at PVs that record this
//!   node, PVs of the Go upstream for this node, and PVs carrying its
//!   finalizer, such a PV was left alone without a word. Nothing was
//!   destroyed, but an admin was no longer told; now a `NotOurs` Event on
//!   the PV says this node leaves it alone.

#[path = "../support/mod.rs"]
mod support;

mod api_table;
mod catalogue;
mod classes_table;
mod fixture;
mod node_table;
mod spec_binary_table;
mod spec_table;
mod tree_layout;
mod tree_table;
mod wipe_table;
