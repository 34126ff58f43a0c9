//! Self-tests of the fake API server fixture, driven through kube's real
//! client (`Api<…>`, raw requests and `kube::runtime::watcher`).

mod support;

use std::fmt::Debug;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{
    ConfigMap, Event as CoreEvent, Namespace, Node, PersistentVolume, PersistentVolumeClaim,
};
use k8s_openapi::api::events::v1::Event as EventsV1;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, WatchEvent,
    WatchParams,
};
use kube::core::Status;
use kube::runtime::watcher;
use serde_json::{Value, json};
use support::fake_api::{FakeApiServer, FaultRule};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ----------------------------------------------------------------- helpers --

fn cm(name: &str, labels: Value) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "data": {"k": "v"},
    }))
    .unwrap()
}

fn local_pv(name: &str, node: &str) -> PersistentVolume {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "10Gi"},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "local",
            "local": {"path": format!("/dev/disk/{name}")},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
            ]}]}},
        },
    }))
    .unwrap()
}

fn node(name: &str) -> Node {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

/// The `Status` of an API error; panics on any other outcome.
fn status<T: Debug>(r: Result<T, kube::Error>) -> Box<Status> {
    match r {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn names(cms: &[ConfigMap]) -> Vec<String> {
    cms.iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect()
}

/// Polls `check` every 20 ms for up to 5 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pv_phase(server: &FakeApiServer, name: &str) -> Option<String> {
    server
        .object("persistentvolumes", None, name)
        .and_then(|pv| pv["status"]["phase"].as_str().map(String::from))
}

/// Pulls watcher events until `done` says so (5 s limit); returns them all.
async fn watch_until<K, S>(
    stream: &mut S,
    mut done: impl FnMut(&watcher::Event<K>) -> bool,
) -> Vec<String>
where
    K: kube::Resource + Debug,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Unpin,
{
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("watcher timed out; saw {seen:?}"))
            .expect("watcher stream ended");
        match next {
            Ok(event) => {
                let stop = done(&event);
                seen.push(describe(&event));
                if stop {
                    return seen;
                }
            }
            Err(e) => seen.push(format!("error: {e}")),
        }
    }
}

fn describe<K: kube::Resource>(event: &watcher::Event<K>) -> String {
    let name = |k: &K| k.meta().name.clone().unwrap_or_default();
    match event {
        watcher::Event::Apply(k) => format!("apply {}", name(k)),
        watcher::Event::Delete(k) => format!("delete {}", name(k)),
        watcher::Event::Init => "init".into(),
        watcher::Event::InitApply(k) => format!("init-apply {}", name(k)),
        watcher::Event::InitDone => "init-done".into(),
    }
}

fn is_apply<K: kube::Resource>(event: &watcher::Event<K>, want: &str) -> bool {
    matches!(event, watcher::Event::Apply(k) if k.meta().name.as_deref() == Some(want))
}

