//! One test world, used by every scenario, fault, bad-input, RBAC,
//! crash-safety and end-to-end test: an API server (the fake one, or a real
//! cluster for the end-to-end suite), the objects a test makes there, device
//! directories with links to loop devices, the provisioner processes, and a
//! teardown that deletes what the world made and always detaches its loop
//! devices.
//!
//! This module owns the [`World`] type, its construction and the names and
//! labels every world uses. The parts:
//! - `backend`: fake API server or real cluster, and the switch between them;
//! - `objects`: creating, changing and deleting API objects;
//! - `inspect`: reading PVs, claims and Events, waiting for them, and the
//!   fake server's request log;
//! - `devices`: device directories and loop devices (blank until a test
//!   writes its tenant's data);
//! - `waits`: [`eventually`] and its limit [`WAIT`];
//! - `witness`: what the fake server saw at the moment of each PV create,
//!   DELETE and finalizer removal, and the invariants checked on it (the
//!   finalizer goes only once the device is zeroed; a device gets a new PV
//!   only after the old one's finalizer went);
//! - `teardown`: deleting what the world made, detaching its devices.

mod backend;
mod devices;
pub mod inspect;
pub mod objects;
mod teardown;
pub mod waits;
pub mod witness;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use kube::Client;
use tempfile::TempDir;

use super::fake_api::FakeApiServer;
use super::loop_device::LoopDevice;
use super::provisioner::{ProvisionerOptions, ProvisionerProcess};
use backend::Backend;

/// The Node annotation naming the PV spec ConfigMap.
pub const SPEC_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/pv-spec-configmap";
/// The label the provisioner puts on its PVs: the node (or its hash).
pub const NODE_LABEL: &str = "local-pv-provisioner.cybozu.io/node";
/// The PV annotation holding the full node name.
pub const NODE_NAME_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/node-name";
/// The finalizer the provisioner puts on every PV it makes: the PV goes
/// only once its device is wiped (or it was never claimed).
pub const CLEANUP_FINALIZER: &str = "local-pv-provisioner.cybozu.io/cleanup";
/// The finalizer the API server's admission adds to every PV.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";
/// The PV annotation recording the claim the provisioner saw bound to it.
pub const CLAIMED_BY_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/claimed-by";
/// The Node label the PVs' node affinity uses.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// Label on every object a world creates; its value is the world's run name.
pub const RUN_LABEL: &str = "local-pv-provisioner.cybozu.io/e2e-run";
/// Taint on a world's Nodes, so that a real cluster schedules nothing to
/// them that does not tolerate every taint.
pub const TAINT_KEY: &str = "local-pv-provisioner.cybozu.io/e2e-test-node";
/// Namespace of the PV spec ConfigMaps in a fake world.
pub const FAKE_NAMESPACE: &str = "lpp-system";
/// Prefix of every name an end-to-end world gives an object.
pub const E2E_PREFIX: &str = "lpp-e2e-";

/// ConfigMap data.
pub type Data = BTreeMap<String, String>;

