//! The five reads of `status` — Nodes, this program's PersistentVolumes,
//! Pods, the `events.k8s.io` Events on Nodes and the `LocalDisk`s, each a
//! cluster-wide `list` (narrowed by selectors with `--node`) — and the
//! one-line errors that name the resource and the missing permission. A
//! cluster without the LocalDisk CRD (`404`) is read without them.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, Resource};
use serde::de::DeserializeOwned;

use crate::config::StatusArgs;
use crate::objects::localdisk::LocalDisk;
use crate::objects::naming::node_label_value;
use crate::objects::pv::{LeanPv, NODE_LABEL};

/// Items per page of a list.
const PAGE: u32 = 500;
/// How long connecting to the API server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What `status` reads from the cluster.
#[derive(Debug, Default, Clone)]
pub struct ClusterState {
    /// The Nodes (with `--node`, that one if it exists).
    pub nodes: Vec<Node>,
    /// The PersistentVolumes carrying [`NODE_LABEL`].
    pub pvs: Vec<LeanPv>,
    /// The Pods (with `--node`, those on it).
    pub pods: Vec<Pod>,
    /// The `events.k8s.io/v1` Events regarding Nodes.
    pub events: Vec<Event>,
    /// The `LocalDisk`s; `None` where the CRD is not installed.
    pub disks: Option<Vec<LocalDisk>>,
}

/// A client from `--kubeconfig`/`--context`, else the usual inference
/// (`KUBECONFIG`, `~/.kube/config`, in-cluster), and the API server's URL
/// for the error lines; the error is one line.
pub async fn client(args: &StatusArgs) -> Result<(Client, String), String> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let mut config = match (&args.kubeconfig, &args.context) {
        (Some(path), _) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|error| format!("cannot read {}: {}", path.display(), chain(&error)))?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|error| format!("{}: {}", path.display(), chain(&error)))?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options)
            .await
            .map_err(|error| format!("cannot load the kubeconfig: {}", chain(&error)))?,
        (None, None) => Config::infer().await.map_err(|error| {
            format!(
                "cannot find a cluster configuration (KUBECONFIG, ~/.kube/config or in-cluster): {}",
                chain(&error)
            )
        })?,
    };
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    let url = config.cluster_url.to_string();
    let url = url.trim_end_matches('/').to_string();
    let client = Client::try_from(config)
        .map_err(|error| format!("cannot build the Kubernetes client: {}", chain(&error)))?;
    Ok((client, url))
}

/// Reads everything `status` shows, one list after the other (so the first
/// failing read is always the same one); `node` narrows every read.
pub async fn read_cluster(
    client: &Client,
    cluster: &str,
    node: Option<&str>,
) -> Result<ClusterState, String> {
    let by_name = node.map(|name| format!("metadata.name={name}"));
    let pv_labels = match node {
        Some(name) => format!("{NODE_LABEL}={}", node_label_value(name)),
        None => NODE_LABEL.to_string(),
    };
    let on_node = node.map(|name| format!("spec.nodeName={name}"));
    let regarding = match node {
        Some(name) => format!("regarding.kind=Node,regarding.name={name}"),
        None => "regarding.kind=Node".to_string(),
    };
    Ok(ClusterState {
        nodes: list_all(client, cluster, None, by_name.as_deref()).await?,
        pvs: list_all(client, cluster, Some(&pv_labels), None).await?,
        pods: list_all(client, cluster, None, on_node.as_deref()).await?,
        events: list_all(client, cluster, None, Some(&regarding)).await?,
        disks: match list_all(client, cluster, Some(&pv_labels), None).await {
            Ok(disks) => Some(disks),
            Err(ListError::NotServed) => None,
            Err(ListError::Failed(error)) => return Err(error),
        },
    })
}

/// Why a list failed.
enum ListError {
    /// The API server does not serve the resource (`404`: a CRD not installed).
    NotServed,
    /// Anything else, as one line.
    Failed(String),
}

impl From<ListError> for String {
    fn from(error: ListError) -> String {
        match error {
            ListError::NotServed => "the API server does not serve the resource".into(),
            ListError::Failed(line) => line,
        }
    }
}

/// Every object of `K` in every namespace matching the selectors, page by page.
async fn list_all<K>(
    client: &Client,
    cluster: &str,
    labels: Option<&str>,
    fields: Option<&str>,
) -> Result<Vec<K>, ListError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let api = Api::<K>::all(client.clone());
    let mut params = ListParams::default().limit(PAGE);
    if let Some(labels) = labels {
        params = params.labels(labels);
    }
    if let Some(fields) = fields {
        params = params.fields(fields);
    }
    let mut items = Vec::new();
    loop {
        let page = api.list(&params).await.map_err(|error| match &error {
            kube::Error::Api(status) if status.code == 404 => ListError::NotServed,
            _ => ListError::Failed(read_error::<K>(&error, cluster)),
        })?;
        items.extend(page.items);
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(items),
        }
    }
}

/// The one line saying why listing `K` failed.
fn read_error<K: Resource<DynamicType = ()>>(error: &kube::Error, cluster: &str) -> String {
    let plural = K::plural(&());
    let group = K::group(&());
    let resource = if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    };
    describe_error(error, &resource, &group, cluster)
}

/// One line for a failed `list` of `resource` (group-qualified) in API
/// group `group` against the API server at `cluster`.
pub fn describe_error(error: &kube::Error, resource: &str, group: &str, cluster: &str) -> String {
    match error {
        kube::Error::Api(status) if status.code == 403 => format!(
            "forbidden: cannot list {resource} at the cluster scope: the credentials in use lack the \"list\" permission on \"{resource}\" (API group \"{group}\"); the server said: {}",
            one_line(&status.message)
        ),
        kube::Error::Api(status) if status.code == 401 => format!(
            "unauthorized: the API server at {cluster} refused the kubeconfig's credentials while listing {resource}: {}",
            one_line(&status.message)
        ),
        kube::Error::Api(status) => format!(
            "listing {resource} failed: HTTP {} {}: {}",
            status.code,
            status.reason,
            one_line(&status.message)
        ),
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            format!(
                "cannot reach the Kubernetes API server at {cluster}: {}",
                root_cause(error)
            )
        }
        other => format!("listing {resource} failed: {}", chain(other)),
    }
}

/// The innermost cause of an error, e.g. `Connection refused (os error 111)`.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    one_line(&cause.to_string())
}

/// An error and its causes, joined on one line.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(source) = cause {
        let part = source.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = source.source();
    }
    one_line(&text)
}

/// `text` with its line breaks folded into spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(Status {
            code,
            reason: reason.into(),
            message: message.into(),
            ..Status::default()
        }))
    }

    #[test]
    fn a_forbidden_list_names_the_resource_and_the_permission() {
        let line = describe_error(
            &api_error(
                403,
                "Forbidden",
                "pods is forbidden: User \"jane\" cannot list",
            ),
            "events.events.k8s.io",
            "events.k8s.io",
            "https://k8s:6443",
        );
        assert!(
            line.starts_with("forbidden: cannot list events.events.k8s.io at the cluster scope"),
            "{line}"
        );
        assert!(
            line.contains(
                "\"list\" permission on \"events.events.k8s.io\" (API group \"events.k8s.io\")"
            ),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn other_answers_keep_their_code_on_one_line() {
        let line = describe_error(
            &api_error(500, "InternalError", "boom\nagain"),
            "pods",
            "",
            "u",
        );
        assert_eq!(
            line,
            "listing pods failed: HTTP 500 InternalError: boom again"
        );
    }
}