/// Sends a raw request through the kube client (for things `Api` cannot say).
async fn raw(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> Result<String, kube::Error> {
    let req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(body.as_bytes().to_vec())
        .unwrap();
    client.request_text(req).await
}

// ------------------------------------------------------------------- tests --

#[tokio::test]
async fn create_get_and_list_with_selectors() {
    let server = FakeApiServer::start().await;
    let client = server.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    let created = cms
        .create(&pp, &cm("a1", json!({"app": "a", "tier": "web"})))
        .await
        .unwrap();
    cms.create(&pp, &cm("a2", json!({"app": "a"})))
        .await
        .unwrap();
    cms.create(&pp, &cm("b1", json!({"app": "b", "tier": "db"})))
        .await
        .unwrap();
    cms.create(&pp, &cm("c1", json!({}))).await.unwrap();

    // Server-set metadata.
    let meta = &created.metadata;
    let uid = meta.uid.clone().unwrap();
    assert_eq!(uid.len(), 36);
    assert_eq!(uid.matches('-').count(), 4);
    assert_eq!(&uid[14..15], "4", "version 4 UUID: {uid}");
    assert!(
        meta.resource_version
            .clone()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    assert_eq!(meta.generation, Some(1));
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    let got = cms.get("a1").await.unwrap();
    assert_eq!(got.metadata.uid, created.metadata.uid);
    let raw_obj = server.object("configmaps", Some("default"), "a1").unwrap();
    assert_eq!(raw_obj["kind"], "ConfigMap");
    assert_eq!(raw_obj["apiVersion"], "v1");

    let list = |sel: &'static str| {
        let cms = cms.clone();
        async move {
            names(
                &cms.list(&ListParams::default().labels(sel))
                    .await
                    .unwrap()
                    .items,
            )
        }
    };
    assert_eq!(list("").await, ["a1", "a2", "b1", "c1"]);
    assert_eq!(list("app=a").await, ["a1", "a2"]);
    assert_eq!(list("app==b").await, ["b1"]);
    assert_eq!(list("app!=a").await, ["b1", "c1"]);
    assert_eq!(list("app in (a, b),tier").await, ["a1", "b1"]);
    assert_eq!(list("app notin (a)").await, ["b1", "c1"]);
    assert_eq!(list("!tier").await, ["a2", "c1"]);
    assert_eq!(list("app=a,tier=web").await, ["a1"]);

    let by_field = cms
        .list(&ListParams::default().fields("metadata.name=b1"))
        .await
        .unwrap();
    assert_eq!(names(&by_field.items), ["b1"]);
    let by_field = cms
        .list(&ListParams::default().fields("metadata.namespace==default,metadata.name!=a1"))
        .await
        .unwrap();
    assert_eq!(names(&by_field.items), ["a2", "b1", "c1"]);
    assert_eq!(
        by_field.metadata.resource_version.unwrap(),
        server.resource_version().to_string()
    );

    // All namespaces, and another namespace.
    let ns: Api<Namespace> = Api::all(client.clone());
    ns.create(
        &pp,
        &serde_json::from_value(json!({"metadata": {"name": "other"}})).unwrap(),
    )
    .await
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), "other")
        .create(&pp, &cm("a1", json!({"app": "a"})))
        .await
        .unwrap();
    let all: Api<ConfigMap> = Api::all(client.clone());
    assert_eq!(
        all.list(&ListParams::default().labels("app=a"))
            .await
            .unwrap()
            .items
            .len(),
        3
    );
    assert_eq!(server.objects("configmaps").len(), 5);

    // Unsupported field label and malformed label selector: 400 BadRequest.
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let s = status(
        pvs.list(&ListParams::default().fields("spec.claimRef.name=x"))
            .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"));
    assert!(
        s.message
            .contains("field label not supported: spec.claimRef.name"),
        "{}",
        s.message
    );
    let s = status(cms.list(&ListParams::default().labels("app in a")).await);
    assert_eq!(s.code, 400);

    // Get of a missing object.
    let s = status(cms.get("nope").await);
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
    assert_eq!(s.message, "configmaps \"nope\" not found");
}

