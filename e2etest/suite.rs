//! End-to-end suite of `local-pv-provisioner`: one whole lifecycle of the
//! real binary, run out of cluster for a Node object the suite creates,
//! against a Kubernetes API server and controller-manager, on real loop
//! devices of this machine. `e2etest/README.md` says how to run it.
//!
//! **Mode.** With `LPP_E2E_KUBECONFIG=<path>` the suite talks to that
//! cluster (the kubeconfig's current context); it needs kube-apiserver and
//! kube-controller-manager only (no kubelet, no scheduler). Without it (CI)
//! it starts the project's fake API server (`tests/support/fake_api`) with
//! its controller-manager emulation and its PV binder on, and plays nothing
//! by hand: PV phases, binding, release, protection finalizers, garbage
//! collection and namespace cleanup all come from the emulation.
//!
//! **Safety.** Against a real cluster it refuses to run while the cluster
//! has Nodes it did not create, unless `LPP_E2E_ALLOW_FOREIGN_NODES=1`. It
//! names everything it creates `lpp-e2e-<random suffix>…` and labels it with
//! [`RUN_LABEL`]; it deletes only what it created (UID preconditions), the
//! PVs the provisioner made for its own Nodes, and the loop devices it
//! attached.
//!
//! **Phases**, each announced by a progress line on stderr (written past the
//! test harness's capture):
//! 1. setup: loop devices linked into a device directory, a namespace, a
//!    StorageClass (`kubernetes.io/no-provisioner`, `Immediate`), a PV spec
//!    ConfigMap, a Node, and the provisioner for that Node;
//! 2. a PV per device, with the documented shape and an ownerReference to
//!    the Node's live UID;
//! 3. a claim of the storage class binds (PVC and PV `Bound`);
//! 4. markers written through the bound block device read back;
//! 5. the claim deleted: the PV turns `Released`, the device's first 100 MiB
//!    and last 1 MiB are zeroed (the rest intact), the PV is deleted and a
//!    fresh PV for the device comes back `Available`;
//! 6. a second Node annotated with a ConfigMap holding `volumeMode: Sideways`
//!    is paused: a Warning Event `PVSpecInvalid` about it, no PV created for
//!    a new device, its `Released` PV neither wiped nor deleted; fixing the
//!    annotation resumes it;
//! 7. both Nodes deleted: their PVs are garbage-collected.
//!
//! **Cleanup** runs whatever happens: after the phases, on SIGINT/SIGTERM,
//! and from [`Suite`]'s `Drop` when a check panics. Provisioners are stopped,
//! cluster objects deleted in reverse order of creation (NotFound is fine),
//! leftover PVs of the suite's Nodes deleted, then the loop devices detached.
//!
//! Every wait polls every 50 ms for up to [`WAIT`]; none asserts a duration.
//! The one negative check (phase 6: nothing happens while paused) watches for
//! [`SETTLE`], three polling intervals of the provisioner.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{FileExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, Node, PersistentVolume, PersistentVolumeClaim,
};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, WatchEvent,
    WatchParams,
};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use support::fake_api::FakeApiServer;
use support::loop_device::{FILL_BYTE, LoopDevice};
use support::provisioner::{ProvisionerOptions, ProvisionerProcess, eventually};
use tempfile::TempDir;

/// Environment variable naming the kubeconfig of a real cluster; unset or
/// empty means fake mode.
const KUBECONFIG_ENV: &str = "LPP_E2E_KUBECONFIG";
/// Environment variable that, set to `1`, lets the suite run on a cluster
/// that has Nodes it did not create.
const ALLOW_FOREIGN_NODES_ENV: &str = "LPP_E2E_ALLOW_FOREIGN_NODES";
/// Prefix of every name the suite gives an object.
const PREFIX: &str = "lpp-e2e-";
/// Label on every object the suite creates; its value is the run's name.
const RUN_LABEL: &str = "local-pv-provisioner.cybozu.io/e2e-run";
/// Taint on the suite's Nodes, so nothing is scheduled to them that does not
/// tolerate every taint.
const TAINT_KEY: &str = "local-pv-provisioner.cybozu.io/e2e-test-node";

/// The Node annotation naming the PV spec ConfigMap.
const SPEC_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/pv-spec-configmap";
/// The label the provisioner puts on its PVs: the node name.
const NODE_LABEL: &str = "local-pv-provisioner.cybozu.io/node";
/// Prefix of the provisioner's PV annotations.
const ANNOTATION_PREFIX: &str = "local-pv-provisioner.cybozu.io/";
/// The PV annotation holding the full node name.
const NODE_NAME_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/node-name";
/// The Node label the PVs' node affinity uses.
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// `deviceNameFilter` of the suite's ConfigMaps: the links it makes.
const DEVICE_FILTER: &str = "^disk[0-9]+$";

/// One mebibyte.
const MIB: u64 = 1024 * 1024;
/// Bytes a wipe zeroes at the head of a device (the default `wipeBytes`).
const HEAD_BYTES: u64 = 100 * MIB;
/// Bytes a wipe zeroes at the tail of a device.
const TAIL_BYTES: u64 = MIB;
/// The device the claim binds: larger than head and tail together, so that
/// the bytes between them show they were left alone.
const BOUND_DEVICE_BYTES: u64 = 128 * MIB;
/// The second device of the first Node: too small for the claim.
const SPARE_DEVICE_BYTES: u64 = 16 * MIB;
/// The devices of the second Node.
const NODE_B_DEVICE_BYTES: u64 = 8 * MIB;
/// The claim's request: only the bound device fits it.
const CLAIM_REQUEST: &str = "120Mi";

/// Longest wait for any asynchronous outcome (polled every 50 ms).
const WAIT: Duration = Duration::from_secs(60);
/// The provisioners' `--polling-interval`, in seconds.
const POLLING_INTERVAL_SECS: u64 = 1;
/// A polling interval far shorter than a wipe, so that reconciles surely run
/// while one is in flight.
const FAST_POLLING_INTERVAL: &str = "20ms";
/// How long the paused Node is watched for something it must not do.
const SETTLE: Duration = Duration::from_secs(3 * POLLING_INTERVAL_SECS);

