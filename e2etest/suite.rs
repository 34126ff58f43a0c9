//! End-to-end suite of `local-pv-provisioner`: one whole lifecycle of the
//! real binary, run out of cluster for a Node object the suite creates,
//! against a Kubernetes API server and controller-manager, on real loop
//! devices of this machine. `e2etest/README.md` says how to run it.
//!
//! **Mode.** The test world (`tests/support/world`) picks it: with
//! `LPP_E2E_KUBECONFIG=<path>` the suite talks to that cluster (the
//! kubeconfig's current context); it needs kube-apiserver and
//! kube-controller-manager only (no kubelet, no scheduler). Without it (CI)
//! it starts the project's fake API server (`tests/support/fake_api`) with
//! its controller-manager emulation and its PV binder on, and plays nothing
//! by hand: PV phases, binding, release, protection finalizers, garbage
//! collection and namespace cleanup all come from the emulation.
//!
//! **Safety.** Against a real cluster the world refuses to run while the
//! cluster has Nodes it did not create, unless
//! `LPP_E2E_ALLOW_FOREIGN_NODES=1`. It names everything it creates
//! `lpp-e2e-<random suffix>…` and labels it with the world's run label; it
//! deletes only what it created (UID preconditions), the PVs the provisioner
//! made for its own Nodes, and the loop devices it attached.
//!
//! **Phases** (`lifecycle`), each announced by a progress line on stderr
//! (written past the test harness's capture):
//! 1. setup: loop devices linked into a device directory, a namespace, a
//!    StorageClass (`kubernetes.io/no-provisioner`, `Immediate`), a PV spec
//!    ConfigMap, a Node, and the provisioner for that Node;
//! 2. a PV per device (the devices blank, as only a blank device is
//!    offered), with the documented shape, the provisioner's finalizer and
//!    an ownerReference to the Node's live UID (`checks`, `shape`);
//! 3. a claim of the storage class binds (PVC and PV `Bound`) and the
//!    provisioner records it on the PV (`claimed-by`);
//! 4. the tenant's data and markers written through the bound block device
//!    read back;
//! 5. the claim deleted: the PV turns `Released`, is deleted and stays
//!    Terminating under the provisioner's finalizer (seen by `history`'s
//!    watch) while the device's first 100 MiB and last 1 MiB are zeroed (the
//!    rest intact), then goes, and a fresh PV for the device comes back
//!    `Available`;
//! 6. a second Node annotated with a ConfigMap holding `volumeMode: Sideways`
//!    is paused: a Warning Event `PVSpecInvalid` about it, and, over three
//!    whole reconcile passes (the `reconciles_total` counter), no PV created
//!    for a new device and its `Released` PV neither deleted nor wiped;
//!    fixing the annotation resumes it;
//! 7. both Nodes deleted: their PVs are garbage-collected, the provisioners
//!    releasing them without a wipe (never claimed since their last wipe).
//!
//! **Cleanup** runs whatever happens: after the phases, on SIGINT/SIGTERM,
//! and from the world's `Drop` when a check panics. Provisioners are stopped,
//! cluster objects deleted in reverse order of creation (NotFound is fine),
//! leftover PVs of the suite's Nodes deleted and released from the
//! provisioner's finalizer, then the loop devices detached.
//!
//! Every wait polls every 50 ms up to the world's generous limit; none
//! asserts a duration, and none sleeps to let something happen.

#[path = "../tests/support/mod.rs"]
mod support;

mod checks;
mod history;
mod lifecycle;
mod shape;

use support::world::World;

/// The whole lifecycle, against the fake API server or the cluster named by
/// `LPP_E2E_KUBECONFIG`. Needs root for the loop devices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle() {
    run(Scenario::Lifecycle).await;
}

/// A wipe the provisioner runs itself is not a problem with the device: no
/// `DeviceSkipped` Warning Event about the Node while its own wipe holds the
/// device's lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_wipe_is_not_a_skipped_device() {
    run(Scenario::OwnWipe).await;
}

/// What one test runs between setup and cleanup.
#[derive(Debug, Clone, Copy)]
enum Scenario {
    /// [`lifecycle::lifecycle`].
    Lifecycle,
    /// [`lifecycle::own_wipe`].
    OwnWipe,
}

/// Runs `scenario` in a fresh end-to-end world, then cleans up; fails on a
/// failed check, on a cleanup that left something behind, and on
/// SIGINT/SIGTERM (after cleaning up).
async fn run(scenario: Scenario) {
    let world = World::from_env().await;
    let checks = async {
        match scenario {
            Scenario::Lifecycle => lifecycle::lifecycle(&world).await,
            Scenario::OwnWipe => lifecycle::own_wipe(&world).await,
        }
    };
    let interrupted = tokio::select! {
        () = checks => None,
        signal = interruption() => Some(signal),
    };
    if let Some(signal) = interrupted {
        world.progress(&format!("{signal} received: stopping"));
    }
    let problems = world.teardown().await;
    assert!(
        problems.is_empty(),
        "cleanup left things behind:\n{}",
        problems.join("\n")
    );
    if let Some(signal) = interrupted {
        panic!("interrupted by {signal}; everything the suite made is removed");
    }
}

/// Resolves on SIGINT or SIGTERM, naming the signal.
async fn interruption() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}