#[tokio::test]
async fn create_conflicts_and_validation() {
    let server = FakeApiServer::start().await;
    let client = server.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    cms.create(&pp, &cm("dup", json!({}))).await.unwrap();
    let s = status(cms.create(&pp, &cm("dup", json!({}))).await);
    assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists"));

    let s = status(cms.create(&pp, &cm("Bad_Name", json!({}))).await);
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(
        s.message
            .contains(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"),
        "{}",
        s.message
    );
    assert_eq!(s.details.unwrap().causes[0].field, "metadata.name");
    assert_eq!(
        status(cms.create(&pp, &cm(&"a".repeat(254), json!({}))).await).code,
        422
    );
    assert_eq!(
        status(cms.create(&pp, &cm("a..b", json!({}))).await).code,
        422
    );
    cms.create(&pp, &cm("a.b-c.d", json!({}))).await.unwrap();

    // generateName.
    let mut generated = cm("", json!({}));
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let name = cms
        .create(&pp, &generated)
        .await
        .unwrap()
        .metadata
        .name
        .unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");

    // Namespace mismatch and missing namespace.
    let mut other = cm("x", json!({}));
    other.metadata.namespace = Some("elsewhere".into());
    assert_eq!(status(cms.create(&pp, &other).await).code, 400);
    let missing: Api<ConfigMap> = Api::namespaced(client.clone(), "missing");
    let s = status(missing.create(&pp, &cm("x", json!({}))).await);
    assert_eq!(
        (s.code, s.message.as_str()),
        (404, "namespaces \"missing\" not found")
    );

    // Local PV without node affinity.
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let mut pv = local_pv("pv-no-affinity", "n1");
    pv.spec.as_mut().unwrap().node_affinity = None;
    let s = status(pvs.create(&pp, &pv).await);
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(
        s.message.contains("Local volume requires node affinity"),
        "{}",
        s.message
    );
    assert!(
        server
            .object("persistentvolumes", None, "pv-no-affinity")
            .is_none()
    );
}

#[tokio::test]
async fn pv_lifecycle_with_controller_emulation() {
    let server = FakeApiServer::start().await;
    let pvs: Api<PersistentVolume> = Api::all(server.client().await);
    let mut pv = local_pv("pv1", "n1");
    pv.status = Some(serde_json::from_value(json!({"phase": "Bound"})).unwrap());
    let created = pvs.create(&PostParams::default(), &pv).await.unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Pending"));
    assert_eq!(
        created.metadata.finalizers.unwrap(),
        ["kubernetes.io/pv-protection"]
    );
    assert_eq!(
        created
            .spec
            .unwrap()
            .persistent_volume_reclaim_policy
            .as_deref(),
        Some("Retain")
    );
    eventually("PV Available", || {
        pv_phase(&server, "pv1").as_deref() == Some("Available")
    })
    .await;

    let deleted = pvs.delete("pv1", &DeleteParams::default()).await.unwrap();
    let deleted = deleted.left().expect("object returned");
    assert!(deleted.metadata.deletion_timestamp.is_some());
    eventually("PV gone", || {
        server.object("persistentvolumes", None, "pv1").is_none()
    })
    .await;

    // Without the emulation nothing moves; helpers play the controller.
    server.set_controller_emulation(false);
    pvs.create(&PostParams::default(), &local_pv("pv2", "n1"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(pv_phase(&server, "pv2").as_deref(), Some("Pending"));
    server.set_pv_phase("pv2", "Available");
    server.bind_pv("pv2", "default", "claim");
    let bound = pvs.get("pv2").await.unwrap();
    assert_eq!(bound.status.unwrap().phase.as_deref(), Some("Bound"));
    assert_eq!(
        bound.spec.unwrap().claim_ref.unwrap().name.as_deref(),
        Some("claim")
    );
    // A bound PV keeps its protection finalizer even with the emulation back on.
    server.set_controller_emulation(true);
    pvs.delete("pv2", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(server.object("persistentvolumes", None, "pv2").is_some());
    server.set_pv_phase("pv2", "Released");
    eventually("released PV gone", || {
        server.object("persistentvolumes", None, "pv2").is_none()
    })
    .await;
}

#[tokio::test]
async fn delete_preconditions_and_finalizers() {
    let server = FakeApiServer::start().await;
    let client = server.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut held = cm("held", json!({}));
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    let created = cms.create(&PostParams::default(), &held).await.unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    let start_rv = created.metadata.resource_version.clone().unwrap();

    let wrong = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("00000000-0000-4000-8000-000000000000".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let s = status(cms.delete("held", &wrong).await);
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(
        s.message.contains(&format!(
            "Precondition failed: UID in precondition: 00000000-0000-4000-8000-000000000000, UID in object meta: {uid}"
        )),
        "{}",
        s.message
    );
    let stale_rv = DeleteParams {
        preconditions: Some(Preconditions {
            uid: None,
            resource_version: Some("1".into()),
        }),
        ..DeleteParams::default()
    };
    assert_eq!(status(cms.delete("held", &stale_rv).await).code, 409);
    assert_eq!(
        status(cms.delete("missing", &DeleteParams::default()).await).code,
        404
    );

    let right = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let terminating = cms.delete("held", &right).await.unwrap().left().unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    let still = cms.get("held").await.unwrap();
    assert!(still.metadata.deletion_timestamp.is_some());
    // No new finalizers on a terminating object.
    let add =
        Patch::Merge(json!({"metadata": {"finalizers": ["example.com/hold", "example.com/more"]}}));
    let s = status(cms.patch("held", &PatchParams::default(), &add).await);
    assert_eq!(s.code, 422);
    // Emptying the finalizers removes it.
    let clear = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    cms.patch("held", &PatchParams::default(), &clear)
        .await
        .unwrap();
    assert_eq!(status(cms.get("held").await).code, 404);

    // Watch replay from the creation: MODIFIED (deletionTimestamp) then DELETED.
    let events: Vec<_> = cms
        .watch(&WatchParams::default().timeout(1), &start_rv)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Modified(_) => Some("MODIFIED"),
            WatchEvent::Deleted(_) => Some("DELETED"),
            WatchEvent::Added(_) => Some("ADDED"),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["MODIFIED", "DELETED"]);

    // Without finalizers a delete is immediate.
    cms.create(&PostParams::default(), &cm("plain", json!({})))
        .await
        .unwrap();
    cms.delete("plain", &DeleteParams::default()).await.unwrap();
    assert!(
        server
            .object("configmaps", Some("default"), "plain")
            .is_none()
    );
}

#[tokio::test]
async fn updates_and_patches() {
    let server = FakeApiServer::start().await;
    let client = server.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pp = PatchParams::default();
    let created = cms
        .create(
            &PostParams::default(),
            &cm("p", json!({"keep": "1", "drop": "1"})),
        )
        .await
        .unwrap();

    // Merge patch: add, change and remove.
    let merged = cms
        .patch(
            "p",
            &pp,
            &Patch::Merge(
                json!({"metadata": {"labels": {"drop": null, "new": "x"}}, "data": {"k": "w"}}),
            ),
        )
        .await
        .unwrap();
    let labels = merged.metadata.labels.clone().unwrap();
    assert_eq!(labels.get("new").map(String::as_str), Some("x"));
    assert!(!labels.contains_key("drop") && labels.contains_key("keep"));
    assert_eq!(merged.data.unwrap()["k"], "w");
    assert_eq!(merged.metadata.uid, created.metadata.uid);
    assert!(
        merged
            .metadata
            .resource_version
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > created
                .metadata
                .resource_version
                .clone()
                .unwrap()
                .parse::<u64>()
                .unwrap()
    );

    // Strategic merge patch (applied as a merge patch).
    let smp = cms
        .patch("p", &pp, &Patch::Strategic(json!({"data": {"s": "1"}})))
        .await
        .unwrap();
    assert_eq!(smp.data.unwrap()["s"], "1");

    // JSON patch through a raw request.
    raw(
        &client,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/p",
        "application/json-patch+json",
        r#"[{"op":"test","path":"/data/k","value":"w"},{"op":"replace","path":"/data/k","value":"j"},{"op":"remove","path":"/data/s"}]"#,
    )
    .await
    .unwrap();
    let data = cms.get("p").await.unwrap().data.unwrap();
    assert_eq!((data["k"].as_str(), data.contains_key("s")), ("j", false));

    // Unsupported patch type (server-side apply) and patch on a missing object.
    let s = status(
        cms.patch(
            "p",
            &PatchParams::apply("test"),
            &Patch::Apply(json!({"data": {}})),
        )
        .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (415, "UnsupportedMediaType"));
    let s = status(
        cms.patch("nope", &pp, &Patch::Merge(json!({"data": {}})))
            .await,
    );
    assert_eq!(s.code, 404);

    // Optimistic concurrency on PUT and on a patch carrying a resourceVersion.
    let mut stale = created.clone();
    stale.data = Some([("x".to_string(), "y".to_string())].into());
    let s = status(cms.replace("p", &PostParams::default(), &stale).await);
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    let s = status(
        cms.patch(
            "p",
            &pp,
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}, "data": {"a": "b"}})),
        )
        .await,
    );
    assert_eq!(s.code, 409);
    let mut fresh = cms.get("p").await.unwrap();
    fresh.data = Some([("x".to_string(), "y".to_string())].into());
    let replaced = cms
        .replace("p", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_eq!(replaced.data.unwrap().len(), 1);
    // A no-op update does not bump the resourceVersion.
    let current = cms.get("p").await.unwrap();
    let same = cms
        .replace("p", &PostParams::default(), &current)
        .await
        .unwrap();
    assert_eq!(
        same.metadata.resource_version,
        current.metadata.resource_version
    );
}

#[tokio::test]
async fn status_subresource() {
    let server = FakeApiServer::start().await;
    server.set_controller_emulation(false);
    let client = server.client().await;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    pvs.create(&PostParams::default(), &local_pv("pv", "n1"))
        .await
        .unwrap();

    // PUT on the main resource keeps the stored status.
    let mut pv = pvs.get("pv").await.unwrap();
    pv.status = Some(serde_json::from_value(json!({"phase": "Failed"})).unwrap());
    pv.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
    let replaced = pvs
        .replace("pv", &PostParams::default(), &pv)
        .await
        .unwrap();
    assert_eq!(replaced.status.unwrap().phase.as_deref(), Some("Pending"));
    assert_eq!(replaced.metadata.labels.unwrap()["a"], "b");

    // Status writes change only the status.
    let patched = pvs
        .patch_status(
            "pv",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Available"}, "metadata": {"labels": {"a": "c"}}, "spec": {"storageClassName": "other"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.status.clone().unwrap().phase.as_deref(),
        Some("Available")
    );
    assert_eq!(patched.metadata.labels.clone().unwrap()["a"], "b");
    assert_eq!(
        patched.spec.clone().unwrap().storage_class_name.as_deref(),
        Some("local")
    );
    let mut for_status = patched.clone();
    for_status.status = Some(serde_json::from_value(json!({"phase": "Released"})).unwrap());
    for_status.spec.as_mut().unwrap().storage_class_name = Some("other".into());
    let put = pvs
        .replace_status("pv", &PostParams::default(), &for_status)
        .await
        .unwrap();
    assert_eq!(put.status.unwrap().phase.as_deref(), Some("Released"));
    assert_eq!(
        put.spec.unwrap().storage_class_name.as_deref(),
        Some("local")
    );
    assert_eq!(
        pvs.get_status("pv").await.unwrap().metadata.name.as_deref(),
        Some("pv")
    );

    // ConfigMaps have no status subresource.
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    cms.create(&PostParams::default(), &cm("c", json!({})))
        .await
        .unwrap();
    assert_eq!(status(cms.get_status("c").await).code, 404);
}

#[tokio::test]
async fn watcher_sees_add_modify_delete_with_selector() {
    let server = FakeApiServer::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let pp = PostParams::default();
    cms.create(&pp, &cm("before", json!({"app": "w"})))
        .await
        .unwrap();
    cms.create(&pp, &cm("ignored", json!({"app": "other"})))
        .await
        .unwrap();
    let mut stream = watcher(cms.clone(), watcher::Config::default().labels("app=w")).boxed();
    let seen = watch_until(&mut stream, |e| matches!(e, watcher::Event::InitDone)).await;
    assert_eq!(seen, ["init", "init-apply before", "init-done"]);

    cms.create(&pp, &cm("w1", json!({"app": "w"})))
        .await
        .unwrap();
    cms.create(&pp, &cm("other", json!({"app": "other"})))
        .await
        .unwrap();
    cms.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .unwrap();
    cms.delete("w1", &DeleteParams::default()).await.unwrap();
    // Stops matching: seen as a deletion; starts matching: seen as an addition.
    cms.patch(
        "before",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "x"}}})),
    )
    .await
    .unwrap();
    cms.patch(
        "other",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "w"}}})),
    )
    .await
    .unwrap();
    let seen = watch_until(&mut stream, |e| is_apply(e, "other")).await;
    assert_eq!(
        seen,
        [
            "apply w1",
            "apply w1",
            "delete w1",
            "delete before",
            "apply other"
        ]
    );

    // A raw watch from "0" starts with synthetic ADDED events for the
    // matching objects only.
    let initial: Vec<_> = cms
        .watch(&WatchParams::default().labels("app=w").timeout(1), "0")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let added: Vec<String> = initial
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Added(c) => c.metadata.name.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(added, ["other"]);

    // Streaming lists (sendInitialEvents) end their initial events with the
    // `k8s.io/initial-events-end` bookmark.
    let config = watcher::Config::default().labels("app=w").streaming_lists();
    let mut streaming = watcher(cms.clone(), config).boxed();
    let seen = watch_until(&mut streaming, |e| matches!(e, watcher::Event::InitDone)).await;
    assert_eq!(seen, ["init", "init-apply other", "init-done"]);
}

