//! The table of resources the fake server serves, the `meta/v1 Status` errors it
//! answers with, and the validation a real kube-apiserver would run on them.

use serde_json::{Map, Value, json};

/// How `metadata.name` of a resource is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NameRule {
    /// RFC 1123 subdomain (most resources).
    Subdomain,
    /// RFC 1123 label (namespaces).
    Label,
}

/// One served resource type.
#[derive(Debug)]
pub(super) struct ResourceDef {
    /// API group, `""` for the core group.
    pub group: &'static str,
    /// API version inside the group.
    pub version: &'static str,
    /// Lowercase plural used in paths.
    pub plural: &'static str,
    /// Kind of the objects.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Whether the resource has a `/status` subresource (then writes to the main
    /// resource keep the stored `.status`).
    pub has_status: bool,
    /// Field selector labels supported besides `metadata.name`/`metadata.namespace`,
    /// resolved as dotted JSON paths.
    pub extra_fields: &'static [&'static str],
    /// Name validation rule.
    pub name_rule: NameRule,
}

impl ResourceDef {
    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Group-qualified resource name as the real server prints it in messages
    /// (`configmaps`, `events.events.k8s.io`); also the name tests use to look
    /// objects up.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Group-qualified kind (`PersistentVolume`, `Event.events.k8s.io`).
    fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "type",
];

/// Every resource the fake serves; indexes into this table identify resources.
pub(super) const RESOURCES: &[ResourceDef] = &[
    ResourceDef {
        group: "",
        version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
        has_status: true,
        extra_fields: &["status.phase"],
        name_rule: NameRule::Label,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "nodes",
        kind: "Node",
        namespaced: false,
        has_status: true,
        extra_fields: &["spec.unschedulable"],
        name_rule: NameRule::Subdomain,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
        has_status: false,
        extra_fields: &[],
        name_rule: NameRule::Subdomain,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "persistentvolumes",
        kind: "PersistentVolume",
        namespaced: false,
        has_status: true,
        extra_fields: &[],
        name_rule: NameRule::Subdomain,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "persistentvolumeclaims",
        kind: "PersistentVolumeClaim",
        namespaced: true,
        has_status: true,
        extra_fields: &[],
        name_rule: NameRule::Subdomain,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        has_status: false,
        extra_fields: EVENT_FIELDS,
        name_rule: NameRule::Subdomain,
    },
    ResourceDef {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        has_status: false,
        extra_fields: &[
            "reason",
            "reportingController",
            "type",
            "regarding.kind",
            "regarding.name",
        ],
        name_rule: NameRule::Subdomain,
    },
    ResourceDef {
        group: "storage.k8s.io",
        version: "v1",
        plural: "storageclasses",
        kind: "StorageClass",
        namespaced: false,
        has_status: false,
        extra_fields: &[],
        name_rule: NameRule::Subdomain,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "pods",
        kind: "Pod",
        namespaced: true,
        has_status: true,
        extra_fields: &["spec.nodeName", "status.phase"],
        name_rule: NameRule::Subdomain,
    },
];

/// Resource id of `namespaces`.
pub(super) const NAMESPACES: usize = 0;
/// Resource id of `nodes`.
pub(super) const NODES: usize = 1;
/// Resource id of `persistentvolumes`.
pub(super) const PVS: usize = 3;
/// Resource id of `persistentvolumeclaims`.
pub(super) const PVCS: usize = 4;
/// Resource id of `storageclasses` (`storage.k8s.io/v1`).
pub(super) const STORAGE_CLASSES: usize = 7;

