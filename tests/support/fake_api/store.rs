//! The object store: objects by resource/namespace/name, the global
//! resourceVersion counter, the bounded change history that watches replay, and
//! the write semantics of the real server (create defaults, optimistic
//! concurrency, status subresources, finalizers and graceful deletion).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::resources::{
    ApiError, Cause, NAMESPACES, PVCS, PVS, RESOURCES, STORAGE_CLASSES, finalizers, meta_mut,
    meta_str, validate_name, validate_spec,
};

/// How many changes the history keeps for watch replay.
const HISTORY_LIMIT: usize = 1000;

/// Namespaces every fresh cluster has.
const DEFAULT_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Finalizer the storage-object-in-use admission plugin puts on PVs.
pub(super) const PV_PROTECTION: &str = "kubernetes.io/pv-protection";
/// Finalizer the storage-object-in-use admission plugin puts on PVCs.
pub(super) const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";

/// Kind of a recorded change, named like watch event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChangeKind {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object removed.
    Deleted,
}

/// One committed mutation.
#[derive(Debug)]
pub(super) struct Change {
    /// resourceVersion the mutation produced.
    pub rv: u64,
    /// Resource id.
    pub res: usize,
    /// Namespace (`""` for cluster-scoped objects).
    pub namespace: String,
    /// What happened.
    pub kind: ChangeKind,
    /// The object after the change (for deletions: its last state).
    pub object: Value,
    /// The object before a modification.
    pub previous: Option<Value>,
    /// When it was committed (a lagging watch delivers it later).
    pub at: std::time::Instant,
}

/// Key of a stored object: resource id, namespace (`""` when cluster-scoped), name.
type Key = (usize, String, String);

/// Delete preconditions from `DeleteOptions`.
#[derive(Debug, Default)]
pub(super) struct Preconditions {
    /// Expected `metadata.uid`.
    pub uid: Option<String>,
    /// Expected `metadata.resourceVersion`.
    pub resource_version: Option<String>,
}

/// All objects plus history.
pub(super) struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Arc<Change>>,
    /// Watches from a resourceVersion below this get 410 Expired: every change
    /// after it is in `history`.
    compacted: u64,
    notify: watch::Sender<u64>,
    rng: SystemRandom,
}

impl Store {
    /// An empty store with the default namespaces.
    pub fn new() -> Store {
        let mut store = Store {
            rv: 0,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            compacted: 0,
            notify: watch::channel(0).0,
            rng: SystemRandom::new(),
        };
        store.seed();
        store
    }

    fn seed(&mut self) {
        for ns in DEFAULT_NAMESPACES {
            self.create(NAMESPACES, None, json!({"metadata": {"name": ns}}))
                .expect("seeding default namespaces");
        }
    }

    /// Drops every object and all history (the rv counter keeps counting up),
    /// then re-creates the default namespaces.
    pub fn reset(&mut self) {
        self.objects.clear();
        // The removals have no events: burn one resourceVersion so that every
        // resourceVersion a client holds is older than the history.
        self.rv += 1;
        self.expire();
        self.seed();
    }

    /// Forgets the history: watches from any resourceVersion older than the
    /// current one get 410 Expired.
    pub fn expire(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    /// Current (latest) resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// A receiver told about every new resourceVersion.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    /// One object.
    pub fn get(&self, res: usize, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(res, ns.to_string(), name.to_string()))
    }