#[tokio::test]
async fn expired_resource_version_in_stream_and_as_http_status() {
    let server = FakeApiServer::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let first = cms
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let old_rv = first.metadata.resource_version.unwrap();
    cms.create(&PostParams::default(), &cm("b", json!({})))
        .await
        .unwrap();
    // Before expiry the replay works.
    let replay: Vec<_> = cms
        .watch(&WatchParams::default().timeout(1), &old_rv)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(matches!(&replay[0], WatchEvent::Added(c) if c.metadata.name.as_deref() == Some("b")));

    server.expire_history();
    // Default: 200 with a single ERROR event carrying 410 Expired.
    let events: Vec<_> = cms
        .watch(&WatchParams::default(), &old_rv)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    match &events[0] {
        WatchEvent::Error(s) => assert_eq!((s.code, s.reason.as_str()), (410, "Expired")),
        other => panic!("expected an ERROR event, got {other:?}"),
    }
    // Switched: HTTP 410.
    server.set_expired_watch_as_http_status(true);
    let s = status(
        cms.watch(&WatchParams::default(), &old_rv)
            .await
            .map(|_| ()),
    );
    assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
    server.set_expired_watch_as_http_status(false);

    // The watcher relists after the 410. The watch request is only sent when
    // the stream is polled after InitDone, so changes made in between are
    // behind a resourceVersion that is expired by then.
    let mut stream = watcher(cms.clone(), watcher::Config::default()).boxed();
    watch_until(&mut stream, |e| matches!(e, watcher::Event::InitDone)).await;
    cms.create(&PostParams::default(), &cm("c", json!({})))
        .await
        .unwrap();
    server.expire_history();
    let seen = watch_until(&mut stream, |e| matches!(e, watcher::Event::InitDone)).await;
    assert!(seen[0].starts_with("error:"), "{seen:?}");
    assert_eq!(
        &seen[1..],
        [
            "init",
            "init-apply a",
            "init-apply b",
            "init-apply c",
            "init-done"
        ]
    );
}

