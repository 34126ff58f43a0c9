//! Where a world's objects live: the in-process fake API server, or a real
//! cluster named by `LPP_E2E_KUBECONFIG` (the end-to-end suite's mode
//! switch). Owns the choice, the client for either, the refusal to run on a
//! cluster with Nodes of its own, and the progress lines of a cluster run.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use k8s_openapi::api::core::v1::Node;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::support::fake_api::FakeApiServer;

/// Environment variable naming the kubeconfig of a real cluster; unset or
/// empty means the fake API server.
pub const KUBECONFIG_ENV: &str = "LPP_E2E_KUBECONFIG";
/// Environment variable that, set to `1`, lets a world run on a cluster
/// that has Nodes it did not create.
pub const ALLOW_FOREIGN_NODES_ENV: &str = "LPP_E2E_ALLOW_FOREIGN_NODES";

/// The API server behind a world.
pub enum Backend {
    /// The fake API server, in this process; dropped with the world.
    Fake(FakeApiServer),
    /// A real cluster, reached through the kubeconfig at this path.
    Cluster(PathBuf),
}

impl Backend {
    /// The cluster of `LPP_E2E_KUBECONFIG` when set, else a fresh fake API
    /// server (with its PV binder on, as a cluster binds claims itself).
    pub async fn from_env() -> Backend {
        match std::env::var_os(KUBECONFIG_ENV).filter(|path| !path.is_empty()) {
            Some(path) => Backend::Cluster(PathBuf::from(path)),
            None => {
                let server = FakeApiServer::start().await;
                server.set_pvc_binding(true);
                Backend::Fake(server)
            }
        }
    }

    /// A fresh fake API server.
    pub async fn fake() -> Backend {
        Backend::Fake(FakeApiServer::start().await)
    }

    /// One line naming the backend, for progress output.
    pub fn describe(&self) -> String {
        match self {
            Backend::Fake(server) => format!("fake mode: fake API server at {}", server.url()),
            Backend::Cluster(path) => format!("real cluster mode: {}", path.display()),
        }
    }

    /// The kubeconfig the world and its provisioners use (written into
    /// `work` for the fake server).
    pub fn kubeconfig(&self, work: &Path) -> PathBuf {
        match self {
            Backend::Fake(server) => server.write_kubeconfig(work),
            Backend::Cluster(path) => path.clone(),
        }
    }
}

/// A client for the current context of the kubeconfig at `path`.
pub async fn client_for(path: &Path) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .unwrap_or_else(|error| panic!("reading kubeconfig {}: {error}", path.display()));
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap_or_else(|error| panic!("kubeconfig {}: {error}", path.display()));
    Client::try_from(config).expect("kube client")
}

/// Refuses (panics) before anything is created when the cluster has Nodes,
/// unless `LPP_E2E_ALLOW_FOREIGN_NODES=1`: a world is meant for a
/// throwaway cluster. `label` is the label every world's object carries.
pub async fn refuse_foreign_nodes(client: &Client, label: &str, say: impl Fn(&str)) {
    let nodes: Vec<String> = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|error| panic!("listing Nodes: {error}"))
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    if nodes.is_empty() {
        return;
    }
    if std::env::var(ALLOW_FOREIGN_NODES_ENV).as_deref() == Ok("1") {
        say(&format!(
            "the cluster has {} Node(s) this run did not create; going on ({ALLOW_FOREIGN_NODES_ENV}=1)",
            nodes.len()
        ));
        return;
    }
    panic!(
        "refusing to run: the cluster has Nodes this run did not create ({}). Run the suite \
         against a throwaway cluster; if this is one, set {ALLOW_FOREIGN_NODES_ENV}=1. Nodes \
         left by an interrupted run: `kubectl delete node -l {label}`.",
        nodes.join(", ")
    );
}

/// Six random characters of `[a-z0-9]`.
pub fn random_suffix() -> String {
    use ring::rand::{SecureRandom, SystemRandom};
    /// The characters a suffix is made of.
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 6];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("system randomness");
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Writes one progress line to stderr directly, so it shows even while the
/// test harness captures output.
pub fn say(started: Instant, run: &str, text: &str) {
    let line = format!(
        "e2e {run} [{:5.1}s] {text}\n",
        started.elapsed().as_secs_f64()
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
}
