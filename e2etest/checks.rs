//! The suite's checks that more than one phase uses: PVs appearing with
//! their documented shape, a claim and a PV bound to each other, a device
//! wiped at head and tail only.

use std::collections::BTreeSet;
use std::path::Path;

use k8s_openapi::api::core::v1::{Node, PersistentVolume};
use kube::ResourceExt;

use crate::shape::{HEAD_BYTES, MIB, all, assert_pv_shape, expected_pv, read_through};
use crate::support::loop_device::{FILL_BYTE, LoopDevice};
use crate::support::world::inspect::{claim_phase, phase};
use crate::support::world::waits::{WAIT, eventually};
use crate::support::world::{CLAIMED_BY_ANNOTATION, World};

/// Bytes a wipe zeroes at the tail of a device.
const TAIL_BYTES: u64 = MIB;

/// Waits for one Available PV per device of `node` (entries linked in
/// `dir`) and checks each one's shape; returns them in the order of
/// `devices`.
pub async fn check_pvs_appear(
    world: &World,
    node: &Node,
    dir: &Path,
    devices: &[(&str, &LoopDevice)],
) -> Vec<PersistentVolume> {
    let node_name = node.name_any();
    let names: BTreeSet<String> = devices
        .iter()
        .map(|(entry, _)| format!("local-{node_name}-{entry}"))
        .collect();
    let pvs = eventually(&format!("the Available PVs {names:?}"), WAIT, || async {
        let pvs = world.pvs_of(&node_name).await;
        let found: BTreeSet<String> = pvs.iter().map(ResourceExt::name_any).collect();
        (found == names && pvs.iter().all(|pv| phase(pv) == "Available")).then_some(pvs)
    })
    .await;
    devices
        .iter()
        .map(|(entry, device)| {
            let expected = expected_pv(node, dir, entry, device, world.run());
            let pv = pvs
                .iter()
                .find(|pv| pv.name_any() == expected["metadata"]["name"])
                .expect("listed")
                .clone();
            assert_pv_shape(&pv, &expected);
            pv
        })
        .collect()
}

/// Waits until claim `name` and PV `pv` are bound to each other, and the
/// provisioner has recorded the claim on the PV (`claimed-by`).
pub async fn check_bound(world: &World, name: &str, pv: &str) {
    let claim = eventually(&format!("claim {name} Bound to {pv}"), WAIT, || async {
        let claim = world.claim(name).await?;
        let volume = claim.spec.as_ref()?.volume_name.as_deref();
        (claim_phase(&claim) == "Bound" && volume == Some(pv)).then_some(claim)
    })
    .await;
    let claim_uid = claim.uid();
    eventually(&format!("PV {pv} Bound to claim {name}"), WAIT, || async {
        let volume = world.pv(pv).await?;
        let claim_ref = volume.spec.as_ref()?.claim_ref.as_ref()?;
        (phase(&volume) == "Bound" && claim_ref.uid == claim_uid).then_some(())
    })
    .await;
    let recorded = format!("{}/{name}", world.namespace());
    eventually(
        &format!("claim {recorded} recorded on PV {pv}"),
        WAIT,
        || async {
            let volume = world.pv(pv).await?;
            let claimed = volume.annotations().get(CLAIMED_BY_ANNOTATION)?;
            (*claimed == recorded).then_some(())
        },
    )
    .await;
}

/// The head of `device` (the first 100 MiB) and its last MiB are zero, the
/// bytes between them as before, the kept marker included; `path` is the
/// device's link, read through the block device.
pub fn check_wiped(device: &LoopDevice, size: u64, path: &Path, kept_marker: &[u8]) {
    assert!(
        all(&read_through(path, 0, 4096), 0),
        "the head marker is gone (read through the block device)"
    );
    assert!(
        all(&device.read(0, HEAD_BYTES as usize), 0),
        "the first 100 MiB are zeroed"
    );
    let middle = device.read(HEAD_BYTES, (size - HEAD_BYTES - TAIL_BYTES) as usize);
    assert_eq!(
        &middle[..kept_marker.len()],
        kept_marker,
        "the marker at 100 MiB is intact"
    );
    assert!(
        all(&middle[kept_marker.len()..], FILL_BYTE),
        "the bytes from 100 MiB to the last MiB are intact"
    );
    assert!(
        all(&device.read(size - TAIL_BYTES, TAIL_BYTES as usize), 0),
        "the last MiB is zeroed"
    );
}

/// Waits until PV `name` is Available again under a UID other than `old`:
/// the released PV was replaced by a fresh one.
pub async fn wait_for_fresh_pv(world: &World, name: &str, old: Option<String>) -> PersistentVolume {
    eventually(&format!("a fresh PV {name}, Available"), WAIT, || async {
        let fresh = world.pv(name).await?;
        (fresh.uid() != old && phase(&fresh) == "Available").then_some(fresh)
    })
    .await
}
