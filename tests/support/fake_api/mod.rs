//! An in-process, stateful fake Kubernetes API server over plain HTTP, for
//! driving kube-rs's real client in integration tests.
//!
//! This module owns the public handle, [`FakeApiServer`]: starting and
//! restarting the server, building clients for it, switches for the emulated
//! controller-manager and fault injection (its inspection of objects and
//! requests is in `inspect`). The parts behind it:
//! - `resources`: the served resource table, `Status` errors, validation;
//! - `store`: objects, the global resourceVersion, the change history and the
//!   write semantics (create defaults, optimistic concurrency, status
//!   subresource, managedFields, finalizers, graceful deletion);
//! - `http`: routing, verbs, discovery, watch streams (and their cuts,
//!   between or in the middle of events), connection tracking;
//! - `selectors`: label and field selectors; `patch`: PATCH bodies;
//!   `fields`: `metadata.managedFields`, recorded on every write;
//!   `apply`: server-side apply (leases);
//! - `faults`: fault rules, latency, request log, request observer;
//! - `controller`: the controller-manager emulation (PV phases paced like
//!   the real one, see [`PvPhases`]);
//! - `admission`: bearer tokens and a `ValidatingAdmissionPolicy` (opt-in);
//! - `inspect`: the request log, stored objects, and writes a test makes
//!   straight to the store.
//!
//! Served: core/v1 `namespaces`, `nodes`, `persistentvolumes` (cluster-scoped),
//! `configmaps`, `persistentvolumeclaims`, `events`, `pods` (stored and
//! watched, with the `spec.nodeName` field selector; nothing runs them),
//! `events.k8s.io/v1` `events` (namespaced), `storage.k8s.io/v1`
//! `storageclasses` (cluster-scoped) and `coordination.k8s.io/v1` `leases`
//! (namespaced; with server-side apply and field ownership, `apply`), plus
//! `/version`, `/api`, `/apis`, `/api/v1`, `/apis/events.k8s.io/v1`,
//! `/apis/storage.k8s.io/v1`, `/apis/coordination.k8s.io/v1` and
//! `/healthz`. A
//! fresh server holds the namespaces `default`, `kube-system`, `kube-public`
//! and `kube-node-lease`; namespaced objects can only be created in an
//! existing namespace.
//!
//! Simplifications against a real kube-apiserver: no authentication unless a
//! test registers tokens, no RBAC, JSON only; `limit`/`continue` are ignored
//! (lists are never paginated) and lists ignore
//! `resourceVersion`/`resourceVersionMatch`; a strategic merge patch is
//! applied as a merge patch; server-side apply is served for leases only
//! (other resources refuse it with 415); `metadata.managedFields` (on
//! every object, as on a real server) treat lists other than finalizers
//! and owner references as atomic; a metadata-only request
//! (`Accept: …;as=PartialObjectMetadata…`) is answered with whole objects;
//! `DeleteOptions` other than preconditions (propagation policy, grace period,
//! dry run) are ignored; a watch from a resourceVersion newer than the
//! current one simply waits; only a few immutability and validation rules
//! (names, PV and PVC basics) are enforced; field selectors support
//! `metadata.name`, `metadata.namespace` and a few per-resource fields; core
//! and `events.k8s.io` events are separate collections (the real server
//! stores them once); the garbage collector only knows owners of kind Node;
//! Pods are only stored (no scheduler, no kubelet), so PVC protection never
//! waits for one; a StorageClass is stored (defaults `reclaimPolicy: Delete`, `volumeBindingMode:
//! Immediate`; `provisioner` required) but its fields are not immutable, and
//! the emulated binder does not read it: every claim binds as under
//! `Immediate`.

mod admission;
mod apply;
mod controller;
mod faults;
mod fields;
mod http;
mod inspect;
mod patch;
mod resources;
mod selectors;
mod store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

// Used by the test files that authenticate or run a policy only.
#[allow(unused_imports)]
pub use admission::{
    AdmissionDecision, AdmissionPolicy, Failure, NODE_CLEANUP_SERVICE_ACCOUNT, Operation, Outcome,
    PROVISIONER_SERVICE_ACCOUNT, Review, UserInfo, node_cleanup_policy_from_config,
    node_policy_from_config,
};
pub use controller::PvPhases;
pub use faults::{FaultRule, RecordedRequest};

use faults::Faults;
use http::{Connections, TrackedListener};
use resources::RESOURCES;
use store::Store;

/// State shared by the HTTP handlers, the controller task and the handle.
struct Shared {
    store: Mutex<Store>,
    faults: Faults,
    /// Bumped to abort every open watch stream.
    cut: watch::Sender<u64>,
    /// Per resource (index into `RESOURCES`): bumped to make every open
    /// watch of it send its next event half-written and then abort.
    mid_event: Mutex<Vec<u64>>,
    /// Events sent half-written so far.
    mid_event_cuts: AtomicU64,
    /// Per resource: how long after its commit a watch delivers a change.
    watch_lag: Mutex<Vec<Duration>>,
    controller_on: AtomicBool,
    /// How the emulated PV controller settles new PVs.
    pv_phases: Mutex<PvPhases>,
    pvc_binding: AtomicBool,
    /// Whether the product's CRD (LocalDisks) is installed: when not, its
    /// paths answer 404 as on a cluster without it.
    crd_installed: AtomicBool,
    gone_as_http: AtomicBool,
    admission: admission::Admission,
}

