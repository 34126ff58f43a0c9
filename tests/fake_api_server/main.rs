//! Self-tests of the fake API server fixture (`tests/support/fake_api`),
//! driven through kube's real client (`Api<…>`, raw requests and
//! `kube::runtime::watcher`).
//!
//! - `client`: the objects the tests create, and reading their outcomes
//!   (API errors, waits, watcher events, raw requests);
//! - `objects`: create, get and list with label and field selectors, server
//!   metadata, name and namespace validation;
//! - `writes`: updates and patches, optimistic concurrency, the status
//!   subresource, delete preconditions and finalizers;
//! - `controller`: the controller-manager emulation (PV phases and
//!   protection, claim binding and release, garbage collection);
//! - `watches`: watcher events with selectors, expired resourceVersions, cut
//!   watches;
//! - `controls`: what tests steer and read (injected faults, latency,
//!   restarts, the request log);
//! - `discovery`: discovery, the kubeconfig, namespaces, and objects created
//!   directly in the store;
//! - `churn`: the real server's churn (issue 19): one status write per
//!   PV at the controller-manager's pace, managedFields on every object
//!   returned or streamed, the last finalizer's removal seen only as
//!   DELETED, a resourceVersion for every write;
//! - `realism`: what `tests/clean_offer` relies on — fault rules aimed at
//!   one object by name, the garbage collection of PVs that carry
//!   finalizers, and watches that lag behind writes.

#[path = "../support/mod.rs"]
mod support;

mod churn;
mod client;
mod controller;
mod controls;
mod discovery;
mod objects;
mod realism;
mod watches;
mod writes;
