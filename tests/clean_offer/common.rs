//! What every clean-offer scenario shares: the names of the product's
//! contract (finalizer, annotations), a world with the fake's PV binder on,
//! tenant data written to and read back from device spans, the kernel's
//! write counter of a loop device, claims bound to one PV, and the waits and
//! Event checks the scenarios rest on.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use serde_json::json;

use crate::support::loop_device::LoopDevice;
use crate::support::provisioner::ProvisionerProcess;
use crate::support::world::World;
use crate::support::world::inspect::phase;
use crate::support::world::waits::{WAIT, eventually};

pub const MIB: u64 = 1024 * 1024;
pub const GIB: u64 = 1024 * MIB;

/// The finalizer every PV of the program carries.
pub const CLEANUP_FINALIZER: &str = "local-pv-provisioner.cybozu.io/cleanup";
/// Where the program records the claim it saw bound.
pub const CLAIMED_BY: &str = "local-pv-provisioner.cybozu.io/claimed-by";
/// Where the program records that it released a PV without a wipe.
pub const WIPE_SKIPPED: &str = "local-pv-provisioner.cybozu.io/wipe-skipped";

/// The byte a tenant writes.
pub const TENANT_BYTE: u8 = 0x5A;

/// A stretch of a device: `len` bytes at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub offset: u64,
    pub len: usize,
}

/// `len` bytes at `offset`.
pub fn span(offset: u64, len: u64) -> Span {
    Span {
        offset,
        len: usize::try_from(len).expect("a span fits in memory"),
    }
}

/// Writes [`TENANT_BYTE`] over every span of `device`, as a tenant would.
pub fn tenant_writes(device: &LoopDevice, spans: &[Span]) {
    for span in spans {
        device.write_at(span.offset, &vec![TENANT_BYTE; span.len]);
    }
}

/// Whether every byte of `span` of `device` is `value`.
pub fn span_holds(device: &LoopDevice, span: Span, value: u8) -> bool {
    device
        .read(span.offset, span.len)
        .iter()
        .all(|byte| *byte == value)
}

/// Whether every span of `device` reads zero.
pub fn spans_zeroed(device: &LoopDevice, spans: &[Span]) -> bool {
    spans.iter().all(|span| span_holds(device, *span, 0))
}

/// Writes completed on `device` since it was set up, as the kernel counts
/// them (`/sys/block/loopN/stat`, field 5): reads, probes and exclusive
/// opens leave it alone, any write to the device moves it.
pub fn writes_completed(device: &LoopDevice) -> u64 {
    let name = device.path.file_name().and_then(|n| n.to_str()).unwrap();
    let stat = std::fs::read_to_string(format!("/sys/block/{name}/stat")).expect("sysfs stat");
    stat.split_whitespace()
        .nth(4)
        .and_then(|field| field.parse().ok())
        .unwrap_or_else(|| panic!("no write counter in {stat:?}"))
}

/// Waits until the program counts a completed wipe. At least one, not
/// exactly one: a PV event the cache delivers after the release can make it
/// wipe the device a second time (a product bug, shown by `stale_cache`),
/// which must not make these tests flaky.
pub async fn wait_wiped(process: &ProvisionerProcess) {
    process
        .wait_sample_at_least(&process.sample("wipes_total"), 1.0)
        .await;
}

/// A world on the fake API server with its PV binder on: a claim naming a
/// PV binds to it, and a PV whose claim is deleted turns `Released`, as
/// the PV controller of a real cluster does.
pub async fn binding_world() -> World {
    let world = World::fake().await;
    world.server().set_pvc_binding(true);
    world
}

/// Attaches a sparse (blank) device of `size` bytes linked as `entry`.
pub fn blank_disk(world: &World, entry: &str, size: u64) -> Arc<LoopDevice> {
    let device = world.attach(size);
    world.link(entry, &device);
    device
}

/// A scenario on one blank device `disk0` of Node `node`: a Block spec
/// with `wipeBytes`, the program started, the device's PV `Available`.
/// The process is dropped (killed) before the world (its devices).
pub struct OneDisk {
    pub process: ProvisionerProcess,
    pub world: World,
    pub disk: Arc<LoopDevice>,
    /// The PV's name, `local-<node>-disk0`.
    pub name: String,
    /// The PV's UID.
    pub uid: String,
}

/// Sets up a [`OneDisk`]: `size` bytes, `wipe_bytes`, the program started
/// with `env`.
pub async fn one_disk(
    node: &str,
    size: u64,
    wipe_bytes: &str,
    env: Vec<(&str, String)>,
) -> OneDisk {
    one_disk_with(node, size, &[("wipeBytes", wipe_bytes)], env).await
}

/// Sets up a [`OneDisk`] of `size` bytes whose spec has the extra `keys`,
/// the program started with `env`.
pub async fn one_disk_with(
    node: &str,
    size: u64,
    keys: &[(&str, &str)],
    env: Vec<(&str, String)>,
) -> OneDisk {
    let world = binding_world().await;
    let disk = blank_disk(&world, "disk0", size);
    let mut spec = world.block_spec(".*");
    for (key, value) in keys {
        spec.insert(key.to_string(), value.to_string());
    }
    world.put_configmap("spec", spec).await;
    world.add_node(node, Some("spec")).await;
    let process = world.start(node, env);
    let name = format!("local-{node}-disk0");
    let pv = wait_available(&world, &name).await;
    assert!(
        has_finalizer(&pv, CLEANUP_FINALIZER),
        "created with it: {pv:?}"
    );
    OneDisk {
        process,
        world,
        disk,
        name,
        uid: pv.uid().expect("a UID"),
    }
}

