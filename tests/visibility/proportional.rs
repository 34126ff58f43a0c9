//! Work follows what changed (issue 19): a change of one PV that a pass
//! would not act on (its phase and claim as a claim binds, an annotation)
//! is shown in that PV's metric series and its LocalDisk without a whole
//! reconcile pass; a PV that goes brings a pass, which offers its device
//! again. A Node status report (what a kubelet writes every few minutes)
//! costs no pass; a Node label change does. The polling interval is the
//! default (5 minutes), so
//! `reconciles_total` moves only for passes the program chose to run.

use kube::ResourceExt;

use crate::clean_offer::{claim_and_wait, wait_available, wait_recreated};
use crate::common::*;
use crate::support::world::waits::{WAIT, eventually};

/// The state of the LocalDisk that stands for PV `pv`, as the fake API
/// server stores it.
fn disk_state(setup: &Node, pv: &str) -> Option<String> {
    setup
        .world
        .server()
        .objects("localdisks.local-pv-provisioner.cybozu.io")
        .into_iter()
        .find(|disk| disk["status"]["persistentVolume"] == pv)
        .and_then(|disk| disk["status"]["state"].as_str().map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_binding_costs_no_pass_and_a_pv_that_goes_brings_one() {
    let setup = node_with("vis-prop", &["disk0", "disk1"], vec![], |_| {}).await;
    let world = &setup.world;
    let name = setup.pv_name("disk0");
    let pv = wait_available(world, &name).await;
    wait_available(world, &setup.pv_name("disk1")).await;
    eventually("both LocalDisks Available", WAIT, || async {
        let states = [
            disk_state(&setup, &name),
            disk_state(&setup, &setup.pv_name("disk1")),
        ];
        states
            .iter()
            .all(|state| state.as_deref() == Some("Available"))
            .then_some(())
    })
    .await;
    let passes = setup
        .process
        .value("reconciles_total")
        .await
        .expect("the pass counter");

    // The claim binds: the controller-manager's writes set the claim and
    // the phase, the program records the claim; each a PV event.
    claim_and_wait(world, "data", &pv).await;
    let ns = world.namespace().to_string();
    let both = [
        [
            name.as_str(),
            &setup.device("disk0"),
            STORAGE_CLASS,
            "Block",
            "Bound",
            ns.as_str(),
            "data",
        ],
        [
            &setup.pv_name("disk1"),
            &setup.device("disk1"),
            STORAGE_CLASS,
            "Block",
            "Available",
            "",
            "",
        ],
    ];
    let rows: Vec<&[&str]> = both.iter().map(|row| row.as_slice()).collect();
    setup.wait_volume_rows(&rows).await;
    eventually("the LocalDisk of the claimed PV Bound", WAIT, || async {
        (disk_state(&setup, &name).as_deref() == Some("Bound")).then_some(())
    })
    .await;
    assert_eq!(
        setup.process.value("reconciles_total").await,
        Some(passes),
        "the binding's PV events were shown per PV, without a pass (a pass would have counted here)"
    );

    // The claim goes: the PV is released, wiped and deleted; its DELETED
    // event changes what a pass reads, and the pass offers the device again.
    world.delete_claim("data").await;
    let fresh = wait_recreated(world, &name, &pv.uid().expect("a UID")).await;
    assert_ne!(fresh.uid(), pv.uid());
    let after = setup
        .process
        .value("reconciles_total")
        .await
        .expect("the pass counter");
    assert!(
        after > passes,
        "the PV that went brought a pass ({passes} → {after})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_status_report_costs_no_pass_and_a_label_change_brings_one() {
    use k8s_openapi::api::core::v1::Node as KubeNode;
    use kube::Api;
    use kube::api::{Patch, PatchParams};

    let setup = node_with("vis-nodestatus", &["disk0"], vec![], |_| {}).await;
    let world = &setup.world;
    wait_available(world, &setup.pv_name("disk0")).await;
    let passes = setup
        .process
        .value("reconciles_total")
        .await
        .expect("the pass counter");
    let nodes: Api<KubeNode> = Api::all(world.client().clone());

    // What a kubelet writes every few minutes and on every condition or
    // image change: the Node's status, nothing the program keeps.
    for beat in 0..10 {
        let report = serde_json::json!({"status": {"conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": format!("kubelet is posting ready status (report {beat})"),
        }]}});
        nodes
            .patch_status(&setup.node, &PatchParams::default(), &Patch::Merge(&report))
            .await
            .expect("the Node's status report");
    }
    // Then a change a pass reads, on the same watch, after the reports.
    let label = serde_json::json!({"metadata": {"labels": {"example.com/rack": "r7"}}});
    nodes
        .patch(&setup.node, &PatchParams::default(), &Patch::Merge(&label))
        .await
        .expect("the Node's label");
    eventually("the label change's pass", WAIT, || async {
        (setup.process.value("reconciles_total").await? > passes).then_some(())
    })
    .await;
    assert_eq!(
        setup.process.value("reconciles_total").await,
        Some(passes + 1.0),
        "one pass, for the label; the status reports came first on the Node watch, and a \
         pass for any of them would have counted before the label's"
    );
}
