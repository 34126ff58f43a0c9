//! The Node deleted and registered again. The (fake) garbage collector
//! deletes the PVs the Node owned: each gets a `deletionTimestamp`, keeps
//! its phase and stays while a finalizer remains. The program, with its
//! Node gone, still finishes what deleting PVs need: a claimed PV waits for
//! its claim and then has its device wiped before the finalizer goes; a
//! never-claimed PV is released without a wipe (not one write reaches its
//! device) and says so in the `wipe-skipped` annotation. Nothing new is
//! made while the Node is missing; when it is registered again (a new UID),
//! each device gets one fresh PV owned by the new Node.

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::common::*;
use crate::moments::{Moments, Watch};
use crate::support::world::inspect::phase;
use crate::support::world::waits::{WAIT, eventually};
use crate::support::world::{QUICK_POLLING, World, polling};

/// Size of each device.
const SIZE: u64 = 64 * MIB;
/// A finalizer of another controller (a backup tool, say): it keeps the
/// idle PV in the store after the program released it, to be looked at.
const HOLD: &str = "backup.example.com/in-progress";

/// Spans of the claimed device a tenant writes; the wipe must zero them.
fn inside() -> Vec<Span> {
    vec![span(0, 64 * 1024), span(SIZE - 4096, 4096)]
}

/// Adds (`true`) or removes finalizer [`HOLD`] on PV `name`.
async fn hold(world: &World, name: &str, on: bool) {
    world
        .modify::<PersistentVolume>(None, name, |pv| {
            let list = pv["metadata"]["finalizers"]
                .as_array_mut()
                .expect("finalizers");
            list.retain(|f| f != HOLD);
            if on {
                list.push(json!(HOLD));
            }
        })
        .await;
}

/// Whether a logged PATCH body records [`WIPE_SKIPPED`].
fn records_skip(body: Option<&Value>) -> bool {
    body.and_then(|b| b["metadata"]["annotations"].get(WIPE_SKIPPED))
        .is_some()
}

/// Whether a logged PATCH body is a JSON patch removing an entry.
fn removes_entry(body: Option<&Value>) -> bool {
    body.and_then(Value::as_array)
        .is_some_and(|ops| ops.iter().any(|op| op["op"] == "remove"))
}

/// The GC took both PVs: the idle one is released without a wipe (the
/// hold keeps it to look at), the claimed one waits for its claim.
async fn assert_collected(world: &World, idle_pv: &str, used_pv: &str) {
    let skipped = wait_pv(world, idle_pv, "released by the program", |pv| {
        pv.metadata.deletion_timestamp.is_some() && !has_finalizer(pv, CLEANUP_FINALIZER)
    })
    .await;
    assert_eq!(
        phase(&skipped),
        "Available",
        "the deletion leaves the phase"
    );
    assert!(has_finalizer(&skipped, HOLD), "{skipped:?}");
    let note = annotation(&skipped, WIPE_SKIPPED).expect("the wipe-skipped annotation");
    assert!(
        note.ends_with(": never claimed, released without a wipe"),
        "{note}"
    );
    // The fake logs a request once it has answered it: the release can be
    // seen on the object an instant before it is in the log.
    let of_idle = eventually("the release in the request log", WAIT, || async {
        let of_idle: Vec<_> = world
            .requests("patch", "persistentvolumes")
            .into_iter()
            .filter(|r| r.object_name() == Some(idle_pv))
            .collect();
        of_idle
            .iter()
            .any(|r| removes_entry(r.body.as_ref()))
            .then_some(of_idle)
    })
    .await;
    let recorded = of_idle.iter().position(|r| records_skip(r.body.as_ref()));
    let released = of_idle.iter().position(|r| removes_entry(r.body.as_ref()));
    assert!(
        recorded.is_some() && recorded < released,
        "the skip is recorded before the release: {of_idle:?}"
    );
    world
        .wait_for_event_about("WipeSkipped", "PersistentVolume", idle_pv)
        .await;
    world
        .wait_for_event_about("WaitingForClaim", "PersistentVolume", used_pv)
        .await;
    let waiting = world.pv(used_pv).await.expect("the claimed PV stays");
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert_eq!(phase(&waiting), "Bound", "the deletion leaves the phase");
    assert!(has_finalizer(&waiting, CLEANUP_FINALIZER), "{waiting:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_deleted_then_registered_again_wipes_what_was_claimed_and_offers_afresh() {
    let world = binding_world().await;
    let used = blank_disk(&world, "used", SIZE);
    let idle = blank_disk(&world, "idle", SIZE);
    let mut spec = world.block_spec(".*");
    spec.insert("wipeBytes".into(), "4Mi".into());
    world.put_configmap("spec", spec).await;
    let node = world.add_node("gc-a", Some("spec")).await;
    let process = world.start("gc-a", vec![polling(QUICK_POLLING)]);
    let (used_pv, idle_pv) = ("local-gc-a-used", "local-gc-a-idle");
    let used_old = wait_available(&world, used_pv).await;
    let idle_old = wait_available(&world, idle_pv).await;
    claim_and_wait(&world, "data", &used_old).await;
    tenant_writes(&used, &inside());
    let idle_writes = writes_completed(&idle);
    hold(&world, idle_pv, true).await;
    let watch = Watch {
        pv: used_pv.to_string(),
        device: used.clone(),
        spans: inside(),
    };
    let moments = Moments::install(&world, vec![watch]);

    world.delete_node(&node).await;
    assert_collected(&world, idle_pv, used_pv).await;
    process.wait_metric("wipes_skipped_total", 1.0).await;
    process.wait_metric("pv_spec_errors", 1.0).await;
    assert!(
        inside().iter().all(|s| span_holds(&used, *s, TENANT_BYTE)),
        "the claim's data is intact while it may be in use"
    );
    assert!(!moments.finalizer_removed(used_pv));

    // The claim goes while the Node is still missing: wiped, then released.
    world.delete_claim("data").await;
    wait_gone(&world, used_pv).await;
    let released = moments.of(used_pv);
    assert!(moments.finalizer_removed(used_pv), "{released:?}");
    assert!(
        released.iter().all(|m| m.zeroed),
        "wiped first: {released:?}"
    );
    wait_wiped(&process).await;
    // Nothing is made for a missing Node: the passes after the release show it.
    process.wait_for_fresh_passes(2).await;
    assert!(world.pv(used_pv).await.is_none());
    assert_eq!(world.pv_requests("create", None), 2);

    hold(&world, idle_pv, false).await;
    wait_gone(&world, idle_pv).await;
    let again = world.add_node("gc-a", Some("spec")).await;
    assert_ne!(again.uid(), node.uid(), "registered again: a new UID");
    let fresh_used = wait_recreated(&world, used_pv, &used_old.uid().unwrap()).await;
    let fresh_idle = wait_recreated(&world, idle_pv, &idle_old.uid().unwrap()).await;
    for pv in [&fresh_used, &fresh_idle] {
        let owners: Vec<_> = pv
            .owner_references()
            .iter()
            .map(|o| o.uid.clone())
            .collect();
        assert_eq!(owners, vec![again.uid().unwrap()], "owned by the new Node");
    }
    moments.assert_wiped_before_release_and_offer(used_pv);
    // The passes after both PVs exist make no duplicate.
    process.wait_for_fresh_passes(2).await;
    assert_eq!(world.pv_names().await, vec![idle_pv, used_pv]);
    assert_eq!(world.pv_requests("create", None), 4);
    assert_eq!(
        writes_completed(&idle),
        idle_writes,
        "never claimed: released and offered again without a write"
    );
}
