//! The REST verbs on objects and collections: get, list, create, update,
//! patch, delete and deletecollection (a watch is handed to `watch`). Every
//! write goes through admission before the store is touched.

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::super::Shared;
use super::super::admission::{self, UserInfo};
use super::super::resources::{
    ApiError, LOCAL_DISKS, RESOURCES, ResourceDef, crd, meta_mut, meta_str,
};
use super::super::selectors::Selectors;
use super::super::store::{By, Preconditions, Store};
use super::super::{apply, patch};
use super::routing::{Target, is_watch};
use super::{json_response, parse_body, watch};

/// A request aimed at a resource, with what serving it needs.
pub(super) struct ObjectCall<'a> {
    pub(super) shared: &'a Arc<Shared>,
    /// Who asked (`None`: no token).
    pub(super) user: Option<&'a UserInfo>,
    pub(super) method: &'a Method,
    pub(super) target: &'a Target,
    pub(super) query: &'a HashMap<String, String>,
    pub(super) content_type: Option<&'a str>,
    /// `Accept`: a Table of a CRD's printer columns when it asks for one.
    pub(super) accept: Option<&'a str>,
    /// `User-Agent`, which names the manager of a write without `fieldManager`.
    pub(super) user_agent: Option<&'a str>,
    pub(super) body: &'a [u8],
}

