//! Lifecycle policies on a real device: a PV released under `Keep` keeps
//! its data until an admin asks for a wipe (and a later ConfigMap edit does
//! not change its fate); a `Full` wipe zeroes every byte of a device that
//! is random from end to end, reporting its progress; a wipe killed with
//! SIGKILL resumes from its recorded offset after a restart; a device that
//! goes missing mid-wipe stops the wipe and nothing is released.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::ResourceExt;
use kube::runtime::{WatchStreamExt, watcher};
use nix::sys::signal::Signal;

use crate::common::*;
use crate::support::loop_device::LoopDevice;
use crate::support::world::inspect::phase;
use crate::support::world::waits::{WAIT, eventually};
use crate::support::world::{QUICK_POLLING, World, polling};

const PROGRESS: &str = "local-pv-provisioner.cybozu.io/wipe-progress";
const WIPE_REQUESTED: &str = "local-pv-provisioner.cybozu.io/wipe-requested";
const CLAIM: &str = "data";
/// Size of the full-wipe devices.
const FULL_SIZE: u64 = 256 * MIB;

/// Spans a tenant writes on a kept device.
fn tenant_spans() -> Vec<Span> {
    vec![
        span(0, MIB),
        span(40 * MIB, MIB),
        span(64 * MIB - 4096, 4096),
    ]
}

/// Writes pseudo-random bytes over every byte of `device` (xorshift, so
/// no run of zeros a wipe could be credited with).
fn randomize(device: &LoopDevice, size: u64) {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut chunk = vec![0u8; MIB as usize];
    for offset in (0..size).step_by(MIB as usize) {
        for word in chunk.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&(state | 1).to_le_bytes());
        }
        device.write_at(offset, &chunk);
    }
}

/// Releases the PV of `setup` (its claim deleted) and waits for `Released`.
async fn release(world: &World, name: &str) {
    world.delete_claim(CLAIM).await;
    wait_pv(world, name, "Released", |pv| phase(pv) == "Released").await;
}

/// Collects every value of the `wipe-progress` annotation PV `name` shows.
fn watch_progress(world: &World, name: &str) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let api: kube::Api<PersistentVolume> = kube::Api::all(world.client().clone());
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut events = watcher(api, config).default_backoff().boxed();
        while let Some(event) = events.next().await {
            let objects = match event {
                Ok(watcher::Event::Apply(pv) | watcher::Event::InitApply(pv)) => vec![pv],
                _ => continue,
            };
            for pv in objects {
                if let Some(value) = annotation(&pv, PROGRESS) {
                    let mut seen = log.lock().unwrap();
                    if seen.last().map(String::as_str) != Some(value) {
                        seen.push(value.to_string());
                    }
                }
            }
        }
    });
    seen
}