/// ConfigMap data from pairs.
pub fn data(pairs: &[(&str, &str)]) -> Data {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// The `kubernetes.io/hostname` label a world gives Node `node`: differs
/// from the name (the PVs' affinity must use the label) and is a valid
/// label value also for names too long to be one.
pub fn hostname_of(node: &str) -> String {
    let hostname = format!("{node}-hostname");
    if hostname.len() <= 63 {
        hostname
    } else {
        "host-of-a-long-node-name".to_string()
    }
}

/// `LP_POLLING_INTERVAL=<interval>`, for [`World::start`].
pub fn polling(interval: &str) -> (&'static str, String) {
    ("LP_POLLING_INTERVAL", interval.to_string())
}

/// A polling interval short enough that reconcile passes keep coming, for
/// tests that wait for fresh passes before checking that nothing happened.
pub const QUICK_POLLING: &str = "250ms";

/// One test's world; see the module documentation.
pub struct World {
    backend: Backend,
    client: Client,
    kubeconfig: PathBuf,
    /// The run's name: prefix of the names an end-to-end world gives, and
    /// the value of [`RUN_LABEL`].
    run: String,
    /// Namespace of the PV spec ConfigMaps (`--namespace-name`) and claims.
    namespace: String,
    /// When the world was made (for progress lines).
    started: Instant,
    /// Whether progress lines are written (end-to-end worlds).
    announce: bool,
    /// Objects created, in order; deleted at teardown in reverse.
    created: Mutex<Vec<teardown::Created>>,
    /// Directories of device links; the first is [`World::dir`].
    device_dirs: Mutex<Vec<TempDir>>,
    /// The world's first device directory.
    dir: PathBuf,
    /// Loop devices attached; detached last.
    devices: Mutex<Vec<Arc<LoopDevice>>>,
    /// Whether teardown has run.
    cleaned: bool,
    /// Kubeconfig (fake mode) and provisioner logs.
    work: TempDir,
}

impl World {
    /// A world on a fresh fake API server, its ConfigMaps in
    /// [`FAKE_NAMESPACE`]. Needs root (loop devices).
    pub async fn fake() -> World {
        World::open(Backend::fake().await, "lpp-test".into(), false).await
    }

    /// The end-to-end world: on the cluster of `LPP_E2E_KUBECONFIG`, or on
    /// a fake API server with its PV binder on. Every name starts with
    /// `lpp-e2e-<six random characters>`; refuses a cluster with Nodes of
    /// its own before creating anything. Writes progress lines.
    pub async fn from_env() -> World {
        let run = format!("{E2E_PREFIX}{}", backend::random_suffix());
        World::open(Backend::from_env().await, run, true).await
    }

    async fn open(backend: Backend, run: String, announce: bool) -> World {
        super::loop_device::require_root();
        let started = Instant::now();
        let work = tempfile::Builder::new()
            .prefix(&format!("{run}-work-"))
            .tempdir()
            .expect("work directory");
        let kubeconfig = backend.kubeconfig(work.path());
        if announce {
            backend::say(started, &run, &backend.describe());
        }
        let client = match &backend {
            Backend::Fake(server) => server.client().await,
            Backend::Cluster(path) => {
                let client = backend::client_for(path).await;
                let label = RUN_LABEL.to_string();
                backend::refuse_foreign_nodes(&client, &label, |text| {
                    backend::say(started, &run, text)
                })
                .await;
                client
            }
        };
        let namespace = if announce {
            run.clone()
        } else {
            FAKE_NAMESPACE.to_string()
        };
        let first_dir = devices::new_dir(&run);
        let dir = first_dir.path().to_path_buf();
        let world = World {
            backend,
            client,
            kubeconfig,
            run,
            namespace,
            started,
            announce,
            created: Mutex::new(Vec::new()),
            device_dirs: Mutex::new(vec![first_dir]),
            dir,
            devices: Mutex::new(Vec::new()),
            cleaned: false,
            work,
        };
        world.create_namespace().await;
        world
    }

    /// The fake API server; panics on a real cluster (a test that plays a
    /// controller by hand or reads the request log is a fake-only test).
    pub fn server(&self) -> &FakeApiServer {
        match &self.backend {
            Backend::Fake(server) => server,
            Backend::Cluster(_) => panic!("this check needs the fake API server"),
        }
    }

    /// The fake API server, to stop or restart it.
    pub fn server_mut(&mut self) -> &mut FakeApiServer {
        match &mut self.backend {
            Backend::Fake(server) => server,
            Backend::Cluster(_) => panic!("this check needs the fake API server"),
        }
    }

    /// The world's own client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The run's name (see [`World::from_env`]).
    pub fn run(&self) -> &str {
        &self.run
    }

    /// Namespace of the PV spec ConfigMaps and claims.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The kubeconfig the world and its provisioners use (for `kubectl`).
    pub fn kubeconfig(&self) -> &std::path::Path {
        &self.kubeconfig
    }

    /// A scratch directory that lives as long as the world.
    pub fn work_dir(&self) -> &std::path::Path {
        self.work.path()
    }

    /// Writes one progress line (end-to-end worlds only).
    pub fn progress(&self, text: &str) {
        if self.announce {
            backend::say(self.started, &self.run, text);
        }
    }

    /// Starts the provisioner binary for Node `node`, out of cluster, with
    /// the binary's defaults but for `env` (e.g. [`polling`]).
    pub fn start(&self, node: &str, mut env: Vec<(&str, String)>) -> ProvisionerProcess {
        // A real kubeconfig's credential plugin may need the home directory.
        if let (Backend::Cluster(_), Ok(home)) = (&self.backend, std::env::var("HOME")) {
            env.push(("HOME", home));
        }
        ProvisionerProcess::start(ProvisionerOptions {
            kubeconfig: &self.kubeconfig,
            node,
            namespace: &self.namespace,
            env,
            log_dir: self.work.path(),
        })
    }
}

impl World {
    /// Starts the binary's `node-cleanup` mode as pod `pod`, its Lease in
    /// the world's namespace, with the binary's defaults but for `env`
    /// (e.g. `LP_NODE_GONE_GRACE`).
    pub fn start_node_cleanup(
        &self,
        pod: &str,
        mut env: Vec<(&str, String)>,
    ) -> ProvisionerProcess {
        if let (Backend::Cluster(_), Ok(home)) = (&self.backend, std::env::var("HOME")) {
            env.push(("HOME", home));
        }
        ProvisionerProcess::start_node_cleanup(
            &self.kubeconfig,
            &self.namespace,
            pod,
            env,
            self.work.path(),
        )
    }
}

/// Locks a mutex, also after a panic poisoned it (teardown must still run).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
