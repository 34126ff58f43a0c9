//! Table 5: API objects through the real binary: PVs edited, bound, foreign
//! or of another node, and colliding entry names. Each row names its case;
//! every case proves nothing was destroyed (request log, UID and
//! resourceVersion, finalizers, device content: the tenant's data written
//! once the device's PV exists, or, for a device that must never get one of
//! ours, once the program has looked at it).

use std::sync::Arc;

use local_pv_provisioner::objects::naming::{hashed_pv_name, node_label_value};
use local_pv_provisioner::objects::pv;
use serde_json::{Value, json};

use crate::catalogue::{DEVICE_BYTES, RowFuture, fixed_bug, run_async_rows};
use crate::fixture::RowWorld;
use crate::support::world::{CLAIMED_BY_ANNOTATION, data};

/// The setup of a row.
enum Case {
    /// Our PV's `spec.local.path` edited to a link outside deviceDir (same
    /// device), then Released.
    EditedPath,
    /// Our PV bound to a claim while reconcile passes run every 250 ms.
    Bound,
    /// A foreign PV holding our name for our device, later Released.
    Foreign,
    /// A PV labelled for this node recording another node's name, Released.
    Impostor,
    /// Entries whose names collide, then a restart.
    Colliding,
}

/// One row: name, expected outcome as printed, node, case.
type Row = (&'static str, &'static str, &'static str, Case);

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    vec![
        ("our PV's spec.local.path edited to a link outside deviceDir (same device), then Released",
            "deleted, then its wipe refused: WipeRefused naming PathInsideDeviceDir and how to release it by hand, \
             wipe_failures_total{reason=PathInsideDeviceDir}, PV kept Terminating under its finalizer, device untouched, no second PV",
            "node-edited", Case::EditedPath),
        ("our PV with a claimRef and phase Bound, while reconcile passes run every 250 ms",
            "never wiped: PV kept Bound, the claim recorded (claimed-by), device untouched (a Released control PV in the same run is wiped)",
            "node-bound", Case::Bound),
        ("a foreign PV (no node label) holding our name local-NODE-disk0 for our device; later Released",
            "no overwrite: InvalidVolume naming disk0 and the taken name, error_devices 1, available_devices 1 (BUG-5: 2); \
             foreign PV never written or wiped", "node-foreign", Case::Foreign),
        ("a PV labelled for this node but recording another node's name (node-name annotation), Released",
            "not this node's, not the Go upstream's: left alone (UNCLEAR-2: no Event), PV never written or deleted, \
             device untouched, no PV of ours created for the device", "node-impostor", Case::Impostor),
        ("device entries A_B, a:b, a-b (one plain name local-NODE-a-b), then a restart",
            "three PVs with distinct hashed names, the collision logged; after a restart the same three PVs, none added",
            "node-collide", Case::Colliding),
    ]
}

/// A PV object for `row`'s `disk0`, as the controller would record it,
/// with `node_name` as the recorded node and `labels`.
fn foreign_or_edited_pv(row: &RowWorld, name: &str, labels: Value, node_name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                pv::DEVICE_DIR_ANNOTATION: row.world.dir_text(),
                pv::DEVICE_NUMBER_ANNOTATION: row.devices[0].number(),
                pv::DEVICE_SIZE_ANNOTATION: DEVICE_BYTES.to_string(),
                pv::NODE_NAME_ANNOTATION: node_name,
            },
        },
        "spec": {
            "capacity": {"storage": DEVICE_BYTES.to_string()},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "local-storage",
            "volumeMode": "Block",
            "local": {"path": format!("{}/disk0", row.world.dir_text())},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{
                "key": "kubernetes.io/hostname", "operator": "In", "values": ["host-of-test-node"],
            }]}]}},
        },
    })
}

