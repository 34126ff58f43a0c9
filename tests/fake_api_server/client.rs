//! The objects the tests create (ConfigMaps, local PVs, Nodes) and the ways
//! they read outcomes: the `Status` of an API error, waits on the server's
//! store, watcher events as text, raw watches and raw requests.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Node, PersistentVolume};
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::Status;
use kube::runtime::watcher;
use serde_json::{Value, json};

use crate::support::fake_api::FakeApiServer;

/// A ConfigMap `name` with `labels` and one data key.
pub fn cm(name: &str, labels: Value) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "data": {"k": "v"},
    }))
    .unwrap()
}

/// Creates [`cm`]`(name, labels)` through `cms`.
pub async fn create_cm(cms: &Api<ConfigMap>, name: &str, labels: Value) -> ConfigMap {
    cms.create(&PostParams::default(), &cm(name, labels))
        .await
        .unwrap()
}

/// Merge-patches ConfigMap `name` with `patch`.
pub async fn merge(cms: &Api<ConfigMap>, name: &str, patch: Value) -> ConfigMap {
    cms.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap()
}

/// A 10 GiB local PV of class `local` with node affinity to `node`.
pub fn local_pv(name: &str, node: &str) -> PersistentVolume {
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

pub fn node(name: &str) -> Node {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

/// The `Status` of an API error; panics on any other outcome.
pub fn status<T: Debug>(r: Result<T, kube::Error>) -> Box<Status> {
    match r {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

pub fn names(cms: &[ConfigMap]) -> Vec<String> {
    cms.iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect()
}

/// Polls `check` every 20 ms for up to 5 s.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn pv_phase(server: &FakeApiServer, name: &str) -> Option<String> {
    server
        .object("persistentvolumes", None, name)
        .and_then(|pv| pv["status"]["phase"].as_str().map(String::from))
}

/// A raw watch of `cms` from `version`, read to its end.
pub async fn watch_events(
    cms: &Api<ConfigMap>,
    params: &WatchParams,
    version: &str,
) -> Vec<WatchEvent<ConfigMap>> {
    cms.watch(params, version)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// Pulls watcher events until `done` says so (5 s limit); returns them all.
pub async fn watch_until<K, S>(
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

pub fn is_apply<K: kube::Resource>(event: &watcher::Event<K>, want: &str) -> bool {
    matches!(event, watcher::Event::Apply(k) if k.meta().name.as_deref() == Some(want))
}

pub fn is_init_done<K>(event: &watcher::Event<K>) -> bool {
    matches!(event, watcher::Event::InitDone)
}

/// Sends a raw request through the kube client (for things `Api` cannot say).
pub async fn raw(
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
