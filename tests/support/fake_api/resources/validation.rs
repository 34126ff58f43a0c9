//! The validation a real kube-apiserver runs that the fake reproduces:
//! object names (RFC 1123 subdomains or labels) and the basics of
//! PersistentVolume, PersistentVolumeClaim, StorageClass and Lease specs,
//! and the schema of the product's CRD (`crd`).

use serde_json::Value;

use super::table::NameRule;
use super::{Cause, LEASES, LOCAL_DISKS, PVCS, PVS, ResourceDef, STORAGE_CLASSES, crd};

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
     '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for \
     validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
     and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for \
     validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

/// Whether `s` is an RFC 1123 label (without the length limit).
fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && alnum(&b[0])
        && alnum(&b[b.len() - 1])
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

/// Whether `s` is an RFC 1123 subdomain (without the length limit).
pub fn is_subdomain(s: &str) -> bool {
    s.split('.').all(is_label)
}

/// Validates `metadata.name` for a resource.
pub fn validate_name(res: &ResourceDef, name: &str) -> Vec<Cause> {
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

/// Resource-specific spec validation (PersistentVolumes, claims, storage
/// classes, leases, LocalDisks); other resources accept any content.
pub fn validate_spec(res_id: usize, obj: &Value) -> Vec<Cause> {
    match res_id {
        PVS => validate_pv(obj.get("spec").unwrap_or(&Value::Null)),
        PVCS => validate_pvc(obj.get("spec").unwrap_or(&Value::Null)),
        STORAGE_CLASSES => validate_storage_class(obj),
        LEASES => validate_lease(obj.get("spec").unwrap_or(&Value::Null)),
        LOCAL_DISKS => crd::validate(obj),
        _ => Vec::new(),
    }
}

/// Whether a field is missing, null or empty (as `required` checks see it).
fn empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(Value::String(s)) => s.is_empty(),
        _ => false,
    }
}

/// Fields of a PersistentVolume spec that are not a volume source.
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

/// A PersistentVolume spec: access modes, capacity, exactly one volume
/// source, and a path and node affinity for a local volume.
fn validate_pv(spec: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if empty(spec.get("accessModes")) {
        causes.push(Cause::required("spec.accessModes", ""));
    }
    if empty(spec.pointer("/capacity/storage")) {
        causes.push(Cause::required("spec.capacity", ""));
    }
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
    causes
}

/// A PersistentVolumeClaim spec: access modes and a storage request.
fn validate_pvc(spec: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if empty(spec.get("accessModes")) {
        causes.push(Cause::required(
            "spec.accessModes",
            "at least 1 access mode is required",
        ));
    }
    if empty(spec.pointer("/resources/requests/storage")) {
        causes.push(Cause::required("spec.resources[storage]", ""));
    }
    causes
}

/// A StorageClass: a provisioner and a known volume binding mode.
fn validate_storage_class(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if empty(obj.get("provisioner")) {
        causes.push(Cause::required("provisioner", ""));
    }
    let mode = obj.get("volumeBindingMode").and_then(Value::as_str);
    if let Some(mode) = mode.filter(|m| !["Immediate", "WaitForFirstConsumer"].contains(m)) {
        causes.push(Cause::invalid(
            "volumeBindingMode",
            mode,
            "supported values: \"Immediate\", \"WaitForFirstConsumer\"",
        ));
    }
    causes
}

/// A Lease spec: a positive duration, transitions not negative.
fn validate_lease(spec: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let number = |key: &str| spec.get(key).and_then(Value::as_i64);
    if let Some(duration) = number("leaseDurationSeconds").filter(|d| *d <= 0) {
        causes.push(Cause::invalid(
            "spec.leaseDurationSeconds",
            &duration.to_string(),
            "must be greater than 0",
        ));
    }
    if let Some(transitions) = number("leaseTransitions").filter(|t| *t < 0) {
        causes.push(Cause::invalid(
            "spec.leaseTransitions",
            &transitions.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    causes
}
