//! Events at scale: a pass that creates more PVs than
//! `PROVISIONED_EVENTS_PER_PASS` (a cold start over a shelf of disks) tells
//! it in one `Provisioned` Event on the Node (how many, of which class, the
//! first names), not one Event per PV; a single disk plugged in later gets
//! its own `Provisioned` Event on its PV, as before.

use kube::ResourceExt;
use local_pv_provisioner::provision::report::PROVISIONED_EVENTS_PER_PASS;

use crate::clean_offer::wait_available;
use crate::common::*;
use crate::support::world::waits::{WAIT, eventually};
use crate::support::world::{QUICK_POLLING, polling};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_pvs_is_one_node_event_and_a_single_disk_its_own() {
    let entries: Vec<String> = (0..=PROVISIONED_EVENTS_PER_PASS)
        .map(|index| format!("disk{index:02}"))
        .collect();
    let names: Vec<&str> = entries.iter().map(String::as_str).collect();
    let setup = node_with("vis-burst", &names, vec![polling(QUICK_POLLING)], |_| {}).await;
    let world = &setup.world;
    let mut uids = Vec::new();
    for entry in &names {
        let pv = wait_available(world, &setup.pv_name(entry)).await;
        uids.push(pv.uid().expect("a UID"));
    }
    // Events are sent off the loop: wait for the burst's, then count.
    eventually(
        "the burst's Provisioned Event on the Node",
        WAIT,
        || async {
            let notes = node_notes(world, "Provisioned", "vis-burst").await;
            (!notes.is_empty()).then_some(())
        },
    )
    .await;
    let notes = node_notes(world, "Provisioned", "vis-burst").await;
    assert_eq!(notes.len(), 1, "one Event for the burst: {notes:#?}");
    let count = names.len();
    assert!(
        notes[0].starts_with(&format!(
            "Created {count} PersistentVolumes at once ({count} in class default): "
        )),
        "{}",
        notes[0]
    );
    assert!(notes[0].contains(&setup.pv_name("disk00")), "{}", notes[0]);
    assert!(
        notes[0].contains(&format!(" and {} more", count - 5)),
        "{}",
        notes[0]
    );

    crate::clean_offer::blank_disk(world, "late", SIZE);
    let pv = wait_available(world, &setup.pv_name("late")).await;
    let note = wait_event_of(world, "Provisioned", &pv.uid().expect("a UID")).await;
    assert!(note.contains("late"), "{note}");
    setup.process.wait_for_fresh_passes(3).await;
    for uid in &uids {
        assert_never(world, &["Provisioned"], uid).await;
    }
    assert_eq!(
        node_notes(world, "Provisioned", "vis-burst").await.len(),
        1,
        "the single disk did not make another Node Event"
    );
}