/// The whole lifecycle, against the fake API server or the cluster named by
/// `LPP_E2E_KUBECONFIG`. Needs root for the loop devices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle() {
    run(Scenario::Lifecycle).await;
}

/// A wipe the provisioner runs itself is not a problem with the device: no
/// `DeviceSkipped` Warning Event about the Node while its own wipe holds the
/// device's lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_wipe_is_not_a_skipped_device() {
    run(Scenario::OwnWipe).await;
}

/// What one test runs between setup and cleanup.
#[derive(Debug, Clone, Copy)]
enum Scenario {
    /// [`Suite::lifecycle`].
    Lifecycle,
    /// [`Suite::own_wipe`].
    OwnWipe,
}

/// Runs `scenario` in a fresh [`Suite`], then cleans up; fails on a failed
/// check, on a cleanup that left something behind, and on SIGINT/SIGTERM
/// (after cleaning up).
async fn run(scenario: Scenario) {
    support::loop_device::require_root();
    let suite = Suite::start().await;
    let checks = async {
        match scenario {
            Scenario::Lifecycle => suite.lifecycle().await,
            Scenario::OwnWipe => suite.own_wipe().await,
        }
    };
    let interrupted = tokio::select! {
        () = checks => None,
        signal = interruption() => Some(signal),
    };
    if let Some(signal) = interrupted {
        suite.progress(&format!("{signal} received: stopping"));
    }
    let problems = suite.teardown().await;
    assert!(
        problems.is_empty(),
        "cleanup left things behind:\n{}",
        problems.join("\n")
    );
    if let Some(signal) = interrupted {
        panic!("interrupted by {signal}; everything the suite made is removed");
    }
}

/// Resolves on SIGINT or SIGTERM, naming the signal.
async fn interruption() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}

/// Writes one progress line to stderr directly, so it shows even while the
/// test harness captures output.
fn say(started: Instant, run: &str, text: &str) {
    let line = format!(
        "e2e {run} [{:5.1}s] {text}\n",
        started.elapsed().as_secs_f64()
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Locks a mutex, also after a panic poisoned it (cleanup must still run).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Six random characters of `[a-z0-9]`.
fn random_suffix() -> String {
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

/// A client for the current context of the kubeconfig at `path`.
async fn client_for(path: &Path) -> Client {
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
/// unless `LPP_E2E_ALLOW_FOREIGN_NODES=1`: the suite is meant for a
/// throwaway cluster.
async fn refuse_foreign_nodes(client: &Client, started: Instant, run: &str) {
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
        say(
            started,
            run,
            &format!(
                "the cluster has {} Node(s) this run did not create; going on ({ALLOW_FOREIGN_NODES_ENV}=1)",
                nodes.len()
            ),
        );
        return;
    }
    panic!(
        "refusing to run: the cluster has Nodes this run did not create ({}). Run the suite \
         against a throwaway cluster; if this is one, set {ALLOW_FOREIGN_NODES_ENV}=1. Nodes \
         named {PREFIX}* are leftovers of an interrupted run: `kubectl delete node -l {RUN_LABEL}`.",
        nodes.join(", ")
    );
}

/// Kinds of object the suite creates itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// core/v1 Namespace.
    Namespace,
    /// storage.k8s.io/v1 StorageClass.
    StorageClass,
    /// core/v1 ConfigMap.
    ConfigMap,
    /// core/v1 PersistentVolumeClaim.
    Claim,
    /// core/v1 Node.
    Node,
}

/// One object the suite created, as recorded right after the create
/// succeeded; deleted at cleanup with a UID precondition, so a same-named
/// object someone else made later is never touched.
#[derive(Debug, Clone)]
struct Created {
    /// What it is.
    kind: Kind,
    /// Its namespace, `None` when cluster-scoped.
    namespace: Option<String>,
    /// Its name.
    name: String,
    /// Its UID.
    uid: String,
}

/// Deletes one object the suite created; NotFound (already gone) and
/// Conflict (being deleted already, or replaced by someone else's object of
/// the same name) count as done.
async fn delete_created(client: &Client, object: &Created) -> Result<(), String> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(object.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let name = object.name.as_str();
    let namespace = object.namespace.as_deref().unwrap_or("default");
    let result = match object.kind {
        Kind::Namespace => Api::<Namespace>::all(client.clone())
            .delete(name, &params)
            .await
            .map(drop),
        Kind::StorageClass => Api::<StorageClass>::all(client.clone())
            .delete(name, &params)
            .await
            .map(drop),
        Kind::ConfigMap => Api::<ConfigMap>::namespaced(client.clone(), namespace)
            .delete(name, &params)
            .await
            .map(drop),
        Kind::Claim => Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
            .delete(name, &params)
            .await
            .map(drop),
        Kind::Node => Api::<Node>::all(client.clone())
            .delete(name, &params)
            .await
            .map(drop),
    };
    match result {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(error) => Err(format!("deleting {:?} {name}: {error}", object.kind)),
    }
}

/// PVs labelled for `node` that also record it as their node.
async fn pvs_of(client: &Client, node: &str) -> Result<Vec<PersistentVolume>, kube::Error> {
    let list = Api::<PersistentVolume>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{NODE_LABEL}={node}")))
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|pv| {
            pv.annotations()
                .get(NODE_NAME_ANNOTATION)
                .map(String::as_str)
                == Some(node)
        })
        .collect())
}

