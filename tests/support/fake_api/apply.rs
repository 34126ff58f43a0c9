//! Server-side apply (`application/apply-patch+yaml`), for the resources
//! the table marks (`applies`; `coordination.k8s.io` leases, which
//! `kube-lease-manager` takes by applying). Field ownership itself, which
//! every write records, is `fields`.
//!
//! As the real server does: an apply sets the applier's fields and owns
//! exactly the fields of its configuration (fields it owned before and no
//! longer applies are removed unless another manager owns them too); a
//! field the configuration sets to a value other than the live one while
//! another manager owns it is a `409 Conflict` naming the manager and the
//! field, unless `force=true`. An apply needs a `fieldManager` (422
//! otherwise).
//!
//! Simplifications: lists are atomic here (owned and compared whole, no
//! merge keys).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::fields::{Path, entries, entry_of, fields_of, store_entries};
use super::resources::{ApiError, ResourceDef};

/// Whether a PATCH content type is server-side apply.
pub(super) fn is_apply(content_type: &str) -> bool {
    content_type.split(';').next().unwrap_or("").trim() == "application/apply-patch+yaml"
}

/// The manager of a write that is not an apply: `fieldManager`, else the
/// `User-Agent` up to its first `/`, else `unknown`.
pub(super) fn update_manager(field_manager: Option<&str>, user_agent: Option<&str>) -> String {
    field_manager
        .filter(|m| !m.is_empty())
        .map(String::from)
        .or_else(|| {
            user_agent
                .and_then(|ua| ua.split('/').next())
                .filter(|ua| !ua.is_empty())
                .map(String::from)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Applies `config` by `manager` to `live` (`None`: the object is created);
/// returns the object to store, or the 409 naming every conflict.
pub(super) fn apply(
    def: &ResourceDef,
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
) -> Result<Value, ApiError> {
    let empty = json!({});
    let live = live.unwrap_or(&empty);
    let mut owners = entries(live);
    let (current, applied) = (
        fields_of(live, false).leaves,
        fields_of(config, false).leaves,
    );
    let differs = |path: &Path| {
        current
            .get(path)
            .is_some_and(|v| Some(v) != applied.get(path))
    };
    let mut conflicts: Vec<(String, String)> = Vec::new();
    for path in applied.keys().filter(|p| differs(p)) {
        for entry in &owners {
            let mine = entry.manager == manager && entry.operation == "Apply";
            if !mine && entry.fields.contains(path) {
                conflicts.push((entry.manager.clone(), format!(".{}", path.join("."))));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict(&conflicts));
    }
    let mut object = live.clone();
    // Fields this manager applied before, no longer applies, and nobody
    // else owns: removed.
    let before: BTreeSet<Path> = owners
        .iter()
        .filter(|e| e.manager == manager && e.operation == "Apply")
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    for path in before.iter().filter(|p| !applied.contains_key(*p)) {
        let shared = owners
            .iter()
            .any(|e| !(e.manager == manager && e.operation == "Apply") && e.fields.contains(path));
        if !shared {
            remove(&mut object, path);
        }
    }
    for (path, value) in &applied {
        set(&mut object, path, value.clone());
    }
    for key in ["apiVersion", "kind"] {
        if let Some(v) = config.get(key) {
            object[key] = v.clone();
        }
    }
    let taken: BTreeSet<Path> = applied.keys().filter(|p| differs(p)).cloned().collect();
    for entry in &mut owners {
        if !(entry.manager == manager && entry.operation == "Apply") {
            entry.fields.retain(|p| !taken.contains(p));
        }
    }
    let mine = entry_of(&mut owners, def, manager, "Apply", None);
    mine.fields = applied.keys().cloned().collect();
    store_entries(&mut object, owners);
    Ok(object)
}

fn set(object: &mut Value, path: &Path, value: Value) {
    let mut at = object;
    let (last, parents) = path.split_last().expect("a leaf has a key");
    for key in parents {
        if !at.is_object() {
            *at = json!({});
        }
        at = at
            .as_object_mut()
            .expect("an object")
            .entry(key.clone())
            .or_insert_with(|| json!({}));
    }
    if !at.is_object() {
        *at = json!({});
    }
    at.as_object_mut()
        .expect("an object")
        .insert(last.clone(), value);
}

fn remove(object: &mut Value, path: &Path) {
    let mut at = object;
    let (last, parents) = path.split_last().expect("a leaf has a key");
    for key in parents {
        match at.get_mut(key) {
            Some(child) => at = child,
            None => return,
        }
    }
    if let Some(map) = at.as_object_mut() {
        map.remove(last);
    }
}

/// The 409 of an apply that conflicts, worded like the real server's.
fn conflict(conflicts: &[(String, String)]) -> ApiError {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(manager, field)| {
            json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{manager}\""), "field": field})
        })
        .collect();
    let lines: Vec<String> = conflicts
        .iter()
        .map(|(manager, field)| format!("conflict with \"{manager}\": {field}"))
        .collect();
    let message = if lines.len() == 1 {
        format!("Apply failed with 1 conflict: {}", lines[0])
    } else {
        format!(
            "Apply failed with {} conflicts: {}",
            lines.len(),
            lines.join("\n")
        )
    };
    ApiError {
        code: 409,
        reason: "Conflict",
        message,
        details: json!({"causes": causes}),
    }
}

/// The 422 of an apply without a `fieldManager`.
pub(super) fn manager_required() -> ApiError {
    ApiError {
        code: 422,
        reason: "Invalid",
        message: "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
        details: json!({"causes": [{"reason": "FieldValueRequired", "message": "Required value: is required for apply patch", "field": "fieldManager"}]}),
    }
}

/// An apply body (YAML, or JSON, which is YAML) as an object.
pub(super) fn parse_config(body: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_yaml_ng::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("an apply patch must be an object"));
    }
    Ok(value)
}
