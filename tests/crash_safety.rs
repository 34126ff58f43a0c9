//! Crash safety: a provisioner killed with SIGKILL, or stopped with SIGTERM,
//! in the middle of a wipe leaves the PV marked and Released; the next start
//! finishes the wipe, and the device is never handed out half-wiped. Real
//! binary, fake API server, real loop device (needs root, as in CI).

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node, PersistentVolume};
use kube::Api;
use kube::api::{ListParams, PostParams};
use nix::sys::signal::Signal;
use serde_json::json;
use support::fake_api::FakeApiServer;
use support::loop_device::{FILL_BYTE, LoopDevice};
use support::provisioner::{ProvisionerOptions, ProvisionerProcess, eventually};

const GIB: u64 = 1024 * 1024 * 1024;
const MIB: u64 = 1024 * 1024;
const NAMESPACE: &str = "lpp-system";
const WIPE_STARTED_AT: &str = "local-pv-provisioner.cybozu.io/wipe-started-at";
const WIPE_STARTED_BY: &str = "local-pv-provisioner.cybozu.io/wipe-started-by";

fn has_marker(device: &LoopDevice, offset: u64) -> bool {
    device.read(offset, 4096).iter().all(|b| *b == FILL_BYTE)
}

fn is_zero(device: &LoopDevice, offset: u64) -> bool {
    device.read(offset, 4096).iter().all(|b| *b == 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_wipe_is_finished_by_the_next_start() {
    interrupted_wipe_is_finished_by_the_next_start(Signal::SIGKILL, "node-k").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_wipe_exits_zero_and_the_next_start_finishes() {
    interrupted_wipe_is_finished_by_the_next_start(Signal::SIGTERM, "node-t").await;
}

/// Interrupts a wipe with `signal` as soon as the PV carries the wipe mark,
/// then checks nothing was handed out and the next start finishes the job.
async fn interrupted_wipe_is_finished_by_the_next_start(signal: Signal, node_name: &str) {
    support::loop_device::require_root();
    // A 4 GiB device whose PV zeroes a 3 GiB head: the wipe takes long
    // enough (seconds) that the kill lands in the middle of it.
    let size = 4 * GIB;
    let device = LoopDevice::sparse(size);
    let head_start = 0;
    let head_late = 3 * GIB - 64 * MIB;
    let untouched = 3 * GIB + 256 * MIB;
    let tail = size - 4096;
    for offset in [head_start, head_late, untouched, tail] {
        device.write_at(offset, &[FILL_BYTE; 4096]);
    }

    let server = FakeApiServer::start().await;
    let client = server.client().await;
    let work = tempfile::tempdir().unwrap();
    let device_dir = tempfile::tempdir().unwrap();
    symlink(&device.path, device_dir.path().join("big0")).unwrap();
    server.create_object(
        "namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
    );
    let data: BTreeMap<String, String> = [
        ("deviceDir", device_dir.path().to_str().unwrap()),
        ("deviceNameFilter", "^big"),
        ("volumeMode", "Block"),
        ("wipeBytes", "3Gi"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let configmap: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "spec", "namespace": NAMESPACE},
        "data": data,
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &configmap)
        .await
        .unwrap();
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": node_name, "annotations": {"local-pv-provisioner.cybozu.io/pv-spec-configmap": "spec"}},
    }))
    .unwrap();
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
    let kubeconfig = server.write_kubeconfig(work.path());
    let start = || {
        ProvisionerProcess::start(ProvisionerOptions {
            kubeconfig: &kubeconfig,
            node: node_name,
            namespace: NAMESPACE,
            env: vec![],
            log_dir: work.path(),
        })
    };
    let pv_name = format!("local-{node_name}-big0");
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let list = || async { pvs.list(&ListParams::default()).await.unwrap().items };

    let mut first = start();
    let original = eventually("the PV", Duration::from_secs(30), || async {
        list().await.into_iter().next()
    })
    .await;
    let original_uid = original.metadata.uid.clone().unwrap();
    assert_eq!(
        original.metadata.annotations.as_ref().unwrap()["local-pv-provisioner.cybozu.io/wipe-bytes"],
        (3 * GIB).to_string()
    );

    server.set_pv_phase(&pv_name, "Released");
    eventually(
        "the wipe mark on the PV",
        Duration::from_secs(30),
        || async {
            let pv = pvs.get(&pv_name).await.ok()?;
            pv.metadata
                .annotations?
                .contains_key(WIPE_STARTED_AT)
                .then_some(())
        },
    )
    .await;
    let status = first.stop_with(signal);
    if signal == Signal::SIGTERM {
        assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
        assert!(
            first.log().contains("wipe cancelled by shutdown"),
            "the cancelled wipe is logged"
        );
    }

    // Interrupted mid-wipe: the start of the head is zeroed, its end is not yet.
    assert!(is_zero(&device, head_start), "the wipe had started");
    assert!(
        has_marker(&device, head_late),
        "the wipe was interrupted before the end of the head"
    );
    let after_kill = list().await;
    assert_eq!(
        after_kill.len(),
        1,
        "no PV handed out for the half-wiped device"
    );
    let pv = &after_kill[0];
    assert_eq!(
        pv.metadata.uid.as_deref(),
        Some(original_uid.as_str()),
        "the PV was not deleted"
    );
    assert_eq!(
        pv.status.as_ref().unwrap().phase.as_deref(),
        Some("Released")
    );
    let annotations = pv.metadata.annotations.clone().unwrap();
    assert_eq!(
        annotations[WIPE_STARTED_BY],
        format!("test-{node_name}"),
        "the mark names the pod"
    );

    let second = start();
    let fresh = eventually(
        "a fresh PV after the finished wipe",
        Duration::from_secs(60),
        || async {
            list()
                .await
                .into_iter()
                .find(|pv| pv.metadata.uid.as_deref() != Some(original_uid.as_str()))
        },
    )
    .await;
    assert!(
        !fresh
            .metadata
            .annotations
            .unwrap()
            .contains_key(WIPE_STARTED_AT),
        "the new PV carries no mark"
    );
    assert!(is_zero(&device, head_late), "the head is zeroed to its end");
    assert!(is_zero(&device, tail), "the tail is zeroed");
    assert!(
        has_marker(&device, untouched),
        "beyond the head and tail nothing changed"
    );
    assert!(
        second.log().contains("did not finish"),
        "the resumed wipe is logged"
    );
    assert_eq!(list().await.len(), 1);
}
