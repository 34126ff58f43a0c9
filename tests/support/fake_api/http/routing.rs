//! Request routing: percent-decoding, the query string, the path (to a
//! discovery document or a resource [`Target`]), the verb a request counts
//! as, and the entry handler every request goes through (request log and
//! observer, authentication, latency, injected faults, then serving).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::response::Response;

use super::super::Shared;
use super::super::admission::{self, UserInfo};
use super::super::faults::RecordedRequest;
use super::super::resources::{self, ApiError, RESOURCES};
use super::{discovery, error_response, json_response, verbs};

/// A request aimed at a resource.
#[derive(Debug, Clone)]
pub(super) struct Target {
    /// Resource id.
    pub(super) res: usize,
    /// Namespace from the path.
    pub(super) namespace: Option<String>,
    /// Object name from the path; `None` for the collection.
    pub(super) name: Option<String>,
    /// Subresource (`status`).
    pub(super) sub: Option<String>,
}

/// What a path asks for.
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

/// Decodes `%XX` escapes (and `+` as a space in query strings).
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

/// The query string as a map (the last of repeated keys wins).
fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// Parses a path into its route.
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

/// The route below `/api/{version}` or `/apis/{group}/{version}`.
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
    let Some(res) = resources::find(group, version, parts[0]) else {
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

/// Whether the query asks for a watch.
pub(super) fn is_watch(query: &HashMap<String, String>) -> bool {
    matches!(query.get("watch").map(String::as_str), Some("true" | "1"))
}

/// The verb a request counts as (as in RBAC and the request log).
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

/// A request as the handlers see it.
struct Call {
    method: Method,
    path: String,
    raw_query: String,
    query: HashMap<String, String>,
    route: Route,
    content_type: Option<String>,
    /// `Accept` header (a Table asked for by `kubectl get`).
    accept: Option<String>,
    /// `User-Agent` header.
    user_agent: Option<String>,
    /// `Host` header, echoed in `/api`.
    host: String,
    body: Bytes,
}

impl Call {
    /// Parses the path, query and headers of a request.
    fn new(parts: &Parts, body: Bytes) -> Call {
        let path = parts.uri.path().to_string();
        let raw_query = parts.uri.query().unwrap_or_default().to_string();
        let query = parse_query(&raw_query);
        let route = parse_route(&path);
        let header = |name: header::HeaderName| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        Call {
            method: parts.method.clone(),
            path,
            raw_query,
            query,
            route,
            content_type: header(header::CONTENT_TYPE),
            accept: header(header::ACCEPT),
            user_agent: header(header::USER_AGENT),
            host: header(header::HOST).unwrap_or_else(|| "127.0.0.1".to_string()),
            body,
        }
    }

    /// The request as logged and shown to the observer (`status` still `0`).
    fn recorded(&self) -> RecordedRequest {
        let target = match &self.route {
            Route::Object(t) => Some(t),
            _ => None,
        };
        RecordedRequest {
            method: self.method.to_string(),
            path: self.path.clone(),
            query: self.raw_query.clone(),
            status: 0,
            verb: derive_verb(&self.method, &self.route, &self.query),
            group: target
                .map(|t| RESOURCES[t.res].group.to_string())
                .unwrap_or_default(),
            resource: target
                .map(|t| RESOURCES[t.res].plural.to_string())
                .unwrap_or_default(),
            subresource: target.and_then(|t| t.sub.clone()),
            namespace: target.and_then(|t| t.namespace.clone()),
            name: target.and_then(|t| t.name.clone()),
            content_type: self.content_type.clone(),
            body: serde_json::from_slice(&self.body).ok(),
        }
    }

    /// Serves the request (no fault, authenticated or anonymous).
    fn serve(&self, shared: &Arc<Shared>, user: Option<&UserInfo>) -> Response {
        match &self.route {
            Route::Version => json_response(StatusCode::OK, &discovery::version_info()),
            Route::Health => Response::new(Body::from("ok")),
            Route::CoreVersions => {
                json_response(StatusCode::OK, &discovery::core_versions(&self.host))
            }
            Route::Groups => json_response(StatusCode::OK, &discovery::group_list()),
            Route::Resources(g, v) => {
                json_response(StatusCode::OK, &discovery::resource_list(g, v))
            }
            Route::Unknown => error_response(&ApiError::no_route()),
            Route::Object(target)
                if target.res == resources::LOCAL_DISKS
                    && !shared.crd_installed.load(Ordering::SeqCst) =>
            {
                error_response(&ApiError::no_route())
            }
            Route::Object(target) => verbs::ObjectCall {
                shared,
                user,
                method: &self.method,
                target,
                query: &self.query,
                content_type: self.content_type.as_deref(),
                accept: self.accept.as_deref(),
                user_agent: self.user_agent.as_deref(),
                body: &self.body,
            }
            .handle()
            .unwrap_or_else(|e| error_response(&e)),
        }
    }
}

/// The handler of every request: shows it to the observer, authenticates
/// it, waits the latency, answers an injected fault or serves it, and logs
/// it with its status.
pub(super) async fn entry(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let call = Call::new(&parts, body);
    let mut recorded = call.recorded();
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
        (None, None) => call.serve(&shared, user.as_ref()),
    };

    recorded.status = response.status().as_u16();
    shared.faults.record(recorded);
    response
}
