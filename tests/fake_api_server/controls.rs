//! What tests steer and read on the server: injected faults (once, N times,
//! by verb, method and path; 503s kube retries by itself), latency,
//! restarts that keep or empty the store (and what a watcher sees of them),
//! and the request log with verbs, groups, resources, subresources, query,
//! content type and body.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Namespace, PersistentVolume};
use k8s_openapi::api::events::v1::Event as EventsV1;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams};
use kube::runtime::watcher;
use serde_json::json;

use crate::client::{create_cm, is_apply, is_init_done, local_pv, merge, raw, status, watch_until};
use crate::support::fake_api::{FakeApiServer, FaultRule};

#[tokio::test]
async fn injected_faults_and_latency() {
    let server = FakeApiServer::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    create_cm(&cms, "f", json!({})).await;
    server.fail_requests(FaultRule::new(500, 2).verb("get").path("/configmaps/f"));
    for _ in 0..2 {
        let s = status(cms.get("f").await);
        assert_eq!((s.code, s.reason.as_str()), (500, "InternalError"));
    }
    cms.get("f").await.unwrap();
    // kube retries 503 (and 429, 504) on its own: the fault shows only in the log.
    server.fail_requests(FaultRule::new(503, 1).method("post"));
    create_cm(&cms, "g", json!({})).await;
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
    create_cm(&cms, "kept", json!({})).await;
    let mut stream = watcher(cms.clone(), watcher::Config::default()).boxed();
    watch_until(&mut stream, is_init_done).await;

    server.restart(true).await;
    assert_eq!(server.url(), url);
    create_cm(&cms, "after", json!({})).await;
    assert!(cms.get("kept").await.is_ok());
    let seen = watch_until(&mut stream, |e| is_apply(e, "after")).await;
    assert!(!seen.contains(&"init".to_string()), "{seen:?}");

    server.restart(false).await;
    assert_eq!(status(cms.get("kept").await).code, 404);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(namespaces.get("default").await.is_ok());
    // The watcher gets 410 on resume and relists an empty namespace.
    let seen = watch_until(&mut stream, is_init_done).await;
    let tail: Vec<&String> = seen.iter().skip_while(|s| *s != "init").collect();
    assert_eq!(tail, ["init", "init-done"], "{seen:?}");
}

/// One request of each verb on a ConfigMap: create, get, list (with a
/// label selector), watch, update, merge patch, delete.
async fn configmap_verbs(cms: &Api<ConfigMap>) {
    let c = create_cm(cms, "r", json!({})).await;
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
    merge(cms, "r", json!({"data": {"z": "1"}})).await;
    cms.delete("r", &DeleteParams::default()).await.unwrap();
}

/// A PV create and status patch, an `events.k8s.io` Event (not seen among
/// core Events), and a GET of an unknown group.
async fn other_requests(server: &FakeApiServer, client: &kube::Client) {
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
        client,
        "GET",
        "/apis/unknown.io/v1/things",
        "application/json",
        "",
    )
    .await;
}

/// One row of the request log: verb, group, resource, subresource,
/// namespace, name, status.
type Row = (String, String, String, String, String, String, u16);

fn row(
    verb: &str,
    group: &str,
    resource: &str,
    sub: &str,
    ns: &str,
    name: &str,
    status: u16,
) -> Row {
    (
        verb.to_string(),
        group.to_string(),
        resource.to_string(),
        sub.to_string(),
        ns.to_string(),
        name.to_string(),
        status,
    )
}

/// The log of [`configmap_verbs`] then [`other_requests`].
fn expected_log() -> Vec<Row> {
    vec![
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
}

#[tokio::test]
async fn requests_are_recorded_with_verbs() {
    let server = FakeApiServer::start().await;
    let client = server.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    configmap_verbs(&cms).await;
    other_requests(&server, &client).await;

    let log: Vec<Row> = server
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
    assert_eq!(log, expected_log());
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
