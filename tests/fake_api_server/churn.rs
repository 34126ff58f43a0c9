//! The real server's churn (issue 19), checked through kube's real client:
//! the emulated PV controller moves new PVs to `Available` one status write
//! per PV, each with its own resourceVersion and MODIFIED event, spread in
//! time at kube-controller-manager's pace (or all at once in the old batch
//! mode); every object returned by GET and LIST and streamed by a watch
//! carries `metadata.managedFields` like a real server's; a PV has no
//! `generation` and gets `lastPhaseTransitionTime`; and the write that
//! removes an object's last finalizer deletes it with one DELETED event,
//! never a MODIFIED showing the finalizer gone.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::WatchParams;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent};
use kube::runtime::watcher;
use serde_json::{Value, json};

use crate::client::{eventually, is_init_done, local_pv, pv_phase, raw, watch_until};
use crate::support::fake_api::{FakeApiServer, PvPhases};

/// A finalizer of the writer's own.
const OURS: &str = "example.com/cleanup";

/// Every PV event of a raw watch from `rv` that `keep` accepts, with the
/// time it arrived, until `done` says so (10 s limit).
async fn pv_events(
    pvs: &Api<PersistentVolume>,
    rv: &str,
    mut done: impl FnMut(&[(Instant, WatchEvent<PersistentVolume>)]) -> bool,
) -> Vec<(Instant, WatchEvent<PersistentVolume>)> {
    let mut stream = pvs
        .watch(&WatchParams::default().timeout(20), rv)
        .await
        .unwrap()
        .boxed();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while !done(&seen) {
        let event = tokio::time::timeout_at(deadline, stream.try_next())
            .await
            .unwrap_or_else(|_| panic!("timed out; {} events seen", seen.len()))
            .unwrap()
            .expect("the watch ended");
        if !matches!(event, WatchEvent::Bookmark(_)) {
            seen.push((Instant::now(), event));
        }
    }
    seen
}

fn phase(pv: &PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The MODIFIED events that made a PV Available: (when, name, rv).
fn settled(events: &[(Instant, WatchEvent<PersistentVolume>)]) -> Vec<(Instant, String, String)> {
    events
        .iter()
        .filter_map(|(at, e)| match e {
            WatchEvent::Modified(pv) if phase(pv) == "Available" => Some((
                *at,
                pv.metadata.name.clone().unwrap(),
                pv.metadata.resource_version.clone().unwrap(),
            )),
            _ => None,
        })
        .collect()
}

async fn create_pvs(pvs: &Api<PersistentVolume>, count: usize) -> String {
    let mut first_rv = None;
    for index in 0..count {
        let pv = pvs
            .create(
                &PostParams::default(),
                &local_pv(&format!("pv{index:02}"), "n1"),
            )
            .await
            .unwrap();
        first_rv.get_or_insert(pv.metadata.resource_version.unwrap());
    }
    // From just before the first create.
    (first_rv.unwrap().parse::<u64>().unwrap() - 1).to_string()
}

#[tokio::test]
async fn one_status_write_per_pv_spread_at_the_controller_managers_pace() {
    let server = FakeApiServer::start().await;
    let pvs: Api<PersistentVolume> = Api::all(server.client().await);
    let count = 40;
    let since = create_pvs(&pvs, count).await;
    let events = pv_events(&pvs, &since, |seen| settled(seen).len() == count).await;
    let writes = settled(&events);
    // One write, one resourceVersion, one MODIFIED per PV.
    let names: HashSet<&String> = writes.iter().map(|(_, n, _)| n).collect();
    let rvs: HashSet<&String> = writes.iter().map(|(_, _, rv)| rv).collect();
    assert_eq!((names.len(), rvs.len()), (count, count));
    let modified = events
        .iter()
        .filter(|(_, e)| matches!(e, WatchEvent::Modified(_)))
        .count();
    assert_eq!(modified, count, "nothing but the phase writes");
    // 20 a second after a burst of 30: the last 10 take about half a second.
    let spread = writes.last().unwrap().0 - writes.first().unwrap().0;
    assert!(
        spread >= Duration::from_millis(400),
        "40 phases settled within {spread:?}"
    );

    // The controller-manager's entry: the status subresource, the phase.
    let pv = pvs.get("pv00").await.unwrap();
    let managed = serde_json::to_value(pv.metadata.managed_fields.unwrap()).unwrap();
    let status_entry = managed
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "kube-controller-manager")
        .expect("kube-controller-manager's entry")
        .clone();
    assert_eq!(status_entry["operation"], "Update");
    assert_eq!(status_entry["subresource"], "status");
    assert_eq!(
        status_entry["fieldsV1"],
        json!({"f:status": {"f:phase": {}}})
    );
    let status = pv.status.unwrap();
    assert!(status.last_phase_transition_time.is_some());
}