impl OneDisk {
    /// The PV as it is now.
    pub async fn pv(&self) -> PersistentVolume {
        self.world.pv(&self.name).await.expect("the PV exists")
    }

    /// Its parts: process, world, device, PV name, PV UID.
    pub fn parts(self) -> (ProvisionerProcess, World, Arc<LoopDevice>, String, String) {
        (self.process, self.world, self.disk, self.name, self.uid)
    }
}

/// Waits until PV `name` exists and is `Available`.
pub async fn wait_available(world: &World, name: &str) -> PersistentVolume {
    eventually(&format!("PV {name} Available"), WAIT, || async {
        let pv = world.pv(name).await?;
        (phase(&pv) == "Available").then_some(pv)
    })
    .await
}

/// Waits until PV `name` exists with a UID other than `old_uid`.
pub async fn wait_recreated(world: &World, name: &str, old_uid: &str) -> PersistentVolume {
    eventually(&format!("PV {name} made again"), WAIT, || async {
        let pv = world.pv(name).await?;
        (pv.uid().as_deref() != Some(old_uid)).then_some(pv)
    })
    .await
}

/// Waits until PV `name` is gone.
pub async fn wait_gone(world: &World, name: &str) {
    eventually(&format!("PV {name} gone"), WAIT, || async {
        world.pv(name).await.is_none().then_some(())
    })
    .await;
}

/// Waits until PV `name` holds `check`; returns it.
pub async fn wait_pv(
    world: &World,
    name: &str,
    what: &str,
    check: impl Fn(&PersistentVolume) -> bool,
) -> PersistentVolume {
    eventually(&format!("PV {name}: {what}"), WAIT, || async {
        world.pv(name).await.filter(|pv| check(pv))
    })
    .await
}

/// Whether `pv` carries finalizer `finalizer`.
pub fn has_finalizer(pv: &PersistentVolume, finalizer: &str) -> bool {
    pv.finalizers().iter().any(|f| f == finalizer)
}

/// Annotation `key` of `pv`.
pub fn annotation<'a>(pv: &'a PersistentVolume, key: &str) -> Option<&'a str> {
    pv.annotations().get(key).map(String::as_str)
}

/// Creates claim `claim` in the world's namespace for PV `pv` (its class,
/// mode and capacity), which the fake's binder binds to it; waits until the
/// program has recorded the claim on the PV (the sign that it saw it Bound).
pub async fn claim_and_wait(world: &World, claim: &str, pv: &PersistentVolume) {
    let spec = pv.spec.clone().expect("a PV spec");
    let capacity = spec.capacity.expect("a capacity")["storage"].0.clone();
    let object = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim, "namespace": world.namespace()},
        "spec": {
            "storageClassName": spec.storage_class_name,
            "volumeMode": spec.volume_mode,
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": capacity}},
            "volumeName": pv.name_any(),
        },
    });
    world.create::<PersistentVolumeClaim>(object).await;
    let recorded = format!("{}/{claim}", world.namespace());
    wait_pv(world, &pv.name_any(), "its claim recorded", |pv| {
        phase(pv) == "Bound" && annotation(pv, CLAIMED_BY) == Some(recorded.as_str())
    })
    .await;
}

/// Deletes PV `name` the way `kubectl delete pv` does: a DELETE through the
/// client, without preconditions.
pub async fn delete_by_hand(world: &World, name: &str) {
    world.delete::<PersistentVolume>(None, name, None).await;
}

/// Sets a label on PV `name` that means nothing to the program: a change
/// that makes it look at the PV again.
pub async fn touch_pv(world: &World, name: &str) {
    world
        .modify::<PersistentVolume>(None, name, |pv| {
            pv["metadata"]["labels"]["test-touch"] = json!("1");
        })
        .await;
}

/// The Events with `reason` about the `kind` named `name`.
pub async fn events_with(world: &World, reason: &str, kind: &str, name: &str) -> Vec<Event> {
    world
        .events_about(kind, name)
        .await
        .into_iter()
        .filter(|event| event.reason.as_deref() == Some(reason))
        .collect()
}

/// How many times `events` were published: kube's recorder publishes a
/// repeat of an Event (same reason, action and object, whatever the note)
/// as a `series` on the first one.
pub fn publishes(events: &[Event]) -> i32 {
    events
        .iter()
        .map(|event| event.series.as_ref().map_or(1, |series| series.count))
        .sum()
}

/// Waits until Events `reason` about `kind` `name` were published at least
/// `count` times; returns them.
pub async fn wait_for_publishes(
    world: &World,
    reason: &str,
    kind: &str,
    name: &str,
    count: i32,
) -> Vec<Event> {
    let what = format!("{count} {reason} published about {kind} {name}");
    eventually(&what, WAIT, || async {
        let events = events_with(world, reason, kind, name).await;
        (publishes(&events) >= count).then_some(events)
    })
    .await
}

/// The one Event `reason` about `kind` `name`; fails when there are
/// several, or when the one was repeated (kube's recorder turns a repeat
/// into a `series` on the same Event).
pub async fn reported_once(world: &World, reason: &str, kind: &str, name: &str) -> Event {
    let mut events = events_with(world, reason, kind, name).await;
    assert_eq!(
        events.len(),
        1,
        "one {reason} about {kind} {name}: {events:#?}"
    );
    let event = events.remove(0);
    assert!(
        event.series.is_none(),
        "{reason} about {kind} {name} was repeated: {:?}",
        event.series
    );
    event
}
