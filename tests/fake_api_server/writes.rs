//! Writes to existing objects: merge, strategic and JSON patches, refused
//! patches, optimistic concurrency on PUT and patch, no-op updates; the
//! status subresource; delete preconditions, finalizers holding a deletion,
//! and the watch events a deletion gives.

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume};
use kube::api::{
    Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions, WatchEvent, WatchParams,
};
use serde_json::json;

use crate::client::{cm, create_cm, local_pv, merge, raw, status, watch_events};
use crate::support::fake_api::FakeApiServer;

/// An object's resourceVersion as a number.
fn version(object: &ConfigMap) -> u64 {
    let version = object.metadata.resource_version.clone().unwrap();
    version.parse::<u64>().unwrap()
}

/// Merge patch: add, change and remove; same UID, later resourceVersion.
async fn merge_patch(cms: &Api<ConfigMap>, created: &ConfigMap) {
    let merged = merge(
        cms,
        "p",
        json!({"metadata": {"labels": {"drop": null, "new": "x"}}, "data": {"k": "w"}}),
    )
    .await;
    let labels = merged.metadata.labels.clone().unwrap();
    assert_eq!(labels.get("new").map(String::as_str), Some("x"));
    assert!(!labels.contains_key("drop") && labels.contains_key("keep"));
    assert_eq!(merged.data.clone().unwrap()["k"], "w");
    assert_eq!(merged.metadata.uid, created.metadata.uid);
    assert!(version(&merged) > version(created));
}

/// A strategic merge patch (applied as a merge patch), and a JSON patch
/// through a raw request.
async fn strategic_and_json_patches(client: &kube::Client, cms: &Api<ConfigMap>) {
    let pp = PatchParams::default();
    let smp = cms
        .patch("p", &pp, &Patch::Strategic(json!({"data": {"s": "1"}})))
        .await
        .unwrap();
    assert_eq!(smp.data.unwrap()["s"], "1");

    raw(
        client,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/p",
        "application/json-patch+json",
        r#"[{"op":"test","path":"/data/k","value":"w"},{"op":"replace","path":"/data/k","value":"j"},{"op":"remove","path":"/data/s"}]"#,
    )
    .await
    .unwrap();
    let data = cms.get("p").await.unwrap().data.unwrap();
    assert_eq!((data["k"].as_str(), data.contains_key("s")), ("j", false));
}

/// Unsupported patch type (server-side apply) and patch on a missing object.
async fn refused_patches(cms: &Api<ConfigMap>) {
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
        cms.patch(
            "nope",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {}})),
        )
        .await,
    );
    assert_eq!(s.code, 404);
}

/// Optimistic concurrency on PUT and on a patch carrying a resourceVersion;
/// a no-op update does not bump the resourceVersion.
async fn optimistic_concurrency(cms: &Api<ConfigMap>, created: &ConfigMap) {
    let mut stale = created.clone();
    stale.data = Some([("x".to_string(), "y".to_string())].into());
    let s = status(cms.replace("p", &PostParams::default(), &stale).await);
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    let s = status(
        cms.patch(
            "p",
            &PatchParams::default(),
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
async fn updates_and_patches() {
    let server = FakeApiServer::start().await;
    let client = server.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created = create_cm(&cms, "p", json!({"keep": "1", "drop": "1"})).await;
    merge_patch(&cms, &created).await;
    strategic_and_json_patches(&client, &cms).await;
    refused_patches(&cms).await;
    optimistic_concurrency(&cms, &created).await;
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

/// Delete options with preconditions on `uid` and `resource_version`.
fn preconditions(uid: Option<&str>, resource_version: Option<&str>) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: uid.map(String::from),
            resource_version: resource_version.map(String::from),
        }),
        ..DeleteParams::default()
    }
}

/// A wrong UID or a stale resourceVersion in the preconditions: 409
/// Conflict; a missing object: 404.
async fn refused_deletes(cms: &Api<ConfigMap>, uid: &str) {
    let wrong = preconditions(Some("00000000-0000-4000-8000-000000000000"), None);
    let s = status(cms.delete("held", &wrong).await);
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(
        s.message.contains(&format!(
            "Precondition failed: UID in precondition: 00000000-0000-4000-8000-000000000000, UID in object meta: {uid}"
        )),
        "{}",
        s.message
    );
    let stale_rv = preconditions(None, Some("1"));
    assert_eq!(status(cms.delete("held", &stale_rv).await).code, 409);
    assert_eq!(
        status(cms.delete("missing", &DeleteParams::default()).await).code,
        404
    );
}

/// A finalizer holds the deleted object as terminating, which takes no new
/// finalizers; emptying the finalizers removes it.
async fn finalizer_holds_the_deletion(cms: &Api<ConfigMap>, uid: &str) {
    let right = preconditions(Some(uid), None);
    let terminating = cms.delete("held", &right).await.unwrap().left().unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    let still = cms.get("held").await.unwrap();
    assert!(still.metadata.deletion_timestamp.is_some());
    let add =
        Patch::Merge(json!({"metadata": {"finalizers": ["example.com/hold", "example.com/more"]}}));
    let s = status(cms.patch("held", &PatchParams::default(), &add).await);
    assert_eq!(s.code, 422);
    merge(cms, "held", json!({"metadata": {"finalizers": null}})).await;
    assert_eq!(status(cms.get("held").await).code, 404);
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

    refused_deletes(&cms, &uid).await;
    finalizer_holds_the_deletion(&cms, &uid).await;

    // Watch replay from the creation: MODIFIED (deletionTimestamp) then DELETED.
    let events = watch_events(&cms, &WatchParams::default().timeout(1), &start_rv).await;
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
    create_cm(&cms, "plain", json!({})).await;
    cms.delete("plain", &DeleteParams::default()).await.unwrap();
    assert!(
        server
            .object("configmaps", Some("default"), "plain")
            .is_none()
    );
}