/// Deletes the suite's objects in reverse order of creation, then the PVs
/// the provisioner made for the suite's Nodes: the garbage collector takes
/// them once their Node is gone; whatever it has not taken after a while is
/// deleted here. Returns what could not be removed.
async fn delete_cluster_objects(client: &Client, created: &[Created]) -> Vec<String> {
    let mut problems = Vec::new();
    for object in created.iter().rev() {
        if let Err(problem) = delete_created(client, object).await {
            problems.push(problem);
        }
    }
    let nodes: Vec<&str> = created
        .iter()
        .filter(|object| object.kind == Kind::Node)
        .map(|object| object.name.as_str())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let leftovers = loop {
        let mut leftovers = Vec::new();
        for node in &nodes {
            match pvs_of(client, node).await {
                Ok(pvs) => leftovers.extend(
                    pvs.into_iter()
                        .filter(|pv| pv.metadata.deletion_timestamp.is_none()),
                ),
                Err(error) => problems.push(format!("listing the PVs of {node}: {error}")),
            }
        }
        if leftovers.is_empty() || Instant::now() > deadline || !problems.is_empty() {
            break leftovers;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for pv in leftovers {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pv.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match Api::<PersistentVolume>::all(client.clone())
            .delete(&pv.name_any(), &params)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(error) => problems.push(format!("deleting PV {}: {error}", pv.name_any())),
        }
    }
    problems
}

/// The phase of a PV, `""` when it has none yet.
fn phase(pv: &PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or("")
}

/// The phase of a claim, `""` when it has none yet.
fn claim_phase(claim: &PersistentVolumeClaim) -> &str {
    claim
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or("")
}

/// Checks that every field of `expected` is in `actual` with the same value:
/// objects may hold more keys, arrays must have the same length with each
/// element matching, scalars must be equal. `Err` names the first
/// difference by its JSON path.
fn contains(actual: &Value, expected: &Value, path: &str) -> Result<(), String> {
    match (actual, expected) {
        (Value::Object(actual), Value::Object(expected)) => {
            for (key, value) in expected {
                let inner = format!("{path}.{key}");
                match actual.get(key) {
                    Some(found) => contains(found, value, &inner)?,
                    None => return Err(format!("{inner} is missing; expected {value}")),
                }
            }
            Ok(())
        }
        (Value::Array(actual), Value::Array(expected)) if actual.len() == expected.len() => {
            for (index, (found, value)) in actual.iter().zip(expected).enumerate() {
                contains(found, value, &format!("{path}[{index}]"))?;
            }
            Ok(())
        }
        _ if actual == expected => Ok(()),
        _ => Err(format!("{path} is {actual}; expected {expected}")),
    }
}

/// The data of a Block-mode PV spec ConfigMap over `dir`.
fn block_spec(dir: &Path, storage_class: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("deviceDir".to_string(), dir.display().to_string()),
        ("deviceNameFilter".to_string(), DEVICE_FILTER.to_string()),
        ("volumeMode".to_string(), "Block".to_string()),
        ("storageClassName".to_string(), storage_class.to_string()),
    ])
}

/// `loop:<backing file>@<offset>`, the stable id the provisioner records for
/// a loop device when sysfs names its backing file; `None` otherwise.
fn loop_stable_id(device: &LoopDevice) -> Option<String> {
    let name = device.path.file_name()?.to_str()?;
    let sysfs = Path::new("/sys/class/block").join(name).join("loop");
    let backing = std::fs::read_to_string(sysfs.join("backing_file")).ok()?;
    let offset = std::fs::read_to_string(sysfs.join("offset"))
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|_| "0".to_string());
    Some(format!("loop:{}@{offset}", backing.trim()))
}

/// The fields the provisioner decides for the PV of `device`, linked as
/// `dir/entry`, on `node`.
fn expected_pv(
    node: &Node,
    dir: &Path,
    entry: &str,
    device: &LoopDevice,
    storage_class: &str,
) -> Value {
    let node_name = node.name_any();
    let size = std::fs::metadata(&device.backing_file)
        .expect("backing file")
        .len();
    let hostname = node.labels()[HOSTNAME_LABEL].clone();
    let mut annotations = json!({
        "local-pv-provisioner.cybozu.io/device-dir": dir.display().to_string(),
        "local-pv-provisioner.cybozu.io/device-name-filter": DEVICE_FILTER,
        "local-pv-provisioner.cybozu.io/volume-mode": "Block",
        "local-pv-provisioner.cybozu.io/device-number": device.number(),
        "local-pv-provisioner.cybozu.io/device-size": size.to_string(),
        "local-pv-provisioner.cybozu.io/node-name": node_name,
        "local-pv-provisioner.cybozu.io/wipe-bytes": HEAD_BYTES.to_string(),
    });
    if let Some(stable_id) = loop_stable_id(device) {
        annotations["local-pv-provisioner.cybozu.io/device-stable-id"] = json!(stable_id);
    }
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": format!("local-{node_name}-{entry}"),
            "labels": {NODE_LABEL: node_name},
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "Node",
                "name": node_name,
                "uid": node.uid().expect("Node UID"),
            }],
        },
        "spec": {
            "capacity": {"storage": size.to_string()},
            "volumeMode": "Block",
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": storage_class,
            "local": {"path": dir.join(entry).display().to_string()},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{
                "key": HOSTNAME_LABEL,
                "operator": "In",
                "values": [hostname],
            }]}]}},
        },
    })
}

/// Asserts that `pv` has exactly the provisioner's part of `expected`: every
/// expected field, no other provisioner annotation, no `fsType`, and an
/// ownerReference without `blockOwnerDeletion`.
fn assert_pv_shape(pv: &PersistentVolume, expected: &Value) {
    let name = pv.name_any();
    let actual = serde_json::to_value(pv).expect("PV as JSON");
    if let Err(difference) = contains(&actual, expected, "pv") {
        panic!("PV {name} has the wrong shape: {difference}\n{actual:#}");
    }
    let ours: BTreeSet<&str> = pv
        .annotations()
        .keys()
        .map(String::as_str)
        .filter(|key| key.starts_with(ANNOTATION_PREFIX))
        .collect();
    let wanted: BTreeSet<&str> = expected["metadata"]["annotations"]
        .as_object()
        .expect("annotations")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(ours, wanted, "PV {name}: the provisioner's annotations");
    assert!(
        actual.pointer("/spec/local/fsType").is_none(),
        "PV {name}: a Block PV has no fsType"
    );
    assert!(
        actual
            .pointer("/metadata/ownerReferences/0/blockOwnerDeletion")
            .is_none(),
        "PV {name}: blockOwnerDeletion is left unset"
    );
}