/// A running fake API server; dropping it stops the server and its
/// controller task.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    conns: Arc<Connections>,
    server: Option<JoinHandle<()>>,
    controller: JoinHandle<()>,
}

impl FakeApiServer {
    /// Starts a server on `127.0.0.1` with a random port, with the
    /// controller-manager emulation on and PVC binding off.
    pub async fn start() -> FakeApiServer {
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new()),
            faults: Faults::default(),
            cut: watch::channel(0).0,
            mid_event: Mutex::new(vec![0; RESOURCES.len()]),
            mid_event_cuts: AtomicU64::new(0),
            watch_lag: Mutex::new(vec![Duration::ZERO; RESOURCES.len()]),
            controller_on: AtomicBool::new(true),
            pv_phases: Mutex::new(PvPhases::KUBE_CONTROLLER_MANAGER),
            pvc_binding: AtomicBool::new(false),
            crd_installed: AtomicBool::new(true),
            gone_as_http: AtomicBool::new(false),
            admission: admission::Admission::default(),
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake API server");
        let addr = listener.local_addr().expect("local address");
        let conns = Arc::new(Connections::default());
        let server = Some(serve(listener, conns.clone(), shared.clone()));
        let controller = tokio::spawn(controller::run(shared.clone()));
        FakeApiServer {
            shared,
            addr,
            conns,
            server,
            controller,
        }
    }

    /// Base URL, `http://127.0.0.1:PORT`; stays the same across restarts.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Kubeconfig YAML (no credentials) with cluster, user and context `fake`
    /// pointing at [`Self::url`], default namespace `default`.
    pub fn kubeconfig_yaml(&self) -> String {
        self.kubeconfig_for_user("{}")
    }

    /// Kubeconfig YAML whose user `fake` is the flow mapping `user`.
    fn kubeconfig_for_user(&self, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: fake\n  user: {user}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    \
             user: fake\n    namespace: default\ncurrent-context: fake\n",
            self.url()
        )
    }

    /// Writes [`Self::kubeconfig_yaml`] to `dir/kubeconfig` and returns the path.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(&path, self.kubeconfig_yaml()).expect("write kubeconfig");
        path
    }

    /// A kube client built from [`Self::kubeconfig_yaml`] through
    /// `kube::Config::from_custom_kubeconfig`, like a program would build it.
    pub async fn client(&self) -> kube::Client {
        self.client_from(&self.kubeconfig_yaml()).await
    }

    /// A kube client built from kubeconfig YAML.
    async fn client_from(&self, yaml: &str) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(yaml).expect("parse kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("kube config from kubeconfig");
        kube::Client::try_from(config).expect("kube client")
    }

    /// Switches the controller-manager emulation (PV phases, protection
    /// finalizers, garbage collection, namespace cleanup, PVC binding when
    /// enabled) on or off. On by default.
    pub fn set_controller_emulation(&self, on: bool) {
        self.shared.controller_on.store(on, Ordering::SeqCst);
    }

    /// How the emulated PV controller moves new PVs `Pending` →
    /// `Available`: one status write per PV at kube-controller-manager's
    /// pace ([`PvPhases::KUBE_CONTROLLER_MANAGER`], the default), at
    /// another pace, or every pending PV at once every 50 ms
    /// ([`PvPhases::Batch`], the fake before issue 19).
    pub fn set_pv_phases(&self, phases: PvPhases) {
        *self.shared.pv_phases.lock().expect("PV phases") = phases;
    }

    /// Whether every write records `metadata.managedFields` (on, the
    /// default, as a real server does: every object returned or streamed
    /// carries them) or only the writes to leases (off: the fake before
    /// issue 19). Objects already stored keep theirs.
    pub fn set_managed_fields(&self, on: bool) {
        self.store().set_managed_fields(on);
    }

    /// Switches the emulated PV binder (pending claims bound to fitting
    /// `Available` volumes; volumes of deleted claims become `Released`) on or
    /// off. Off by default; needs the controller emulation on.
    pub fn set_pvc_binding(&self, on: bool) {
        self.shared.pvc_binding.store(on, Ordering::SeqCst);
    }

    /// Installs or removes the product's CRD (LocalDisks, installed by
    /// default). Removed, every LocalDisk path answers 404 Not Found as a
    /// server without the CRD does; the objects stored stay for when it
    /// comes back.
    pub fn set_crd_installed(&self, installed: bool) {
        self.shared.crd_installed.store(installed, Ordering::SeqCst);
    }

    /// How a watch from a resourceVersion older than the retained history is
    /// refused: `false` (default, like the real server) answers 200 and sends
    /// one `ERROR` event with a 410 Expired `Status`, then ends the stream;
    /// `true` answers HTTP 410 with the `Status` as body. Note that
    /// kube-runtime's watcher does not relist on an HTTP 410 at watch start:
    /// it keeps retrying the same resourceVersion, which is what this switch
    /// lets a test expose.
    pub fn set_expired_watch_as_http_status(&self, on: bool) {
        self.shared.gone_as_http.store(on, Ordering::SeqCst);
    }

    /// Adds a fault rule; requests matching it are answered with its status
    /// instead of being served (still recorded).
    pub fn fail_requests(&self, rule: FaultRule) {
        self.shared.faults.add(rule);
    }

    /// Removes every fault rule and the latency.
    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    /// Delays every response (including the start of watch streams) by `d`.
    pub fn set_latency(&self, d: Duration) {
        self.shared.faults.set_latency(d);
    }

    /// Aborts every open watch stream mid-stream: the connection is dropped
    /// without the terminating chunk, as when a load balancer or apiserver
    /// goes away. Clients see a broken body and have to re-watch.
    pub fn cut_watches(&self) {
        self.shared.cut.send_modify(|g| *g += 1);
    }

    /// Makes every open watch stream of `resource` (`persistentvolumes`,
    /// `nodes`, ...) send its next event (not a BOOKMARK) only half-written and
    /// then abort the connection, as when a connection dies in the middle of
    /// a chunk. Watches opened afterwards are not affected. A client must drop
    /// the partial line, re-watch and get the event again.
    /// [`Self::mid_event_cuts`] tells how many events were cut so far.
    pub fn cut_watches_mid_event(&self, resource: &str) {
        let res = resources::by_name(resource);
        self.shared.mid_event.lock().expect("mid-event cuts")[res] += 1;
    }

    /// Makes every watch of `resource` (open or opened later) deliver each
    /// change `lag` after it was committed, in order, as a real API
    /// server's watch cache and the network between can: a client's cache
    /// then shows an object as it was while writes to it have long been
    /// answered. Lists, GETs and the initial events of a watch are not
    /// delayed. `Duration::ZERO` (the default) switches it off.
    pub fn set_watch_lag(&self, resource: &str, lag: Duration) {
        let res = resources::by_name(resource);
        self.shared.watch_lag.lock().expect("watch lag")[res] = lag;
    }

    /// How many events were sent half-written by [`Self::cut_watches_mid_event`].
    pub fn mid_event_cuts(&self) -> u64 {
        self.shared.mid_event_cuts.load(Ordering::SeqCst)
    }

    /// Forgets the change history: a watch from any resourceVersion older than
    /// the current one gets 410 Expired (also open watches that have not yet
    /// caught up), so clients must relist.
    pub fn expire_history(&self) {
        self.store().expire();
    }

    /// Stops listening, drops every connection (open watches end abruptly,
    /// pooled keep-alive connections are closed) and listens again on the
    /// same port.
    ///
    /// With `keep_store`, objects and history survive: clients re-watch and
    /// get the changes they missed. Without, every object is dropped (the
    /// default namespaces are re-created) and the history is forgotten while
    /// the resourceVersion counter keeps counting up: a client resuming a
    /// watch gets 410 Expired, relists and sees the objects gone. Fault
    /// rules, latency, switches and the request log are kept.
    pub async fn restart(&mut self, keep_store: bool) {
        self.stop().await;
        self.resume(keep_store).await;
    }

    /// The first half of [`Self::restart`]: stops listening and drops every
    /// connection. Until [`Self::resume`], connecting is refused, as when the
    /// API server is down. The emulated controller-manager keeps running.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
        self.cut_watches();
        self.conns.shutdown_all();
    }

    /// The second half of [`Self::restart`]: listens again on the same port,
    /// after dropping every object when `keep_store` is false. Does nothing
    /// while the server is listening.
    pub async fn resume(&mut self, keep_store: bool) {
        if self.server.is_some() {
            return;
        }
        if !keep_store {
            self.store().reset();
        }
        let mut attempt = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) if attempt < 100 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("rebind fake API server on {}: {e}", self.addr),
            }
        };
        self.server = Some(serve(listener, self.conns.clone(), self.shared.clone()));
    }

    /// Shows every request to `observer` as it arrives, before latency,
    /// faults and serving (its `status` is still `0`), on the server's task:
    /// a test can look at the world at the moment a request is made (e.g.
    /// read a device when its PV's DELETE comes in). The observer must be
    /// quick and must not call back into the server. Replaces any earlier
    /// observer; survives restarts.
    pub fn observe_requests(&self, observer: impl Fn(&RecordedRequest) + Send + Sync + 'static) {
        self.shared.faults.set_observer(Some(Arc::new(observer)));
    }

    /// The locked store.
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.shared.store.lock().expect("store")
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
        self.controller.abort();
        self.shared.cut.send_modify(|g| *g += 1);
        self.conns.shutdown_all();
    }
}

/// Serves the router on `listener` in a task of its own.
fn serve(listener: TcpListener, conns: Arc<Connections>, shared: Arc<Shared>) -> JoinHandle<()> {
    let listener = TrackedListener::new(listener, conns);
    tokio::spawn(async move {
        let _ = axum::serve(listener, http::router(shared)).await;
    })
}
