//! Discovery and configuration: the kubeconfig the server writes (context,
//! URL, default namespace), `/version`, API groups and resources, 404 for
//! what is not served; namespaces (creation, validation, deletion of their
//! content while Terminating); objects created directly in the store.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use crate::client::{cm, create_cm, eventually, raw, status};
use crate::support::fake_api::FakeApiServer;

/// A client from the kubeconfig the server writes: context `fake`, the
/// server's URL, namespace `default`.
async fn kubeconfig_client(server: &FakeApiServer, dir: &std::path::Path) -> kube::Client {
    let path = server.write_kubeconfig(dir);
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
    client
}

/// `/version`, the API groups, the core versions and resources, and 404
/// for a resource that is not served.
async fn discovery_endpoints(client: &kube::Client) {
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
    assert!(
        core.resources
            .iter()
            .any(|r| r.name == "pods" && r.namespaced),
        "pods are served (stored, nothing runs them)"
    );
    let s = status(raw(client, "GET", "/api/v1/secrets", "application/json", "").await);
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
}

/// Namespace deletion removes the content, then the namespace; while
/// Terminating, nothing new is created in it.
async fn namespace_deletion(server: &FakeApiServer, client: &kube::Client) {
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
    create_cm(&cms, "inside", json!({})).await;
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
}

#[tokio::test]
async fn discovery_kubeconfig_and_namespaces() {
    let server = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = kubeconfig_client(&server, dir.path()).await;
    discovery_endpoints(&client).await;
    namespace_deletion(&server, &client).await;

    // Objects created directly in the store show up through the API.
    server.create_object(
        "configmaps",
        json!({"metadata": {"name": "direct", "namespace": "default"}}),
    );
    let direct: Api<ConfigMap> = Api::default_namespaced(client);
    assert!(direct.get("direct").await.unwrap().metadata.uid.is_some());
}
