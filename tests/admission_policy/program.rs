//! The real binary under the enforced policy: with a token bound to its node
//! every write it makes passes (creates, the claim it records on a bound
//! PV, the DELETE of a Released PV, the removal of its finalizer after the
//! wipe); with a token that names no node every PV write is denied and no
//! PV exists.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::support::fake_api::{FakeApiServer, UserInfo};
use super::support::loop_device::{FILL_BYTE, LoopDevice};
use super::support::provisioner::{ProvisionerOptions, ProvisionerProcess};
use super::support::world::waits::eventually;
use super::support::world::witness::is_finalizer_removal;
use super::{OTHER, live_pv, unbound};

const NAMESPACE: &str = "lpp-system";
const WAIT: Duration = Duration::from_secs(30);
const MIB: u64 = 1024 * 1024;

/// A server enforcing the policy, with the namespace, a Block PV spec over
/// `devices`, the Node `node` (hostname label = its name) and another node's
/// PV.
async fn world(node: &str, devices: &Path) -> FakeApiServer {
    super::support::loop_device::require_root();
    let server = FakeApiServer::start().await;
    server.enforce_node_policy();
    server.create_object(
        "namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
    );
    server.create_object(
        "configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "spec", "namespace": NAMESPACE},
               "data": {"deviceDir": devices.to_str().unwrap(), "deviceNameFilter": ".*", "volumeMode": "Block"}}),
    );
    server.create_object(
        "nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": node,
            "labels": {"kubernetes.io/hostname": node},
            "annotations": {"local-pv-provisioner.cybozu.io/pv-spec-configmap": "spec"},
        }}),
    );
    server.create_object(
        "persistentvolumes",
        live_pv(&server, "local-node-b-disk0", OTHER),
    );
    server
}

