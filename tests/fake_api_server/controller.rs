//! The controller-manager emulation: a new PV goes Pending → Available and
//! keeps its protection finalizer while Bound; with the emulation off the
//! test plays the controller; claims bind to a PV large enough and
//! release it on deletion; objects owned by a missing Node are collected.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node, PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use crate::client::{cm, eventually, local_pv, node, pv_phase};
use crate::support::fake_api::FakeApiServer;

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
