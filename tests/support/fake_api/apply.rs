//! Server-side apply (`application/apply-patch+yaml`) and field ownership,
//! for the resources the table marks (`applies`; `coordination.k8s.io`
//! leases, which `kube-lease-manager` takes by applying).
//!
//! As the real server does: ownership is kept in `metadata.managedFields`
//! (`FieldsV1`), one entry per manager and operation; an apply sets the
//! applier's fields and owns exactly the fields of its configuration
//! (fields it owned before and no longer applies are removed unless
//! another manager owns them too); a field the configuration sets to a
//! value other than the live one while another manager owns it is a `409
//! Conflict` naming the manager and the field, unless `force=true`; every
//! other write (PUT, the other PATCH types) moves the fields it changes to
//! its manager (`fieldManager`, else the `User-Agent` up to its first `/`)
//! with operation `Update`, and a field it removes loses every owner. An
//! apply needs a `fieldManager` (422 otherwise).
//!
//! Simplifications: lists are atomic (owned and compared whole, no merge
//! keys); only `spec`-like content and `metadata.labels`/`annotations` are
//! owned; a create is not recorded (a created object has no owners until a
//! later write); managedFields sent by a client are ignored.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::resources::{ApiError, ResourceDef, meta_mut};
use super::store::now_rfc3339;

/// A field: the keys from the object's root to a leaf.
type Path = Vec<String>;

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

/// Whether a top-level key or `metadata` key is content a manager owns.
fn owned_key(path: &[String]) -> bool {
    match path {
        [first, ..] if ["apiVersion", "kind", "status"].contains(&first.as_str()) => false,
        [first, second, ..] if first == "metadata" => {
            ["labels", "annotations"].contains(&second.as_str())
        }
        [first] if first == "metadata" => true,
        _ => true,
    }
}

/// The leaves of `value` (lists are leaves; nulls are not fields).
fn leaves(value: &Value) -> BTreeMap<Path, Value> {
    fn walk(value: &Value, path: &mut Path, out: &mut BTreeMap<Path, Value>) {
        if !owned_key(path) {
            return;
        }
        match value {
            Value::Null => {}
            Value::Object(map) if !map.is_empty() || path.is_empty() => {
                for (key, child) in map {
                    path.push(key.clone());
                    walk(child, path, out);
                    path.pop();
                }
            }
            other => {
                out.insert(path.clone(), other.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

/// One entry of `managedFields`.
#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    fields: BTreeSet<Path>,
}

/// A `FieldsV1` tree as paths.
fn parse_fields(tree: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
    let Some(map) = tree.as_object() else { return };
    let children: Vec<(&String, &Value)> =
        map.iter().filter(|(k, _)| k.starts_with("f:")).collect();
    if children.is_empty() {
        if !path.is_empty() {
            out.insert(path.clone());
        }
        return;
    }
    for (key, child) in children {
        path.push(key[2..].to_string());
        parse_fields(child, path, out);
        path.pop();
    }
}

/// Paths as a `FieldsV1` tree.
fn fields_tree(fields: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut at = &mut root;
        for key in path {
            at = at
                .entry(format!("f:{key}"))
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("an object");
        }
    }
    Value::Object(root)
}

fn entries(obj: &Value) -> Vec<Entry> {
    let list = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    list.iter()
        .map(|e| {
            let mut fields = BTreeSet::new();
            parse_fields(&e["fieldsV1"], &mut Vec::new(), &mut fields);
            let text = |key: &str| e[key].as_str().unwrap_or_default().to_string();
            Entry {
                manager: text("manager"),
                operation: text("operation"),
                api_version: text("apiVersion"),
                time: text("time"),
                fields,
            }
        })
        .collect()
}

fn store_entries(obj: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields_tree(&e.fields),
            })
        })
        .collect();
    let meta = meta_mut(obj);
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

/// The entry of `manager` and `operation`, created when missing.
fn entry_of<'a>(
    entries: &'a mut Vec<Entry>,
    def: &ResourceDef,
    manager: &str,
    operation: &str,
) -> &'a mut Entry {
    let position = entries
        .iter()
        .position(|e| e.manager == manager && e.operation == operation);
    let index = position.unwrap_or_else(|| {
        entries.push(Entry {
            manager: manager.into(),
            operation: operation.into(),
            api_version: def.api_version(),
            time: String::new(),
            fields: BTreeSet::new(),
        });
        entries.len() - 1
    });
    let entry = &mut entries[index];
    entry.time = now_rfc3339();
    entry.api_version = def.api_version();
    entry
}

/// Records a write that is not an apply (`old` → `new`) by `manager` in
/// `new`'s managedFields. A write that changes no field leaves them as they
/// were.
pub(super) fn record_update(def: &ResourceDef, old: &Value, new: &mut Value, manager: &str) {
    let mut owners = entries(old);
    let (before, after) = (leaves(old), leaves(new));
    let changed: BTreeSet<Path> = before
        .keys()
        .chain(after.keys())
        .filter(|path| before.get(*path) != after.get(*path))
        .cloned()
        .collect();
    if changed.is_empty() {
        store_entries(new, owners);
        return;
    }
    for entry in &mut owners {
        entry.fields.retain(|path| !changed.contains(path));
    }
    let set: BTreeSet<Path> = changed
        .into_iter()
        .filter(|p| after.contains_key(p))
        .collect();
    if !set.is_empty() {
        entry_of(&mut owners, def, manager, "Update")
            .fields
            .extend(set);
    }
    store_entries(new, owners);
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
    let (current, applied) = (leaves(live), leaves(config));
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
    let mine = entry_of(&mut owners, def, manager, "Apply");
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