#[tokio::test]
async fn cut_watches_and_watcher_recovers() {
    let server = FakeApiServer::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let mut stream = watcher(cms.clone(), watcher::Config::default()).boxed();
    watch_until(&mut stream, |e| matches!(e, watcher::Event::InitDone)).await;
    cms.create(&PostParams::default(), &cm("one", json!({})))
        .await
        .unwrap();
    watch_until(&mut stream, |e| is_apply(e, "one")).await;
    server.cut_watches();
    cms.create(&PostParams::default(), &cm("two", json!({})))
        .await
        .unwrap();
    let seen = watch_until(&mut stream, |e| is_apply(e, "two")).await;
    assert!(
        !seen.contains(&"init".to_string()),
        "resumed without relisting: {seen:?}"
    );
    let watches = server
        .requests()
        .iter()
        .filter(|r| r.verb == "watch")
        .count();
    assert!(
        watches >= 2,
        "watch re-established, saw {watches} watch requests"
    );
}

#[tokio::test]
async fn cut_watch_ends_without_terminating_chunk() {
    let server = FakeApiServer::start().await;
    let addr = server.url().trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "GET /api/v1/namespaces/default/configmaps?watch=true&resourceVersion=0 HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tcp.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("chunked"),
        "{head}"
    );
    server.cut_watches();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest))
        .await
        .expect("connection closed after the cut");
    assert!(
        !String::from_utf8_lossy(&rest).contains("0\r\n\r\n"),
        "stream ended cleanly"
    );

    // A watch with a timeout ends cleanly with the terminating chunk and
    // gets bookmarks meanwhile.
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let started = Instant::now();
    let events: Vec<_> = cms
        .watch(&WatchParams::default().timeout(2), "0")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(2) && started.elapsed() < Duration::from_secs(4)
    );
    assert!(
        events.iter().any(|e| matches!(e, WatchEvent::Bookmark(_))),
        "{events:?}"
    );
}

