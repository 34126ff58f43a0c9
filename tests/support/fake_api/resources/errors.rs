//! The errors the fake server answers with, as `meta/v1 Status` objects
//! ([`ApiError`]), and the field causes of a 422 Invalid ([`Cause`]).

use serde_json::{Map, Value, json};

use super::ResourceDef;

/// An error answered as a `meta/v1 Status` object.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `StatusReason` (`NotFound`, `Conflict`, ...).
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// `details` object (may be empty).
    pub details: Value,
}

/// `details` naming an object of a resource.
fn details(res: &ResourceDef, name: &str) -> Value {
    let mut d = Map::new();
    if !name.is_empty() {
        d.insert("name".into(), json!(name));
    }
    if !res.group.is_empty() {
        d.insert("group".into(), json!(res.group));
    }
    d.insert("kind".into(), json!(res.plural));
    Value::Object(d)
}

impl ApiError {
    /// An error without details.
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: json!({}),
        }
    }

    /// 404 for a named object.
    pub fn not_found(res: &ResourceDef, name: &str) -> Self {
        ApiError {
            details: details(res, name),
            ..Self::new(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", res.qualified()),
            )
        }
    }

    /// 404 for a path the server does not serve.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 405 for a verb the path does not support.
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 409 AlreadyExists on create.
    pub fn already_exists(res: &ResourceDef, name: &str) -> Self {
        ApiError {
            details: details(res, name),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", res.qualified()),
            )
        }
    }

    /// 409 Conflict (stale resourceVersion, failed precondition).
    pub fn conflict(res: &ResourceDef, name: &str, why: &str) -> Self {
        ApiError {
            details: details(res, name),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": {why}",
                    res.qualified()
                ),
            )
        }
    }

    /// 409 Conflict for a stale `metadata.resourceVersion`.
    pub fn stale(res: &ResourceDef, name: &str) -> Self {
        Self::conflict(
            res,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 Invalid with field causes.
    pub fn invalid(res: &ResourceDef, name: &str, causes: &[Cause]) -> Self {
        let texts: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.text()))
            .collect();
        let joined = if texts.len() == 1 {
            texts[0].clone()
        } else {
            format!("[{}]", texts.join(", "))
        };
        let mut d = Map::new();
        d.insert("name".into(), json!(name));
        if !res.group.is_empty() {
            d.insert("group".into(), json!(res.group));
        }
        d.insert("kind".into(), json!(res.kind));
        d.insert(
            "causes".into(),
            causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.text(), "field": c.field}))
                .collect(),
        );
        ApiError {
            details: Value::Object(d),
            ..Self::new(
                422,
                "Invalid",
                format!("{} \"{name}\" is invalid: {joined}", res.qualified_kind()),
            )
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 410 Expired for a resourceVersion older than the retained history.
    pub fn expired(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// 415 for an unsupported patch content type.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type}) - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json"
            ),
        )
    }

    /// 500 InternalError.
    pub fn internal(message: &str) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
    }

    /// The error a test injected with a fault rule.
    pub fn injected(code: u16, message: Option<String>) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            410 => "Expired",
            422 => "Invalid",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "",
        };
        let message =
            message.unwrap_or_else(|| format!("fault injected by the test (HTTP {code})"));
        Self::new(code, reason, message)
    }

    /// The `meta/v1 Status` JSON object.
    pub fn status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        })
    }
}

/// One field error of a 422 Invalid answer.
#[derive(Debug, Clone)]
pub struct Cause {
    reason: &'static str,
    field: String,
    detail: String,
    value: Option<String>,
}

impl Cause {
    /// `field: Invalid value: "value": detail`.
    pub fn invalid(field: &str, value: &str, detail: &str) -> Self {
        Cause {
            reason: "FieldValueInvalid",
            field: field.into(),
            detail: detail.into(),
            value: Some(value.into()),
        }
    }

    /// `field: Required value[: detail]`.
    pub fn required(field: &str, detail: &str) -> Self {
        Cause {
            reason: "FieldValueRequired",
            field: field.into(),
            detail: detail.into(),
            value: None,
        }
    }

    /// `field: Unsupported value: "value": supported values: …`.
    pub fn not_supported(field: &str, value: &str, supported: &str) -> Self {
        Cause {
            reason: "FieldValueNotSupported",
            field: field.into(),
            detail: format!("supported values: {supported}"),
            value: Some(value.into()),
        }
    }

    /// `field: Forbidden: detail`.
    pub fn forbidden(field: &str, detail: &str) -> Self {
        Cause {
            reason: "FieldValueForbidden",
            field: field.into(),
            detail: detail.into(),
            value: None,
        }
    }

    /// The message of the cause, as the real server words it.
    fn text(&self) -> String {
        let head = match self.reason {
            "FieldValueInvalid" => format!(
                "Invalid value: \"{}\"",
                self.value.as_deref().unwrap_or_default()
            ),
            "FieldValueRequired" => "Required value".to_string(),
            "FieldValueNotSupported" => format!(
                "Unsupported value: \"{}\"",
                self.value.as_deref().unwrap_or_default()
            ),
            _ => "Forbidden".to_string(),
        };
        if self.detail.is_empty() {
            head
        } else {
            format!("{head}: {}", self.detail)
        }
    }
}
