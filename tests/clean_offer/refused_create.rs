//! The API server refuses the create of one PV — 403 as a policy webhook
//! answers, or 422 as validation does — every time it is sent: the other
//! devices get their PVs, the refused one is an error device reported once
//! with an `InvalidVolume` Event on the Node naming the device and the
//! server's message (not once per reconcile pass, and no `DeviceSkipped`
//! for it), and `/readyz` stays 200 throughout.

use crate::common::*;
use crate::support::fake_api::FaultRule;
use crate::support::world::{QUICK_POLLING, World, polling};

/// Size of each device.
const SIZE: u64 = 8 * MIB;

/// Runs the scenario on Node `node`, the create of its `refused` device's
/// PV answered `code` with `message`.
async fn one_create_refused(node: &str, code: u16, message: &str) {
    let world = World::fake().await;
    for entry in ["ok-a", "ok-b", "refused"] {
        blank_disk(&world, entry, SIZE);
    }
    let refused = format!("local-{node}-refused");
    let rule = FaultRule::new(code, usize::MAX)
        .verb("create")
        .object_name(&refused)
        .message(message);
    world.server().fail_requests(rule);
    world.put_configmap("spec", world.block_spec(".*")).await;
    world.add_node(node, Some("spec")).await;
    let process = world.start(node, vec![polling(QUICK_POLLING)]);

    wait_available(&world, &format!("local-{node}-ok-a")).await;
    wait_available(&world, &format!("local-{node}-ok-b")).await;
    process.wait_metric("error_devices", 1.0).await;
    process.wait_metric("available_devices", 2.0).await;
    let event = world
        .wait_for_event_about("InvalidVolume", "Node", node)
        .await;
    let note = event.note.unwrap_or_default();
    let path = world.dir().join("refused").display().to_string();
    assert!(note.contains(&path) && note.contains(message), "{note}");
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    process.wait_ready(true).await;
    // Reported once, ready throughout: checked after each of several passes.
    for _ in 0..3 {
        process.wait_for_fresh_passes(1).await;
        assert!(process.is_ready().await, "/readyz stays 200");
    }
    reported_once(&world, "InvalidVolume", "Node", node).await;
    let skipped = events_with(&world, "DeviceSkipped", "Node", node).await;
    assert!(skipped.is_empty(), "no DeviceSkipped for it: {skipped:#?}");
    let names = world.pv_names().await;
    assert_eq!(
        names,
        [format!("local-{node}-ok-a"), format!("local-{node}-ok-b")]
    );
    assert_eq!(process.value("error_devices").await, Some(1.0));
    let creates = world.requests("create", "persistentvolumes");
    let tried: Vec<u16> = creates
        .iter()
        .filter(|r| r.object_name() == Some(refused.as_str()))
        .map(|r| r.status)
        .collect();
    assert!(
        !tried.is_empty() && tried.iter().all(|s| *s == code),
        "{tried:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_denied_by_a_policy_webhook_leaves_the_other_devices_and_readiness_alone() {
    let message = "admission webhook \"pv-policy.example.com\" denied the request: \
                   local volumes on this node need approval";
    one_create_refused("deny-a", 403, message).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_refused_as_invalid_leaves_the_other_devices_and_readiness_alone() {
    let message = "PersistentVolume \"local-deny-b-refused\" is invalid: \
                   spec.storageClassName: Invalid value: \"local-storage\": not allowed here";
    one_create_refused("deny-b", 422, message).await;
}