impl ObjectCall<'_> {
    /// Serves the request with the verb its method and path make.
    pub(super) fn handle(&self) -> Result<Response, ApiError> {
        let t = self.target;
        match (self.method, &t.name) {
            (&Method::GET, _) if is_watch(self.query) => self.watch(),
            (&Method::GET, None) => self.list(),
            (&Method::GET, Some(name)) => self.get(name),
            (&Method::POST, None)
                if t.sub.is_none() && (t.namespace.is_some() || !self.def().namespaced) =>
            {
                self.create()
            }
            (&Method::PUT, Some(name)) => self.replace(name),
            (&Method::PATCH, Some(name)) => self.patch(name),
            (&Method::DELETE, Some(name)) if t.sub.is_none() => self.delete(name),
            (&Method::DELETE, None) if t.sub.is_none() => self.delete_collection(),
            _ => Err(ApiError::method_not_allowed()),
        }
    }

    fn def(&self) -> &'static ResourceDef {
        &RESOURCES[self.target.res]
    }

    /// The namespace from the path, `""` when none.
    fn ns(&self) -> &str {
        self.target.namespace.as_deref().unwrap_or("")
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.shared.store.lock().expect("store")
    }

    /// The label and field selectors of the query.
    fn selectors(&self) -> Result<Selectors, ApiError> {
        Selectors::parse(
            self.query.get("labelSelector").map(String::as_str),
            self.query.get("fieldSelector").map(String::as_str),
            self.def(),
        )
    }

    /// Runs admission on a write (`object`: the new state, `None` on delete;
    /// `old`: the stored state, `None` on create).
    fn admit(&self, object: Option<&Value>, old: Option<&Value>) -> Result<(), ApiError> {
        let sub = self.target.sub.as_deref();
        admission::admit(self.shared, self.user, self.target.res, sub, object, old)
    }

    fn watch(&self) -> Result<Response, ApiError> {
        let mut sel = self.selectors()?;
        if let Some(name) = &self.target.name {
            sel = sel.with_name(name);
        }
        let t = self.target;
        watch::start_watch(self.shared, t.res, t.namespace.clone(), sel, self.query)
    }

    fn list(&self) -> Result<Response, ApiError> {
        let sel = self.selectors()?;
        let store = self.store();
        let items: Vec<Value> = store
            .list(self.target.res, self.target.namespace.as_deref())
            .filter(|o| sel.matches(o))
            .cloned()
            .collect();
        if self.table_wanted() {
            return ok(crd::table(&items, &store.rv().to_string(), unix_now()));
        }
        ok(list_of(self.def(), &store, items))
    }

    fn get(&self, name: &str) -> Result<Response, ApiError> {
        let store = self.store();
        let found = store
            .get(self.target.res, self.ns(), name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(self.def(), name))?;
        if self.table_wanted() {
            return ok(crd::table(&[found], &store.rv().to_string(), unix_now()));
        }
        ok(found)
    }

    /// Whether to answer a read with a Table (`kubectl get` of LocalDisks;
    /// other resources answer with their objects, which kubectl prints on
    /// its own).
    fn table_wanted(&self) -> bool {
        self.target.res == LOCAL_DISKS && self.target.sub.is_none() && crd::wants_table(self.accept)
    }

    fn create(&self) -> Result<Response, ApiError> {
        let obj = parse_body(self.body)?;
        self.admit(Some(&obj), None)?;
        let manager = self.manager();
        let created = self.store().create(
            self.target.res,
            self.target.namespace.as_deref(),
            obj,
            By::Manager(&manager),
        )?;
        Ok(json_response(StatusCode::CREATED, &created))
    }

    fn replace(&self, name: &str) -> Result<Response, ApiError> {
        let obj = parse_body(self.body)?;
        let t = self.target;
        let manager = self.manager();
        let mut store = self.store();
        if let Some(old) = store.get(t.res, self.ns(), name) {
            self.admit(Some(&obj), Some(old))?;
        }
        let by = By::Manager(&manager);
        ok(store.update(t.res, self.ns(), name, obj, t.sub.is_some(), by)?)
    }

    /// The manager of a write that is not an apply.
    fn manager(&self) -> String {
        let field_manager = self.query.get("fieldManager").map(String::as_str);
        apply::update_manager(field_manager, self.user_agent)
    }

    /// Server-side apply: creates the object or applies to it, with field
    /// ownership (see `apply`); 415 for a resource that does not serve it.
    fn server_side_apply(&self, name: &str) -> Result<Response, ApiError> {
        let def = self.def();
        if !def.applies || self.target.sub.is_some() {
            return Err(ApiError::unsupported_media_type(
                self.content_type.unwrap_or(""),
            ));
        }
        let manager = self
            .query
            .get("fieldManager")
            .filter(|m| !m.is_empty())
            .ok_or_else(apply::manager_required)?;
        let force = matches!(self.query.get("force").map(String::as_str), Some("true"));
        let config = apply::parse_config(self.body)?;
        let mut store = self.store();
        let live = store.get(self.target.res, self.ns(), name).cloned();
        let mut applied = apply::apply(def, live.as_ref(), &config, manager, force)?;
        let meta = meta_mut(&mut applied);
        meta.insert("name".into(), json!(name));
        match (&live, &self.target.namespace) {
            (_, Some(ns)) => meta.insert("namespace".into(), json!(ns)),
            _ => meta.remove("namespace"),
        };
        self.admit(Some(&applied), live.as_ref())?;
        match live {
            Some(_) => ok(store.update(
                self.target.res,
                self.ns(),
                name,
                applied,
                false,
                By::Applied,
            )?),
            None => {
                let ns = self.target.namespace.as_deref();
                let created = store.create(self.target.res, ns, applied, By::Applied)?;
                Ok(json_response(StatusCode::CREATED, &created))
            }
        }
    }

    fn patch(&self, name: &str) -> Result<Response, ApiError> {
        if apply::is_apply(self.content_type.unwrap_or("")) {
            return self.server_side_apply(name);
        }
        let t = self.target;
        let mut store = self.store();
        let current = store
            .get(t.res, self.ns(), name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(self.def(), name))?;
        let mut patched = patch::apply(self.content_type.unwrap_or(""), &current, self.body)?;
        // Fields the patch cannot move: keep them from the stored object so
        // `update` does not report a name/namespace mismatch.
        for field in ["name", "namespace"] {
            let v = meta_str(&current, field).to_string();
            if !v.is_empty() {
                meta_mut(&mut patched).insert(field.into(), json!(v));
            }
        }
        self.admit(Some(&patched), Some(&current))?;
        let manager = self.manager();
        let by = By::Manager(&manager);
        ok(store.update(t.res, self.ns(), name, patched, t.sub.is_some(), by)?)
    }

    fn delete(&self, name: &str) -> Result<Response, ApiError> {
        let pre = preconditions(self.body)?;
        let mut store = self.store();
        if let Some(old) = store.get(self.target.res, self.ns(), name) {
            self.admit(None, Some(old))?;
        }
        ok(store.delete(self.target.res, self.ns(), name, &pre)?)
    }

    fn delete_collection(&self) -> Result<Response, ApiError> {
        let sel = self.selectors()?;
        let res = self.target.res;
        let mut store = self.store();
        let keys: Vec<(String, String)> = store
            .list(res, self.target.namespace.as_deref())
            .filter(|o| sel.matches(o))
            .map(|o| {
                (
                    meta_str(o, "namespace").to_string(),
                    meta_str(o, "name").to_string(),
                )
            })
            .collect();
        let mut items = Vec::new();
        for (obj_ns, name) in keys {
            self.admit(None, store.get(res, &obj_ns, &name))?;
            items.push(store.delete(res, &obj_ns, &name, &Preconditions::default())?);
        }
        ok(list_of(self.def(), &store, items))
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A 200 answer with `value`.
fn ok(value: Value) -> Result<Response, ApiError> {
    Ok(json_response(StatusCode::OK, &value))
}

/// A `{Kind}List` of `items` at the store's current resourceVersion.
fn list_of(def: &ResourceDef, store: &Store, items: Vec<Value>) -> Value {
    json!({
        "kind": format!("{}List", def.kind),
        "apiVersion": def.api_version(),
        "metadata": {"resourceVersion": store.rv().to_string()},
        "items": items,
    })
}

/// The preconditions of a DELETE body (`DeleteOptions`), none for an empty
/// body.
fn preconditions(body: &[u8]) -> Result<Preconditions, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Preconditions::default());
    }
    let opts = parse_body(body)?;
    let field = |f: &str| {
        opts.get("preconditions")
            .and_then(|p| p.get(f))
            .and_then(Value::as_str)
            .map(String::from)
    };
    Ok(Preconditions {
        uid: field("uid"),
        resource_version: field("resourceVersion"),
    })
}