#[tokio::test]
async fn a_slow_pace_spreads_few_pvs_and_batch_settles_at_once() {
    let server = FakeApiServer::start().await;
    let pvs: Api<PersistentVolume> = Api::all(server.client().await);
    server.set_pv_phases(PvPhases::Paced {
        per_second: 10.0,
        burst: 1,
    });
    let since = create_pvs(&pvs, 5).await;
    let events = pv_events(&pvs, &since, |seen| settled(seen).len() == 5).await;
    let writes = settled(&events);
    let spread = writes.last().unwrap().0 - writes.first().unwrap().0;
    assert!(spread >= Duration::from_millis(350), "{spread:?}");
    let order: Vec<&str> = writes.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(order, ["pv00", "pv01", "pv02", "pv03", "pv04"], "in order");

    // The old emulation: every pending PV in one pass, still one write each.
    server.set_pv_phases(PvPhases::Batch);
    server.set_controller_emulation(false);
    let more: Vec<String> = (10..20).map(|i| format!("pv{i}")).collect();
    for name in &more {
        pvs.create(&PostParams::default(), &local_pv(name, "n1"))
            .await
            .unwrap();
    }
    let since = server.resource_version().to_string();
    server.set_controller_emulation(true);
    let events = pv_events(&pvs, &since, |seen| settled(seen).len() == 10).await;
    let writes = settled(&events);
    let rvs: HashSet<&String> = writes.iter().map(|(_, _, rv)| rv).collect();
    assert_eq!(rvs.len(), 10);
    let spread = writes.last().unwrap().0 - writes.first().unwrap().0;
    assert!(spread < Duration::from_millis(100), "{spread:?}");
}

/// The provisioner's part of a PV's managedFields: its create.
fn creators_fields() -> Value {
    json!({
        "f:spec": {
            "f:accessModes": {},
            "f:capacity": {".": {}, "f:storage": {}},
            "f:local": {".": {}, "f:path": {}},
            "f:nodeAffinity": {".": {}, "f:required": {}},
            "f:storageClassName": {},
        },
        "f:metadata": {
            "f:finalizers": {".": {}, format!("v:\"{OURS}\""): {}},
            "f:labels": {".": {}, "f:app": {}},
        },
    })
}

fn entry<'a>(pv: &'a Value, manager: &str) -> &'a Value {
    pv["metadata"]["managedFields"]
        .as_array()
        .unwrap_or_else(|| panic!("no managedFields in {pv}"))
        .iter()
        .find(|e| e["manager"] == manager)
        .unwrap_or_else(|| panic!("no entry of {manager} in {pv}"))
}