#[tokio::test]
async fn injected_faults_and_latency() {
    let server = FakeApiServer::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    cms.create(&PostParams::default(), &cm("f", json!({})))
        .await
        .unwrap();
    server.fail_requests(FaultRule::new(500, 2).verb("get").path("/configmaps/f"));
    for _ in 0..2 {
        let s = status(cms.get("f").await);
        assert_eq!((s.code, s.reason.as_str()), (500, "InternalError"));
    }
    cms.get("f").await.unwrap();
    // kube retries 503 (and 429, 504) on its own: the fault shows only in the log.
    server.fail_requests(FaultRule::new(503, 1).method("post"));
    cms.create(&PostParams::default(), &cm("g", json!({})))
        .await
        .unwrap();
    server.fail_requests(FaultRule::new(409, 1).method("PUT").path("/configmaps/g"));
    let g = cms.get("g").await.unwrap();
    let s = status(cms.replace("g", &PostParams::default(), &g).await);
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    server.fail_requests(FaultRule::new(500, 5));
    server.clear_faults();
    cms.get("g").await.unwrap();
    let statuses: Vec<(String, u16)> = server
        .requests()
        .iter()
        .map(|r| (r.verb.clone(), r.status))
        .collect();
    let expected = [
        ("create", 201),
        ("get", 500),
        ("get", 500),
        ("get", 200),
        ("create", 503),
        ("create", 201),
        ("get", 200),
        ("update", 409),
        ("get", 200),
    ];
    let expected: Vec<(String, u16)> = expected.iter().map(|(v, s)| (v.to_string(), *s)).collect();
    assert_eq!(statuses, expected);

    server.set_latency(Duration::from_millis(300));
    let started = Instant::now();
    cms.get("f").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn restart_keeps_or_empties_the_store() {
    let mut server = FakeApiServer::start().await;
    let url = server.url();
    let client = server.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("kept", json!({})))
        .await
        .unwrap();
    let mut stream = watcher(cms.clone(), watcher::Config::default()).boxed();
    watch_until(&mut stream, |e| matches!(e, watcher::Event::InitDone)).await;

    server.restart(true).await;
    assert_eq!(server.url(), url);
    cms.create(&PostParams::default(), &cm("after", json!({})))
        .await
        .unwrap();
    assert!(cms.get("kept").await.is_ok());
    let seen = watch_until(&mut stream, |e| is_apply(e, "after")).await;
    assert!(!seen.contains(&"init".to_string()), "{seen:?}");

    server.restart(false).await;
    assert_eq!(status(cms.get("kept").await).code, 404);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(namespaces.get("default").await.is_ok());
    // The watcher gets 410 on resume and relists an empty namespace.
    let seen = watch_until(&mut stream, |e| matches!(e, watcher::Event::InitDone)).await;
    let tail: Vec<&String> = seen.iter().skip_while(|s| *s != "init").collect();
    assert_eq!(tail, ["init", "init-done"], "{seen:?}");
}

