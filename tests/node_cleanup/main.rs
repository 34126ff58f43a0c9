//! The `node-cleanup` mode, end to end: the real binary against the fake
//! API server (Leases with server-side apply, the garbage collector of
//! objects owned by Nodes, PV and PVC protection). PVs are made by the test
//! as this program's provisioner makes them (labels, annotations, cleanup
//! finalizer); no device is involved, as node-cleanup never opens one.
//!
//! - a Node deleted for good: after the grace its Bound PV asking for it
//!   loses its claim (deleted with a UID precondition), is recorded
//!   (wipe-skipped, history), reported (`NodeGone`) and loses the cleanup
//!   finalizer and nothing else; a PV of a live Node is never touched;
//! - a Node back within the grace: the PV is marked while it is away and
//!   loses only the mark when it returns;
//! - two replicas: one leads (the Lease names it), only it writes; stopped,
//!   it hands the Lease over and the other acts.
//!
//! Every wait is for a signal the program gives (a request at the fake
//! server, an annotation, its pass counter), never a sleep.

#[path = "../support/mod.rs"]
mod support;

use k8s_openapi::api::core::v1::{Node, PersistentVolume};
use kube::ResourceExt;
use serde_json::{Value, json};
use support::provisioner::ProvisionerProcess;
use support::world::waits::{WAIT, eventually};
use support::world::{CLEANUP_FINALIZER, NODE_LABEL, NODE_NAME_ANNOTATION, PV_PROTECTION, World};

const GONE_SINCE: &str = "local-pv-provisioner.cybozu.io/node-gone-since";
const WIPE_SKIPPED: &str = "local-pv-provisioner.cybozu.io/wipe-skipped";
const HISTORY: &str = "local-pv-provisioner.cybozu.io/history";
const CLAIMED_BY: &str = "local-pv-provisioner.cybozu.io/claimed-by";
const DELETE_CLAIMS: &str = "local-pv-provisioner.cybozu.io/delete-claims-on-node-gone";
/// A finalizer of another controller: it keeps a released PV in the store,
/// to be looked at, and must survive the release.
const HOLD: &str = "backup.example.com/in-progress";
const LEASE: &str = "local-pv-provisioner-node-cleanup";

/// A PV as this program's provisioner makes it on `node`, owned by the Node
/// object `owner` when given (so the garbage collector deletes it with the
/// Node, as it does in a cluster).
fn our_pv(name: &str, node: &str, delete_claims: bool, owner: Option<&Node>) -> Value {
    let mut pv = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": name,
            "labels": {NODE_LABEL: node},
            "annotations": {
                NODE_NAME_ANNOTATION: node,
                DELETE_CLAIMS: delete_claims.to_string(),
            },
            "finalizers": [CLEANUP_FINALIZER, HOLD],
        },
        "spec": {
            "capacity": {"storage": "1Gi"},
            "volumeMode": "Block",
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "local-storage",
            "local": {"path": format!("/dev/disk/by-path/{name}")},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]},
            ]}]}},
        },
    });
    if let Some(owner) = owner {
        pv["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "v1", "kind": "Node", "name": owner.name_any(), "uid": owner.uid(),
        }]);
    }
    pv
}

fn grace(text: &str) -> (&'static str, String) {
    ("LP_NODE_GONE_GRACE", text.to_string())
}

fn annotation(pv: &PersistentVolume, key: &str) -> Option<String> {
    pv.annotations().get(key).cloned()
}

/// A metric of a node-cleanup process (no labels), 0 before it answers.
async fn value(process: &ProvisionerProcess, name: &str) -> f64 {
    process
        .metric(&format!("local_pv_provisioner_{name} "))
        .await
        .unwrap_or(0.0)
}

/// Waits until `process` leads.
async fn wait_leading(process: &ProvisionerProcess) {
    eventually("a node-cleanup replica leading", WAIT, || async {
        (value(process, "node_cleanup_leader").await == 1.0).then_some(())
    })
    .await;
}

