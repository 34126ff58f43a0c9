//! `metadata.managedFields`: which manager set which field, as every
//! object a real kube-apiserver returns or streams carries it (observed on
//! v1.36: a PV as returned is 2–3 KB of JSON, about half of it
//! managedFields). Shared by every write (`store`) and by server-side apply
//! (`apply`, which adds conflicts and field removal on top).
//!
//! As the real server does:
//! - one entry per manager, operation (`Update` for POST, PUT and the
//!   non-apply PATCHes, `Apply` for server-side apply) and subresource
//!   (`"subresource": "status"` for writes to `/status`), with `apiVersion`,
//!   `time` (when the entry last changed), `fieldsType: FieldsV1` and the
//!   fields in `fieldsV1`: `f:<name>` per field, `.` for a map (or list)
//!   the manager made, `v:<value>` per element of a set-list
//!   (`metadata.finalizers`), `k:{"uid":…}` per element of an associative
//!   list (`metadata.ownerReferences`);
//! - a write owns the fields it changed (a changed field leaves every
//!   other owner) and the maps it made; a removed field loses every owner;
//!   an entry left with no fields is dropped; a write that changes nothing
//!   leaves managedFields (and the object) as they were;
//! - on create, the fields the client sent are recorded before admission
//!   and the strategy run: `status` (reset by the strategy), the
//!   `kubernetes.io/pv-protection` finalizer (added by admission) and
//!   server-set metadata are nobody's;
//! - the manager is `fieldManager`, else the `User-Agent` up to its first
//!   `/` (`unknown` here when there is neither; the real server leaves it
//!   empty).
//!
//! Simplifications: other lists, and structs other than a PV's
//! `spec.nodeAffinity.required`, are treated by the rules of maps and
//! atomic lists whatever their declared type; defaults the
//! fake applies on create (a PV's `volumeMode`, `persistentVolumeReclaimPolicy`)
//! are nobody's (the real server defaults before recording, so the creator
//! owns them); managedFields a client sends are ignored (the stored ones
//! are kept); an entry's `apiVersion` is always the served version.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::resources::{ResourceDef, meta_mut};
use super::store::now_rfc3339;

/// A field: the keys from the object's root to it. List elements of the
/// set-lists and associative lists are keys like `v:"…"` and `k:{…}`.
pub(super) type Path = Vec<String>;

/// The manager of the emulated controllers' writes.
pub(super) const CONTROLLER_MANAGER: &str = "kube-controller-manager";
/// The manager of what the server itself creates (the default namespaces).
pub(super) const API_SERVER: &str = "kube-apiserver";

/// Whether a path (from the root) is content a manager owns: not
/// `apiVersion`/`kind`, and of `metadata` only what clients set.
fn owned_key(path: &[String]) -> bool {
    match path {
        [first, ..] if ["apiVersion", "kind"].contains(&first.as_str()) => false,
        [first, second, ..] if first == "metadata" => [
            "labels",
            "annotations",
            "finalizers",
            "ownerReferences",
            "generateName",
        ]
        .contains(&second.as_str()),
        _ => true,
    }
}

/// Whether a map is a struct every object of its kind has (`metadata`,
/// `spec`, `status` and the like): the real server never shows `.` for
/// those, only for maps and optional structs (`spec.capacity`,
/// `spec.local`, `data`, `metadata.labels`).
fn always_there(path: &[String]) -> bool {
    matches!(path, [top] if ["metadata", "spec", "status", "involvedObject", "source", "regarding"].contains(&top.as_str()))
}

/// Whether a struct is owned whole (`+structType=atomic` in the API
/// types): a PV's `spec.nodeAffinity.required` (a `NodeSelector`).
fn atomic(path: &[String]) -> bool {
    matches!(path, [s, a, r] if s == "spec" && a == "nodeAffinity" && r == "required")
}

/// How a list at a path is owned.
enum ListKind {
    /// Owned whole.
    Atomic,
    /// Each (scalar) element on its own, keyed `v:<element as JSON>`.
    Set,
    /// Each element on its own, keyed `k:{"<key>":…}`, its fields below.
    Map(&'static str),
}

fn list_kind(path: &[String]) -> ListKind {
    match path {
        [m, f] if m == "metadata" && f == "finalizers" => ListKind::Set,
        [m, f] if m == "metadata" && f == "ownerReferences" => ListKind::Map("uid"),
        _ => ListKind::Atomic,
    }
}

/// The fields of an object: its leaves with their values, and the maps
/// (and keyed lists) inside it.
#[derive(Debug, Default)]
pub(super) struct Fields {
    pub leaves: BTreeMap<Path, Value>,
    pub maps: BTreeSet<Path>,
}

/// The fields of `value`. With `keyed`, set-lists and associative lists are
/// split into their elements (as the real server tracks them); without,
/// every list is a leaf (what `apply` works with).
pub(super) fn fields_of(value: &Value, keyed: bool) -> Fields {
    fn walk(value: &Value, path: &mut Path, keyed: bool, out: &mut Fields) {
        if !owned_key(path) {
            return;
        }
        match value {
            Value::Null => {}
            Value::Object(map) if (!map.is_empty() || path.is_empty()) && !atomic(path) => {
                if !path.is_empty() && !always_there(path) {
                    out.maps.insert(path.clone());
                }
                for (key, child) in map {
                    path.push(key.clone());
                    walk(child, path, keyed, out);
                    path.pop();
                }
            }
            Value::Array(items) if keyed && !items.is_empty() => match list_kind(path) {
                ListKind::Atomic => {
                    out.leaves.insert(path.clone(), value.clone());
                }
                ListKind::Set => {
                    out.maps.insert(path.clone());
                    for item in items {
                        path.push(format!("v:{item}"));
                        out.leaves.insert(path.clone(), json!(true));
                        path.pop();
                    }
                }
                ListKind::Map(key) => {
                    out.maps.insert(path.clone());
                    for item in items {
                        path.push(format!("k:{}", json!({ key: item.get(key) })));
                        walk(item, path, keyed, out);
                        path.pop();
                    }
                }
            },
            other => {
                out.leaves.insert(path.clone(), other.clone());
            }
        }
    }
    let mut out = Fields::default();
    walk(value, &mut Vec::new(), keyed, &mut out);
    out
}

/// One entry of `managedFields`.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    /// `status` for a write to the status subresource.
    pub subresource: Option<String>,
    /// The fields and the maps it owns.
    pub fields: BTreeSet<Path>,
}

