//! Every request this program makes about PersistentVolumes and its Node,
//! in one place: reads that guard a decision (the live Node, a fresh PV)
//! and every write (create, annotations, delete; the finalizer helper
//! patches through [`ApiRequests::pv_api`]). Each failed request is
//! counted in `local_pv_provisioner_api_errors_total{operation}` here, and
//! a refused create is classified by [`classify_create_error`], a pure
//! function.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, PersistentVolume};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};

use crate::api::watch::trim_pv;
use crate::error::{ApiError, Operation, status_code};
use crate::objects::pv::{LeanPv, NODE_LABEL};
use crate::observe::metrics::Metrics;

/// How a PV create ended.
#[derive(Debug)]
pub enum CreateOutcome {
    /// Created; the object as the API server returned it, trimmed like the
    /// PV store's ([`trim_pv`]).
    Created(Box<LeanPv>),
    /// A PV of this node already holds the name (the watch lags behind).
    AlreadyOurs,
    /// The API server will not take this PV; the reason, for the device's report.
    Refused(String),
    /// The API server could not be reached or failed: retry later.
    Unreachable(ApiError),
}

/// What a failed create means, before asking who holds a taken name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateFailure {
    /// `409`: a PV of that name exists.
    NameTaken,
    /// `400`, `403` (a policy, quota or RBAC), `404`, `422`: this PV is not
    /// accepted; retrying at once will not change that.
    Refused,
    /// No answer, `429` or `5xx`: the server is unwell; try again later.
    Unreachable,
}

/// Classifies a failed create by the API server's answer.
pub fn classify_create_error(error: &kube::Error) -> CreateFailure {
    match status_code(error) {
        Some(409) => CreateFailure::NameTaken,
        Some(400 | 403 | 404 | 422) => CreateFailure::Refused,
        _ => CreateFailure::Unreachable,
    }
}

/// Whether the PV holding a taken name is this node's (by its node label).
pub fn held_by_this_node(holder: &LeanPv, label_value: &str) -> bool {
    holder
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(NODE_LABEL))
        .is_some_and(|value| value == label_value)
}

/// The client side of every PV and Node request.
#[derive(Clone)]
pub struct ApiRequests {
    pvs: Api<LeanPv>,
    /// The same API, for creates: a new PV is sent whole.
    new_pvs: Api<PersistentVolume>,
    nodes: Api<Node>,
    metrics: Metrics,
}

impl ApiRequests {
    /// Requests through `client`, counting failures in `metrics`.
    pub fn new(client: Client, metrics: Metrics) -> Self {
        ApiRequests {
            pvs: Api::all(client.clone()),
            new_pvs: Api::all(client.clone()),
            nodes: Api::all(client),
            metrics,
        }
    }

    /// Counts a failed request (also one made outside these methods, such
    /// as the finalizer helper's patches) and names it.
    pub fn failed(&self, operation: Operation, source: kube::Error) -> ApiError {
        self.metrics
            .api_errors
            .with_label_values(&[operation.label()])
            .inc();
        if status_code(&source) == Some(403) {
            self.metrics
                .writes_denied
                .with_label_values(&[operation.label()])
                .inc();
        }
        ApiError { operation, source }
    }

    /// Reads the live Node.
    pub async fn get_node(&self, name: &str) -> Result<Option<Node>, ApiError> {
        let read = self.nodes.get_opt(name).await;
        read.map_err(|error| self.failed(Operation::GetNode, error))
    }

    /// Reads a PV fresh from the API server (the watch may lag).
    pub async fn get_pv(&self, name: &str) -> Result<Option<LeanPv>, ApiError> {
        let read = self.pvs.get_opt(name).await;
        read.map_err(|error| self.failed(Operation::GetPv, error))
    }