/// Waits until `passes` whole passes of the leader began after this call
/// (the counter goes up by `passes + 1`, as a pass running now may end
/// after it): every change made before was seen. Each check touches Node
/// `node` (a label the program ignores), a change it watches, so passes
/// keep coming.
async fn wait_fresh_passes(world: &World, process: &ProvisionerProcess, node: &str, passes: u32) {
    let start = value(process, "node_cleanup_passes_total").await;
    let target = start + f64::from(passes) + 1.0;
    let touches = std::sync::atomic::AtomicU32::new(0);
    eventually(
        &format!("{passes} node-cleanup pass(es) after {start}"),
        WAIT,
        || async {
            let touch = touches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            world.touch_node(node, &touch.to_string()).await;
            (value(process, "node_cleanup_passes_total").await >= target).then_some(())
        },
    )
    .await;
}

/// The writes (patch, update, delete) the fake server answered about PV `name`.
fn writes_to(world: &World, name: &str) -> usize {
    world
        .server()
        .requests()
        .iter()
        .filter(|r| r.resource == "persistentvolumes" && r.name.as_deref() == Some(name))
        .filter(|r| ["patch", "update", "delete"].contains(&r.verb.as_str()))
        .count()
}

/// Binds PV `pv` to a new claim `claim` of the world's namespace; returns
/// the claim's UID.
async fn bound_claim(world: &World, pv: &str, claim: &str) -> String {
    world.create_claim(claim, "1Gi", Some(pv)).await;
    world.server().bind_pv(pv, world.namespace(), claim);
    world
        .claim(claim)
        .await
        .expect("the claim")
        .uid()
        .expect("a UID")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_gone_for_good_has_its_pv_released_and_its_claim_deleted() {
    let world = World::fake().await;
    let gone = world.add_node("node-gone", None).await;
    world.add_node("node-alive", None).await;
    world.create_foreign_pv(our_pv(
        "local-node-gone-disk0",
        "node-gone",
        true,
        Some(&gone),
    ));
    world.create_foreign_pv(our_pv("local-node-alive-disk0", "node-alive", true, None));
    let claim_uid = bound_claim(&world, "local-node-gone-disk0", "data-db-0").await;
    bound_claim(&world, "local-node-alive-disk0", "data-db-1").await;
    world
        .modify::<PersistentVolume>(None, "local-node-gone-disk0", |pv| {
            pv["metadata"]["annotations"][CLAIMED_BY] =
                json!(format!("{}/data-db-0", world.namespace()));
        })
        .await;
    let process = world.start_node_cleanup("cleanup-0", vec![grace("2s")]);
    wait_leading(&process).await;
    wait_fresh_passes(&world, &process, "node-alive", 1).await;

    world.delete_node(&gone).await;
    let released = eventually("the cleanup finalizer removed", WAIT, || async {
        let pv = world.pv("local-node-gone-disk0").await?;
        (!pv.finalizers().iter().any(|f| f == CLEANUP_FINALIZER)).then_some(pv)
    })
    .await;

    // Only the cleanup finalizer went; the hold and pv-protection (the
    // claim was Bound) stay. Deleted: by the garbage collector (owned by
    // the gone Node) or by node-cleanup.
    assert!(
        released.metadata.deletion_timestamp.is_some(),
        "being deleted"
    );
    let finalizers = released.finalizers().to_vec();
    assert!(finalizers.contains(&HOLD.to_string()), "{finalizers:?}");
    assert!(
        finalizers.contains(&PV_PROTECTION.to_string()),
        "{finalizers:?}"
    );
    assert!(
        annotation(&released, GONE_SINCE).is_some(),
        "the grace was recorded"
    );
    let skipped = annotation(&released, WIPE_SKIPPED).expect("wipe-skipped recorded");
    assert!(
        skipped.ends_with("node gone, released without a wipe"),
        "{skipped}"
    );
    let history: Value =
        serde_json::from_str(&annotation(&released, HISTORY).expect("history")).unwrap();
    assert_eq!(
        history["claims"][0]["claim"],
        format!("{}/data-db-0", world.namespace())
    );
    assert_eq!(history["wipes"], 0, "no wipe: {history}");

    eventually("the claim deleted", WAIT, || async {
        world.claim("data-db-0").await.is_none().then_some(())
    })
    .await;
    // Deleted with a UID precondition (a lagging watch may make a pass ask
    // again: the same precondition, answered 404).
    let deletes: Vec<_> = world.requests("delete", "persistentvolumeclaims");
    assert!(!deletes.is_empty());
    for delete in &deletes {
        assert_eq!(
            delete.body.as_ref().unwrap()["preconditions"]["uid"],
            json!(claim_uid),
            "{delete:?}"
        );
    }
    let event = world
        .wait_for_event_about("NodeGone", "PersistentVolume", "local-node-gone-disk0")
        .await;
    let note = event.note.unwrap_or_default();
    assert!(
        note.contains("node-gone") && note.contains("data-db-0"),
        "{note}"
    );
    eventually("the release counted", WAIT, || async {
        (value(&process, "node_gone_pvs_released_total").await == 1.0).then_some(())
    })
    .await;
    assert_eq!(value(&process, "node_gone_claims_deleted_total").await, 1.0);

    // The finalizer went with a JSON patch that tested the finalizers first.
    let removal = world
        .requests("patch", "persistentvolumes")
        .into_iter()
        .filter(|r| r.name.as_deref() == Some("local-node-gone-disk0"))
        .find(|r| {
            r.content_type
                .as_deref()
                .is_some_and(|c| c.contains("json-patch"))
        })
        .expect("a JSON patch");
    let ops = removal.body.expect("a body");
    assert_eq!(ops[0]["op"], "test", "{ops}");
    assert!(
        ops.as_array()
            .unwrap()
            .iter()
            .any(|op| op["op"] == "test" && op["path"] == "/metadata/finalizers"),
        "{ops}"
    );

    // The live Node's PV and claim: never touched.
    wait_fresh_passes(&world, &process, "node-alive", 2).await;
    assert_eq!(writes_to(&world, "local-node-alive-disk0"), 0);
    let alive = world.pv("local-node-alive-disk0").await.expect("kept");
    assert!(alive.finalizers().iter().any(|f| f == CLEANUP_FINALIZER));
    assert!(alive.metadata.deletion_timestamp.is_none());
    assert!(annotation(&alive, GONE_SINCE).is_none());
    assert!(world.claim("data-db-1").await.is_some());
    assert_eq!(value(&process, "node_gone_pvs_released_total").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_within_the_grace_loses_nothing() {
    let world = World::fake().await;
    let node = world.add_node("node-flaky", None).await;
    world.create_foreign_pv(our_pv("local-node-flaky-disk0", "node-flaky", true, None));
    bound_claim(&world, "local-node-flaky-disk0", "data-db-0").await;
    let process = world.start_node_cleanup("cleanup-0", vec![grace("1h")]);
    wait_leading(&process).await;

    world.delete_node(&node).await;
    eventually("the PV marked while its Node is away", WAIT, || async {
        let pv = world.pv("local-node-flaky-disk0").await?;
        annotation(&pv, GONE_SINCE)
    })
    .await;
    eventually("one PV waiting out the grace", WAIT, || async {
        (value(&process, "node_gone_pvs_waiting").await == 1.0).then_some(())
    })
    .await;
    world.add_node("node-flaky", None).await;
    eventually("the mark removed when the Node is back", WAIT, || async {
        let pv = world.pv("local-node-flaky-disk0").await?;
        annotation(&pv, GONE_SINCE).is_none().then_some(())
    })
    .await;
    wait_fresh_passes(&world, &process, "node-flaky", 2).await;

    let pv = world.pv("local-node-flaky-disk0").await.expect("kept");
    assert!(pv.finalizers().iter().any(|f| f == CLEANUP_FINALIZER));
    assert!(pv.metadata.deletion_timestamp.is_none());
    assert!(annotation(&pv, WIPE_SKIPPED).is_none());
    assert!(world.claim("data-db-0").await.is_some(), "the claim kept");
    assert!(
        world
            .requests("delete", "persistentvolumeclaims")
            .is_empty()
    );
    assert_eq!(world.pv_requests("delete", None), 0);
    // Two writes: the mark, then its removal.
    assert_eq!(writes_to(&world, "local-node-flaky-disk0"), 2);
    assert!(world.event("NodeGone").await.is_none());
    assert_eq!(value(&process, "node_gone_pvs_waiting").await, 0.0);
    assert_eq!(value(&process, "node_gone_pvs_released_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_replicas_only_the_leader_acts_and_the_other_takes_over() {
    let world = World::fake().await;
    let first = world.add_node("node-a", None).await;
    let second = world.add_node("node-b", None).await;
    world.create_foreign_pv(our_pv("local-node-a-disk0", "node-a", false, None));
    world.create_foreign_pv(our_pv("local-node-b-disk0", "node-b", false, None));
    let mut replicas = vec![
        world.start_node_cleanup("cleanup-0", vec![grace("1s")]),
        world.start_node_cleanup("cleanup-1", vec![grace("1s")]),
    ];
    let leader = eventually("one replica leading", WAIT, || async {
        let mut leading = Vec::new();
        for (index, replica) in replicas.iter().enumerate() {
            if value(replica, "node_cleanup_leader").await == 1.0 {
                leading.push(index);
            }
        }
        (leading.len() == 1).then(|| leading[0])
    })
    .await;
    let follower = 1 - leader;
    let lease = world
        .server()
        .object("leases.coordination.k8s.io", Some(world.namespace()), LEASE)
        .expect("the Lease");
    assert_eq!(
        lease["spec"]["holderIdentity"],
        json!(format!("cleanup-{leader}")),
        "{lease}"
    );

    world.delete_node(&first).await;
    eventually("node-a's PV released", WAIT, || async {
        let pv = world.pv("local-node-a-disk0").await?;
        (!pv.finalizers().iter().any(|f| f == CLEANUP_FINALIZER)).then_some(())
    })
    .await;
    let pv = world.pv("local-node-a-disk0").await.expect("held");
    assert!(
        pv.metadata.deletion_timestamp.is_some(),
        "deleted by node-cleanup"
    );
    assert_eq!(world.pv_requests("delete", Some("local-node-a-disk0")), 1);
    eventually("the release counted by the leader", WAIT, || async {
        (value(&replicas[leader], "node_gone_pvs_released_total").await == 1.0).then_some(())
    })
    .await;
    assert_eq!(
        value(&replicas[follower], "node_gone_pvs_released_total").await,
        0.0
    );
    assert_eq!(
        value(&replicas[follower], "node_cleanup_passes_total").await,
        0.0,
        "the follower never looked"
    );
    assert_eq!(value(&replicas[follower], "node_cleanup_leader").await, 0.0);

    // The leader stops (SIGTERM) and hands the Lease over.
    let status = replicas[leader].stop_with(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{status:?}");
    wait_leading(&replicas[follower]).await;
    world.delete_node(&second).await;
    eventually("node-b's PV released by the new leader", WAIT, || async {
        (value(&replicas[follower], "node_gone_pvs_released_total").await == 1.0).then_some(())
    })
    .await;
    let pv = world.pv("local-node-b-disk0").await.expect("held");
    assert!(!pv.finalizers().iter().any(|f| f == CLEANUP_FINALIZER));
    assert!(pv.finalizers().iter().any(|f| f == HOLD));
    assert_eq!(world.pv_requests("delete", Some("local-node-b-disk0")), 1);
    assert_eq!(
        world.pv_requests("delete", Some("local-node-a-disk0")),
        1,
        "released once"
    );
    replicas.clear();
}