/// Writes `data` at `offset` through the block device at `path` and flushes
/// it to the device.
fn write_through(path: &Path, offset: u64, data: &[u8]) {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|error| panic!("opening {} for writing: {error}", path.display()));
    file.write_all_at(data, offset)
        .unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
    file.sync_all()
        .unwrap_or_else(|error| panic!("flushing {}: {error}", path.display()));
}

/// Reads `length` bytes at `offset` through the block device at `path`.
fn read_through(path: &Path, offset: u64, length: usize) -> Vec<u8> {
    let file =
        File::open(path).unwrap_or_else(|error| panic!("opening {}: {error}", path.display()));
    let mut buffer = vec![0u8; length];
    file.read_exact_at(&mut buffer, offset)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
    buffer
}

/// Whether every byte is `value` (compared a block at a time: a byte loop
/// is slow in a debug build).
fn all(bytes: &[u8], value: u8) -> bool {
    let block = [value; 4096];
    bytes
        .chunks(block.len())
        .all(|chunk| chunk == &block[..chunk.len()])
}

/// One watch event of a PV, as recorded by [`PvHistory`].
#[derive(Debug, Clone)]
struct Seen {
    /// `ADDED`, `MODIFIED`, `DELETED`, or `ERROR` when the watch broke off
    /// with an error (then the record has a gap).
    event: &'static str,
    /// The PV's name (the error message for `ERROR`).
    name: String,
    /// The PV's UID.
    uid: String,
    /// The PV's phase.
    phase: String,
}

/// Every change to one node's PVs from the moment it is started, from a
/// watch resumed at the last resourceVersion it saw: a phase that lasts
/// shorter than a poll (`Released`, while the wipe runs) is still seen.
struct PvHistory {
    /// The events so far, oldest first.
    seen: Arc<Mutex<Vec<Seen>>>,
    /// The watching task; aborted on drop.
    task: tokio::task::JoinHandle<()>,
}

impl PvHistory {
    /// Lists the PVs labelled for `node` and watches them from that list's
    /// resourceVersion on.
    async fn start(client: Client, node: &str) -> PvHistory {
        let api: Api<PersistentVolume> = Api::all(client);
        let selector = format!("{NODE_LABEL}={node}");
        let list = api
            .list(&ListParams::default().labels(&selector))
            .await
            .expect("listing PVs");
        let mut version = list
            .metadata
            .resource_version
            .clone()
            .expect("the list's resourceVersion");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let params = WatchParams::default().labels(&selector).timeout(60);
                let stream = match api.watch(&params, &version).await {
                    Ok(stream) => stream,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    let (kind, pv) = match event {
                        Ok(WatchEvent::Added(pv)) => ("ADDED", pv),
                        Ok(WatchEvent::Modified(pv)) => ("MODIFIED", pv),
                        Ok(WatchEvent::Deleted(pv)) => ("DELETED", pv),
                        Ok(WatchEvent::Bookmark(bookmark)) => {
                            version = bookmark.metadata.resource_version;
                            continue;
                        }
                        Ok(WatchEvent::Error(status)) => {
                            lock(&sink).push(Seen {
                                event: "ERROR",
                                name: status.message.clone(),
                                uid: String::new(),
                                phase: String::new(),
                            });
                            return;
                        }
                        Err(_) => break,
                    };
                    if let Some(resource_version) = pv.resource_version() {
                        version = resource_version;
                    }
                    lock(&sink).push(Seen {
                        event: kind,
                        name: pv.name_any(),
                        uid: pv.uid().unwrap_or_default(),
                        phase: phase(&pv).to_string(),
                    });
                }
            }
        });
        PvHistory { seen, task }
    }

    /// The events of the PV with `uid`, once one of them is its deletion;
    /// panics when the watch broke off (the record would have a gap).
    fn until_deleted(&self, uid: &str) -> Option<Vec<Seen>> {
        let seen = lock(&self.seen);
        if let Some(error) = seen.iter().find(|seen| seen.event == "ERROR") {
            panic!("the PV watch broke off: {}", error.name);
        }
        let events: Vec<Seen> = seen.iter().filter(|s| s.uid == uid).cloned().collect();
        events
            .iter()
            .any(|seen| seen.event == "DELETED")
            .then_some(events)
    }
}

impl Drop for PvHistory {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One run of the suite: its names, its client, and everything it made, so
/// that [`Suite::teardown`] (or `Drop`, after a panic) can remove it all.
struct Suite {
    /// `lpp-e2e-<suffix>`: the namespace, StorageClass and first Node, and
    /// the prefix of every other name.
    run: String,
    /// When the run started (for progress lines).
    started: Instant,
    /// The kubeconfig the suite and the provisioners use.
    kubeconfig: PathBuf,
    /// Client of the suite's own requests.
    client: Client,
    /// Running provisioners; stopped first at cleanup.
    processes: Mutex<Vec<Arc<ProvisionerProcess>>>,
    /// Objects created, in order.
    created: Mutex<Vec<Created>>,
    /// Directories of device links (`deviceDir`s); removed before the
    /// devices are detached.
    device_dirs: Mutex<Vec<TempDir>>,
    /// Loop devices attached; detached last.
    devices: Mutex<Vec<Arc<LoopDevice>>>,
    /// Whether cleanup has run.
    cleaned: bool,
    /// Kubeconfig (fake mode) and provisioner logs.
    work: TempDir,
    /// The fake API server, in fake mode: kept alive for the run, stopped
    /// last (after the cleanup has used it).
    _server: Option<FakeApiServer>,
}

impl Suite {
    /// Picks the mode, connects, and checks the cluster is one to run on;
    /// creates nothing in the cluster.
    async fn start() -> Suite {
        let started = Instant::now();
        let run = format!("{PREFIX}{}", random_suffix());
        let work = tempfile::Builder::new()
            .prefix(&format!("{run}-work-"))
            .tempdir()
            .expect("work directory");
        let real = std::env::var_os(KUBECONFIG_ENV).filter(|path| !path.is_empty());
        let (server, kubeconfig) = match real {
            Some(path) => {
                say(
                    started,
                    &run,
                    &format!("real cluster mode: {}", Path::new(&path).display()),
                );
                (None, PathBuf::from(path))
            }
            None => {
                let server = FakeApiServer::start().await;
                server.set_pvc_binding(true);
                let path = server.write_kubeconfig(work.path());
                say(
                    started,
                    &run,
                    &format!("fake mode: fake API server at {}", server.url()),
                );
                (Some(server), path)
            }
        };
        let client = client_for(&kubeconfig).await;
        refuse_foreign_nodes(&client, started, &run).await;
        Suite {
            run,
            started,
            kubeconfig,
            client,
            processes: Mutex::new(Vec::new()),
            created: Mutex::new(Vec::new()),
            device_dirs: Mutex::new(Vec::new()),
            devices: Mutex::new(Vec::new()),
            cleaned: false,
            work,
            _server: server,
        }
    }

