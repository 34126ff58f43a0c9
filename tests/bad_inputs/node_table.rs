//! Table 6: node names too long for a label value, through the real binary
//! and a restart. Each row is a name length and what must become of the
//! node's Events.

use std::sync::Arc;

use local_pv_provisioner::objects::naming::{
    hashed_pv_name, is_dns1123_subdomain, is_label_value, node_label_value,
};
use local_pv_provisioner::objects::pv;

use crate::catalogue::{RowFuture, fixed_bug, run_async_rows};
use crate::fixture::RowWorld;
use crate::support::world::waits::{WAIT, eventually};

/// What becomes of the node's Events.
enum Events {
    /// The PV is named `local-NODE-disk0`; `PVSpecApplied` and
    /// `Provisioned` are published.
    Published,
    /// The PV name is hashed; BUG-4 if the Events are refused.
    RefusedUnlessFixed,
}

/// One row: name, expected outcome as printed, node name length, Events.
type Row = (&'static str, &'static str, usize, Events);

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    vec![
        ("node name of 64 characters (a valid name, not a valid label value)",
            "PV named local-NODE-disk0, label hashed to a valid value, Events published; restart → same PV, no duplicate",
            64, Events::Published),
        ("node name of 253 characters",
            "PV with a valid hashed name, label hashed; restart → same PV, no duplicate; Events should be published (BUG-4: refused, name over 253)",
            253, Events::RefusedUnlessFixed),
    ]
}

/// A valid node name (DNS subdomain) of exactly `length` characters.
fn node_name_of(length: usize) -> String {
    let mut name = String::from("node");
    let mut part = 0;
    while name.len() < length {
        part += 1;
        name.push_str(&format!(".rack-{part:02}-{}", "x".repeat(40)));
    }
    name.truncate(length);
    while !name.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        name.pop();
        name.push('z');
    }
    assert_eq!(name.len(), length);
    assert!(is_dns1123_subdomain(&name), "{name}");
    name
}

/// Starts, checks the PV, restarts, and checks no duplicate appears.
async fn long_node_name(length: usize) -> RowWorld {
    let row = RowWorld::new(&node_name_of(length), 1).await;
    row.configure().await;
    let mut process = row.start(vec![]);
    process.wait_metric("pvs_created_total", 1.0).await;
    let pvs = row.world.pvs().await;
    assert_eq!(pvs.len(), 1);
    let pv = &pvs[0];
    let name = pv.metadata.name.clone().unwrap();
    assert!(is_dns1123_subdomain(&name), "{name}");
    let label = &pv.metadata.labels.as_ref().unwrap()[pv::NODE_LABEL];
    assert!(is_label_value(label), "{label}");
    assert_ne!(label, &row.node, "the label is hashed");
    assert_eq!(label, &node_label_value(&row.node));
    assert_eq!(
        pv.metadata.annotations.as_ref().unwrap()[pv::NODE_NAME_ANNOTATION],
        row.node
    );
    let uid = pv.metadata.uid.clone();
    row.fill_devices();

    assert_eq!(
        process.stop_with(nix::sys::signal::Signal::SIGTERM).code(),
        Some(0)
    );
    let process = row.start(vec![]);
    process.wait_metric("available_devices", 1.0).await;
    process.wait_ready(true).await;
    // No duplicate: the signal is a pass that began after the restart's first.
    process.wait_for_fresh_passes(1).await;
    let after = row.world.pvs().await;
    assert_eq!(after.len(), 1, "no duplicate after the restart");
    assert_eq!(after[0].metadata.uid, uid, "the same PV");
    assert_eq!(row.world.pv_requests("create", None), 1);
    assert_eq!(process.value("pvs_created_total").await, Some(0.0));
    row.assert_devices_untouched();
    row
}

/// BUG-4: the Events of a node whose name leaves no room for the Event
/// name's suffix.
async fn events_of_a_253_character_name(row: &RowWorld) {
    let pv_name = row.world.pvs().await[0].metadata.name.clone().unwrap();
    assert_eq!(pv_name, hashed_pv_name(&row.node, "disk0"));
    // Either the Event arrives or the publisher counts a failure.
    let process = row.start(vec![]);
    eventually("an Event or a failed Event", WAIT, || async {
        if row.world.event("PVSpecApplied").await.is_some() {
            return Some(());
        }
        let failed = process.labelled_sample("api_errors_total", "operation", "create_event");
        (process.metric(&failed).await >= Some(1.0)).then_some(())
    })
    .await;
    let refused = row
        .world
        .requests("create", "events")
        .iter()
        .filter(|r| r.status == 422)
        .count();
    let published = row.world.event("PVSpecApplied").await.is_some();
    let what = format!(
        "node name of 253 characters: {refused} Event creations refused (Event name = regarding name + 17 characters)"
    );
    fixed_bug("BUG-4", published && refused == 0, &what);
}

/// Runs one row.
fn check(row: Arc<Row>) -> RowFuture {
    Box::pin(async move {
        let (_, _, length, events) = &*row;
        let world = long_node_name(*length).await;
        match events {
            Events::Published => {
                assert_eq!(world.world.pv_names().await, vec![world.pv_name("disk0")]);
                world.world.wait_for_event("PVSpecApplied").await;
                let pv = world.pv_name("disk0");
                world
                    .world
                    .wait_for_event_about("Provisioned", "PersistentVolume", &pv)
                    .await;
            }
            Events::RefusedUnlessFixed => events_of_a_253_character_name(&world).await,
        }
        world.assert_devices_untouched();
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_name_table() {
    let label = |row: &Row| (row.0.to_string(), row.1.to_string());
    run_async_rows("node names (the binary)", rows(), label, check).await;
}