    /// Objects of a resource, optionally only one namespace, ordered by
    /// namespace and name like the real server.
    pub fn list<'a>(
        &'a self,
        res: usize,
        ns: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .range((res, String::new(), String::new())..(res + 1, String::new(), String::new()))
            .filter(move |((_, n, _), _)| ns.is_none_or(|want| want == n))
            .map(|(_, v)| v)
    }

    /// Changes of a resource after `since`; `Err(oldest)` when `since` is older
    /// than the retained history.
    pub fn changes_since(&self, res: usize, since: u64) -> Result<Vec<Arc<Change>>, u64> {
        if since < self.compacted {
            return Err(self.compacted);
        }
        Ok(self
            .history
            .iter()
            .filter(|c| c.rv > since && c.res == res)
            .cloned()
            .collect())
    }

    fn commit(
        &mut self,
        res: usize,
        kind: ChangeKind,
        mut obj: Value,
        previous: Option<Value>,
    ) -> Value {
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let ns = meta_str(&obj, "namespace").to_string();
        let key = (res, ns.clone(), meta_str(&obj, "name").to_string());
        if kind == ChangeKind::Deleted {
            self.objects.remove(&key);
        } else {
            self.objects.insert(key, obj.clone());
        }
        self.history.push_back(Arc::new(Change {
            rv: self.rv,
            res,
            namespace: ns,
            kind,
            object: obj.clone(),
            previous,
            at: std::time::Instant::now(),
        }));
        while self.history.len() > HISTORY_LIMIT {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
        self.notify.send_replace(self.rv);
        obj
    }

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
    /// resources) with server-set metadata.
    pub fn create(
        &mut self,
        res: usize,
        ns: Option<&str>,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        let def = &RESOURCES[res];
        check_type(res, &mut obj)?;
        let uid = self.uid();
        let suffix = self.name_suffix();
        let meta = meta_mut(&mut obj);
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
        let body_ns = meta
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let ns = match ns {
            Some(ns) => {
                if !body_ns.is_empty() && body_ns != ns {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                meta.insert("namespace".into(), json!(ns));
                ns.to_string()
            }
            None => {
                meta.remove("namespace");
                String::new()
            }
        };
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
        meta.insert("generation".into(), json!(1));
        for server_owned in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
        ] {
            meta.remove(server_owned);
        }
        let mut causes = validate_name(def, &name);
        causes.extend(validate_spec(res, &obj));
        if !causes.is_empty() {
            return Err(ApiError::invalid(def, &name, &causes));
        }
        if def.namespaced {
            match self.get(NAMESPACES, "", &ns) {
                None => return Err(ApiError::not_found(&RESOURCES[NAMESPACES], &ns)),
                Some(n) if !meta_str(n, "deletionTimestamp").is_empty() => {
                    return Err(ApiError::forbidden(format!(
                        "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        def.qualified()
                    )));
                }
                Some(_) => {}
            }
        }
        if self.get(res, &ns, &name).is_some() {
            return Err(ApiError::already_exists(def, &name));
        }
        default_on_create(res, &mut obj);
        Ok(self.commit(res, ChangeKind::Added, obj, None))
    }

    /// PUT (or the write half of PATCH): replaces the object, or only its
    /// `.status` when `status_only`. A non-empty `metadata.resourceVersion` in
    /// `obj` must equal the stored one.
    pub fn update(
        &mut self,
        res: usize,
        ns: &str,
        name: &str,
        mut obj: Value,
        status_only: bool,
    ) -> Result<Value, ApiError> {
        let def = &RESOURCES[res];
        check_type(res, &mut obj)?;
        let body_name = meta_str(&obj, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let body_ns = meta_str(&obj, "namespace");
        if def.namespaced && !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let old = self
            .get(res, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(def, name))?;
        let want_rv = meta_str(&obj, "resourceVersion");
        if !want_rv.is_empty() && want_rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::stale(def, name));
        }
        let mut new = if status_only {
            let mut new = old.clone();
            match obj.get("status") {
                Some(status) => new["status"] = status.clone(),
                None => {
                    new.as_object_mut().expect("object").remove("status");
                }
            }
            new
        } else {
            let old_meta = old["metadata"].as_object().cloned().unwrap_or_default();
            let meta = meta_mut(&mut obj);
            for owned in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old_meta.get(owned) {
                    Some(v) => meta.insert(owned.into(), v.clone()),
                    None => meta.remove(owned),
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
            if content(&obj) != content(&old) {
                let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
                meta_mut(&mut obj).insert("generation".into(), json!(generation));
            }
            obj
        };
        meta_mut(&mut new).insert(
            "resourceVersion".into(),
            json!(meta_str(&old, "resourceVersion")),
        );
        if new == old {
            return Ok(old);
        }
        let old_finalizers = finalizers(&old);
        let deleting = !meta_str(&old, "deletionTimestamp").is_empty();
        let mut causes = Vec::new();
        if deleting && finalizers(&new).iter().any(|f| !old_finalizers.contains(f)) {
            causes.push(Cause::forbidden(
                "metadata.finalizers",
                "no new finalizers can be added if the object is being deleted",
            ));
        }
        causes.extend(validate_spec(res, &new));
        if !causes.is_empty() {
            return Err(ApiError::invalid(def, name, &causes));
        }
        if deleting && !blocked(res, &new) {
            return Ok(self.commit(res, ChangeKind::Deleted, new, Some(old)));
        }
        Ok(self.commit(res, ChangeKind::Modified, new, Some(old)))
    }

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
        if let Some(uid) = &pre.uid {
            let actual = meta_str(&old, "uid");
            if uid != actual {
                return Err(ApiError::conflict(
                    def,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                    ),
                ));
            }
        }
        if let Some(rv) = &pre.resource_version {
            let actual = meta_str(&old, "resourceVersion");
            if rv != actual {
                return Err(ApiError::conflict(
                    def,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
                    ),
                ));
            }
        }
        if !blocked(res, &old) {
            return Ok(self.commit(res, ChangeKind::Deleted, old, None));
        }
        if !meta_str(&old, "deletionTimestamp").is_empty() {
            return Ok(old);
        }
        let mut new = old.clone();
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
        let meta = meta_mut(&mut new);
        meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
        meta.insert("deletionGracePeriodSeconds".into(), json!(0));
        meta.insert("generation".into(), json!(generation));
        if res == NAMESPACES {
            new["status"]["phase"] = json!("Terminating");
        }
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

/// Fills or checks `kind`/`apiVersion` of a request body.
fn check_type(res: usize, obj: &mut Value) -> Result<(), ApiError> {
    let def = &RESOURCES[res];
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let api_version = def.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(v) if !v.is_empty() && v != api_version => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
        _ => {}
    }
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if !k.is_empty() && k != def.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                def.kind
            )));
        }
        _ => {}
    }
    map.insert("apiVersion".into(), json!(api_version));
    map.insert("kind".into(), json!(def.kind));
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
            obj["status"] = json!({"phase": "Pending"});
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

/// Whether finalizers keep an object from being removed.
fn blocked(res: usize, obj: &Value) -> bool {
    !finalizers(obj).is_empty()
        || (res == NAMESPACES
            && obj
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty()))
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

/// Current UTC time as RFC 3339 with second precision, like the real server.
pub(super) fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
