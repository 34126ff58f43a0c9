//! Devices unplugged and plugged back (their links removed from and put
//! back into `deviceDir`, as udev does), with a grace of one second: the
//! claimed PV is kept, with one `DeviceMissing` however many passes see it
//! missing, and one `DeviceReturned` when its device is back; the
//! unclaimed `Available` one is deleted (one `DeviceMissing`, one
//! `WipeSkipped`: never claimed, nothing to wipe), its `volume_info` and
//! capacity series go with it, and `missing_devices` counts the kept one;
//! the device back, it gets a new PV. `DevicesDiscovered` on the Node is
//! sent on change only.

use kube::ResourceExt;

use crate::clean_offer::{claim_and_wait, wait_available, wait_gone};
use crate::common::*;
use crate::page::{page, wait_page};
use crate::support::world::{QUICK_POLLING, polling};

/// The claim's name.
const CLAIM: &str = "data";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplugged_devices_are_reported_once_and_their_series_follow_the_pvs() {
    let env = vec![
        polling(QUICK_POLLING),
        ("LP_DEVICE_LOSS_GRACE", "1s".to_string()),
    ];
    let setup = node_with("vis-loss", &["kept", "spare"], env, |_| {}).await;
    let world = &setup.world;
    let (kept, spare) = (setup.pv_name("kept"), setup.pv_name("spare"));
    let kept_pv = wait_available(world, &kept).await;
    let spare_uid = wait_available(world, &spare).await.uid().expect("a UID");
    let kept_uid = kept_pv.uid().expect("a UID");
    claim_and_wait(world, CLAIM, &kept_pv).await;

    world.unlink("kept");
    world.unlink("spare");
    wait_gone(world, &spare).await;
    wait_event_of(world, "DeviceMissing", &kept_uid).await;
    wait_event_of(world, "WipeSkipped", &spare_uid).await;
    let with = setup.on_node();
    setup
        .wait_volume("kept", "Bound", (world.namespace(), CLAIM))
        .await;
    let now = wait_page(&setup.process, "one missing device", |p| {
        p.value("missing_devices", &with) == Some(1.0)
    })
    .await;
    let capacity = crate::page::rows(&now, "volume_capacity_bytes", &with, &["persistentvolume"]);
    assert_eq!(
        capacity,
        [[kept.clone()]],
        "the deleted PV's capacity series is gone"
    );
    setup.process.wait_for_fresh_passes(3).await;
    assert_once(world, &["DeviceMissing"], &kept_uid).await;
    assert_once(world, &["DeviceMissing", "WipeSkipped"], &spare_uid).await;

    world.link("kept", &setup.disks[0]);
    wait_event_of(world, "DeviceReturned", &kept_uid).await;
    wait_page(&setup.process, "no missing device", |p| {
        p.value("missing_devices", &with) == Some(0.0)
    })
    .await;
    world.link("spare", &setup.disks[1]);
    let back = wait_available(world, &spare).await;
    let back_uid = back.uid().expect("a UID");
    assert_ne!(back_uid, spare_uid, "a new PV for the returned device");
    setup.process.wait_for_fresh_passes(3).await;
    assert_once(
        world,
        &["DeviceMissing", "DeviceReturned", "Claimed"],
        &kept_uid,
    )
    .await;
    assert_once(world, &["Provisioned"], &back_uid).await;
    assert_never(world, &["DeviceMissing"], &back_uid).await;
    assert_devices_discovered_on_change(&setup).await;
}

/// `DevicesDiscovered`: two usable at first, two usable at the end, never
/// the same counts twice in a row, and no new one over passes that change
/// nothing.
async fn assert_devices_discovered_on_change(setup: &Node) {
    let notes = node_notes(&setup.world, "DevicesDiscovered", &setup.node).await;
    assert!(
        notes.len() >= 2,
        "counts changed and were reported: {notes:#?}"
    );
    let both = "2 device(s) usable (with or getting a PersistentVolume), 0 without one";
    assert_eq!(notes.first().map(String::as_str), Some(both), "{notes:#?}");
    assert_eq!(notes.last().map(String::as_str), Some(both), "{notes:#?}");
    assert_changes_only(&notes, "DevicesDiscovered");
    setup.process.wait_for_fresh_passes(3).await;
    let again = node_notes(&setup.world, "DevicesDiscovered", &setup.node).await;
    assert_eq!(again, notes, "nothing new without a change");
    let page = page(&setup.process).await.expect("the metrics page");
    assert_eq!(page.value("available_devices", &setup.on_node()), Some(2.0));
}