/// Releases PV `name` and expects it deleted and its wipe refused by
/// `guard`: the Event (with how to release it by hand), the counter, the PV
/// kept Terminating under its finalizer, the device untouched.
async fn expect_refused(
    row: &RowWorld,
    process: &crate::support::provisioner::ProvisionerProcess,
    name: &str,
    guard: &str,
    says: &str,
) {
    let uid = row.world.pv(name).await.unwrap().metadata.uid.unwrap();
    row.world.server().set_pv_phase(name, "Released");
    let event = row
        .world
        .wait_for_event_about("WipeRefused", "PersistentVolume", name)
        .await;
    let note = event.note.unwrap();
    assert!(note.contains(guard) && note.contains(says), "{note}");
    assert!(note.contains(&format!("kubectl patch pv {name}")), "{note}");
    let refused = process.labelled_sample("wipe_failures_total", "reason", guard);
    process.wait_sample_at_least(&refused, 1.0).await;
    row.assert_held(name, &uid).await;
    assert_eq!(row.world.pv_requests("delete", Some(name)), 1);
    crate::catalogue::assert_untouched(&row.devices[0]);
}

/// Our PV edited to a path outside deviceDir: refused, kept, no second PV.
async fn edited_path(row: RowWorld) {
    row.configure().await;
    let process = row.start(vec![]);
    row.wait_pv("disk0").await;
    row.fill_devices();
    let name = row.pv_name("disk0");
    let elsewhere = row.world.work_dir().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    row.world.link_in(&elsewhere, "disk0", &row.devices[0]);
    row.world
        .modify::<k8s_openapi::api::core::v1::PersistentVolume>(None, &name, |pv| {
            pv["spec"]["local"]["path"] = json!(elsewhere.join("disk0"));
        })
        .await;
    expect_refused(&row, &process, &name, "PathInsideDeviceDir", "is kept").await;
    assert_eq!(
        row.world.pv_requests("create", None),
        1,
        "the device is still covered: no second PV"
    );
}

/// Our Bound PV: never wiped while a control PV is.
async fn bound(row: RowWorld) {
    row.configure().await;
    let _process = row.start(vec![]);
    let uid = row.wait_pv("disk0").await;
    row.wait_pv("disk1").await;
    row.fill_devices();
    let name = row.pv_name("disk0");
    row.world.server().bind_pv(&name, "default", "claim-a");
    row.control_wipe().await;
    row.assert_kept(&name, &uid).await;
    let pv = row.world.pv(&name).await.unwrap();
    let claimed = pv.metadata.annotations.as_ref().unwrap()[CLAIMED_BY_ANNOTATION].clone();
    assert_eq!(claimed, "default/claim-a", "the claim is recorded");
    assert_eq!(pv.status.unwrap().phase.as_deref(), Some("Bound"));
    assert_eq!(
        pv.spec.unwrap().claim_ref.unwrap().name.as_deref(),
        Some("claim-a")
    );
    crate::catalogue::assert_untouched(&row.devices[0]);
}

/// A foreign PV holding our name: reported, never written, never wiped.
async fn foreign(row: RowWorld) {
    let name = row.pv_name("disk0");
    let labels = json!({"owner": "someone-else"});
    row.world
        .create_foreign_pv(foreign_or_edited_pv(&row, &name, labels, "someone-else"));
    row.configure().await;
    let process = row.start(vec![]);
    row.wait_pv("disk1").await;
    let note = row.world.wait_for_note("InvalidVolume").await;
    assert!(
        note.contains("disk0") && note.contains(&name) && note.contains("does not own"),
        "{note}"
    );
    process.wait_metric("error_devices", 1.0).await;
    let available = process.value("available_devices").await;
    let what = format!(
        "a device whose PV name is taken by a foreign PV is counted in error_devices and in available_devices ({available:?})"
    );
    fixed_bug("BUG-5", available == Some(1.0), &what);
    // The foreign PV's tenant writes; then it is Released.
    row.fill_devices();
    row.world.server().set_pv_phase(&name, "Released");
    let before = row.world.pv(&name).await.unwrap();
    row.control_wipe().await;
    let after = row.world.pv(&name).await.unwrap();
    assert_eq!(after.metadata.uid, before.metadata.uid);
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "never written"
    );
    assert_eq!(after.metadata.labels, before.metadata.labels);
    for verb in ["update", "patch", "delete"] {
        assert_eq!(
            row.world.pv_requests(verb, Some(&name)),
            0,
            "{verb} on the foreign PV"
        );
    }
    crate::catalogue::assert_untouched(&row.devices[0]);
}