fn start(server: &FakeApiServer, work: &Path, node: &str, token: &str) -> ProvisionerProcess {
    ProvisionerProcess::start(ProvisionerOptions {
        kubeconfig: &server.write_kubeconfig_with_token(work, token),
        node,
        namespace: NAMESPACE,
        env: vec![("LP_POLLING_INTERVAL", "1s".into())],
        log_dir: work,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_program_passes_the_policy_through_a_lifecycle() {
    let (work, devices) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let kept = LoopDevice::sparse(8 * MIB);
    let wiped = LoopDevice::sparse(8 * MIB);
    symlink(&kept.path, devices.path().join("kept")).unwrap();
    symlink(&wiped.path, devices.path().join("wiped")).unwrap();
    let node = "node-p";
    let server = world(node, devices.path()).await;
    let token = server.provisioner_token(node);
    let process = start(&server, work.path(), node, &token);

    let pv_uid = |name: &'static str| {
        let server = &server;
        move || async move {
            let pv = server.object("persistentvolumes", None, name)?;
            (pv["status"]["phase"] == "Available").then(|| pv["metadata"]["uid"].clone())
        }
    };
    let first = eventually(
        "the wiped device's PV Available",
        WAIT,
        pv_uid("local-node-p-wiped"),
    )
    .await;
    eventually(
        "the kept device's PV Available",
        WAIT,
        pv_uid("local-node-p-kept"),
    )
    .await;
    // Tenants' data, once the PVs exist; the kept PV is bound.
    kept.fill();
    wiped.fill();
    server.bind_pv("local-node-p-kept", "apps", "data");
    server.set_pv_phase("local-node-p-wiped", "Released");
    eventually(
        "the released PV wiped, deleted and made anew",
        WAIT,
        || async {
            let uid = pv_uid("local-node-p-wiped")().await?;
            (uid != first).then_some(())
        },
    )
    .await;
    assert!(
        wiped.read(0, MIB as usize).iter().all(|b| *b == 0),
        "the device was wiped"
    );
    eventually("the claim recorded on the kept PV", WAIT, || async {
        let pv = server.object("persistentvolumes", None, "local-node-p-kept")?;
        let claim = &pv["metadata"]["annotations"]["local-pv-provisioner.cybozu.io/claimed-by"];
        (claim == "apps/data").then_some(())
    })
    .await;
    drop(process);
    assert!(
        kept.read(0, MIB as usize).iter().all(|b| *b == FILL_BYTE),
        "the bound device was not touched"
    );

    assert_admitted(&server);
}

/// Every PV write of the program was admitted: a create, the claim it
/// records (an update of the bound PV), the DELETE of the Released PV and
/// its finalizer's removal (an update); another node's PV untouched.
fn assert_admitted(server: &FakeApiServer) {
    assert_eq!(
        server.admission_denials(),
        [],
        "the policy denied a write of the program"
    );
    let all = server.admission_decisions();
    let (disks, decisions): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|d| d.resource == "localdisks");
    assert!(
        disks.iter().any(|d| d.operation == "CREATE") && disks.iter().all(|d| d.allowed),
        "the program's LocalDisk writes went through the policy too, and passed: {disks:?}"
    );
    let (namespace, name) = super::support::fake_api::PROVISIONER_SERVICE_ACCOUNT;
    let user = UserInfo::service_account(namespace, name).username;
    for (operation, name) in [
        ("CREATE", "local-node-p-wiped"),
        ("UPDATE", "local-node-p-kept"),
        ("DELETE", "local-node-p-wiped"),
        ("UPDATE", "local-node-p-wiped"),
    ] {
        assert!(
            decisions
                .iter()
                .any(|d| d.operation == operation && d.name == name && d.username == user),
            "no {operation} of {name} by the program reached the policy: {decisions:?}"
        );
    }
    let removals = server
        .requests()
        .into_iter()
        .filter(|r| r.status == 200 && is_finalizer_removal(r))
        .count();
    assert_eq!(removals, 1, "the finalizer removal passed the policy");
    let pv_writes = server.requests().into_iter().filter(|r| {
        r.resource == "persistentvolumes"
            && ["create", "update", "patch", "delete"].contains(&r.verb.as_str())
    });
    assert_eq!(
        pv_writes.count(),
        decisions.len(),
        "every PV write of the program was admitted by the policy"
    );
    assert!(
        server
            .object("persistentvolumes", None, "local-node-b-disk0")
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_a_node_gets_every_pv_write_denied() {
    let (work, devices) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let disk = LoopDevice::sparse(8 * MIB);
    symlink(&disk.path, devices.path().join("disk0")).unwrap();
    let node = "node-q";
    let server = world(node, devices.path()).await;
    server.add_token("not-bound-to-a-node", unbound());
    let process = start(&server, work.path(), node, "not-bound-to-a-node");

    eventually("a denied PV create", WAIT, || async {
        server
            .admission_denials()
            .iter()
            .any(|d| d.operation == "CREATE")
            .then_some(())
    })
    .await;
    let sample = format!("local_pv_provisioner_reconciles_total{{node=\"{node}\"}}");
    let passes = eventually("a reconcile pass", WAIT, || async {
        process.metric(&sample).await
    })
    .await;
    eventually("another reconcile pass", WAIT, || async {
        (process.metric(&sample).await? > passes).then_some(())
    })
    .await;
    // Reported, and not retried in a loop: the denied device waits on its
    // own backoff (30 s first), so two passes later there is still one
    // create, one count and one Event on the Node naming the refusal.
    let denied = format!(
        "local_pv_provisioner_writes_denied_total{{node=\"{node}\",operation=\"create_pv\"}}"
    );
    assert_eq!(process.metric(&denied).await, Some(1.0), "counted once");
    let creates = server
        .admission_denials()
        .iter()
        .filter(|d| d.operation == "CREATE" && d.resource == "persistentvolumes")
        .count();
    assert_eq!(creates, 1, "no retry loop");
    let reported = eventually("the InvalidVolume Event on the Node", WAIT, || async {
        let events = server.objects("events.events.k8s.io");
        events
            .into_iter()
            .find(|e| e["reason"] == "InvalidVolume" && e["regarding"]["name"] == node)
    })
    .await;
    assert!(
        reported["note"]
            .as_str()
            .unwrap_or_default()
            .contains("fail closed"),
        "the Event carries the policy's message: {reported}"
    );
    drop(process);

    let denials = server.admission_denials();
    assert!(!denials.is_empty());
    for denial in &denials {
        assert!(
            denial.code == 403
                && denial.message.contains("node-name")
                && denial.message.contains("fail closed"),
            "{denial:?}"
        );
    }
    assert!(
        server.admission_decisions().iter().all(|d| !d.allowed),
        "a write was allowed"
    );
    let names: Vec<String> = server
        .objects("persistentvolumes")
        .iter()
        .map(|pv| {
            pv["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["local-node-b-disk0"], "no PV of node-q exists");
}
