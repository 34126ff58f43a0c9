//! POST: creating an object. The name (or one generated from
//! `generateName`), the namespace from the path, the metadata the server
//! owns (uid, creation timestamp, generation where the real server sets
//! one), validation, the namespace being there and not terminating, the
//! creator's fields in managedFields, and the defaults and admission-plugin
//! effects of the real server (PV and PVC protection finalizers, phases).

use ring::rand::SecureRandom;
use serde_json::{Map, Value, json};

use super::super::fields;
use super::super::resources::{
    ApiError, Cause, LOCAL_DISKS, NAMESPACES, PVCS, PVS, RESOURCES, ResourceDef, STORAGE_CLASSES,
    crd, meta_mut, meta_str, validate_name, validate_spec,
};
use super::{By, ChangeKind, PV_PROTECTION, PVC_PROTECTION, Store, check_type, now_rfc3339};

/// Metadata only the server sets; dropped from a created object.
const SERVER_OWNED: &[&str] = &[
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
];

impl Store {
    /// A random RFC 4122 version 4 UUID.
    pub fn uid(&self) -> String {
        let mut b = [0u8; 16];
        self.rng.fill(&mut b).expect("system randomness");
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    /// A random suffix for `generateName`.
    fn name_suffix(&self) -> String {
        // Same alphabet as the real server's generateName (no vowels, no 0/1/3).
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut b = [0u8; 5];
        self.rng.fill(&mut b).expect("system randomness");
        b.iter()
            .map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char)
            .collect()
    }

    /// POST: creates an object in namespace `ns` (`None` for cluster-scoped
    /// resources) with server-set metadata, recording the fields sent as
    /// `by`'s.
    pub fn create(
        &mut self,
        res: usize,
        ns: Option<&str>,
        mut obj: Value,
        by: By<'_>,
    ) -> Result<Value, ApiError> {
        let def = &RESOURCES[res];
        check_type(res, &mut obj)?;
        let uid = self.uid();
        let suffix = self.name_suffix();
        let name = take_name(def, meta_mut(&mut obj), &suffix)?;
        let ns = place(meta_mut(&mut obj), ns)?;
        let applied = meta_mut(&mut obj).remove("managedFields");
        set_server_metadata(def, meta_mut(&mut obj), uid)?;
        if res == LOCAL_DISKS {
            // A custom resource with a status subresource: a create
            // ignores `.status`, and what the schema does not name goes.
            obj.as_object_mut().expect("object").remove("status");
            crd::prune(&mut obj);
        }
        let mut causes = validate_name(def, &name);
        causes.extend(validate_spec(res, &obj));
        if !causes.is_empty() {
            return Err(ApiError::invalid(def, &name, &causes));
        }
        if def.namespaced {
            self.check_namespace_open(def, &ns, &name)?;
        }
        if self.get(res, &ns, &name).is_some() {
            return Err(ApiError::already_exists(def, &name));
        }
        // The real server records the fields of a create before admission
        // and the strategy run: what they add (status, the protection
        // finalizer) is nobody's.
        match (by, applied) {
            (By::Applied, Some(managed)) => {
                meta_mut(&mut obj).insert("managedFields".into(), managed);
            }
            (By::Manager(manager), _) if self.records_fields(res) => {
                fields::record_create(def, &mut obj, manager);
            }
            _ => {}
        }
        default_on_create(res, &mut obj);
        Ok(self.commit(res, ChangeKind::Added, obj, None))
    }

    /// Refuses content in a namespace that does not exist or is being
    /// terminated.
    fn check_namespace_open(
        &self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        match self.get(NAMESPACES, "", ns) {
            None => Err(ApiError::not_found(&RESOURCES[NAMESPACES], ns)),
            Some(n) if !meta_str(n, "deletionTimestamp").is_empty() => {
                Err(ApiError::forbidden(format!(
                    "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    def.qualified()
                )))
            }
            Some(_) => Ok(()),
        }
    }
}

