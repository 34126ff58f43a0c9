//! HTTP side: the listener that tracks connections (so a restart can drop them
//! all), path routing, the REST verbs, discovery documents, and watch streams.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Shared;
use super::admission::{self, UserInfo};
use super::faults::RecordedRequest;
use super::patch;
use super::resources::{ApiError, RESOURCES, meta_mut, meta_str};
use super::selectors::Selectors;
use super::store::{Change, ChangeKind, Preconditions};

/// How often a watch with `allowWatchBookmarks=true` gets a BOOKMARK.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------- listener --

/// Open connections, each as a duplicate of its socket so they can all be shut
/// down at once (a restart of the fake drops every connection, like a real
/// apiserver going away).
#[derive(Default)]
pub(super) struct Connections {
    next: AtomicU64,
    open: Mutex<HashMap<u64, std::net::TcpStream>>,
}

impl Connections {
    /// Shuts down every open connection in both directions.
    pub fn shutdown_all(&self) {
        for conn in self.open.lock().expect("connections").values() {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A `TcpListener` registering every accepted connection in [`Connections`].
pub(super) struct TrackedListener {
    inner: TcpListener,
    conns: Arc<Connections>,
}

impl TrackedListener {
    /// Wraps a bound listener.
    pub fn new(inner: TcpListener, conns: Arc<Connections>) -> Self {
        TrackedListener { inner, conns }
    }
}

impl axum::serve::Listener for TrackedListener {
    type Io = TrackedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.inner.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let Ok(dup) = stream.as_fd().try_clone_to_owned() else {
                continue;
            };
            let id = self.conns.next.fetch_add(1, Ordering::Relaxed);
            self.conns
                .open
                .lock()
                .expect("connections")
                .insert(id, std::net::TcpStream::from(dup));
            let tracked = TrackedStream {
                inner: stream,
                id,
                conns: self.conns.clone(),
            };
            return (tracked, addr);
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted connection; unregisters itself when hyper drops it.
pub(super) struct TrackedStream {
    inner: TcpStream,
    id: u64,
    conns: Arc<Connections>,
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        if let Ok(mut open) = self.conns.open.lock() {
            open.remove(&self.id);
        }
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

// ----------------------------------------------------------------- routing --

/// The router: a single fallback handler doing its own path parsing.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(entry).with_state(shared)
}

/// A request aimed at a resource.
#[derive(Debug, Clone)]
struct Target {
    res: usize,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

#[derive(Debug, Clone)]
enum Route {
    Version,
    Health,
    CoreVersions,
    Groups,
    Resources(String, String),
    Object(Target),
    Unknown,
}

fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
                continue;
            }
            (b'+', _) if plus_is_space => out.push(b' '),
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

fn parse_route(path: &str) -> Route {
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "readyz" | "livez"] => Route::Health,
        ["api"] => Route::CoreVersions,
        ["apis"] => Route::Groups,
        ["api", version, rest @ ..] => group_route("", version, rest),
        ["apis", group, version, rest @ ..] => group_route(group, version, rest),
        _ => Route::Unknown,
    }
}

fn group_route(group: &str, version: &str, rest: &[&str]) -> Route {
    if rest.is_empty() {
        return if RESOURCES
            .iter()
            .any(|r| r.group == group && r.version == version)
        {
            Route::Resources(group.into(), version.into())
        } else {
            Route::Unknown
        };
    }
    // Like the real request-info parser: `namespaces/{ns}/{resource}...` unless
    // the third part is a subresource of the namespace itself.
    let (namespace, parts) = if rest[0] == "namespaces"
        && rest.len() > 2
        && !["status", "finalize"].contains(&rest[2])
    {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    let Some(res) = super::resources::find(group, version, parts[0]) else {
        return Route::Unknown;
    };
    let def = &RESOURCES[res];
    let name = parts.get(1).map(|s| s.to_string());
    let sub = parts.get(2).map(|s| s.to_string());
    let bad_scope = match (&namespace, def.namespaced) {
        (Some(_), false) => true,
        (None, true) => name.is_some(),
        _ => false,
    };
    let bad_sub = sub
        .as_deref()
        .is_some_and(|s| !(s == "status" && def.has_status));
    if parts.len() > 3 || bad_scope || bad_sub {
        return Route::Unknown;
    }
    Route::Object(Target {
        res,
        namespace,
        name,
        sub,
    })
}

fn is_watch(query: &HashMap<String, String>) -> bool {
    matches!(query.get("watch").map(String::as_str), Some("true" | "1"))
}

fn derive_verb(method: &Method, route: &Route, query: &HashMap<String, String>) -> String {
    let Route::Object(t) = route else {
        return method.as_str().to_ascii_lowercase();
    };
    let verb = match *method {
        Method::GET if is_watch(query) => "watch",
        Method::GET if t.name.is_some() => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if t.name.is_some() => "delete",
        Method::DELETE => "deletecollection",
        _ => return method.as_str().to_ascii_lowercase(),
    };
    verb.to_string()
}

async fn entry(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let raw_query = parts.uri.query().unwrap_or_default().to_string();
    let query = parse_query(&raw_query);
    let route = parse_route(&path);
    let verb = derive_verb(&parts.method, &route, &query);
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();

    let target = match &route {
        Route::Object(t) => Some(t),
        _ => None,
    };
    let mut recorded = RecordedRequest {
        method: parts.method.to_string(),
        path: path.clone(),
        query: raw_query,
        status: 0,
        verb: verb.clone(),
        group: target
            .map(|t| RESOURCES[t.res].group.to_string())
            .unwrap_or_default(),
        resource: target
            .map(|t| RESOURCES[t.res].plural.to_string())
            .unwrap_or_default(),
        subresource: target.and_then(|t| t.sub.clone()),
        namespace: target.and_then(|t| t.namespace.clone()),
        name: target.and_then(|t| t.name.clone()),
        content_type: content_type.clone(),
        body: serde_json::from_slice(&body).ok(),
    };
    shared.faults.observe(&recorded);
    let (user, unauthorized) = match admission::authenticate(&shared, &parts.headers) {
        Ok(user) => (user, None),
        Err(refused) => (None, Some(refused)),
    };

    let latency = shared.faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let response = match (shared.faults.take(&recorded), unauthorized) {
        (Some(injected), _) => {
            error_response(&ApiError::injected(injected.status, injected.message))
        }
        (None, Some(refused)) => error_response(&refused),
        (None, None) => match &route {
            Route::Version => json_response(StatusCode::OK, &version_info()),
            Route::Health => Response::new(Body::from("ok")),
            Route::CoreVersions => json_response(
                StatusCode::OK,
                &json!({
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
                }),
            ),
            Route::Groups => json_response(StatusCode::OK, &group_list()),
            Route::Resources(g, v) => json_response(StatusCode::OK, &resource_list(g, v)),
            Route::Unknown => error_response(&ApiError::no_route()),
            Route::Object(t) => handle_object(
                &shared,
                user.as_ref(),
                &parts.method,
                t,
                &query,
                content_type.as_deref(),
                &body,
            )
            .unwrap_or_else(|e| error_response(&e)),
        },
    };

    recorded.status = response.status().as_u16();
    shared.faults.record(recorded);
    response
}

fn json_response(code: StatusCode, value: &Value) -> Response {
    let mut resp = Response::new(Body::from(serde_json::to_vec(value).expect("JSON")));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(err: &ApiError) -> Response {
    json_response(
        StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &err.status(),
    )
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })
}

// ------------------------------------------------------------------- verbs --

fn handle_object(
    shared: &Arc<Shared>,
    user: Option<&UserInfo>,
    method: &Method,
    t: &Target,
    query: &HashMap<String, String>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let def = &RESOURCES[t.res];
    let ns = t.namespace.as_deref().unwrap_or("");
    let selectors = || {
        Selectors::parse(
            query.get("labelSelector").map(String::as_str),
            query.get("fieldSelector").map(String::as_str),
            def,
        )
    };
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
    let sub = t.sub.as_deref();
    let admit = |object: Option<&Value>, old: Option<&Value>| {
        admission::admit(shared, user, t.res, sub, object, old)
    };
    match (method, &t.name) {
        (&Method::GET, _) if is_watch(query) => {
            let mut sel = selectors()?;
            if let Some(name) = &t.name {
                sel = sel.with_name(name);
            }
            start_watch(shared, t.res, t.namespace.clone(), sel, query)
        }
        (&Method::GET, None) => {
            let sel = selectors()?;
            let store = shared.store.lock().expect("store");
            let items: Vec<Value> = store
                .list(t.res, t.namespace.as_deref())
                .filter(|o| sel.matches(o))
                .cloned()
                .collect();
            ok(json!({
                "kind": format!("{}List", def.kind),
                "apiVersion": def.api_version(),
                "metadata": {"resourceVersion": store.rv().to_string()},
                "items": items,
            }))
        }
        (&Method::GET, Some(name)) => {
            let store = shared.store.lock().expect("store");
            store
                .get(t.res, ns, name)
                .cloned()
                .map_or_else(|| Err(ApiError::not_found(def, name)), ok)
        }
        (&Method::POST, None) if t.sub.is_none() && (t.namespace.is_some() || !def.namespaced) => {
            let obj = parse_body(body)?;
            admit(Some(&obj), None)?;
            let created =
                shared
                    .store
                    .lock()
                    .expect("store")
                    .create(t.res, t.namespace.as_deref(), obj)?;
            Ok(json_response(StatusCode::CREATED, &created))
        }
        (&Method::PUT, Some(name)) => {
            let obj = parse_body(body)?;
            let mut store = shared.store.lock().expect("store");
            if let Some(old) = store.get(t.res, ns, name) {
                admit(Some(&obj), Some(old))?;
            }
            ok(store.update(t.res, ns, name, obj, t.sub.is_some())?)
        }
        (&Method::PATCH, Some(name)) => {
            let mut store = shared.store.lock().expect("store");
            let current = store
                .get(t.res, ns, name)
                .cloned()
                .ok_or_else(|| ApiError::not_found(def, name))?;
            let mut patched = patch::apply(content_type.unwrap_or(""), &current, body)?;
            // Fields the patch cannot move: keep them from the stored object so
            // `update` does not report a name/namespace mismatch.
            for field in ["name", "namespace"] {
                let v = meta_str(&current, field).to_string();
                if !v.is_empty() {
                    meta_mut(&mut patched).insert(field.into(), json!(v));
                }
            }
            admit(Some(&patched), Some(&current))?;
            ok(store.update(t.res, ns, name, patched, t.sub.is_some())?)
        }
        (&Method::DELETE, Some(name)) if t.sub.is_none() => {
            let pre = preconditions(body)?;
            let mut store = shared.store.lock().expect("store");
            if let Some(old) = store.get(t.res, ns, name) {
                admit(None, Some(old))?;
            }
            ok(store.delete(t.res, ns, name, &pre)?)
        }
        (&Method::DELETE, None) if t.sub.is_none() => {
            let sel = selectors()?;
            let mut store = shared.store.lock().expect("store");
            let keys: Vec<(String, String)> = store
                .list(t.res, t.namespace.as_deref())
                .filter(|o| sel.matches(o))
                .map(|o| {
                    (
                        meta_str(o, "namespace").to_string(),
                        meta_str(o, "name").to_string(),
                    )
                })
                .collect();
            let mut items = Vec::new();
            for (obj_ns, name) in keys {
                admit(None, store.get(t.res, &obj_ns, &name))?;
                items.push(store.delete(t.res, &obj_ns, &name, &Preconditions::default())?);
            }
            ok(json!({
                "kind": format!("{}List", def.kind),
                "apiVersion": def.api_version(),
                "metadata": {"resourceVersion": store.rv().to_string()},
                "items": items,
            }))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn preconditions(body: &[u8]) -> Result<Preconditions, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Preconditions::default());
    }
    let opts = parse_body(body)?;
    let field = |f: &str| {
        opts.get("preconditions")
            .and_then(|p| p.get(f))
            .and_then(Value::as_str)
            .map(String::from)
    };
    Ok(Preconditions {
        uid: field("uid"),
        resource_version: field("resourceVersion"),
    })
}

// --------------------------------------------------------------- discovery --

fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "36",
        "emulationMajor": "1",
        "emulationMinor": "36",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "35",
        "gitVersion": "v1.36.0-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.25.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn group_list() -> Value {
    let mut groups: Vec<Value> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if groups.iter().any(|g| g["name"] == r.group) {
            continue;
        }
        let gv = json!({"groupVersion": r.api_version(), "version": r.version});
        groups.push(json!({"name": r.group, "versions": [gv.clone()], "preferredVersion": gv}));
    }
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        resources.push(json!({
            "name": r.plural,
            "singularName": r.kind.to_ascii_lowercase(),
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        }));
        if r.has_status {
            resources.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

// ------------------------------------------------------------------ watch --

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("JSON");
    line.push(b'\n');
    Bytes::from(line)
}

/// Whether a watch line is a BOOKMARK (those are never cut in half: they
/// come every second, the test wants to hit a real event).
fn is_bookmark(line: &[u8]) -> bool {
    serde_json::from_slice::<Value>(line)
        .ok()
        .is_some_and(|event| event["type"] == "BOOKMARK")
}

fn bookmark(res: usize, rv: u64, initial_end: bool) -> Bytes {
    let def = &RESOURCES[res];
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"kind": def.kind, "apiVersion": def.api_version(), "metadata": meta}),
    )
}

