//! PUT and the write half of PATCH: the name and namespace of the body
//! against the path, optimistic concurrency on `metadata.resourceVersion`,
//! the `status` subresource (a write to one half keeps the other), the
//! metadata the server owns, `metadata.generation` on content changes
//! (where the resource has one), managedFields, a PV's
//! `lastPhaseTransitionTime`, no new finalizers while deleting, and the
//! removal of a deleting object whose last finalizer goes.

use serde_json::{Value, json};

use super::super::fields;
use super::super::resources::{
    ApiError, Cause, LOCAL_DISKS, PVS, RESOURCES, ResourceDef, crd, finalizers, meta_mut, meta_str,
    str_at, validate_spec,
};
use super::delete::blocked;
use super::{By, ChangeKind, Store, check_type, now_rfc3339};

/// Metadata a PUT cannot change: kept from the stored object.
const KEPT_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
];

impl Store {
    /// PUT (or the write half of PATCH): replaces the object, or only its
    /// `.status` when `status_only`, as a write `by` a manager (recorded in
    /// managedFields) or an apply. A non-empty `metadata.resourceVersion`
    /// in `obj` must equal the stored one. Every write that changes the
    /// object gets a resourceVersion of its own and one watch event; one
    /// that changes nothing is answered with the stored object.
    pub fn update(
        &mut self,
        res: usize,
        ns: &str,
        name: &str,
        mut obj: Value,
        status_only: bool,
        by: By<'_>,
    ) -> Result<Value, ApiError> {
        let def = &RESOURCES[res];
        check_type(res, &mut obj)?;
        check_identity(def, ns, name, &obj)?;
        let old = self
            .get(res, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(def, name))?;
        let want_rv = meta_str(&obj, "resourceVersion");
        if !want_rv.is_empty() && want_rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::stale(def, name));
        }
        let mut new = if status_only {
            with_status(&old, &obj)
        } else {
            replaced(def, &old, obj)
        };
        if res == LOCAL_DISKS {
            // What the CRD's schema does not name is dropped, silently.
            crd::prune(&mut new);
        }
        let meta = meta_mut(&mut new);
        meta.insert(
            "resourceVersion".into(),
            json!(meta_str(&old, "resourceVersion")),
        );
        if let By::Manager(_) = by {
            // A client's managedFields are ignored: the stored ones go on.
            match old.pointer("/metadata/managedFields") {
                Some(managed) => meta.insert("managedFields".into(), managed.clone()),
                None => meta.remove("managedFields"),
            };
        }
        if new == old {
            return Ok(old);
        }
        let causes = update_causes(res, &old, &new);
        if !causes.is_empty() {
            return Err(ApiError::invalid(def, name, &causes));
        }
        if let By::Manager(manager) = by
            && self.records_fields(res)
        {
            let subresource = status_only.then_some("status");
            fields::record_update(def, &old, &mut new, manager, subresource);
        }
        if res == PVS {
            phase_transition(&old, &mut new);
        }
        let deleting = !meta_str(&old, "deletionTimestamp").is_empty();
        if deleting && !blocked(res, &new) {
            // As a real server (v1.36) does: the write that removes the
            // last finalizer of an object being deleted deletes it instead
            // of storing it. Watchers get one DELETED event, whose object
            // is the last state stored (finalizers still listed) at the
            // deletion's resourceVersion, and never a MODIFIED showing the
            // finalizers gone; the writer gets its object back.
            let deleted = self.commit(res, ChangeKind::Deleted, old.clone(), Some(old));
            meta_mut(&mut new).insert(
                "resourceVersion".into(),
                json!(meta_str(&deleted, "resourceVersion")),
            );
            return Ok(new);
        }
        Ok(self.commit(res, ChangeKind::Modified, new, Some(old)))
    }
}

/// The PV status strategy of a real server (v1.31+): a write that changes
/// `status.phase` sets `status.lastPhaseTransitionTime` to now, unless the
/// writer set a time of its own.
fn phase_transition(old: &Value, new: &mut Value) {
    let phase = str_at(new, "/status/phase");
    if phase.is_empty() || phase == str_at(old, "/status/phase") {
        return;
    }
    let time = "/status/lastPhaseTransitionTime";
    if new.pointer(time).is_none() || new.pointer(time) == old.pointer(time) {
        new["status"]["lastPhaseTransitionTime"] = json!(now_rfc3339());
    }
}

/// Refuses a body whose name or namespace differs from the path's.
fn check_identity(def: &ResourceDef, ns: &str, name: &str, obj: &Value) -> Result<(), ApiError> {
    let body_name = meta_str(obj, "name");
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let body_ns = meta_str(obj, "namespace");
    if def.namespaced && !body_ns.is_empty() && body_ns != ns {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

/// A write to the `status` subresource: the stored object with the `.status`
/// of `obj` (none when `obj` has none).
fn with_status(old: &Value, obj: &Value) -> Value {
    let mut new = old.clone();
    match obj.get("status") {
        Some(status) => new["status"] = status.clone(),
        None => {
            new.as_object_mut().expect("object").remove("status");
        }
    }
    new
}

/// A write to the main resource: `obj` with the metadata the server owns
/// (and, with a `status` subresource, the `.status`) kept from the stored
/// object, and `metadata.generation` bumped when the content changed.
fn replaced(def: &ResourceDef, old: &Value, mut obj: Value) -> Value {
    let old_meta = old["metadata"].as_object().cloned().unwrap_or_default();
    let meta = meta_mut(&mut obj);
    for owned in KEPT_METADATA {
        match old_meta.get(*owned) {
            Some(v) => meta.insert((*owned).into(), v.clone()),
            None => meta.remove(*owned),
        };
    }
    if def.has_status {
        match old.get("status") {
            Some(status) => obj["status"] = status.clone(),
            None => {
                obj.as_object_mut().expect("object").remove("status");
            }
        }
    }
    if def.generation && content(&obj) != content(old) {
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
        meta_mut(&mut obj).insert("generation".into(), json!(generation));
    }
    obj
}

/// Why an update is invalid: a finalizer added while the object is being
/// deleted, or a spec the resource's validation refuses.
fn update_causes(res: usize, old: &Value, new: &Value) -> Vec<Cause> {
    let old_finalizers = finalizers(old);
    let deleting = !meta_str(old, "deletionTimestamp").is_empty();
    let mut causes = Vec::new();
    if deleting && finalizers(new).iter().any(|f| !old_finalizers.contains(f)) {
        causes.push(Cause::forbidden(
            "metadata.finalizers",
            "no new finalizers can be added if the object is being deleted",
        ));
    }
    causes.extend(validate_spec(res, new));
    causes
}

/// Everything but `metadata` and `status`: what bumps `metadata.generation`.
fn content(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}