/// `DONE` of a `DONE/TOTAL` progress value.
fn done_of(value: &str) -> u64 {
    value.split('/').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_pv_holds_its_data_until_a_wipe_is_requested() {
    let setup = one_disk_with(
        "node-keep",
        64 * MIB,
        &[("releasePolicy", "Keep")],
        vec![polling(QUICK_POLLING)],
    )
    .await;
    let pv = setup.pv().await;
    assert_eq!(
        annotation(&pv, "local-pv-provisioner.cybozu.io/release-policy"),
        Some("Keep")
    );
    claim_and_wait(&setup.world, CLAIM, &pv).await;
    tenant_writes(&setup.disk, &tenant_spans());
    let (process, world, disk, name, uid) = setup.parts();
    release(&world, &name).await;
    world
        .wait_for_event_about("Kept", "PersistentVolume", &name)
        .await;
    process.wait_metric("kept_pvs", 1.0).await;

    // The ConfigMap now says Wipe: PVs made under Keep keep their fate.
    let mut spec = world.block_spec(".*");
    spec.insert("releasePolicy".into(), "Wipe".into());
    world.put_configmap("spec", spec).await;
    process.wait_for_fresh_passes(3).await;
    let kept = world.pv(&name).await.expect("still there");
    assert_eq!(kept.uid().as_deref(), Some(uid.as_str()), "the same PV");
    assert_eq!(phase(&kept), "Released");
    assert!(kept.metadata.deletion_timestamp.is_none(), "never deleted");
    assert!(
        tenant_spans()
            .iter()
            .all(|s| span_holds(&disk, *s, TENANT_BYTE)),
        "the data is intact"
    );
    assert_eq!(process.value("wipes_total").await, Some(0.0));

    // The admin asks for the wipe: wiped, then offered again.
    world
        .modify::<PersistentVolume>(None, &name, |pv| {
            pv["metadata"]["annotations"][WIPE_REQUESTED] = serde_json::json!("true");
        })
        .await;
    let fresh = wait_recreated(&world, &name, &uid).await;
    assert_eq!(
        annotation(&fresh, "local-pv-provisioner.cybozu.io/release-policy"),
        Some("Wipe"),
        "the new PV takes the policy in force now"
    );
    process.wait_metric("kept_pvs", 0.0).await;
    assert!(spans_zeroed(&disk, &tenant_spans()), "wiped before it went");
    drop(process);
    world.teardown().await;
}

/// A device of [`FULL_SIZE`] with a `Full` wipe limited to `bandwidth`,
/// bound, random from end to end, then released: the wipe runs.
async fn full_wipe_running(node: &str, bandwidth: &str) -> (OneDisk, Arc<Mutex<Vec<String>>>) {
    let setup = one_disk_with(
        node,
        FULL_SIZE,
        &[("wipeMode", "Full"), ("wipeBandwidth", bandwidth)],
        vec![polling(QUICK_POLLING)],
    )
    .await;
    let pv = setup.pv().await;
    claim_and_wait(&setup.world, CLAIM, &pv).await;
    randomize(&setup.disk, FULL_SIZE);
    let progress = watch_progress(&setup.world, &setup.name);
    release(&setup.world, &setup.name).await;
    (setup, progress)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_wipe_zeroes_every_byte_and_reports_progress() {
    let (setup, progress) = full_wipe_running("node-full", "64Mi").await;
    let (process, world, disk, name, uid) = setup.parts();
    world
        .wait_for_event_about("WipeStarted", "PersistentVolume", &name)
        .await;
    wait_recreated(&world, &name, &uid).await;
    let seen = progress.lock().unwrap().clone();
    let partial = seen
        .iter()
        .filter(|value| done_of(value) < FULL_SIZE)
        .count();
    assert!(
        partial >= 2,
        "progress reported at least twice on the way: {seen:?}"
    );
    for pair in seen.windows(2) {
        assert!(
            done_of(&pair[0]) <= done_of(&pair[1]),
            "progress only grows: {seen:?}"
        );
    }
    assert!(disk.holds_only(0), "every byte of the device reads zero");
    let wiped = world
        .wait_for_event_about("Wiped", "PersistentVolume", &name)
        .await;
    assert!(
        wiped
            .note
            .unwrap_or_default()
            .contains(&format!("0..{FULL_SIZE}")),
        "the whole device"
    );
    drop(process);
    world.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wipe_killed_mid_way_resumes_from_its_recorded_offset() {
    let (setup, progress) = full_wipe_running("node-resume", "32Mi").await;
    let (mut process, world, disk, name, uid) = setup.parts();
    let recorded = eventually("a quarter of the device recorded", WAIT, || async {
        let last = progress.lock().unwrap().last().cloned()?;
        (done_of(&last) >= FULL_SIZE / 4).then_some(last)
    })
    .await;
    process.stop_with(Signal::SIGKILL);
    // What the PV records once the process is gone (nothing writes now).
    let recorded = world
        .pv(&name)
        .await
        .and_then(|pv| annotation(&pv, PROGRESS).map(str::to_string))
        .unwrap_or(recorded);
    let offset = done_of(&recorded);
    assert!(
        offset > 0 && offset < FULL_SIZE,
        "killed mid-wipe at {recorded}"
    );
    assert!(
        world.pv(&name).await.is_some(),
        "not released: the wipe is not done"
    );

    let restarted = world.start("node-resume", vec![polling(QUICK_POLLING)]);
    let started = eventually("the resumed wipe's WipeStarted Event", WAIT, || async {
        world
            .events_about("PersistentVolume", &name)
            .await
            .into_iter()
            .filter(|event| event.reason.as_deref() == Some("WipeStarted"))
            .filter_map(|event| event.note)
            .find(|note| note.contains("resuming"))
    })
    .await;
    assert!(
        started.contains(&format!(
            "resuming from the recorded progress at byte {offset} of {FULL_SIZE}"
        )),
        "resumed from the recorded offset, not from 0: {started}"
    );
    wait_recreated(&world, &name, &uid).await;
    let after: Vec<u64> = progress
        .lock()
        .unwrap()
        .iter()
        .map(|value| done_of(value))
        .skip_while(|done| *done != offset)
        .collect();
    assert!(
        after
            .iter()
            .all(|done| *done >= offset - offset % (32 * MIB)),
        "never back to 0 after the restart: {after:?}"
    );
    assert!(disk.holds_only(0), "every byte of the device reads zero");
    drop(restarted);
    world.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_gone_mid_wipe_stops_the_wipe_and_nothing_is_released() {
    let (setup, progress) = full_wipe_running("node-vanish", "16Mi").await;
    let (process, world, _disk, name, uid) = setup.parts();
    eventually("the wipe under way", WAIT, || async {
        progress.lock().unwrap().first().map(|_| ())
    })
    .await;
    world.unlink("disk0");
    let refused = world
        .wait_for_event_about("WipeRefused", "PersistentVolume", &name)
        .await;
    let note = refused.note.unwrap_or_default();
    assert!(
        note.contains("SameDevice") && note.contains("mid-wipe"),
        "{note}"
    );
    process.wait_for_fresh_passes(3).await;
    let pv = world.pv(&name).await.expect("not released");
    assert_eq!(pv.uid().as_deref(), Some(uid.as_str()));
    assert!(
        has_finalizer(&pv, CLEANUP_FINALIZER),
        "the finalizer holds it"
    );
    assert_eq!(process.value("wipes_total").await, Some(0.0));
    drop(process);
    world.teardown().await;
}