/// A PV of this node's label recording another node: left alone.
async fn impostor(row: RowWorld) {
    let name = "local-other-node-disk0";
    let labels = json!({pv::NODE_LABEL: node_label_value(&row.node)});
    row.world
        .create_foreign_pv(foreign_or_edited_pv(&row, name, labels, "other-node"));
    row.configure().await;
    let process = row.start(vec![]);
    row.wait_pv("disk1").await;
    process.wait_metric("available_devices", 2.0).await;
    row.fill_devices();
    row.world.server().set_pv_phase(name, "Released");
    let before = row.world.pv(name).await.unwrap();
    // The control PV's wipe shows the cleanup handled the events before it.
    row.control_wipe().await;
    let after = row.world.pv(name).await.unwrap();
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "never written"
    );
    assert!(after.metadata.deletion_timestamp.is_none(), "never deleted");
    for verb in ["update", "patch", "delete"] {
        assert_eq!(row.world.pv_requests(verb, Some(name)), 0, "{verb} on it");
    }
    // UNCLEAR-2 (found when the finalizer came, fixed): it went unreported;
    // now a `NotOurs` Event says this node leaves it alone.
    let said = row
        .world
        .wait_for_event_about("NotOurs", "PersistentVolume", name)
        .await;
    assert!(
        said.note.unwrap_or_default().contains("other-node"),
        "the Event names the node the PV records"
    );
    assert_eq!(
        row.world.pv_requests("create", None),
        2,
        "no PV of ours for its device (disk1's PV and its recreation only)"
    );
    crate::catalogue::assert_untouched(&row.devices[0]);
}

/// Colliding entry names through the binary, then a restart.
async fn colliding(mut row: RowWorld) {
    for name in ["A_B", "a:b", "a-b"] {
        let disk = row.world.attach_linked(name, DEVICE_BYTES);
        row.devices.push(disk);
    }
    let dir = row.world.dir_text();
    let spec = [
        ("deviceDir", dir.as_str()),
        ("deviceNameFilter", "^[Aa].[Bb]$"),
        ("volumeMode", "Block"),
    ];
    row.world.put_configmap("spec", data(&spec)).await;
    row.world.add_node(&row.node, Some("spec")).await;
    let mut process = row.start(vec![]);
    process.wait_metric("pvs_created_total", 3.0).await;
    let names = row.world.pv_names().await;
    let mut expected: Vec<String> = ["A_B", "a:b", "a-b"]
        .iter()
        .map(|entry| hashed_pv_name(&row.node, entry))
        .collect();
    expected.sort();
    assert_eq!(names, expected, "each entry its own hashed name");
    let log = process.log();
    let warned = log
        .lines()
        .any(|line| line.contains("WARN") && line.contains("collide"));
    assert!(warned, "the collision is logged as a warning");
    row.fill_devices();
    assert_eq!(
        process.stop_with(nix::sys::signal::Signal::SIGTERM).code(),
        Some(0)
    );
    let process = row.start(vec![]);
    process.wait_metric("available_devices", 3.0).await;
    // None added: the signal is a pass that began after the restart's first.
    process.wait_for_fresh_passes(1).await;
    assert_eq!(
        row.world.pv_names().await,
        names,
        "the same PVs after the restart"
    );
    assert_eq!(row.world.pv_requests("create", None), 3);
    row.assert_devices_untouched();
}

/// Runs one row.
fn check(row: Arc<Row>) -> RowFuture {
    Box::pin(async move {
        let (_, _, node, case) = &*row;
        match case {
            Case::EditedPath => edited_path(RowWorld::new(node, 1).await).await,
            Case::Bound => bound(RowWorld::new(node, 2).await).await,
            Case::Foreign => foreign(RowWorld::new(node, 2).await).await,
            Case::Impostor => impostor(RowWorld::new(node, 2).await).await,
            Case::Colliding => colliding(RowWorld::new(node, 0).await).await,
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_object_table() {
    let label = |row: &Row| (row.0.to_string(), row.1.to_string());
    run_async_rows("API objects (the binary)", rows(), label, check).await;
}