    /// Creates `pv`. On a name conflict the holder is looked up, first in
    /// `store` (this node's PVs), then on the server, to tell a lagging
    /// watch from a foreign PV.
    pub async fn create_pv(
        &self,
        pv: &PersistentVolume,
        store: &Store<LeanPv>,
        label_value: &str,
    ) -> CreateOutcome {
        let name = pv.metadata.name.clone().unwrap_or_default();
        let error = match self.new_pvs.create(&PostParams::default(), pv).await {
            Ok(created) => {
                // Kept until the whole pass is settled: a cold start holds
                // a thousand of these at once, each with the server's
                // managedFields.
                let mut created = LeanPv::from(created);
                trim_pv(&mut created);
                return CreateOutcome::Created(Box::new(created));
            }
            Err(error) => error,
        };
        match classify_create_error(&error) {
            CreateFailure::NameTaken if store.get(&ObjectRef::new(&name)).is_some() => {
                CreateOutcome::AlreadyOurs
            }
            CreateFailure::NameTaken => match self.get_pv(&name).await {
                Ok(Some(holder)) if held_by_this_node(&holder, label_value) => {
                    CreateOutcome::AlreadyOurs
                }
                Ok(Some(_)) => CreateOutcome::Refused(format!(
                    "PV name {name} is taken by a PersistentVolume this node does not own"
                )),
                Ok(None) => CreateOutcome::Unreachable(self.failed(Operation::CreatePv, error)),
                Err(read_error) => CreateOutcome::Unreachable(read_error),
            },
            CreateFailure::Refused => {
                let message = match &error {
                    kube::Error::Api(status) => status.message.clone(),
                    other => other.to_string(),
                };
                self.failed(Operation::CreatePv, error);
                CreateOutcome::Refused(format!("the API server refused PV {name}: {message}"))
            }
            CreateFailure::Unreachable => {
                CreateOutcome::Unreachable(self.failed(Operation::CreatePv, error))
            }
        }
    }

    /// The PV API, for kube-runtime's finalizer helper.
    pub fn pv_api(&self) -> &Api<LeanPv> {
        &self.pvs
    }

    /// Adds `annotations` to the PV, only if it still has the
    /// resourceVersion of `current`: the PV as patched, or `Ok(None)` when it
    /// changed meanwhile.
    pub async fn annotate_pv(
        &self,
        current: &LeanPv,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Option<LeanPv>, ApiError> {
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": current.metadata.resource_version,
                "annotations": annotations,
            },
        });
        let name = current.metadata.name.as_deref().unwrap_or_default();
        let patched = self
            .pvs
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        match patched {
            Ok(patched) => Ok(Some(patched)),
            Err(error) if status_code(&error) == Some(409) => Ok(None),
            Err(error) => Err(self.failed(Operation::PatchPv, error)),
        }
    }

    /// Deletes a PV only if it still has this UID and resourceVersion:
    /// `Ok(false)` when it changed meanwhile. A PV already gone counts as deleted.
    pub async fn delete_pv(
        &self,
        name: &str,
        uid: Option<String>,
        resource_version: Option<String>,
    ) -> Result<bool, ApiError> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid,
                resource_version,
            }),
            ..DeleteParams::default()
        };
        match self.pvs.delete(name, &params).await {
            Ok(_) => Ok(true),
            Err(error) if status_code(&error) == Some(404) => Ok(true),
            Err(error) if status_code(&error) == Some(409) => Ok(false),
            Err(error) => Err(self.failed(Operation::DeletePv, error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn answered(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(
            Status::failure("refused", "Reason").with_code(code),
        ))
    }

    #[test]
    fn create_failures_are_classified_by_status() {
        assert_eq!(
            classify_create_error(&answered(409)),
            CreateFailure::NameTaken
        );
        for code in [400, 403, 404, 422] {
            assert_eq!(
                classify_create_error(&answered(code)),
                CreateFailure::Refused,
                "{code}"
            );
        }
        for code in [429, 500, 503, 504] {
            assert_eq!(
                classify_create_error(&answered(code)),
                CreateFailure::Unreachable,
                "{code}"
            );
        }
        let no_answer = kube::Error::Service(std::io::Error::other("connection refused").into());
        assert_eq!(
            classify_create_error(&no_answer),
            CreateFailure::Unreachable
        );
    }

    #[test]
    fn a_taken_name_is_ours_only_with_our_node_label() {
        let mut holder = LeanPv::default();
        assert!(!held_by_this_node(&holder, "n1"), "no label: foreign");
        holder.metadata.labels = Some([(NODE_LABEL.to_string(), "n2".to_string())].into());
        assert!(!held_by_this_node(&holder, "n1"), "another node's");
        holder.metadata.labels = Some([(NODE_LABEL.to_string(), "n1".to_string())].into());
        assert!(held_by_this_node(&holder, "n1"));
    }
}