/// The name of a new object: `metadata.name`, or `generateName` plus
/// `suffix` (then written to `metadata.name`); refused when neither is set.
fn take_name(
    def: &ResourceDef,
    meta: &mut Map<String, Value>,
    suffix: &str,
) -> Result<String, ApiError> {
    let mut name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let generate = meta
        .get("generateName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if name.is_empty() && !generate.is_empty() {
        name = format!("{generate}{suffix}");
        meta.insert("name".into(), json!(name));
    }
    if name.is_empty() {
        return Err(ApiError::invalid(
            def,
            "",
            &[Cause::required(
                "metadata.name",
                "name or generateName is required",
            )],
        ));
    }
    Ok(name)
}

/// Puts a new object in the namespace of the path (`None`: cluster-scoped,
/// no namespace); a different namespace in the body is refused. Returns the
/// namespace, `""` when cluster-scoped.
fn place(meta: &mut Map<String, Value>, ns: Option<&str>) -> Result<String, ApiError> {
    let body_ns = meta
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    match ns {
        Some(ns) => {
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            meta.insert("namespace".into(), json!(ns));
            Ok(ns.to_string())
        }
        None => {
            meta.remove("namespace");
            Ok(String::new())
        }
    }
}

/// Sets the metadata the server owns on a new object (a resourceVersion
/// sent with it is refused): uid, creation time and, where the real server
/// sets one, generation 1.
fn set_server_metadata(
    def: &ResourceDef,
    meta: &mut Map<String, Value>,
    uid: String,
) -> Result<(), ApiError> {
    if meta
        .get("resourceVersion")
        .and_then(Value::as_str)
        .is_some_and(|rv| !rv.is_empty())
    {
        return Err(ApiError::internal(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    meta.insert("uid".into(), json!(uid));
    meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
    meta.remove("generation");
    if def.generation {
        meta.insert("generation".into(), json!(1));
    }
    for server_owned in SERVER_OWNED {
        meta.remove(*server_owned);
    }
    Ok(())
}

/// Defaults and admission-plugin effects applied on create.
fn default_on_create(res: usize, obj: &mut Value) {
    let add_finalizer = |obj: &mut Value, f: &str| {
        let meta = meta_mut(obj);
        let list = meta.entry("finalizers").or_insert_with(|| json!([]));
        if let Some(a) = list.as_array_mut()
            && !a.iter().any(|x| x == f)
        {
            a.push(json!(f));
        }
    };
    match res {
        NAMESPACES => {
            let name = meta_str(obj, "name").to_string();
            let meta = meta_mut(obj);
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            labels["kubernetes.io/metadata.name"] = json!(name);
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        PVS => {
            // The PV strategy of a real server (v1.31+): phase `Pending`,
            // and the time of that phase.
            obj["status"] = json!({"phase": "Pending", "lastPhaseTransitionTime": now_rfc3339()});
            let spec = &mut obj["spec"];
            if spec.get("persistentVolumeReclaimPolicy").is_none() {
                spec["persistentVolumeReclaimPolicy"] = json!("Retain");
            }
            if spec.get("volumeMode").is_none() {
                spec["volumeMode"] = json!("Filesystem");
            }
            add_finalizer(obj, PV_PROTECTION);
        }
        PVCS => {
            obj["status"] = json!({"phase": "Pending"});
            if obj["spec"].get("volumeMode").is_none() {
                obj["spec"]["volumeMode"] = json!("Filesystem");
            }
            add_finalizer(obj, PVC_PROTECTION);
        }
        STORAGE_CLASSES => {
            if obj.get("reclaimPolicy").is_none() {
                obj["reclaimPolicy"] = json!("Delete");
            }
            if obj.get("volumeBindingMode").is_none() {
                obj["volumeBindingMode"] = json!("Immediate");
            }
        }
        _ => {}
    }
}
