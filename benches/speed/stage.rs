//! One measured setup: a test world (the fake API server with the chosen
//! latency, or the cluster of `KUBECONFIG`), a PV spec ConfigMap over a
//! device directory, a Node naming it, the benchmark's PV watch, and the
//! provisioner process (the release build, logging as in production: JSON
//! at info). Closing a stage on a cluster deletes its Node while the
//! provisioner still runs, so the PVs are released, before the world
//! removes what it made.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;

use crate::options::Options;
use crate::support::fake_api::{FakeApiServer, PvPhases, RecordedRequest};
use crate::support::provisioner::ProvisionerProcess;
use crate::support::world::{Data, World, data};
use crate::timeline::{OWN_REQUEST_MARKER, Timeline};

/// A world with one Node, its spec and the benchmark's watch of its PVs.
pub struct Stage {
    /// The world.
    pub world: World,
    /// The Node's name.
    pub node: String,
    node_object: Node,
    /// The benchmark's watch of the Node's PVs.
    pub timeline: Timeline,
    cluster: bool,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
}

/// A request as it reached the fake API server (before its latency).
#[derive(Debug, Clone)]
pub struct Arrival {
    /// When it arrived.
    pub at: Instant,
    /// Its verb (`create`, `delete`, `patch`, ...).
    pub verb: String,
    /// Its resource (`persistentvolumes`, ...).
    pub resource: String,
    /// The object it is about, when it names one.
    pub name: Option<String>,
}

/// Sets up a fake API server as the options ask: the latency added to
/// every request and the churn mode (see `Options::churn`).
pub fn configure_fake(server: &FakeApiServer, options: &Options) {
    server.set_latency(options.latency);
    if options.churn {
        server.set_pv_phases(PvPhases::KUBE_CONTROLLER_MANAGER);
        server.set_managed_fields(true);
    } else {
        server.set_pv_phases(PvPhases::Batch);
        server.set_managed_fields(false);
    }
}

impl Stage {
    /// A new world (fresh fake API server, or the cluster) with Node
    /// `<run>-<suffix>` annotated with a Block spec over `dir` matching
    /// `filter`, storage class `<run>`, plus `extra` keys.
    pub async fn open(
        options: &Options,
        suffix: &str,
        dir: &Path,
        filter: &str,
        extra: &[(&str, &str)],
    ) -> Stage {
        Stage::open_with(options, suffix, |world| {
            let mut spec: Data = world.block_spec_over(dir, filter);
            spec.extend(data(&[("storageClassName", world.run())]));
            spec.extend(data(extra));
            spec
        })
        .await
    }

    /// A new world like [`Stage::open`], its Node's spec ConfigMap holding
    /// what `spec` makes of the world.
    pub async fn open_with(
        options: &Options,
        suffix: &str,
        spec: impl FnOnce(&World) -> Data,
    ) -> Stage {
        let world = World::from_env().await;
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        if !options.on_cluster() {
            configure_fake(world.server(), options);
            let log = arrivals.clone();
            world.server().observe_requests(move |request| {
                if request.query.contains(OWN_REQUEST_MARKER) {
                    return;
                }
                log.lock().expect("arrivals").push(Arrival {
                    at: Instant::now(),
                    verb: request.verb.clone(),
                    resource: request.resource.clone(),
                    name: request.object_name().map(String::from),
                });
            });
        }
        let node = format!("{}-{suffix}", world.run());
        let spec = spec(&world);
        let configmap = format!("{}-spec", world.run());
        world.put_configmap(&configmap, spec).await;
        let node_object = world.add_node(&node, Some(&configmap)).await;
        let timeline = Timeline::start(world.client().clone(), &node).await;
        Stage {
            world,
            node,
            node_object,
            timeline,
            cluster: options.on_cluster(),
            arrivals,
        }
    }

    /// The first request of `verb` on `resource` about `name` that reached
    /// the fake API server at or after `since` (never on a cluster).
    pub fn arrival(
        &self,
        verb: &str,
        resource: &str,
        name: &str,
        since: Instant,
    ) -> Option<Instant> {
        self.arrivals
            .lock()
            .expect("arrivals")
            .iter()
            .find(|a| {
                a.at >= since
                    && a.verb == verb
                    && a.resource == resource
                    && a.name.as_deref() == Some(name)
            })
            .map(|a| a.at)
    }

    /// Starts the provisioner for the Node with `env` on top of the
    /// production defaults (JSON logs at info).
    pub fn start(&self, mut env: Vec<(&str, String)>) -> ProvisionerProcess {
        env.push(("LP_DEVELOPMENT", "false".into()));
        env.push(("RUST_LOG", "info".into()));
        self.world.start(&self.node, env)
    }

    /// Waits until the process answers `/readyz` with 200 (its first
    /// reconcile has run).
    pub async fn wait_ready(&self, process: &ProvisionerProcess) {
        process.wait_ready(true).await;
    }

    /// The fake server's log of the program's requests (the benchmark's own
    /// watch left out); `None` on a cluster.
    pub fn program_requests(&self) -> Option<Vec<RecordedRequest>> {
        if self.cluster {
            return None;
        }
        Some(
            self.world
                .server()
                .requests()
                .into_iter()
                .filter(|r| !r.query.contains(OWN_REQUEST_MARKER))
                .collect(),
        )
    }

    /// Empties the fake server's request log (nothing on a cluster).
    pub fn clear_requests(&self) {
        if !self.cluster {
            self.world.server().clear_requests();
        }
    }

    /// Stops the provisioner and removes everything the stage made. On a
    /// cluster the Node goes first, with the provisioner still running, so
    /// that it releases its PVs (never claimed: without a wipe).
    pub async fn close(self, process: ProvisionerProcess) {
        if self.cluster {
            self.world.delete_node(&self.node_object).await;
            self.timeline.none_left(Duration::from_secs(120)).await;
        }
        drop(process);
        drop(self.timeline);
        let problems = self.world.teardown().await;
        assert!(
            problems.is_empty(),
            "cleanup left things behind:\n{}",
            problems.join("\n")
        );
    }
}
