//! Typed errors that cross module boundaries: a failed Kubernetes API
//! request, named by the [`Operation`] it was (the `operation` label of
//! `local_pv_provisioner_api_errors_total`). A shared leaf of the crate root.
//!
//! Uses: nothing.

use std::fmt;

use thiserror::Error;

/// An API request this program makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Reading the Node.
    GetNode,
    /// Reading a PersistentVolume.
    GetPv,
    /// Creating a PersistentVolume.
    CreatePv,
    /// Patching a PersistentVolume (wipe mark).
    PatchPv,
    /// Deleting a PersistentVolume.
    DeletePv,
    /// Creating an Event.
    CreateEvent,
    /// Creating a `LocalDisk`.
    CreateLocalDisk,
    /// Patching a `LocalDisk` (its status or labels).
    PatchLocalDisk,
    /// Deleting a `LocalDisk`.
    DeleteLocalDisk,
}

impl Operation {
    /// Every operation (the metric's label values, shown at 0 from the start).
    pub const ALL: [Operation; 9] = [
        Operation::GetNode,
        Operation::GetPv,
        Operation::CreatePv,
        Operation::PatchPv,
        Operation::DeletePv,
        Operation::CreateEvent,
        Operation::CreateLocalDisk,
        Operation::PatchLocalDisk,
        Operation::DeleteLocalDisk,
    ];

    /// The name used in logs and in the metric's `operation` label.
    pub fn label(self) -> &'static str {
        match self {
            Operation::GetNode => "get_node",
            Operation::GetPv => "get_pv",
            Operation::CreatePv => "create_pv",
            Operation::PatchPv => "patch_pv",
            Operation::DeletePv => "delete_pv",
            Operation::CreateEvent => "create_event",
            Operation::CreateLocalDisk => "create_localdisk",
            Operation::PatchLocalDisk => "patch_localdisk",
            Operation::DeleteLocalDisk => "delete_localdisk",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A Kubernetes API request that failed.
#[derive(Debug, Error)]
#[error("{operation} failed: {source}")]
pub struct ApiError {
    /// Which request.
    pub operation: Operation,
    /// What the client or the server said.
    #[source]
    pub source: kube::Error,
}

impl ApiError {
    /// The HTTP status the API server answered with, when it answered.
    pub fn status_code(&self) -> Option<u16> {
        status_code(&self.source)
    }
}

/// The HTTP status of an error the API server answered with.
pub fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}
