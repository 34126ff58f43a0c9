//! DELETE: the `uid` and `resourceVersion` preconditions, then either the
//! removal of the object or, while finalizers (or a namespace's
//! `spec.finalizers`) block it, graceful deletion: `deletionTimestamp` set,
//! and a namespace `Terminating`. Also the namespace controller's last step.

use serde_json::{Value, json};

use super::super::resources::{
    ApiError, NAMESPACES, RESOURCES, ResourceDef, finalizers, meta_mut, meta_str,
};
use super::{ChangeKind, Preconditions, Store, now_rfc3339};

impl Store {
    /// DELETE: checks preconditions, then either removes the object or, when
    /// finalizers block that, marks it with `deletionTimestamp`.
    pub fn delete(
        &mut self,
        res: usize,
        ns: &str,
        name: &str,
        pre: &Preconditions,
    ) -> Result<Value, ApiError> {
        let def = &RESOURCES[res];
        let old = self
            .get(res, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(def, name))?;
        check_preconditions(def, name, &old, pre)?;
        if !blocked(res, &old) {
            return Ok(self.commit(res, ChangeKind::Deleted, old, None));
        }
        if !meta_str(&old, "deletionTimestamp").is_empty() {
            return Ok(old);
        }
        let new = marked_deleting(res, &old);
        Ok(self.commit(res, ChangeKind::Modified, new, Some(old)))
    }

    /// Removes a terminating namespace whose content is gone (what the
    /// namespace controller does by clearing `spec.finalizers`).
    pub fn finalize_namespace(&mut self, name: &str) {
        if let Some(old) = self.get(NAMESPACES, "", name).cloned() {
            let mut new = old.clone();
            new["spec"]["finalizers"] = json!([]);
            if !blocked(NAMESPACES, &new) {
                self.commit(NAMESPACES, ChangeKind::Deleted, new, Some(old));
            }
        }
    }
}

/// Refuses a delete whose expected uid or resourceVersion is not the
/// stored object's.
fn check_preconditions(
    def: &ResourceDef,
    name: &str,
    old: &Value,
    pre: &Preconditions,
) -> Result<(), ApiError> {
    let expected = [
        (&pre.uid, "uid", "UID"),
        (&pre.resource_version, "resourceVersion", "ResourceVersion"),
    ];
    for (want, field, label) in expected {
        let actual = meta_str(old, field);
        if let Some(want) = want.as_deref().filter(|want| *want != actual) {
            return Err(ApiError::conflict(
                def,
                name,
                &format!(
                    "Precondition failed: {label} in precondition: {want}, {label} in object meta: {actual}"
                ),
            ));
        }
    }
    Ok(())
}

/// The object marked for graceful deletion.
fn marked_deleting(res: usize, old: &Value) -> Value {
    let mut new = old.clone();
    let generation = old["metadata"]["generation"].as_i64().unwrap_or(0);
    let meta = meta_mut(&mut new);
    meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
    meta.insert("deletionGracePeriodSeconds".into(), json!(0));
    // Bumped only on objects that have one (the real server's markAsDeleting).
    if generation > 0 {
        meta.insert("generation".into(), json!(generation + 1));
    }
    if res == NAMESPACES {
        new["status"]["phase"] = json!("Terminating");
    }
    new
}

/// Whether finalizers keep an object from being removed.
pub(super) fn blocked(res: usize, obj: &Value) -> bool {
    !finalizers(obj).is_empty()
        || (res == NAMESPACES
            && obj
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty()))
}