#[tokio::test]
async fn garbage_collects_objects_owned_by_missing_nodes() {
    let server = FakeApiServer::start().await;
    let client = server.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let n1 = nodes
        .create(&PostParams::default(), &node("n1"))
        .await
        .unwrap();
    let owner = |uid: &str| json!([{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": uid}]);
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let mut owned = local_pv("owned", "n1");
    owned.metadata.owner_references =
        Some(serde_json::from_value(owner(n1.metadata.uid.as_deref().unwrap())).unwrap());
    pvs.create(&PostParams::default(), &owned).await.unwrap();
    let mut stale = local_pv("stale-owner", "n1");
    stale.metadata.owner_references =
        Some(serde_json::from_value(owner("11111111-1111-4111-8111-111111111111")).unwrap());
    pvs.create(&PostParams::default(), &stale).await.unwrap();
    let mut owned_cm = cm("owned-cm", json!({}));
    owned_cm.metadata.owner_references = owned.metadata.owner_references.clone();
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    cms.create(&PostParams::default(), &owned_cm).await.unwrap();

    eventually("PV with wrong owner UID collected", || {
        server
            .object("persistentvolumes", None, "stale-owner")
            .is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(server.object("persistentvolumes", None, "owned").is_some());
    nodes.delete("n1", &DeleteParams::default()).await.unwrap();
    eventually("owned objects collected", || {
        server.object("persistentvolumes", None, "owned").is_none()
            && server
                .object("configmaps", Some("default"), "owned-cm")
                .is_none()
    })
    .await;
}

#[tokio::test]
async fn pvc_binding_and_release() {
    let server = FakeApiServer::start().await;
    server.set_pvc_binding(true);
    let client = server.client().await;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let mut small = local_pv("small", "n1");
    small.spec.as_mut().unwrap().capacity = Some(
        [(
            "storage".to_string(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("1Gi".into()),
        )]
        .into(),
    );
    pvs.create(&PostParams::default(), &small).await.unwrap();
    pvs.create(&PostParams::default(), &local_pv("big", "n1"))
        .await
        .unwrap();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, "default");
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local",
                 "resources": {"requests": {"storage": "5Gi"}}},
    }))
    .unwrap();
    let created = claims.create(&PostParams::default(), &claim).await.unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Pending"));
    eventually("claim bound", || {
        server
            .object("persistentvolumeclaims", Some("default"), "data")
            .is_some_and(|c| c["status"]["phase"] == "Bound")
    })
    .await;
    let pvc = server
        .object("persistentvolumeclaims", Some("default"), "data")
        .unwrap();
    assert_eq!(pvc["spec"]["volumeName"], "big");
    let big = server.object("persistentvolumes", None, "big").unwrap();
    assert_eq!(big["status"]["phase"], "Bound");
    assert_eq!(big["spec"]["claimRef"]["uid"], pvc["metadata"]["uid"]);
    assert_eq!(pv_phase(&server, "small").as_deref(), Some("Available"));

    claims
        .delete("data", &DeleteParams::default())
        .await
        .unwrap();
    eventually("PV released", || {
        pv_phase(&server, "big").as_deref() == Some("Released")
    })
    .await;
    assert!(
        server
            .object("persistentvolumeclaims", Some("default"), "data")
            .is_none()
    );
    let big = server.object("persistentvolumes", None, "big").unwrap();
    assert_eq!(big["spec"]["claimRef"]["name"], "data");
}

#[tokio::test]
async fn requests_are_recorded_with_verbs() {
    let server = FakeApiServer::start().await;
    let client = server.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let c = cms
        .create(&PostParams::default(), &cm("r", json!({})))
        .await
        .unwrap();
    cms.get("r").await.unwrap();
    cms.list(&ListParams::default().labels("a=b"))
        .await
        .unwrap();
    let _ = cms
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await;
    cms.replace("r", &PostParams::default(), &c).await.unwrap();
    cms.patch(
        "r",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"z": "1"}})),
    )
    .await
    .unwrap();
    cms.delete("r", &DeleteParams::default()).await.unwrap();
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    pvs.create(&PostParams::default(), &local_pv("rpv", "n1"))
        .await
        .unwrap();
    pvs.patch_status(
        "rpv",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Failed"}})),
    )
    .await
    .unwrap();
    let events: Api<EventsV1> = Api::namespaced(client.clone(), "default");
    let ev: EventsV1 = serde_json::from_value(json!({
        "metadata": {"name": "ev.1"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reason": "Test", "action": "Testing", "reportingController": "tests", "reportingInstance": "t",
        "type": "Normal",
    }))
    .unwrap();
    events.create(&PostParams::default(), &ev).await.unwrap();
    let core_events: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    assert!(
        core_events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        server
            .object("events.events.k8s.io", Some("default"), "ev.1")
            .is_some()
    );
    let _ = raw(
        &client,
        "GET",
        "/apis/unknown.io/v1/things",
        "application/json",
        "",
    )
    .await;

    let log: Vec<_> = server
        .requests()
        .into_iter()
        .map(|r| {
            (
                r.verb,
                r.group,
                r.resource,
                r.subresource.unwrap_or_default(),
                r.namespace.unwrap_or_default(),
                r.name.unwrap_or_default(),
                r.status,
            )
        })
        .collect();
    let row =
        |verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str, status: u16| {
            (
                verb.to_string(),
                group.to_string(),
                resource.to_string(),
                sub.to_string(),
                ns.to_string(),
                name.to_string(),
                status,
            )
        };
    assert_eq!(
        log,
        [
            row("create", "", "configmaps", "", "default", "", 201),
            row("get", "", "configmaps", "", "default", "r", 200),
            row("list", "", "configmaps", "", "default", "", 200),
            row("watch", "", "configmaps", "", "default", "", 200),
            row("update", "", "configmaps", "", "default", "r", 200),
            row("patch", "", "configmaps", "", "default", "r", 200),
            row("delete", "", "configmaps", "", "default", "r", 200),
            row("create", "", "persistentvolumes", "", "", "", 201),
            row("patch", "", "persistentvolumes", "status", "", "rpv", 200),
            row("create", "events.k8s.io", "events", "", "default", "", 201),
            row("list", "", "events", "", "default", "", 200),
            row("get", "", "", "", "", "", 404),
        ]
    );
    let requests = server.requests();
    assert!(
        requests[2].query.contains("labelSelector=a%3Db"),
        "{}",
        requests[2].query
    );
    assert_eq!(
        requests[5].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(requests[5].body.as_ref().unwrap()["data"]["z"], "1");
    server.clear_requests();
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn discovery_kubeconfig_and_namespaces() {
    let server = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = server.write_kubeconfig(dir.path());
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    assert_eq!(kubeconfig.current_context.as_deref(), Some("fake"));
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        config.cluster_url.to_string().trim_end_matches('/'),
        server.url()
    );
    let client = kube::Client::try_from(config).unwrap();
    assert_eq!(client.default_namespace(), "default");

    let version = client.apiserver_version().await.unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "36")
    );
    let groups = client.list_api_groups().await.unwrap();
    assert!(groups.groups.iter().any(|g| g.name == "events.k8s.io"));
    assert_eq!(
        client.list_core_api_versions().await.unwrap().versions,
        ["v1"]
    );
    let core = client.list_core_api_resources("v1").await.unwrap();
    assert!(
        core.resources
            .iter()
            .any(|r| r.name == "persistentvolumes/status")
    );
    let s = status(raw(&client, "GET", "/api/v1/pods", "application/json", "").await);
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));

    // Namespace deletion removes the content, then the namespace.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "doomed"}})).unwrap();
    let created = namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Active"));
    let s = status(
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "a.b"}})).unwrap(),
            )
            .await,
    );
    assert_eq!(s.code, 422);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    cms.create(&PostParams::default(), &cm("inside", json!({})))
        .await
        .unwrap();
    server.set_controller_emulation(false);
    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    let terminating = namespaces.get("doomed").await.unwrap();
    assert_eq!(
        terminating.status.unwrap().phase.as_deref(),
        Some("Terminating")
    );
    assert_eq!(
        status(
            cms.create(&PostParams::default(), &cm("late", json!({})))
                .await
        )
        .code,
        403
    );
    server.set_controller_emulation(true);
    eventually("namespace gone", || {
        server.object("namespaces", None, "doomed").is_none()
    })
    .await;
    assert!(
        server
            .object("configmaps", Some("doomed"), "inside")
            .is_none()
    );

    // Objects created directly in the store show up through the API.
    server.create_object(
        "configmaps",
        json!({"metadata": {"name": "direct", "namespace": "default"}}),
    );
    let direct: Api<ConfigMap> = Api::default_namespaced(client);
    assert!(direct.get("direct").await.unwrap().metadata.uid.is_some());
}
