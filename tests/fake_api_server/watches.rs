//! Watches: kube's watcher over a label selector (objects that start or
//! stop matching), raw watches from "0" and streaming lists, an expired
//! resourceVersion (as an ERROR event or as HTTP 410) and the relist after
//! it, and watches cut by the server, at the HTTP level and through the
//! watcher.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{create_cm, is_apply, is_init_done, merge, status, watch_events, watch_until};
use crate::support::fake_api::FakeApiServer;

#[tokio::test]
async fn watcher_sees_add_modify_delete_with_selector() {
    let server = FakeApiServer::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    create_cm(&cms, "before", json!({"app": "w"})).await;
    create_cm(&cms, "ignored", json!({"app": "other"})).await;
    let mut stream = watcher(cms.clone(), watcher::Config::default().labels("app=w")).boxed();
    let seen = watch_until(&mut stream, is_init_done).await;
    assert_eq!(seen, ["init", "init-apply before", "init-done"]);

    create_cm(&cms, "w1", json!({"app": "w"})).await;
    create_cm(&cms, "other", json!({"app": "other"})).await;
    merge(&cms, "w1", json!({"data": {"k": "2"}})).await;
    cms.delete("w1", &DeleteParams::default()).await.unwrap();
    // Stops matching: seen as a deletion; starts matching: seen as an addition.
    merge(
        &cms,
        "before",
        json!({"metadata": {"labels": {"app": "x"}}}),
    )
    .await;
    merge(&cms, "other", json!({"metadata": {"labels": {"app": "w"}}})).await;
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
    let initial: Vec<_> = watch_events(
        &cms,
        &WatchParams::default().labels("app=w").timeout(1),
        "0",
    )
    .await;
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
    let seen = watch_until(&mut streaming, is_init_done).await;
    assert_eq!(seen, ["init", "init-apply other", "init-done"]);
}

#[tokio::test]
async fn expired_resource_version_in_stream_and_as_http_status() {
    let server = FakeApiServer::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let first = create_cm(&cms, "a", json!({})).await;
    let old_rv = first.metadata.resource_version.unwrap();
    create_cm(&cms, "b", json!({})).await;
    // Before expiry the replay works.
    let replay: Vec<_> = watch_events(&cms, &WatchParams::default().timeout(1), &old_rv).await;
    assert!(matches!(&replay[0], WatchEvent::Added(c) if c.metadata.name.as_deref() == Some("b")));

    server.expire_history();
    // Default: 200 with a single ERROR event carrying 410 Expired.
    let events: Vec<_> = watch_events(&cms, &WatchParams::default(), &old_rv).await;
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
    watch_until(&mut stream, is_init_done).await;
    create_cm(&cms, "c", json!({})).await;
    server.expire_history();
    let seen = watch_until(&mut stream, is_init_done).await;
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
    watch_until(&mut stream, is_init_done).await;
    create_cm(&cms, "one", json!({})).await;
    watch_until(&mut stream, |e| is_apply(e, "one")).await;
    server.cut_watches();
    create_cm(&cms, "two", json!({})).await;
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
    let events: Vec<_> = watch_events(&cms, &WatchParams::default().timeout(2), "0").await;
    assert!(
        started.elapsed() >= Duration::from_secs(2) && started.elapsed() < Duration::from_secs(4)
    );
    assert!(
        events.iter().any(|e| matches!(e, WatchEvent::Bookmark(_))),
        "{events:?}"
    );
}