/// Finds a resource by group, version and plural.
pub(super) fn find(group: &str, version: &str, plural: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Finds a resource by its qualified name (`persistentvolumes`,
/// `events.events.k8s.io`); panics with the list of known names otherwise.
pub(super) fn by_name(qualified: &str) -> usize {
    RESOURCES
        .iter()
        .position(|r| r.qualified() == qualified)
        .unwrap_or_else(|| {
            let known: Vec<String> = RESOURCES.iter().map(ResourceDef::qualified).collect();
            panic!("fake API server: unknown resource {qualified:?}; known: {known:?}")
        })
}

/// An error answered as a `meta/v1 Status` object.
#[derive(Debug, Clone)]
pub(super) struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `StatusReason` (`NotFound`, `Conflict`, ...).
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// `details` object (may be empty).
    pub details: Value,
}

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
pub(super) struct Cause {
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

    /// `field: Forbidden: detail`.
    pub fn forbidden(field: &str, detail: &str) -> Self {
        Cause {
            reason: "FieldValueForbidden",
            field: field.into(),
            detail: detail.into(),
            value: None,
        }
    }

    fn text(&self) -> String {
        let head = match self.reason {
            "FieldValueInvalid" => format!(
                "Invalid value: \"{}\"",
                self.value.as_deref().unwrap_or_default()
            ),
            "FieldValueRequired" => "Required value".to_string(),
            _ => "Forbidden".to_string(),
        };
        if self.detail.is_empty() {
            head
        } else {
            format!("{head}: {}", self.detail)
        }
    }
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
     '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for \
     validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
     and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for \
     validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && alnum(&b[0])
        && alnum(&b[b.len() - 1])
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

/// Whether `s` is an RFC 1123 subdomain (without the length limit).
pub(super) fn is_subdomain(s: &str) -> bool {
    s.split('.').all(is_label)
}

/// Validates `metadata.name` for a resource.
pub(super) fn validate_name(res: &ResourceDef, name: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    let (max, ok, msg) = match res.name_rule {
        NameRule::Subdomain => (253, is_subdomain(name), SUBDOMAIN_MSG),
        NameRule::Label => (63, is_label(name), LABEL_MSG),
    };
    if name.len() > max {
        causes.push(Cause::invalid(
            "metadata.name",
            name,
            &format!("must be no more than {max} characters"),
        ));
    }
    if !ok {
        causes.push(Cause::invalid("metadata.name", name, msg));
    }
    causes
}

/// Resource-specific spec validation (PersistentVolumes, claims and storage
/// classes); other resources accept any content.
pub(super) fn validate_spec(res_id: usize, obj: &Value) -> Vec<Cause> {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let mut causes = Vec::new();
    let empty = |v: Option<&Value>| match v {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(Value::String(s)) => s.is_empty(),
        _ => false,
    };
    match res_id {
        PVS => {
            if empty(spec.get("accessModes")) {
                causes.push(Cause::required("spec.accessModes", ""));
            }
            if empty(spec.pointer("/capacity/storage")) {
                causes.push(Cause::required("spec.capacity", ""));
            }
            const NOT_SOURCES: &[&str] = &[
                "accessModes",
                "capacity",
                "claimRef",
                "persistentVolumeReclaimPolicy",
                "storageClassName",
                "mountOptions",
                "volumeMode",
                "nodeAffinity",
                "volumeAttributesClassName",
            ];
            let sources = spec
                .as_object()
                .map(|m| {
                    m.keys()
                        .filter(|k| !NOT_SOURCES.contains(&k.as_str()))
                        .count()
                })
                .unwrap_or(0);
            if sources == 0 {
                causes.push(Cause::required("spec", "must specify a volume type"));
            } else if sources > 1 {
                causes.push(Cause::forbidden(
                    "spec",
                    "may not specify more than 1 volume type",
                ));
            }
            if let Some(local) = spec.get("local") {
                if empty(local.get("path")) {
                    causes.push(Cause::required("spec.local.path", ""));
                }
                if empty(spec.get("nodeAffinity")) {
                    causes.push(Cause::required(
                        "spec.nodeAffinity",
                        "Local volume requires node affinity",
                    ));
                }
            }
        }
        PVCS => {
            if empty(spec.get("accessModes")) {
                causes.push(Cause::required(
                    "spec.accessModes",
                    "at least 1 access mode is required",
                ));
            }
            if empty(spec.pointer("/resources/requests/storage")) {
                causes.push(Cause::required("spec.resources[storage]", ""));
            }
        }
        STORAGE_CLASSES => {
            if empty(obj.get("provisioner")) {
                causes.push(Cause::required("provisioner", ""));
            }
            let mode = obj.get("volumeBindingMode").and_then(Value::as_str);
            if let Some(mode) = mode.filter(|m| !["Immediate", "WaitForFirstConsumer"].contains(m))
            {
                causes.push(Cause::invalid(
                    "volumeBindingMode",
                    mode,
                    "supported values: \"Immediate\", \"WaitForFirstConsumer\"",
                ));
            }
        }
        _ => {}
    }
    causes
}

/// `metadata` of an object, created when missing or not an object.
pub(super) fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    let map = obj.as_object_mut().expect("object");
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut().expect("object")
}

/// A string field of `metadata`, `""` when missing.
pub(super) fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.finalizers` as strings.
pub(super) fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A string at a JSON pointer, `""` when missing.
pub(super) fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Parses a Kubernetes quantity (`10Gi`, `500M`, `1.5Ti`, `1e3`) into bytes /
/// units; `None` when unparsable.
pub(super) fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let factor: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    num.parse::<f64>().ok().map(|n| n * factor)
}
