//! Fault injection (failing requests, latency), the log of every request
//! the server answered, and the observer shown each request as it arrives.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A callback shown every request as it arrives, before it is answered; see
/// [`super::FakeApiServer::observe_requests`].
pub(super) type RequestObserver = Arc<dyn Fn(&RecordedRequest) + Send + Sync>;

/// A rule making matching requests fail with an HTTP status (answered as a
/// `Status` object with the usual reason for the code, e.g. 500 InternalError,
/// 503 ServiceUnavailable, 409 Conflict), for a limited number of requests.
///
/// ```ignore
/// server.fail_requests(FaultRule::new(503, 2).method("PUT").path("/persistentvolumes/"));
/// // A policy webhook refusing one PV, however often it is created:
/// server.fail_requests(
///     FaultRule::new(403, usize::MAX).verb("create").object_name("local-n1-sda")
///         .message("admission webhook \"pv-policy.example.com\" denied the request"),
/// );
/// ```
#[derive(Debug, Clone)]
pub struct FaultRule {
    status: u16,
    remaining: usize,
    method: Option<String>,
    path: String,
    verb: Option<String>,
    object_name: Option<String>,
    message: Option<String>,
}

/// What a matching rule answers instead of serving the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Injected {
    /// The HTTP status.
    pub status: u16,
    /// The `Status` message, when the rule sets one.
    pub message: Option<String>,
}

impl FaultRule {
    /// Fails the next `count` requests (matching the filters added with the
    /// other methods; by default every request) with HTTP `status`.
    pub fn new(status: u16, count: usize) -> Self {
        FaultRule {
            status,
            remaining: count,
            method: None,
            path: String::new(),
            verb: None,
            object_name: None,
            message: None,
        }
    }

    /// Only requests with this HTTP method (`GET`, `PUT`, ...; case-insensitive).
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    /// Only requests whose path contains this substring.
    pub fn path(mut self, substring: &str) -> Self {
        self.path = substring.to_string();
        self
    }

    /// Only requests of this derived verb (`get`, `list`, `watch`, `create`,
    /// `update`, `patch`, `delete`, `deletecollection`).
    pub fn verb(mut self, verb: &str) -> Self {
        self.verb = Some(verb.to_string());
        self
    }

    /// Only requests about the object named `name`: the name in the path,
    /// or, for a create (whose path names no object), `metadata.name` in the
    /// body. This is how an admission webhook or a validation rule refuses
    /// one object: by what it is, not by the URL it was sent to.
    pub fn object_name(mut self, name: &str) -> Self {
        self.object_name = Some(name.to_string());
        self
    }

    /// Answers with this `Status` message instead of the default
    /// `fault injected by the test (HTTP <code>)`.
    pub fn message(mut self, message: &str) -> Self {
        self.message = Some(message.to_string());
        self
    }

    fn matches(&self, request: &RecordedRequest) -> bool {
        self.remaining > 0
            && self.method.as_deref().is_none_or(|m| m == request.method)
            && request.path.contains(&self.path)
            && self.verb.as_deref().is_none_or(|v| v == request.verb)
            && self
                .object_name
                .as_deref()
                .is_none_or(|name| request.object_name() == Some(name))
    }
}

/// One request as the server saw and answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method (`GET`, `POST`, ...).
    pub method: String,
    /// URL path.
    pub path: String,
    /// Raw (still percent-encoded) query string, `""` when none.
    pub query: String,
    /// HTTP status answered (for watches: the status the stream started with);
    /// `0` in what a request observer is shown, as nothing is answered yet.
    pub status: u16,
    /// Kubernetes verb derived like the real server's request info: `get`,
    /// `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`; for non-resource paths the lowercase HTTP method.
    pub verb: String,
    /// API group (`""` for core and non-resource paths).
    pub group: String,
    /// Resource plural (`""` for non-resource paths such as `/version`).
    pub resource: String,
    /// Subresource (`status`), if any.
    pub subresource: Option<String>,
    /// Namespace from the path, if any.
    pub namespace: Option<String>,
    /// Object name from the path, if any.
    pub name: Option<String>,
    /// `Content-Type` of the request, if any (tells which patch type was sent).
    pub content_type: Option<String>,
    /// Request body parsed as JSON, if it was JSON.
    pub body: Option<serde_json::Value>,
}

impl RecordedRequest {
    /// The object the request is about: the name in the path, else (a
    /// create) `metadata.name` in the body.
    pub fn object_name(&self) -> Option<&str> {
        self.name
            .as_deref()
            .or_else(|| self.body.as_ref()?.pointer("/metadata/name")?.as_str())
    }
}

/// Fault rules, latency, the request log and the request observer, shared
/// by all connections.
#[derive(Default)]
pub(super) struct Faults {
    rules: Mutex<Vec<FaultRule>>,
    latency: Mutex<Duration>,
    log: Mutex<Vec<RecordedRequest>>,
    observer: Mutex<Option<RequestObserver>>,
}

impl Faults {
    /// Adds a rule; rules are tried in the order they were added.
    pub fn add(&self, rule: FaultRule) {
        self.rules.lock().expect("fault rules").push(rule);
    }

    /// Drops every rule and the latency.
    pub fn clear(&self) {
        self.rules.lock().expect("fault rules").clear();
        *self.latency.lock().expect("latency") = Duration::ZERO;
    }

    /// Uses up one request of the first rule matching `request` and returns
    /// what to answer.
    pub fn take(&self, request: &RecordedRequest) -> Option<Injected> {
        let mut rules = self.rules.lock().expect("fault rules");
        let pos = rules.iter().position(|r| r.matches(request))?;
        let rule = &mut rules[pos];
        rule.remaining -= 1;
        let injected = Injected {
            status: rule.status,
            message: rule.message.clone(),
        };
        if rule.remaining == 0 {
            rules.remove(pos);
        }
        Some(injected)
    }

    /// Sets the delay added before every response.
    pub fn set_latency(&self, d: Duration) {
        *self.latency.lock().expect("latency") = d;
    }

    /// The delay added before every response.
    pub fn latency(&self) -> Duration {
        *self.latency.lock().expect("latency")
    }

    /// Appends to the request log.
    pub fn record(&self, r: RecordedRequest) {
        self.log.lock().expect("request log").push(r);
    }

    /// A copy of the request log.
    pub fn log(&self) -> Vec<RecordedRequest> {
        self.log.lock().expect("request log").clone()
    }

    /// Empties the request log.
    pub fn clear_log(&self) {
        self.log.lock().expect("request log").clear();
    }

    /// Installs (or, with `None`, removes) the request observer.
    pub fn set_observer(&self, observer: Option<RequestObserver>) {
        *self.observer.lock().expect("request observer") = observer;
    }

    /// Shows a request that just arrived to the observer, if any. The lock is
    /// not held while the observer runs.
    pub fn observe(&self, r: &RecordedRequest) {
        let observer = self.observer.lock().expect("request observer").clone();
        if let Some(observer) = observer {
            observer(r);
        }
    }
}