    /// Prints one progress line.
    fn progress(&self, text: &str) {
        say(self.started, &self.run, text);
    }

    /// The phases, in order; panics at the first failed check.
    async fn lifecycle(&self) {
        self.progress(
            "1/7 setup: loop devices, namespace, StorageClass, ConfigMap, Node, provisioner",
        );
        let dir = self.device_dir();
        let bound = self.attach(&dir, "disk0", BOUND_DEVICE_BYTES);
        let spare = self.attach(&dir, "disk1", SPARE_DEVICE_BYTES);
        self.create_namespace().await;
        self.create_storage_class().await;
        let spec = format!("{}-a", self.run);
        self.create_configmap(&spec, block_spec(&dir, &self.run))
            .await;
        let node = self.create_node(&self.run, &spec).await;
        let provisioner = self.start_provisioner(&self.run, &format!("{POLLING_INTERVAL_SECS}s"));

        self.progress("2/7 a PV per device, shaped as documented, owned by the live Node");
        let devices = [("disk0", &*bound), ("disk1", &*spare)];
        let pvs = self.check_pvs_appear(&node, &dir, &devices).await;
        let (bound_pv, spare_pv) = (&pvs[0], &pvs[1]);

        self.progress("3/7 a claim of the storage class binds");
        let claim = format!("{}-a", self.run);
        self.create_claim(&claim, None).await;
        self.check_bound(&claim, &bound_pv.name_any()).await;

        self.progress("4/7 markers written through the bound block device read back");
        let path = dir.join("disk0");
        let head_marker = format!("{} head marker", self.run).into_bytes();
        let kept_marker = format!("{} marker at 100 MiB", self.run).into_bytes();
        write_through(&path, 0, &head_marker);
        write_through(&path, HEAD_BYTES, &kept_marker);
        assert_eq!(read_through(&path, 0, head_marker.len()), head_marker);
        assert_eq!(
            read_through(&path, HEAD_BYTES, kept_marker.len()),
            kept_marker
        );
        assert_eq!(
            bound.read(0, head_marker.len()),
            head_marker,
            "the marker reached the device"
        );

        self.progress("5/7 claim deleted: Released, wiped, deleted, a fresh PV Available");
        let history = PvHistory::start(self.client.clone(), &self.run).await;
        self.delete_claim(&claim).await;
        let old_uid = bound_pv.uid().expect("PV UID");
        let events = eventually("the released PV to be deleted", WAIT, || async {
            history.until_deleted(&old_uid)
        })
        .await;
        let released = events.iter().position(|seen| seen.phase == "Released");
        let deleted = events.iter().position(|seen| seen.event == "DELETED");
        assert!(
            released.is_some() && released < deleted,
            "the PV was Released before it was deleted: {events:?}"
        );
        self.check_wiped(&bound, &path, &kept_marker);
        let fresh = eventually("a fresh PV for disk0, Available", WAIT, || async {
            let pv = self.pv(&bound_pv.name_any()).await?;
            (pv.uid().as_deref() != Some(old_uid.as_str()) && phase(&pv) == "Available")
                .then_some(pv)
        })
        .await;
        assert_pv_shape(
            &fresh,
            &expected_pv(&node, &dir, "disk0", &bound, &self.run),
        );
        let spare_now = self.pv(&spare_pv.name_any()).await.expect("the spare PV");
        assert_eq!(spare_now.uid(), spare_pv.uid(), "the spare PV is untouched");
        assert_eq!(phase(&spare_now), "Available");
        assert!(
            all(&spare.read(0, SPARE_DEVICE_BYTES as usize), FILL_BYTE),
            "the spare device is untouched"
        );
        let wiped = self
            .wait_for_event("VolumeWiped", "PersistentVolume", &bound_pv.name_any())
            .await;
        assert_eq!(
            wiped.regarding.and_then(|r| r.uid).as_deref(),
            Some(old_uid.as_str()),
            "VolumeWiped is about the released PV"
        );
        drop(history);

        self.progress("6/7 a ConfigMap with volumeMode: Sideways pauses a second Node");
        let second = self.check_invalid_spec_pauses().await;

        self.progress("7/7 Nodes deleted: their PVs are garbage-collected");
        for node in [&node, &second.0] {
            self.delete_node(node).await;
        }
        for (process, node) in [(&provisioner, &self.run), (&second.1, &second.0.name_any())] {
            // 1 while the provisioner sees no Node: from then on it creates
            // nothing, so the PVs can only go.
            wait_metric(process, "pv_spec_errors", node, 1.0).await;
        }
        for node in [&self.run, &second.0.name_any()] {
            eventually(&format!("the PVs of {node} to be gone"), WAIT, || async {
                pvs_of(&self.client, node)
                    .await
                    .ok()
                    .filter(Vec::is_empty)
                    .map(drop)
            })
            .await;
        }
    }

