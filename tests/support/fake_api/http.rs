//! HTTP side of the fake API server: the router and the JSON response helpers
//! every part of it answers with. The parts:
//! - `listener`: the listener that tracks connections (so a restart can drop
//!   them all);
//! - `routing`: path and query parsing, the entry handler (request log,
//!   authentication, latency, injected faults);
//! - `verbs`: the REST verbs on objects and collections;
//! - `discovery`: `/version`, `/api`, `/apis` and the resource lists;
//! - `watch`: watch streams, their bookmarks, lag and cuts.

mod discovery;
mod listener;
mod routing;
mod verbs;
mod watch;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::Value;

use super::Shared;
use super::resources::ApiError;

pub(super) use listener::{Connections, TrackedListener};

/// The router: a single fallback handler doing its own path parsing.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(routing::entry).with_state(shared)
}

/// A response with `body` served as `application/json`.
fn json_body(code: StatusCode, body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// A JSON response.
fn json_response(code: StatusCode, value: &Value) -> Response {
    json_body(code, Body::from(serde_json::to_vec(value).expect("JSON")))
}

/// An error answered as its `Status` object.
fn error_response(err: &ApiError) -> Response {
    json_response(
        StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &err.status(),
    )
}

/// A request body as JSON, refused like the real server refuses it.
fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })
}