impl Entry {
    fn is(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }
}

/// A `FieldsV1` tree as paths (a node with `.` is in the set itself).
fn parse_fields(tree: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
    let Some(map) = tree.as_object() else { return };
    let children: Vec<(&String, &Value)> = map.iter().filter(|(k, _)| k.as_str() != ".").collect();
    if (children.is_empty() || map.contains_key(".")) && !path.is_empty() {
        out.insert(path.clone());
    }
    for (key, child) in children {
        let key = key.strip_prefix("f:").unwrap_or(key);
        path.push(key.to_string());
        parse_fields(child, path, out);
        path.pop();
    }
}

/// Paths as a `FieldsV1` tree.
fn fields_tree(fields: &BTreeSet<Path>) -> Value {
    fn key(part: &str) -> String {
        if part.starts_with("v:") || part.starts_with("k:") {
            part.to_string()
        } else {
            format!("f:{part}")
        }
    }
    let mut root = Map::new();
    for path in fields {
        let mut at = &mut root;
        for part in path {
            at = at
                .entry(key(part))
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("an object");
        }
    }
    // A node in the set that has children gets `.`.
    for path in fields {
        let mut at = &mut root;
        for part in path {
            at = at
                .get_mut(&key(part))
                .and_then(Value::as_object_mut)
                .expect("built above");
        }
        if !at.is_empty() {
            at.insert(".".into(), json!({}));
        }
    }
    Value::Object(root)
}

/// The entries of an object's managedFields.
pub(super) fn entries(obj: &Value) -> Vec<Entry> {
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
                subresource: e["subresource"].as_str().map(String::from),
                fields,
            }
        })
        .collect()
}

/// Writes `entries` (those with fields) as `obj`'s managedFields.
pub(super) fn store_entries(obj: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut entry = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields_tree(&e.fields),
            });
            if let Some(sub) = e.subresource {
                entry["subresource"] = json!(sub);
            }
            entry
        })
        .collect();
    let meta = meta_mut(obj);
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

/// The entry of `manager`, `operation` and `subresource`, created when
/// missing; its time and apiVersion set to now and the served version.
pub(super) fn entry_of<'a>(
    entries: &'a mut Vec<Entry>,
    def: &ResourceDef,
    manager: &str,
    operation: &str,
    subresource: Option<&str>,
) -> &'a mut Entry {
    let position = entries
        .iter()
        .position(|e| e.is(manager, operation, subresource));
    let index = position.unwrap_or_else(|| {
        entries.push(Entry {
            manager: manager.into(),
            operation: operation.into(),
            api_version: def.api_version(),
            time: String::new(),
            subresource: subresource.map(String::from),
            fields: BTreeSet::new(),
        });
        entries.len() - 1
    });
    let entry = &mut entries[index];
    entry.time = now_rfc3339();
    entry.api_version = def.api_version();
    entry
}

/// Records a write that is not an apply (`old` → `new`, `old` being `{}`
/// for a create) by `manager` in `new`'s managedFields, which start as
/// `old`'s. `subresource`: `Some("status")` for a write to `/status`.
pub(super) fn record_update(
    def: &ResourceDef,
    old: &Value,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
) {
    let mut owners = entries(old);
    let (before, after) = (fields_of(old, true), fields_of(new, true));
    let mut changed: BTreeSet<Path> = before
        .leaves
        .keys()
        .chain(after.leaves.keys())
        .filter(|path| before.leaves.get(*path) != after.leaves.get(*path))
        .cloned()
        .collect();
    let made: BTreeSet<Path> = after.maps.difference(&before.maps).cloned().collect();
    let gone = before.maps.difference(&after.maps).next().is_some();
    if changed.is_empty() && made.is_empty() && !gone {
        store_entries(new, owners);
        return;
    }
    let exists = |path: &Path| after.leaves.contains_key(path) || after.maps.contains(path);
    for entry in &mut owners {
        entry
            .fields
            .retain(|path| !changed.contains(path) && exists(path));
    }
    changed.retain(|path| after.leaves.contains_key(path));
    changed.extend(made);
    if !changed.is_empty() {
        entry_of(&mut owners, def, manager, "Update", subresource)
            .fields
            .extend(changed);
    }
    store_entries(new, owners);
}

/// Records the create of `obj` by `manager`: the fields the client sent,
/// without `status` where the strategy resets it.
pub(super) fn record_create(def: &ResourceDef, obj: &mut Value, manager: &str) {
    let mut sent = obj.clone();
    if def.has_status
        && let Some(map) = sent.as_object_mut()
    {
        map.remove("status");
    }
    meta_mut(&mut sent).remove("managedFields");
    record_update(def, &json!({}), &mut sent, manager, None);
    match sent.pointer("/metadata/managedFields") {
        Some(list) => {
            let list = list.clone();
            meta_mut(obj).insert("managedFields".into(), list);
        }
        None => {
            meta_mut(obj).remove("managedFields");
        }
    }
}