    /// The own-wipe check: one device, a provisioner polling every 20 ms, a
    /// claim bound and deleted; once the device is back as a fresh PV, no
    /// `DeviceSkipped` Event may name the Node.
    async fn own_wipe(&self) {
        self.progress("setup: a loop device, namespace, StorageClass, ConfigMap, Node, provisioner polling every 20 ms");
        let dir = self.device_dir();
        let device = self.attach(&dir, "disk0", BOUND_DEVICE_BYTES);
        self.create_namespace().await;
        self.create_storage_class().await;
        let spec = format!("{}-a", self.run);
        self.create_configmap(&spec, block_spec(&dir, &self.run))
            .await;
        let node = self.create_node(&self.run, &spec).await;
        let _provisioner = self.start_provisioner(&self.run, FAST_POLLING_INTERVAL);
        let pv = self
            .check_pvs_appear(&node, &dir, &[("disk0", &*device)])
            .await
            .remove(0);

        self.progress("the claim bound, then deleted: the device is wiped while reconciles run");
        let claim = format!("{}-a", self.run);
        self.create_claim(&claim, None).await;
        self.check_bound(&claim, &pv.name_any()).await;
        self.delete_claim(&claim).await;
        eventually("a fresh PV for disk0, Available", WAIT, || async {
            let fresh = self.pv(&pv.name_any()).await?;
            (fresh.uid() != pv.uid() && phase(&fresh) == "Available").then_some(())
        })
        .await;
        self.wait_for_event("VolumeWiped", "PersistentVolume", &pv.name_any())
            .await;
        let skipped: Vec<String> = self
            .events_about("Node", &self.run)
            .await
            .into_iter()
            .filter(|event| event.reason.as_deref() == Some("DeviceSkipped"))
            .map(|event| event.note.unwrap_or_default())
            .collect();
        assert!(
            skipped.is_empty(),
            "the node's own wipe was reported as a skipped device: {skipped:?}"
        );
    }

    /// Phase 2: waits for one Available PV per device of `node` and checks
    /// each one's shape; returns them in the order of `devices`.
    async fn check_pvs_appear(
        &self,
        node: &Node,
        dir: &Path,
        devices: &[(&str, &LoopDevice)],
    ) -> Vec<PersistentVolume> {
        let node_name = node.name_any();
        let names: BTreeSet<String> = devices
            .iter()
            .map(|(entry, _)| format!("local-{node_name}-{entry}"))
            .collect();
        let pvs = eventually(&format!("the Available PVs {names:?}"), WAIT, || async {
            let pvs = pvs_of(&self.client, &node_name).await.ok()?;
            let found: BTreeSet<String> = pvs.iter().map(ResourceExt::name_any).collect();
            (found == names && pvs.iter().all(|pv| phase(pv) == "Available")).then_some(pvs)
        })
        .await;
        devices
            .iter()
            .map(|(entry, device)| {
                let expected = expected_pv(node, dir, entry, device, &self.run);
                let pv = pvs
                    .iter()
                    .find(|pv| pv.name_any() == expected["metadata"]["name"])
                    .expect("listed")
                    .clone();
                assert_pv_shape(&pv, &expected);
                pv
            })
            .collect()
    }

    /// Phase 3: waits until claim `name` and PV `pv` are bound to each other.
    async fn check_bound(&self, name: &str, pv: &str) {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &self.run);
        let claim = eventually(&format!("claim {name} Bound to {pv}"), WAIT, || async {
            let claim = claims.get_opt(name).await.ok()??;
            let volume = claim.spec.as_ref()?.volume_name.as_deref();
            (claim_phase(&claim) == "Bound" && volume == Some(pv)).then_some(claim)
        })
        .await;
        let claim_uid = claim.uid();
        eventually(&format!("PV {pv} Bound to claim {name}"), WAIT, || async {
            let volume = self.pv(pv).await?;
            let claim_ref = volume.spec.as_ref()?.claim_ref.as_ref()?;
            (phase(&volume) == "Bound" && claim_ref.uid == claim_uid).then_some(())
        })
        .await;
    }

    /// Phase 5: the head of `device` (the first 100 MiB) and its last MiB
    /// are zero, the bytes between them as before, the kept marker included.
    fn check_wiped(&self, device: &LoopDevice, path: &Path, kept_marker: &[u8]) {
        assert!(
            all(&read_through(path, 0, 4096), 0),
            "the head marker is gone (read through the block device)"
        );
        assert!(
            all(&device.read(0, HEAD_BYTES as usize), 0),
            "the first 100 MiB are zeroed"
        );
        let middle = device.read(
            HEAD_BYTES,
            (BOUND_DEVICE_BYTES - HEAD_BYTES - TAIL_BYTES) as usize,
        );
        assert_eq!(
            &middle[..kept_marker.len()],
            kept_marker,
            "the marker at 100 MiB is intact"
        );
        assert!(
            all(&middle[kept_marker.len()..], FILL_BYTE),
            "the bytes from 100 MiB to the last MiB are intact"
        );
        assert!(
            all(
                &device.read(BOUND_DEVICE_BYTES - TAIL_BYTES, TAIL_BYTES as usize),
                0
            ),
            "the last MiB is zeroed"
        );
    }