/// The watch event a change turns into for a watcher with these filters; an
/// object that starts or stops matching the selectors is sent as ADDED or
/// DELETED, like the real watch cache does.
fn translate(change: &Change, ns: Option<&str>, sel: &Selectors) -> Option<Bytes> {
    if ns.is_some_and(|ns| ns != change.namespace) {
        return None;
    }
    let now = sel.matches(&change.object);
    let kind = match change.kind {
        ChangeKind::Added => now.then_some("ADDED")?,
        ChangeKind::Deleted => now.then_some("DELETED")?,
        ChangeKind::Modified => {
            let before = change.previous.as_ref().is_some_and(|p| sel.matches(p));
            match (before, now) {
                (true, true) => "MODIFIED",
                (false, true) => "ADDED",
                (true, false) => "DELETED",
                (false, false) => return None,
            }
        }
    };
    Some(event_line(kind, &change.object))
}

fn start_watch(
    shared: &Arc<Shared>,
    res: usize,
    namespace: Option<String>,
    selectors: Selectors,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let param = query
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or("");
    let initial_events = query.get("sendInitialEvents").is_some_and(|v| v == "true");
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t));

    let store = shared.store.lock().expect("store");
    let mut pending = VecDeque::new();
    let mut done = false;
    let last_rv = if param.is_empty() || param == "0" || initial_events {
        for obj in store
            .list(res, namespace.as_deref())
            .filter(|o| selectors.matches(o))
        {
            pending.push_back(event_line("ADDED", obj));
        }
        if initial_events {
            pending.push_back(bookmark(res, store.rv(), true));
        }
        store.rv()
    } else {
        let rv: u64 = param
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {param:?}")))?;
        if let Err(oldest) = store.changes_since(res, rv) {
            let err = ApiError::expired(rv, oldest);
            if shared.gone_as_http.load(Ordering::SeqCst) {
                return Err(err);
            }
            pending.push_back(event_line("ERROR", &err.status()));
            done = true;
        }
        rv
    };
    let rv_rx = store.subscribe();
    drop(store);
    let cut_rx = shared.cut.subscribe();
    let cut_gen = *cut_rx.borrow();
    let mid_event_gen = shared.mid_event.lock().expect("mid-event cuts")[res];
    let stream = WatchStream {
        shared: shared.clone(),
        res,
        namespace,
        selectors,
        last_rv,
        pending,
        done,
        cut: false,
        rv_rx,
        cut_rx,
        cut_gen,
        mid_event_gen,
        abort_next: false,
        deadline: timeout,
        bookmarks,
        next_bookmark: Instant::now() + BOOKMARK_INTERVAL,
        next_due: None,
    };
    let body = Body::from_stream(futures::stream::unfold(stream, |mut s| async move {
        s.next_chunk().await.map(|chunk| (chunk, s))
    }));
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// State of one open watch.
struct WatchStream {
    shared: Arc<Shared>,
    res: usize,
    namespace: Option<String>,
    selectors: Selectors,
    /// Every change up to here has been looked at.
    last_rv: u64,
    pending: VecDeque<Bytes>,
    /// End cleanly once `pending` is drained.
    done: bool,
    /// Already aborted by a cut.
    cut: bool,
    rv_rx: watch::Receiver<u64>,
    cut_rx: watch::Receiver<u64>,
    cut_gen: u64,
    /// The resource's mid-event cut generation when the watch started; a
    /// newer one makes the next event go out half-written.
    mid_event_gen: u64,
    /// Half an event went out: abort the connection next.
    abort_next: bool,
    deadline: Option<Instant>,
    bookmarks: bool,
    next_bookmark: Instant,
    /// When the next change held back by a watch lag is due.
    next_due: Option<Instant>,
}

