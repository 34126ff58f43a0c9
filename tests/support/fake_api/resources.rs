//! What the fake server knows about resources and objects. The parts:
//! - `table`: the served resource types and lookups of them;
//! - `errors`: the `meta/v1 Status` errors it answers with;
//! - `validation`: the name and spec validation a real kube-apiserver runs;
//! - `crd`: the product's CRD (LocalDisks): schema pruning and validation,
//!   and the Tables of its printer columns.
//!
//! This module itself owns the accessors of object JSON the rest of the
//! fake shares (metadata fields, finalizers, quantities).

pub(super) mod crd;
mod errors;
mod table;
mod validation;

use serde_json::{Map, Value, json};

pub(super) use errors::{ApiError, Cause};
pub(super) use table::{
    LEASES, LOCAL_DISKS, NAMESPACES, NODES, PVCS, PVS, RESOURCES, ResourceDef, STORAGE_CLASSES,
    by_name, find,
};
pub(super) use validation::{is_subdomain, validate_name, validate_spec};

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
