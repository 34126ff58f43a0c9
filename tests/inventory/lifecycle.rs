//! One disk through a whole lifecycle, as `kubectl get localdisks -o wide`
//! shows it: offered, bound to a claim, released, wiped and offered again
//! as a new PV, the one LocalDisk object patched all along (same UID), its
//! wipe counted and dated, and every write valid against the CRD.

use kube::ResourceExt;
use local_pv_provisioner::objects::localdisk::DiskState;

use crate::common::{MIB, claim_and_wait, one_disk, wait_recreated};
use crate::disks::{self, kubectl_wide, row_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_is_listed_through_claim_release_wipe_and_a_new_offer() {
    let setup = one_disk("node-a", 64 * MIB, "4Mi", vec![]).await;
    let world = &setup.world;
    let name = setup.name.clone();

    let offered = disks::wait(world, "disk0", "Available with its PV", |s| {
        s.state == DiskState::Available && s.persistent_volume.as_deref() == Some(&name)
    })
    .await;
    let status = offered.status.clone().expect("a status");
    assert_eq!(status.node, "node-a");
    assert_eq!(status.class.as_deref(), Some("default"));
    assert_eq!(status.size_bytes, Some(64 * MIB));
    assert_eq!(status.size.as_deref(), Some("64Mi"));
    assert_eq!(status.device_type.as_deref(), Some("loop"));
    let device = setup.disk.path.file_name().unwrap().to_string_lossy();
    let minor: u32 = device.trim_start_matches("loop").parse().unwrap();
    assert_eq!(
        status.device.as_deref(),
        Some(format!("7:{minor}").as_str())
    );
    assert!(
        status.stable_id.is_some(),
        "a loop device has its backing file: {status:?}"
    );
    assert_eq!(status.wipe_count, 0);
    assert_eq!(status.conditions[0].kind, "Offered");
    assert_eq!(status.conditions[0].status, "True");
    let labels = offered.labels();
    assert_eq!(labels["local-pv-provisioner.cybozu.io/node"], "node-a");
    assert_eq!(
        labels["local-pv-provisioner.cybozu.io/device-class"],
        "default"
    );
    let owner = &offered.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Node", "node-a")
    );

    let row = row_of(&kubectl_wide(world), world, "disk0");
    assert_eq!(row["NAME"], offered.name_any());
    assert_eq!(row["NODE"], "node-a");
    assert_eq!(row["CLASS"], "default");
    assert_eq!(row["SIZE"], "64Mi");
    assert_eq!(row["STATE"], "Available");
    assert_eq!(row["PV"], name);
    assert_eq!(row["CLAIM"], "", "no claim: an empty cell");
    assert_eq!(row["REASON"], format!("offered as PersistentVolume {name}"));
    assert!(row.contains_key("AGE"), "{row:?}");

    let pv = setup.pv().await;
    claim_and_wait(world, "data", &pv).await;
    let claim = format!("{}/data", world.namespace());
    disks::wait(world, "disk0", "Bound to the claim", |s| {
        s.state == DiskState::Bound && s.claim.as_deref() == Some(&claim)
    })
    .await;
    let row = row_of(&kubectl_wide(world), world, "disk0");
    assert_eq!(
        (row["STATE"].as_str(), row["CLAIM"].as_str()),
        ("Bound", claim.as_str())
    );

    world.delete_claim("data").await;
    let fresh = wait_recreated(world, &name, &setup.uid).await;
    let again = disks::wait(world, "disk0", "offered again after one wipe", |s| {
        s.state == DiskState::Available && s.wipe_count == 1 && s.claim.is_none()
    })
    .await;
    assert_eq!(
        again.uid(),
        offered.uid(),
        "the same object, patched: never deleted and made again"
    );
    let wipe = again
        .status
        .as_ref()
        .unwrap()
        .last_wipe
        .clone()
        .expect("its last wipe");
    assert_eq!(wipe.mode.as_deref(), Some("Signatures"));
    assert!(wipe.duration_seconds > 0.0, "{wipe:?}");
    assert_eq!(
        again.status.as_ref().unwrap().persistent_volume.as_deref(),
        Some(fresh.name_any().as_str())
    );
    let row = row_of(&kubectl_wide(world), world, "disk0");
    assert_eq!(
        (row["STATE"].as_str(), row["CLAIM"].as_str()),
        ("Available", "")
    );

    let refused: Vec<_> = world
        .server()
        .requests()
        .into_iter()
        .filter(|r| r.resource == "localdisks" && r.status >= 400)
        .map(|r| (r.verb, r.status, r.path))
        .collect();
    assert!(
        refused.is_empty(),
        "every LocalDisk write is valid against the CRD: {refused:?}"
    );
    let creates = world
        .server()
        .requests()
        .iter()
        .filter(|r| r.resource == "localdisks" && r.verb == "create")
        .count();
    assert_eq!(creates, 1, "one disk, one object");
}
