//! API fault tolerance: the real binary against the fake API server (over
//! HTTP, through a kubeconfig) while the server misbehaves — 500 bursts on
//! PV create, list, watch, get and delete, 409 conflicts on create, watch
//! expiry (410 Gone), watch streams cut between and in the middle of events,
//! slow responses, and the server restarting with its store or empty — on
//! real loop devices. Needs root, as in CI.
//!
//! Every test checks the same invariants besides its own:
//! - never two PVs for one device (checked on every poll of every wait), and
//!   in the end exactly one PV per device, each created by one successful
//!   POST;
//! - no PV DELETE without a completed wipe: the server's request observer
//!   reads the device at the moment each DELETE arrives and records whether
//!   it was zeroed; a PV whose wipe is refused is never deleted;
//! - no wipe of a device whose PV is not Released: the devices of Available
//!   and Bound PVs still hold the fill pattern at the end;
//! - every Released PV is wiped, deleted and recreated once the faults stop.
//!
//! The controller runs with its default intervals (poll 5 min, sweep 1 h),
//! so every recovery shown here is driven by watches and retry backoff, not
//! by a timer that happens to be short in tests. Each test has its own
//! server, node name and devices; the state is inspected in the server's
//! store directly, so inspection neither uses up fault rules nor shows in
//! the request log.
//!
//! Kube's client retries 503, 429 and 504 by itself, so failures the
//! controller must see are injected as 500 (and 409).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::fake_api::{FakeApiServer, FaultRule, RecordedRequest};
use support::loop_device::{FILL_BYTE, LoopDevice};
use support::provisioner::{ProvisionerOptions, ProvisionerProcess, eventually};
use tempfile::TempDir;

const NAMESPACE: &str = "lpp-faults";
const CONFIGMAP: &str = "pv-spec";
const ANNOTATION: &str = "local-pv-provisioner.cybozu.io/pv-spec-configmap";
const DEVICE_NUMBER: &str = "local-pv-provisioner.cybozu.io/device-number";
const MIB: u64 = 1024 * 1024;
/// Every test device: small, so a wipe zeroes all of it in a moment.
const DEVICE_SIZE: u64 = 8 * MIB;
/// Limit of a wait for something expected within about one 10 s retry
/// delay of the controller (or one watch backoff step); generous.
const WAIT: Duration = Duration::from_secs(30);

/// A DELETE of a PV as the server saw it arrive, with the state of the
/// PV's device at that moment.
#[derive(Debug, Clone)]
struct DeleteSeen {
    pv: String,
    /// The first and last MiB of the device were all zero.
    device_zeroed: bool,
}

/// One test's world: a fake API server holding the namespace, the PV spec
/// ConfigMap and the annotated Node, and loop devices linked as `disk0`,
/// `disk1`, ... in a device directory.
struct World {
    server: FakeApiServer,
    node: &'static str,
    node_uid: String,
    devices: Vec<LoopDevice>,
    deletes: Arc<Mutex<Vec<DeleteSeen>>>,
    work: TempDir,
    device_dir: TempDir,
}

impl World {
    /// Starts a server, attaches `count` devices filled with [`FILL_BYTE`],
    /// creates what an operator would (namespace, ConfigMap, annotated Node)
    /// and installs the DELETE witness.
    async fn new(node: &'static str, count: usize) -> World {
        support::loop_device::require_root();
        let server = FakeApiServer::start().await;
        let device_dir = tempfile::tempdir().unwrap();
        let devices: Vec<LoopDevice> = (0..count)
            .map(|_| LoopDevice::filled(DEVICE_SIZE))
            .collect();
        for (index, device) in devices.iter().enumerate() {
            symlink(&device.path, device_dir.path().join(format!("disk{index}"))).unwrap();
        }
        let mut world = World {
            server,
            node,
            node_uid: String::new(),
            devices,
            deletes: Arc::default(),
            work: tempfile::tempdir().unwrap(),
            device_dir,
        };
        world.create_cluster_objects();
        world.witness_deletes();
        world
    }