    /// Phase 6: a second Node with a PV, bound and then released while its
    /// annotation names an invalid ConfigMap: a Warning Event, and neither a
    /// new PV nor a wipe or deletion until the annotation is fixed. Returns
    /// the Node and its provisioner.
    async fn check_invalid_spec_pauses(&self) -> (Node, Arc<ProvisionerProcess>) {
        let name = format!("{}-b", self.run);
        let dir = self.device_dir();
        let first = self.attach(&dir, "disk0", NODE_B_DEVICE_BYTES);
        let valid = name.clone();
        self.create_configmap(&valid, block_spec(&dir, &self.run))
            .await;
        let invalid = format!("{}-invalid", self.run);
        let mut sideways = block_spec(&dir, &self.run);
        sideways.insert("volumeMode".into(), "Sideways".into());
        self.create_configmap(&invalid, sideways).await;
        let node = self.create_node(&name, &valid).await;
        let process = self.start_provisioner(&name, &format!("{POLLING_INTERVAL_SECS}s"));
        let pv = self
            .check_pvs_appear(&node, &dir, &[("disk0", &*first)])
            .await
            .remove(0);
        let pv_name = pv.name_any();
        self.create_claim(&name, Some(&pv_name)).await;
        self.check_bound(&name, &pv_name).await;

        self.annotate(&name, &invalid).await;
        let event = self.wait_for_event("PVSpecInvalid", "Node", &name).await;
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        assert_eq!(
            event.regarding.as_ref().and_then(|r| r.uid.as_deref()),
            node.uid().as_deref(),
            "the Event is about this Node"
        );
        let note = event.note.unwrap_or_default();
        assert!(
            note.contains("volumeMode") && note.contains("Sideways"),
            "the Event names the key and the value: {note}"
        );
        wait_metric(&process, "pv_spec_errors", &name, 1.0).await;

        let second = self.attach(&dir, "disk1", NODE_B_DEVICE_BYTES);
        self.delete_claim(&name).await;
        eventually(&format!("PV {pv_name} Released"), WAIT, || async {
            (phase(&self.pv(&pv_name).await?) == "Released").then_some(())
        })
        .await;
        self.progress(&format!(
            "   paused: watching {}s for a PV created, wiped or deleted",
            SETTLE.as_secs()
        ));
        tokio::time::sleep(SETTLE).await;
        let pvs = pvs_of(&self.client, &name).await.expect("listing PVs");
        assert_eq!(
            pvs.iter().map(ResourceExt::name_any).collect::<Vec<_>>(),
            vec![pv_name.clone()],
            "no PV created for disk1 while paused"
        );
        assert_eq!(pvs[0].uid(), pv.uid(), "the Released PV is not deleted");
        assert_eq!(phase(&pvs[0]), "Released");
        assert!(pvs[0].metadata.deletion_timestamp.is_none());
        assert!(
            all(&first.read(0, NODE_B_DEVICE_BYTES as usize), FILL_BYTE),
            "the Released PV's device is not wiped"
        );

        self.progress("   annotation fixed: the Node resumes");
        self.annotate(&name, &valid).await;
        eventually("the released PV replaced by a fresh one", WAIT, || async {
            let fresh = self.pv(&pv_name).await?;
            (fresh.uid() != pv.uid() && phase(&fresh) == "Available").then_some(())
        })
        .await;
        assert!(
            all(&first.read(0, NODE_B_DEVICE_BYTES as usize), 0),
            "a device smaller than 100 MiB is zeroed whole"
        );
        self.check_pvs_appear(&node, &dir, &[("disk0", &*first), ("disk1", &*second)])
            .await;
        wait_metric(&process, "pv_spec_errors", &name, 0.0).await;
        (node, process)
    }

    /// A new directory for device links, removed at cleanup.
    fn device_dir(&self) -> PathBuf {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-devices-", self.run))
            .tempdir()
            .expect("device directory");
        let path = dir.path().to_path_buf();
        lock(&self.device_dirs).push(dir);
        path
    }

    /// Attaches a loop device of `size` bytes filled with [`FILL_BYTE`] and
    /// links it as `dir/entry`.
    fn attach(&self, dir: &Path, entry: &str, size: u64) -> Arc<LoopDevice> {
        let device = Arc::new(LoopDevice::filled(size));
        lock(&self.devices).push(device.clone());
        symlink(&device.path, dir.join(entry)).expect("device link");
        device
    }

    /// Labels every object the suite creates carries.
    fn labels(&self) -> Value {
        json!({ RUN_LABEL: self.run })
    }

