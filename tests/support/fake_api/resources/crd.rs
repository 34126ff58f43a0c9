//! The custom resources the fake serves from the product's own CRD file
//! (`config/crd`: LocalDisks), treated as a real server treats a CRD's
//! objects: a create drops `.status` (the CRD has a status subresource),
//! every write is pruned to the structural schema (unknown fields and
//! nulls dropped silently) and then validated against it (types, enums,
//! minimums, required fields, date-times; 422 Invalid with the real
//! server's wording), and `kubectl get` is answered with a server-side
//! Table built from the CRD's `additionalPrinterColumns`.

use std::sync::LazyLock;

use serde_json::{Value, json};

use super::Cause;

/// The LocalDisk CRD, as shipped.
static LOCAL_DISKS: LazyLock<Value> = LazyLock::new(|| {
    let text =
        include_str!("../../../../config/crd/localdisks.local-pv-provisioner.cybozu.io.yaml");
    serde_yaml_ng::from_str(text).expect("config/crd: the LocalDisk CRD parses")
});

/// The served version of the LocalDisk CRD.
fn version() -> &'static Value {
    &LOCAL_DISKS["spec"]["versions"][0]
}

/// The short names of the LocalDisk CRD (`ld`).
pub fn short_names() -> Vec<String> {
    LOCAL_DISKS["spec"]["names"]["shortNames"]
        .as_array()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Drops what the real server drops before storing a LocalDisk: fields its
/// schema does not name and null values (at any depth below the root's
/// `metadata`, which is the server's own).
pub fn prune(obj: &mut Value) {
    prune_at(obj, &version()["schema"]["openAPIV3Schema"], true);
}

fn prune_at(value: &mut Value, schema: &Value, root: bool) {
    match value {
        Value::Object(map) => {
            let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
                return;
            };
            map.retain(|key, field| {
                (root && key == "metadata") || (properties.contains_key(key) && !field.is_null())
            });
            for (key, field) in map.iter_mut() {
                if !(root && key == "metadata") {
                    prune_at(field, &properties[key], false);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                for value in items.iter_mut() {
                    prune_at(value, item, false);
                }
            }
        }
        _ => {}
    }
}

/// What makes a (pruned) LocalDisk invalid against its schema.
pub fn validate(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let schema = &version()["schema"]["openAPIV3Schema"];
    if let (Some(map), Some(properties)) = (obj.as_object(), schema.get("properties")) {
        for (key, value) in map {
            if key != "metadata" {
                check(value, &properties[key], key, &mut causes);
            }
        }
    }
    causes
}

/// The name of a JSON value's type as the real server's messages spell it.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The value as the real server quotes it in a message.
fn quoted(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn check(value: &Value, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    let wanted = schema.get("type").and_then(Value::as_str).unwrap_or("");
    let actual = type_name(value);
    let fits = wanted.is_empty() || wanted == actual || (wanted == "number" && actual == "integer");
    if !fits {
        causes.push(Cause::invalid(
            path,
            actual,
            &format!("{path} in body must be of type {wanted}: \"{actual}\""),
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed
            .iter()
            .map(|v| format!("\"{}\"", quoted(v)))
            .collect();
        causes.push(Cause::not_supported(path, &quoted(value), &list.join(", ")));
    }
    if let (Some(minimum), Some(number)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) && number < minimum
    {
        causes.push(Cause::invalid(
            path,
            &quoted(value),
            &format!("{path} in body should be greater than or equal to {minimum}"),
        ));
    }
    if schema.get("format").and_then(Value::as_str) == Some("date-time")
        && let Some(text) = value.as_str()
        && !is_date_time(text)
    {
        causes.push(Cause::invalid(
            path,
            text,
            &format!("{path} in body must be of type date-time: \"{text}\""),
        ));
    }
    match value {
        Value::Object(map) => {
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !map.contains_key(required) {
                    causes.push(Cause::required(&format!("{path}.{required}"), ""));
                }
            }
            if let Some(properties) = schema.get("properties") {
                for (key, field) in map {
                    check(field, &properties[key], &format!("{path}.{key}"), causes);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                for (index, value) in items.iter().enumerate() {
                    check(value, item, &format!("{path}[{index}]"), causes);
                }
            }
        }
        _ => {}
    }
}

/// Whether `text` is an RFC 3339 date-time (`2026-12-07T10:00:00Z`,
/// fractions and offsets allowed).
fn is_date_time(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range.clone())
            .is_some_and(|s| s.len() == range.len() && s.iter().all(u8::is_ascii_digit))
    };
    let shape = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !shape {
        return false;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let end = fraction
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(fraction.len());
        if end == 0 {
            return false;
        }
        rest = &fraction[end..];
    }
    matches!(rest, "Z" | "z")
        || (rest.len() == 6
            && matches!(rest.as_bytes()[0], b'+' | b'-')
            && rest.as_bytes()[3] == b':')
}

/// Whether an `Accept` header asks for a server-side Table.
pub fn wants_table(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| {
        accept
            .split(',')
            .next()
            .is_some_and(|first| first.split(';').any(|p| p.trim() == "as=Table"))
    })
}

/// The Table the real server answers `kubectl get` with for LocalDisks:
/// the name, then each printer column (its `priority` tells `-o wide`),
/// each row with the object's metadata.
pub fn table(items: &[Value], resource_version: &str, now: i64) -> Value {
    let columns: Vec<Value> = version()["additionalPrinterColumns"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut definitions = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace.",
    })];
    definitions.extend(columns.iter().map(|column| {
        json!({
            "name": column["name"],
            "type": column["type"],
            "format": column.get("format").cloned().unwrap_or(json!("")),
            "description": column.get("description").cloned().unwrap_or(json!("")),
            "priority": column.get("priority").cloned().unwrap_or(json!(0)),
        })
    }));
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let mut cells = vec![item["metadata"]["name"].clone()];
            cells.extend(columns.iter().map(|column| {
                let path = column["jsonPath"].as_str().unwrap_or("");
                let value = at_path(item, path).cloned().unwrap_or(Value::Null);
                match (column["type"].as_str(), &value) {
                    (Some("date"), Value::String(time)) => {
                        seconds_since(time, now).map_or(Value::Null, |s| json!(human_duration(s)))
                    }
                    _ => value,
                }
            }));
            json!({
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": item["metadata"],
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

/// The value at a simple JSONPath (`.status.node`).
fn at_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    path.trim_start_matches('.')
        .split('.')
        .try_fold(obj, |value, key| value.get(key))
}

/// Seconds from an RFC 3339 UTC time (`…Z`) to `now` (Unix seconds).
fn seconds_since(time: &str, now: i64) -> Option<i64> {
    if !is_date_time(time) {
        return None;
    }
    let number = |range: std::ops::Range<usize>| time[range].parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    // Days from the civil date (proleptic Gregorian), as in Howard Hinnant's
    // days_from_civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(now - (days * 86_400 + hour * 3600 + minute * 60 + second))
}

/// A duration as `kubectl get` shows an age (`45s`, `5m10s`, `3h`, `2d5h`).
fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    match () {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 && s % 60 == 0 => format!("{m}m"),
        _ if m < 10 => format!("{m}m{}s", s % 60),
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 && m % 60 == 0 => format!("{h}h"),
        _ if h < 8 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if h < 192 && h % 24 == 0 => format!("{d}d"),
        _ if h < 192 => format!("{d}d{}h", h % 24),
        _ if d < 730 => format!("{d}d"),
        _ => format!("{}y{}d", d / 365, d % 365),
    }
}