enum Wake {
    Changed,
    Due,
    Closed,
    Timeout,
    Bookmark,
}

impl WatchStream {
    /// The next chunk: `Ok` with one or more event lines, `Err` to abort the
    /// connection mid-stream (a cut), `None` to end the stream cleanly.
    async fn next_chunk(&mut self) -> Option<Result<Bytes, io::Error>> {
        loop {
            if self.cut {
                return None;
            }
            if self.abort_next {
                // Let the half event reach the client before the connection dies.
                tokio::time::sleep(Duration::from_millis(100)).await;
                self.cut = true;
                return Some(Err(io::Error::other("watch cut mid-event by the test")));
            }
            if *self.cut_rx.borrow() != self.cut_gen {
                self.cut = true;
                return Some(Err(io::Error::other("watch cut by the test")));
            }
            if let Some(line) = self.pending.pop_front() {
                if self.mid_event_armed() && !is_bookmark(&line) {
                    self.abort_next = true;
                    self.shared.mid_event_cuts.fetch_add(1, Ordering::SeqCst);
                    return Some(Ok(line.slice(..line.len() / 2)));
                }
                return Some(Ok(line));
            }
            if self.done {
                return None;
            }
            self.collect();
            if !self.pending.is_empty() {
                continue;
            }
            let deadline = self.deadline;
            let due = self.next_due;
            let wake = tokio::select! {
                r = self.rv_rx.changed() => if r.is_ok() { Wake::Changed } else { Wake::Closed },
                _ = self.cut_rx.changed() => Wake::Changed,
                _ = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => Wake::Timeout,
                _ = tokio::time::sleep_until(self.next_bookmark), if self.bookmarks => Wake::Bookmark,
                _ = async {
                    match due {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => Wake::Due,
            };
            match wake {
                Wake::Changed | Wake::Due => {}
                Wake::Closed | Wake::Timeout => self.done = true,
                Wake::Bookmark => {
                    self.collect();
                    if !self.done {
                        self.pending
                            .push_back(bookmark(self.res, self.last_rv, false));
                    }
                    self.next_bookmark = Instant::now() + BOOKMARK_INTERVAL;
                }
            }
        }
    }

    /// Whether a mid-event cut of this watch's resource was asked for after
    /// the watch started.
    fn mid_event_armed(&self) -> bool {
        self.shared.mid_event.lock().expect("mid-event cuts")[self.res] != self.mid_event_gen
    }

    /// Queues the events of changes after `last_rv` that are due (all of
    /// them unless the resource's watch lags; see
    /// [`super::FakeApiServer::set_watch_lag`]).
    fn collect(&mut self) {
        let lag = self.shared.watch_lag.lock().expect("watch lag")[self.res];
        let store = self.shared.store.lock().expect("store");
        self.next_due = None;
        match store.changes_since(self.res, self.last_rv) {
            Err(oldest) => {
                let err = ApiError::expired(self.last_rv, oldest);
                self.pending.push_back(event_line("ERROR", &err.status()));
                self.done = true;
            }
            Ok(changes) => {
                let now = std::time::Instant::now();
                for change in changes {
                    if change.at + lag > now {
                        // Held back, and everything after it: order is kept.
                        self.next_due = Some(Instant::from_std(change.at + lag));
                        self.last_rv = change.rv - 1;
                        return;
                    }
                    if let Some(line) =
                        translate(&change, self.namespace.as_deref(), &self.selectors)
                    {
                        self.pending.push_back(line);
                    }
                    self.last_rv = change.rv;
                }
                self.last_rv = self.last_rv.max(store.rv());
            }
        }
    }
}