    /// Creates `object` through `api` and records it for cleanup.
    async fn create<K>(&self, api: Api<K>, kind: Kind, object: Value) -> K
    where
        K: Resource + Clone + Debug + Serialize + DeserializeOwned,
    {
        let object: K = serde_json::from_value(object).expect("a well-formed object");
        let name = object.name_any();
        let created = api
            .create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|error| panic!("creating {kind:?} {name}: {error}"));
        lock(&self.created).push(Created {
            kind,
            namespace: created.namespace(),
            name,
            uid: created.uid().expect("a created object has a UID"),
        });
        created
    }

    /// Creates the namespace of the ConfigMaps and claims.
    async fn create_namespace(&self) {
        let object = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": self.run, "labels": self.labels()},
        });
        self.create(
            Api::<Namespace>::all(self.client.clone()),
            Kind::Namespace,
            object,
        )
        .await;
    }

    /// Creates the storage class of the PVs: no provisioner, immediate binding.
    async fn create_storage_class(&self) {
        let object = json!({
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": self.run, "labels": self.labels()},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "Immediate",
        });
        self.create(
            Api::<StorageClass>::all(self.client.clone()),
            Kind::StorageClass,
            object,
        )
        .await;
    }

    /// Creates a PV spec ConfigMap in the suite's namespace.
    async fn create_configmap(&self, name: &str, data: BTreeMap<String, String>) {
        let object = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": self.run, "labels": self.labels()},
            "data": data,
        });
        self.create(
            Api::<ConfigMap>::namespaced(self.client.clone(), &self.run),
            Kind::ConfigMap,
            object,
        )
        .await;
    }

    /// Creates a Node annotated with PV spec ConfigMap `spec`, with a
    /// hostname label that differs from its name (the PVs' affinity must use
    /// the label) and a NoSchedule taint.
    async fn create_node(&self, name: &str, spec: &str) -> Node {
        let mut labels = self.labels();
        labels[HOSTNAME_LABEL] = json!(format!("{name}-hostname"));
        let object = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": {SPEC_ANNOTATION: spec},
            },
            "spec": {"taints": [{"key": TAINT_KEY, "value": self.run, "effect": "NoSchedule"}]},
        });
        self.create(Api::<Node>::all(self.client.clone()), Kind::Node, object)
            .await
    }

    /// Points Node `name`'s annotation at ConfigMap `spec`.
    async fn annotate(&self, name: &str, spec: &str) {
        Api::<Node>::all(self.client.clone())
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {SPEC_ANNOTATION: spec}}})),
            )
            .await
            .unwrap_or_else(|error| panic!("annotating Node {name}: {error}"));
    }

    /// Deletes one of the suite's Nodes.
    async fn delete_node(&self, node: &Node) {
        let object = Created {
            kind: Kind::Node,
            namespace: None,
            name: node.name_any(),
            uid: node.uid().expect("Node UID"),
        };
        delete_created(&self.client, &object)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
    }

    /// Creates a Block claim of the suite's storage class, for any fitting
    /// volume or for `volume` only.
    async fn create_claim(&self, name: &str, volume: Option<&str>) {
        let mut spec = json!({
            "storageClassName": self.run,
            "volumeMode": "Block",
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": if volume.is_some() { "1Mi" } else { CLAIM_REQUEST }}},
        });
        if let Some(volume) = volume {
            spec["volumeName"] = json!(volume);
        }
        let object = json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": self.run, "labels": self.labels()},
            "spec": spec,
        });
        self.create(
            Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &self.run),
            Kind::Claim,
            object,
        )
        .await;
    }

    /// Deletes one of the suite's claims.
    async fn delete_claim(&self, name: &str) {
        Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &self.run)
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|error| panic!("deleting claim {name}: {error}"));
    }

    /// The PV named `name`, if it exists.
    async fn pv(&self, name: &str) -> Option<PersistentVolume> {
        Api::<PersistentVolume>::all(self.client.clone())
            .get_opt(name)
            .await
            .ok()?
    }

    /// The `events.k8s.io/v1` Events about the object of `kind` named
    /// `name` (Events about cluster-scoped objects live in `default`); none
    /// when listing fails.
    async fn events_about(&self, kind: &str, name: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let Ok(list) = events.list(&ListParams::default()).await else {
            return Vec::new();
        };
        list.items
            .into_iter()
            .filter(|event| {
                let regarding = event.regarding.as_ref();
                regarding.and_then(|r| r.kind.as_deref()) == Some(kind)
                    && regarding.and_then(|r| r.name.as_deref()) == Some(name)
            })
            .collect()
    }

    /// Waits for an Event with `reason` about the object of `kind` named
    /// `name`.
    async fn wait_for_event(&self, reason: &str, kind: &str, name: &str) -> Event {
        eventually(
            &format!("an Event {reason} about {kind} {name}"),
            WAIT,
            || async {
                self.events_about(kind, name)
                    .await
                    .into_iter()
                    .find(|event| event.reason.as_deref() == Some(reason))
            },
        )
        .await
    }

    /// Starts the provisioner binary for Node `node`, out of cluster;
    /// `polling` is its `--polling-interval`.
    fn start_provisioner(&self, node: &str, polling: &str) -> Arc<ProvisionerProcess> {
        let mut env = vec![
            ("LP_POLLING_INTERVAL", polling.to_string()),
            ("LP_CLEANUP_INTERVAL", "10s".to_string()),
            ("LP_POD_NAME", format!("{node}-provisioner")),
        ];
        // A real kubeconfig's credential plugin may need the home directory.
        if let Ok(home) = std::env::var("HOME") {
            env.push(("HOME", home));
        }
        let process = Arc::new(ProvisionerProcess::start(ProvisionerOptions {
            kubeconfig: &self.kubeconfig,
            node,
            namespace: &self.run,
            env,
            log_dir: self.work.path(),
        }));
        lock(&self.processes).push(process.clone());
        process
    }

    /// Stops the provisioners (killing them; the log of each is printed when
    /// a check failed).
    fn stop_processes(&self) {
        let processes: Vec<_> = lock(&self.processes).drain(..).collect();
        drop(processes);
    }

    /// Removes the device links, then detaches the loop devices.
    fn release_devices(&self) {
        let dirs: Vec<_> = lock(&self.device_dirs).drain(..).collect();
        drop(dirs);
        let devices: Vec<_> = lock(&self.devices).drain(..).collect();
        drop(devices);
    }

    /// Removes everything the run made; returns what could not be removed.
    async fn teardown(mut self) -> Vec<String> {
        self.progress("cleanup: provisioners, cluster objects, PVs, loop devices");
        self.stop_processes();
        let created: Vec<Created> = lock(&self.created).drain(..).collect();
        let problems = delete_cluster_objects(&self.client, &created).await;
        self.release_devices();
        self.cleaned = true;
        self.progress(if problems.is_empty() {
            "done: everything the run made is removed"
        } else {
            "done, but cleanup left things behind"
        });
        problems
    }
}

impl Drop for Suite {
    /// The cleanup of a run that did not get to [`Suite::teardown`] (a check
    /// panicked): the same steps, with the API requests made from a thread
    /// of its own (a destructor cannot wait for async work), through a fresh
    /// client.
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        self.progress("cleanup after a failure: provisioners, cluster objects, PVs, loop devices");
        self.stop_processes();
        let created: Vec<Created> = lock(&self.created).drain(..).collect();
        let kubeconfig = self.kubeconfig.clone();
        let problems = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(async {
                let client = client_for(&kubeconfig).await;
                delete_cluster_objects(&client, &created).await
            })
        })
        .join()
        .unwrap_or_else(|_| vec!["the cleanup thread panicked".to_string()]);
        self.release_devices();
        for problem in &problems {
            self.progress(&format!("cleanup problem: {problem}"));
        }
        self.cleaned = true;
    }
}

/// Waits until `local_pv_provisioner_<name>{node="<node>"}` of `process`
/// reads `value`.
async fn wait_metric(process: &ProvisionerProcess, name: &str, node: &str, value: f64) {
    let sample = format!("local_pv_provisioner_{name}{{node=\"{node}\"}}");
    eventually(&format!("{sample} == {value}"), WAIT, || async {
        (process.metric(&sample).await == Some(value)).then_some(())
    })
    .await;
}