    /// Creates the namespace, the Block PV spec ConfigMap and the annotated
    /// Node, straight into the store (as an operator would with kubectl; no
    /// request is logged). Used at start and after the server lost its store.
    fn create_cluster_objects(&mut self) {
        self.server.create_object(
            "namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
        );
        self.server.create_object(
            "configmaps",
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": CONFIGMAP, "namespace": NAMESPACE},
                "data": {
                    "deviceDir": self.device_dir.path().to_str().unwrap(),
                    "deviceNameFilter": "^disk[0-9]+$",
                    "volumeMode": "Block",
                },
            }),
        );
        let node = self.server.create_object(
            "nodes",
            json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": self.node,
                    "labels": {"kubernetes.io/hostname": self.node},
                    "annotations": {ANNOTATION: CONFIGMAP},
                },
            }),
        );
        self.node_uid = node["metadata"]["uid"].as_str().unwrap().to_string();
    }

    /// Records, for every PV DELETE the server receives, whether the PV's
    /// device was zeroed at that moment (read through the backing file, which
    /// the loop driver writes through to).
    fn witness_deletes(&self) {
        let backing: BTreeMap<String, PathBuf> = self
            .devices
            .iter()
            .enumerate()
            .map(|(index, device)| (self.pv_name(index), device.backing_file.clone()))
            .collect();
        let deletes = self.deletes.clone();
        self.server
            .observe_requests(move |request: &RecordedRequest| {
                if request.verb != "delete" || request.resource != "persistentvolumes" {
                    return;
                }
                let pv = request.name.clone().unwrap_or_default();
                let device_zeroed = backing.get(&pv).is_some_and(|file| {
                    let content = std::fs::read(file).unwrap_or_default();
                    content.len() as u64 == DEVICE_SIZE
                        && content[..MIB as usize].iter().all(|b| *b == 0)
                        && content[content.len() - MIB as usize..]
                            .iter()
                            .all(|b| *b == 0)
                });
                deletes
                    .lock()
                    .unwrap()
                    .push(DeleteSeen { pv, device_zeroed });
            });
    }

    /// Starts the provisioner for this world's node, with default intervals.
    fn start(&self) -> ProvisionerProcess {
        ProvisionerProcess::start(ProvisionerOptions {
            kubeconfig: &self.server.write_kubeconfig(self.work.path()),
            node: self.node,
            namespace: NAMESPACE,
            env: vec![],
            log_dir: self.work.path(),
        })
    }

    /// The PV name of device `index` (upstream's naming rule).
    fn pv_name(&self, index: usize) -> String {
        format!("local-{}-disk{index}", self.node)
    }

    /// Every PV in the store.
    fn pvs(&self) -> Vec<Value> {
        self.server.objects("persistentvolumes")
    }

    /// PV `name` from the store.
    fn pv(&self, name: &str) -> Option<Value> {
        self.server.object("persistentvolumes", None, name)
    }

    /// UID and phase of device `index`'s PV, if it exists and is not being
    /// deleted.
    fn live_pv(&self, index: usize) -> Option<(String, String)> {
        let pv = self.pv(&self.pv_name(index))?;
        if pv["metadata"].get("deletionTimestamp").is_some() {
            return None;
        }
        Some((
            pv["metadata"]["uid"].as_str()?.to_string(),
            pv["status"]["phase"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ))
    }

    /// Fails the test when two PVs name the same device (by recorded
    /// `major:minor` or by path).
    fn assert_no_two_pvs_per_device(&self) {
        let mut numbers = BTreeSet::new();
        let mut paths = BTreeSet::new();
        for pv in self.pvs() {
            let name = pv["metadata"]["name"].as_str().unwrap_or_default();
            let number = pv["metadata"]["annotations"][DEVICE_NUMBER]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let path = pv["spec"]["local"]["path"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(
                numbers.insert(number.clone()),
                "two PVs for device {number} (second: {name})"
            );
            assert!(
                paths.insert(path.clone()),
                "two PVs for path {path} (second: {name})"
            );
        }
    }

    /// Polls `done` every 50 ms until true, failing after `limit`, and checks
    /// on every poll that no device has two PVs.
    async fn wait(&self, what: &str, limit: Duration, done: impl Fn(&World) -> bool) {
        eventually(what, limit, || async {
            self.assert_no_two_pvs_per_device();
            done(self).then_some(())
        })
        .await;
    }

    /// Waits until every device has an Available PV.
    async fn wait_all_available(&self, limit: Duration) {
        self.wait("an Available PV for every device", limit, |world| {
            (0..world.devices.len()).all(|index| {
                world
                    .live_pv(index)
                    .is_some_and(|(_, phase)| phase == "Available")
            })
        })
        .await;
    }

    /// Waits until device `index` has an Available PV with a UID other than
    /// `old_uid`: the Released PV was wiped, deleted and the device offered
    /// again.
    async fn wait_recreated(&self, index: usize, old_uid: &str, limit: Duration) {
        self.wait(
            &format!("{} wiped, deleted and recreated", self.pv_name(index)),
            limit,
            |world| {
                world
                    .live_pv(index)
                    .is_some_and(|(uid, phase)| uid != old_uid && phase == "Available")
            },
        )
        .await;
    }

    /// UID of device `index`'s current PV.
    fn uid(&self, index: usize) -> String {
        self.live_pv(index).expect("a live PV").0
    }

    /// Marks device `index`'s PV Released, as the PV controller does when its
    /// claim is deleted; returns the PV's UID.
    fn release(&self, index: usize) -> String {
        let uid = self.uid(index);
        self.server.set_pv_phase(&self.pv_name(index), "Released");
        uid
    }

    /// Binds device `index`'s PV to a claim.
    fn bind(&self, index: usize) {
        self.server
            .bind_pv(&self.pv_name(index), "default", &format!("claim-{index}"));
    }

    /// Requests the server answered, filtered by verb and resource.
    fn requests(&self, verb: &str, resource: &str) -> Vec<RecordedRequest> {
        self.server
            .requests()
            .into_iter()
            .filter(|r| r.verb == verb && r.resource == resource)
            .collect()
    }

    /// PV POSTs the server answered with 201 Created.
    fn pv_creations(&self) -> usize {
        self.requests("create", "persistentvolumes")
            .iter()
            .filter(|r| r.status == 201)
            .count()
    }

    /// The DELETEs of PV `name` seen so far.
    fn deletes_of(&self, name: &str) -> Vec<DeleteSeen> {
        self.deletes
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.pv == name)
            .cloned()
            .collect()
    }

    /// Fails unless every PV DELETE seen came after its device was zeroed.
    fn assert_every_delete_after_a_wipe(&self) {
        for delete in self.deletes.lock().unwrap().iter() {
            assert!(
                delete.device_zeroed,
                "PV {} was DELETEd while its device was not wiped",
                delete.pv
            );
        }
    }

    /// Fails unless device `index` still holds the fill pattern everywhere.
    fn assert_intact(&self, index: usize) {
        let content = std::fs::read(&self.devices[index].backing_file).unwrap();
        assert!(
            content.iter().all(|b| *b == FILL_BYTE),
            "device of {} was written to although its PV was never Released",
            self.pv_name(index)
        );
    }

    /// Fails unless device `index` is all zero (a wipe zeroes the whole of
    /// a device this small).
    fn assert_wiped(&self, index: usize) {
        let content = std::fs::read(&self.devices[index].backing_file).unwrap();
        assert!(
            content.iter().all(|b| *b == 0),
            "device of {} is not zeroed",
            self.pv_name(index)
        );
    }

    /// The end state every test shares: one PV per device, each created by
    /// exactly one successful POST (`expected_creations` in all, counting
    /// recreations), and no DELETE without a wipe.
    fn assert_settled(&self, expected_creations: usize) {
        self.assert_no_two_pvs_per_device();
        assert_eq!(self.pvs().len(), self.devices.len(), "one PV per device");
        assert_eq!(
            self.pv_creations(),
            expected_creations,
            "PVs created (201 answers to POST)"
        );
        self.assert_every_delete_after_a_wipe();
    }
}