#[tokio::test]
async fn managed_fields_on_get_list_and_watch() {
    let server = FakeApiServer::start().await;
    let client = server.client().await;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let mut stream = watcher(pvs.clone(), watcher::Config::default()).boxed();
    watch_until(&mut stream, is_init_done).await;

    let mut pv = local_pv("pv1", "n1");
    pv.metadata.labels = Some([("app".to_string(), "x".to_string())].into());
    pv.metadata.finalizers = Some(vec![OURS.into()]);
    let params = PostParams {
        field_manager: Some("provisioner".into()),
        ..PostParams::default()
    };
    let created = serde_json::to_value(pvs.create(&params, &pv).await.unwrap()).unwrap();
    let mine = entry(&created, "provisioner");
    assert_eq!(mine["operation"], "Update");
    assert_eq!(mine["apiVersion"], "v1");
    assert_eq!(mine["fieldsType"], "FieldsV1");
    assert!(mine["time"].as_str().unwrap().ends_with('Z'));
    // Not the finalizer admission added, not the status the strategy set.
    assert_eq!(mine["fieldsV1"], creators_fields());
    assert!(
        created["metadata"].get("generation").is_none(),
        "a PV has none"
    );
    assert!(created["status"]["lastPhaseTransitionTime"].is_string());
    eventually("PV Available", || {
        pv_phase(&server, "pv1").as_deref() == Some("Available")
    })
    .await;

    // An annotation patch by another manager: its own entry.
    let patch = Patch::Merge(json!({"metadata": {"annotations": {"example.com/note": "n"}}}));
    let params = PatchParams {
        field_manager: Some("annotator".into()),
        ..PatchParams::default()
    };
    pvs.patch("pv1", &params, &patch).await.unwrap();
    let got = serde_json::to_value(pvs.get("pv1").await.unwrap()).unwrap();
    assert_eq!(
        entry(&got, "annotator")["fieldsV1"],
        json!({"f:metadata": {"f:annotations": {".": {}, "f:example.com/note": {}}}})
    );
    assert_eq!(entry(&got, "provisioner")["fieldsV1"], creators_fields());
    assert_eq!(
        entry(&got, "kube-controller-manager")["subresource"],
        "status"
    );

    let listed = pvs.list(&ListParams::default()).await.unwrap();
    let listed = serde_json::to_value(&listed.items[0]).unwrap();
    assert_eq!(
        listed["metadata"]["managedFields"],
        got["metadata"]["managedFields"]
    );

    // Every watch event carried them: the create, the phase, the patch.
    let mut events = Vec::new();
    while events.len() < 3 {
        let next = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("watch events")
            .unwrap()
            .unwrap();
        if let watcher::Event::Apply(pv) = next {
            events.push(serde_json::to_value(pv).unwrap());
        }
    }
    let managers = |pv: &Value| -> Vec<String> {
        pv["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(managers(&events[0]), ["provisioner"]);
    assert_eq!(
        managers(&events[1]),
        ["provisioner", "kube-controller-manager"]
    );
    assert_eq!(
        managers(&events[2]),
        ["provisioner", "kube-controller-manager", "annotator"]
    );
    assert_eq!(
        events[2]["metadata"]["managedFields"],
        got["metadata"]["managedFields"]
    );

    // The raw JSON of a GET: every field the real server returns.
    let text = raw(
        &client,
        "GET",
        "/api/v1/persistentvolumes/pv1",
        "application/json",
        "",
    )
    .await
    .unwrap();
    let raw_pv: Value = serde_json::from_str(&text).unwrap();
    for field in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
    ] {
        assert!(raw_pv["metadata"].get(field).is_some(), "{field} in {text}");
    }

    // Switched off (the old fake): new objects carry none.
    server.set_managed_fields(false);
    let plain = pvs
        .create(&PostParams::default(), &local_pv("pv2", "n1"))
        .await
        .unwrap();
    assert!(plain.metadata.managed_fields.is_none());
}

/// Removes [`OURS`] (at `index`) with a JSON patch, as kube-runtime's
/// finalizer helper does; returns the answer.
async fn remove_ours(client: &kube::Client, index: usize) -> Value {
    let path = format!("/metadata/finalizers/{index}");
    let body = json!([
        {"op": "test", "path": path, "value": OURS},
        {"op": "remove", "path": path},
    ]);
    let text = raw(
        client,
        "PATCH",
        "/api/v1/persistentvolumes/pv1",
        "application/json-patch+json",
        &body.to_string(),
    )
    .await
    .expect("finalizer removed");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn removing_the_last_finalizer_deletes_with_one_deleted_event() {
    let server = FakeApiServer::start().await;
    let client = server.client().await;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let mut pv = local_pv("pv1", "n1");
    pv.metadata.finalizers = Some(vec![OURS.into()]);
    let created = pvs.create(&PostParams::default(), &pv).await.unwrap();
    let since = (created
        .metadata
        .resource_version
        .unwrap()
        .parse::<u64>()
        .unwrap()
        - 1)
    .to_string();
    eventually("PV Available", || {
        pv_phase(&server, "pv1").as_deref() == Some("Available")
    })
    .await;
    pvs.delete("pv1", &DeleteParams::default()).await.unwrap();
    eventually("pv-protection dropped", || {
        server
            .object("persistentvolumes", None, "pv1")
            .is_some_and(|pv| pv["metadata"]["finalizers"] == json!([OURS]))
    })
    .await;
    let answer = remove_ours(&client, 0).await;
    assert!(server.object("persistentvolumes", None, "pv1").is_none());
    assert_eq!(
        answer["metadata"]["finalizers"],
        json!([]),
        "the writer's object"
    );

    let events = pv_events(&pvs, &since, |seen| {
        seen.iter()
            .any(|(_, e)| matches!(e, WatchEvent::Deleted(_)))
    })
    .await;
    let kinds: Vec<String> = events
        .iter()
        .map(|(_, e)| match e {
            WatchEvent::Added(_) => "ADDED".to_string(),
            WatchEvent::Modified(pv) => format!(
                "MODIFIED {:?}",
                pv.metadata.finalizers.clone().unwrap_or_default()
            ),
            WatchEvent::Deleted(pv) => format!(
                "DELETED {:?}",
                pv.metadata.finalizers.clone().unwrap_or_default()
            ),
            other => format!("{other:?}"),
        })
        .collect();
    let protected = format!("{:?}", [OURS, "kubernetes.io/pv-protection"]);
    let ours = format!("{:?}", [OURS]);
    assert_eq!(
        kinds,
        [
            "ADDED".to_string(),
            format!("MODIFIED {protected}"), // Available
            format!("MODIFIED {protected}"), // deletionTimestamp
            format!("MODIFIED {ours}"),      // pv-protection off
            format!("DELETED {ours}"),       // the last state stored
        ]
    );
    let WatchEvent::Deleted(last) = &events[4].1 else {
        unreachable!()
    };
    let WatchEvent::Modified(before) = &events[3].1 else {
        unreachable!()
    };
    let rv = |pv: &PersistentVolume| -> u64 {
        pv.metadata
            .resource_version
            .as_deref()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(
        rv(last) > rv(before),
        "the deletion has a resourceVersion of its own"
    );
    assert!(last.metadata.deletion_timestamp.is_some());
}

#[tokio::test]
async fn every_write_moves_the_resource_version() {
    let server = FakeApiServer::start().await;
    server.set_controller_emulation(false);
    let pvs: Api<PersistentVolume> = Api::all(server.client().await);
    let created = pvs
        .create(&PostParams::default(), &local_pv("pv1", "n1"))
        .await
        .unwrap();
    let mut last: u64 = created.metadata.resource_version.unwrap().parse().unwrap();
    for value in ["a", "b", "c"] {
        let patch = Patch::Merge(json!({"metadata": {"annotations": {"k": value}}}));
        let patched = pvs
            .patch("pv1", &PatchParams::default(), &patch)
            .await
            .unwrap();
        let rv: u64 = patched.metadata.resource_version.unwrap().parse().unwrap();
        assert!(rv > last, "{rv} after {last}");
        last = rv;
    }
    // A write that changes nothing keeps it (and the managedFields' time).
    let patch = Patch::Merge(json!({"metadata": {"annotations": {"k": "c"}}}));
    let same = pvs
        .patch("pv1", &PatchParams::default(), &patch)
        .await
        .unwrap();
    assert_eq!(same.metadata.resource_version.unwrap(), last.to_string());
}
