//! Create, get and list: server-set metadata, label and field selectors,
//! lists across namespaces, refused selectors and missing objects; name,
//! `generateName`, namespace and local-PV validation on create.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolume};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use crate::client::{cm, create_cm, local_pv, names, status};
use crate::support::fake_api::FakeApiServer;

/// The server sets a v4 UID, a numeric resourceVersion, a creation time
/// and the namespace, and no generation (a ConfigMap has none on a real
/// server); a get returns the same object, stored with its kind and
/// apiVersion.
async fn server_set_metadata(server: &FakeApiServer, cms: &Api<ConfigMap>, created: &ConfigMap) {
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
    assert_eq!(meta.generation, None);
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    let got = cms.get("a1").await.unwrap();
    assert_eq!(got.metadata.uid, created.metadata.uid);
    let raw_obj = server.object("configmaps", Some("default"), "a1").unwrap();
    assert_eq!(raw_obj["kind"], "ConfigMap");
    assert_eq!(raw_obj["apiVersion"], "v1");
}

/// Every label selector operator over a1 (a, web), a2 (a), b1 (b, db), c1.
async fn label_selectors(cms: &Api<ConfigMap>) {
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
}

/// Field selectors on name and namespace; a list carries the current
/// resourceVersion.
async fn field_selectors(server: &FakeApiServer, cms: &Api<ConfigMap>) {
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
}

/// All namespaces, and another namespace.
async fn all_namespaces(server: &FakeApiServer, client: &kube::Client) {
    let pp = PostParams::default();
    let ns: Api<Namespace> = Api::all(client.clone());
    ns.create(
        &pp,
        &serde_json::from_value(json!({"metadata": {"name": "other"}})).unwrap(),
    )
    .await
    .unwrap();
    create_cm(
        &Api::namespaced(client.clone(), "other"),
        "a1",
        json!({"app": "a"}),
    )
    .await;
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
}

/// Unsupported field label and malformed label selector: 400 BadRequest;
/// get of a missing object: 404 NotFound.
async fn bad_selectors_and_missing_objects(client: &kube::Client, cms: &Api<ConfigMap>) {
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

    let s = status(cms.get("nope").await);
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
    assert_eq!(s.message, "configmaps \"nope\" not found");
}

#[tokio::test]
async fn create_get_and_list_with_selectors() {
    let server = FakeApiServer::start().await;
    let client = server.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created = create_cm(&cms, "a1", json!({"app": "a", "tier": "web"})).await;
    create_cm(&cms, "a2", json!({"app": "a"})).await;
    create_cm(&cms, "b1", json!({"app": "b", "tier": "db"})).await;
    create_cm(&cms, "c1", json!({})).await;

    server_set_metadata(&server, &cms, &created).await;
    label_selectors(&cms).await;
    field_selectors(&server, &cms).await;
    all_namespaces(&server, &client).await;
    bad_selectors_and_missing_objects(&client, &cms).await;
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