/// A metric sample name for this node.
fn metric(name: &str, node: &str) -> String {
    format!("local_pv_provisioner_{name}{{node=\"{node}\"}}")
}

/// Waits until `/readyz` answers as `ready` says.
async fn wait_readiness(process: &ProvisionerProcess, ready: bool, limit: Duration) {
    let what = if ready {
        "/readyz to answer 200"
    } else {
        "/readyz to fail"
    };
    eventually(what, limit, || async {
        (process.is_ready().await == ready).then_some(())
    })
    .await;
}

/// Waits until a metric sample reaches at least `value`.
async fn wait_metric_at_least(process: &ProvisionerProcess, sample: &str, value: f64) {
    eventually(&format!("{sample} >= {value}"), WAIT, || async {
        process
            .metric(sample)
            .await
            .is_some_and(|v| v >= value)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_500_burst_is_retried_with_bounded_backoff_and_recovers() {
    let world = World::new("fault-create", 3).await;
    world.server.fail_requests(
        FaultRule::new(500, usize::MAX)
            .verb("create")
            .path("/persistentvolumes"),
    );
    let process = world.start();
    eventually("a first PV POST", WAIT, || async {
        (!world.requests("create", "persistentvolumes").is_empty()).then_some(())
    })
    .await;

    // The burst lasts 11 s from the first failed POST. The controller
    // retries creation every 10 s: two attempts are expected; a controller
    // retrying on each trigger would post dozens.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let posts_during_burst = world.requests("create", "persistentvolumes").len();
    assert!(
        (1..=3).contains(&posts_during_burst),
        "{posts_during_burst} PV POSTs during an 11 s burst of 500s"
    );
    assert!(world.pvs().is_empty());
    wait_metric_at_least(
        &process,
        "local_pv_provisioner_api_errors_total{node=\"fault-create\",operation=\"create_pv\"}",
        1.0,
    )
    .await;

    world.server.clear_faults();
    world.wait_all_available(WAIT).await;
    world.assert_settled(3);
    for index in 0..3 {
        world.assert_intact(index);
    }
    assert!(world.requests("delete", "persistentvolumes").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_409_on_create_makes_no_duplicate_and_the_pvs_still_come() {
    let world = World::new("fault-conflict", 2).await;
    // Both PVs' first POSTs get 409 although no such PV exists (a transient
    // conflict): the controller must not make a second PV for a device, and
    // must not give up on the devices either.
    world.server.fail_requests(
        FaultRule::new(409, 2)
            .verb("create")
            .path("/persistentvolumes"),
    );
    let _process = world.start();
    eventually("the two conflicting POSTs", WAIT, || async {
        (world.requests("create", "persistentvolumes").len() >= 2).then_some(())
    })
    .await;
    world.wait_all_available(WAIT).await;
    world.assert_settled(2);
    assert!(
        world.requests("create", "persistentvolumes").len() <= 6,
        "PV POSTs bounded"
    );
    world.assert_intact(0);
    world.assert_intact(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_delete_failures_never_delete_an_unwiped_pv() {
    // 0 Available, 1 Bound, 2 Released (its GET fails once with 500), 3
    // Released (its DELETE fails once with 500, after a completed wipe), 4
    // Released but its device was swapped underneath (the wipe is refused),
    // 5 Released (its DELETE gets a 409 Conflict once).
    let mut world = World::new("fault-cleanup", 6).await;
    let process = world.start();
    world.wait_all_available(WAIT).await;
    world.bind(1);
    world.devices[4].swap_backing_file();
    world.server.fail_requests(
        FaultRule::new(500, 1)
            .verb("get")
            .path(&format!("/persistentvolumes/{}", world.pv_name(2))),
    );
    world.server.fail_requests(
        FaultRule::new(500, 1)
            .verb("delete")
            .path(&format!("/persistentvolumes/{}", world.pv_name(3))),
    );
    world.server.fail_requests(
        FaultRule::new(409, 1)
            .verb("delete")
            .path(&format!("/persistentvolumes/{}", world.pv_name(5))),
    );
    let uid2 = world.release(2);
    let uid3 = world.release(3);
    let uid4 = world.release(4);
    let uid5 = world.release(5);

    world.wait_recreated(2, &uid2, WAIT).await;
    world.wait_recreated(3, &uid3, WAIT).await;
    world.wait_recreated(5, &uid5, WAIT).await;
    wait_metric_at_least(
        &process,
        "local_pv_provisioner_wipe_failures_total{node=\"fault-cleanup\",reason=\"SameDevice\"}",
        1.0,
    )
    .await;

    world.assert_settled(6 + 3);
    // The failed GET cost one retry after the backoff, not a hammering: one
    // GET between the failed one and the DELETE.
    let pv2 = world.pv_name(2);
    let log: Vec<RecordedRequest> = world
        .server
        .requests()
        .into_iter()
        .filter(|r| r.resource == "persistentvolumes" && r.name.as_deref() == Some(pv2.as_str()))
        .collect();
    let failed = log
        .iter()
        .position(|r| r.verb == "get" && r.status == 500)
        .expect("the failed GET");
    let deleted = log
        .iter()
        .position(|r| r.verb == "delete")
        .expect("the DELETE");
    let retries = log[failed + 1..deleted]
        .iter()
        .filter(|r| r.verb == "get")
        .count();
    assert_eq!(
        retries, 1,
        "GETs of {pv2} between its failed GET and its DELETE"
    );
    for index in [3, 5] {
        let deletes = world.deletes_of(&world.pv_name(index));
        assert_eq!(deletes.len(), 2, "the failed DELETE and its retry");
        assert!(deletes.iter().all(|d| d.device_zeroed));
    }
    assert_eq!(world.deletes_of(&pv2).len(), 1);
    assert!(
        world.deletes_of(&world.pv_name(4)).is_empty(),
        "a PV whose wipe was refused is never deleted"
    );
    assert_eq!(world.uid(4), uid4, "the refused PV is kept");
    world.assert_intact(0);
    world.assert_intact(1);
    world.assert_intact(4);
    world.assert_wiped(2);
    world.assert_wiped(3);
    world.assert_wiped(5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_released_state_is_rechecked_before_any_wipe_and_not_hammered() {
    let world = World::new("fault-stale", 2).await;
    let _process = world.start();
    world.wait_all_available(WAIT).await;
    let pv0 = world.pv_name(0);

    // The controller sees PV 0 Released, but its first GET fails: it waits
    // 10 s. Meanwhile its PV watch goes blind (re-watches fail) and an admin
    // takes the PV back (Available again): the controller's store still
    // says Released when the retry comes.
    world.server.fail_requests(
        FaultRule::new(500, 1)
            .verb("get")
            .path(&format!("/persistentvolumes/{pv0}")),
    );
    world.release(0);
    eventually("the failed GET", WAIT, || async {
        world
            .requests("get", "persistentvolumes")
            .iter()
            .any(|r| r.status == 500)
            .then_some(())
    })
    .await;
    world.server.fail_requests(
        FaultRule::new(500, usize::MAX)
            .verb("watch")
            .path("/persistentvolumes"),
    );
    world.server.cut_watches();
    world.server.set_pv_phase(&pv0, "Available");
    let gets_of_pv0 = || {
        world
            .requests("get", "persistentvolumes")
            .into_iter()
            .filter(|r| r.name.as_deref() == Some(pv0.as_str()))
            .count()
    };
    eventually("the retried GET", WAIT, || async {
        (gets_of_pv0() >= 2).then_some(())
    })
    .await;

    // The fresh read said Available: no wipe, no DELETE. And with the store
    // still stale, the controller must not re-read the PV in a tight loop.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let gets = gets_of_pv0();
    assert!(
        gets <= 4,
        "{gets} GETs of {pv0}: the stale Released state is re-read in a loop"
    );
    world.assert_intact(0);
    world.assert_intact(1);
    assert!(world.deletes_of(&pv0).is_empty());
    world.server.clear_faults();
    world.assert_settled(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_cut_mid_event_or_between_events_loses_no_release() {
    let world = World::new("fault-cut", 2).await;
    let _process = world.start();
    world.wait_all_available(WAIT).await;

    // The Released event goes out half-written and the connection dies: the
    // controller must drop the partial line, re-watch and see it again.
    world.server.cut_watches_mid_event("persistentvolumes");
    let first = world.release(1);
    world.wait_recreated(1, &first, WAIT).await;
    assert!(
        world.server.mid_event_cuts() >= 1,
        "an event was cut in half"
    );

    // A cut between events, then a release while the controller re-watches.
    world.server.cut_watches();
    let second = world.release(1);
    world.wait_recreated(1, &second, WAIT).await;

    world.assert_settled(2 + 2);
    assert_eq!(world.deletes_of(&world.pv_name(1)).len(), 2);
    world.assert_intact(0);
    world.assert_wiped(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_watch_410_relists_through_list_500s_and_handles_missed_changes() {
    let world = World::new("fault-expired", 3).await;
    let _process = world.start();
    world.wait_all_available(WAIT).await;

    // Blind the PV watch (re-watches fail), change PVs behind its back,
    // then forget the history: the resumed watch gets 410 Gone in the
    // stream and must relist; the first two relists fail with 500.
    world.server.fail_requests(
        FaultRule::new(500, usize::MAX)
            .verb("watch")
            .path("/persistentvolumes"),
    );
    world.server.cut_watches();
    let released = world.release(0);
    world.bind(1);
    world.server.expire_history();
    eventually("a failed PV re-watch", WAIT, || async {
        world
            .requests("watch", "persistentvolumes")
            .iter()
            .any(|r| r.status == 500)
            .then_some(())
    })
    .await;
    let lists_before = world.requests("list", "persistentvolumes").len();
    world.server.clear_faults();
    world.server.fail_requests(
        FaultRule::new(500, 2)
            .verb("list")
            .path("/persistentvolumes"),
    );

    world.wait_recreated(0, &released, WAIT).await;
    let lists_after = world.requests("list", "persistentvolumes");
    assert!(
        lists_after.len() >= lists_before + 3,
        "two failed relists and a successful one after the 410"
    );
    assert!(lists_after.iter().any(|r| r.status == 200));
    world.assert_settled(3 + 1);
    world.assert_wiped(0);
    world.assert_intact(1);
    world.assert_intact(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_api_responses_converge_without_duplicates() {
    let world = World::new("fault-slow", 3).await;
    world.server.set_latency(Duration::from_millis(400));
    let _process = world.start();
    world.wait_all_available(WAIT).await;
    world.bind(1);
    let released = world.release(0);
    world.wait_recreated(0, &released, WAIT).await;
    world.assert_settled(3 + 1);
    world.assert_wiped(0);
    world.assert_intact(1);
    world.assert_intact(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_with_its_store_resumes_without_duplicates() {
    let mut world = World::new("fault-restart", 3).await;
    let _process = world.start();
    world.wait_all_available(WAIT).await;
    world.bind(1);

    // Released just before the restart: the event may or may not have gone
    // out; the controller must catch up either way.
    let first = world.release(0);
    world.server.restart(true).await;
    world.wait_recreated(0, &first, WAIT).await;

    // Released right after a restart, while the controller re-watches.
    world.server.restart(true).await;
    let second = world.release(2);
    world.wait_recreated(2, &second, WAIT).await;

    world.assert_settled(3 + 2);
    world.assert_wiped(0);
    world.assert_wiped(2);
    world.assert_intact(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_empty_then_recreated_objects_gives_one_pv_per_device_and_no_wipe() {
    let mut world = World::new("fault-reset", 3).await;
    let process = world.start();
    world.wait_all_available(WAIT).await;
    world.bind(1);
    wait_readiness(&process, true, WAIT).await;
    let old_uid = world.node_uid.clone();

    // The server comes back empty: no Node, no ConfigMap, no PVs; and, as
    // a server whose storage is still coming up, it fails the first two
    // Node lists. Every watch gets 410 and relists; until the Node relist
    // succeeds, the controller's Node is the stale one.
    world
        .server
        .fail_requests(FaultRule::new(500, 2).verb("list").path("/nodes"));
    world.server.restart(false).await;
    wait_readiness(&process, false, WAIT).await;
    eventually("the Node relisted after the failures", WAIT, || async {
        let lists = world.requests("list", "nodes");
        let ok = lists.iter().filter(|r| r.status == 200).count();
        (ok >= 2).then_some(())
    })
    .await;
    // Nothing to act on until the operator restores the objects.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let created_without_node = world.pv_creations() - 3;
    assert!(world.pvs().is_empty(), "no PV stays without a Node");
    assert!(!process.is_ready().await, "not ready without a Node");

    world.create_cluster_objects();
    assert_ne!(world.node_uid, old_uid);
    world.wait_all_available(WAIT).await;
    wait_readiness(&process, true, WAIT).await;
    for pv in world.pvs() {
        assert_eq!(
            pv["metadata"]["ownerReferences"][0]["uid"].as_str(),
            Some(world.node_uid.as_str()),
            "new PVs belong to the new Node"
        );
    }
    assert!(
        world.requests("delete", "persistentvolumes").is_empty(),
        "nothing was Released: nothing deleted"
    );
    for index in 0..3 {
        world.assert_intact(index);
    }
    assert_eq!(
        created_without_node, 0,
        "PVs POSTed while the server had no Node, for the stale Node {old_uid} \
         (then garbage-collected)"
    );
    world.assert_settled(3 + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_a_500_outage_and_watch_retries_are_bounded() {
    let world = World::new("fault-ready500", 2).await;
    let process = world.start();
    world.wait_all_available(WAIT).await;
    wait_readiness(&process, true, WAIT).await;

    // Every request fails and the open watches are cut: unreachable.
    world.server.fail_requests(FaultRule::new(500, usize::MAX));
    let before = world.server.requests().len();
    let outage = Instant::now();
    world.server.cut_watches();
    wait_readiness(&process, false, WAIT).await;
    let released = world.release(0);
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(outage.elapsed())).await;
    // Three watches backing off from 0.8 s: a handful of attempts each in
    // 4 s, not a tight loop.
    let during = world.server.requests().len() - before;
    assert!(during <= 30, "{during} requests in a 4 s outage");
    assert!(!process.is_ready().await, "not ready while unreachable");

    world.server.clear_faults();
    wait_readiness(&process, true, WAIT).await;
    world.wait_recreated(0, &released, WAIT).await;
    world.assert_settled(2 + 1);
    world.assert_intact(1);
    assert_eq!(
        process
            .metric(&metric("available_devices", "fault-ready500"))
            .await,
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_a_stopped_server_and_recovers_after_restart() {
    let mut world = World::new("fault-readystop", 2).await;
    let process = world.start();
    world.wait_all_available(WAIT).await;
    world.bind(1);
    wait_readiness(&process, true, WAIT).await;

    // The server goes away (connections refused) for a few seconds.
    world.server.stop().await;
    wait_readiness(&process, false, WAIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!process.is_ready().await, "not ready while unreachable");
    world.server.resume(true).await;
    wait_readiness(&process, true, WAIT).await;

    // And it works again.
    let released = world.release(0);
    world.wait_recreated(0, &released, WAIT).await;
    world.assert_settled(2 + 1);
    world.assert_intact(1);
}
