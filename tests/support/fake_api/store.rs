//! The object store: objects by resource/namespace/name, the global
//! resourceVersion counter and the bounded change history that watches
//! replay. This module owns the store's state, its lifecycle (seed, reset,
//! expiry) and the one place a change is committed; the parts:
//! - `reads`: lookups, lists and the history since a resourceVersion;
//! - `create`: POST (names, namespaces, server metadata, managedFields,
//!   defaults);
//! - `update`: PUT and the write half of PATCH (optimistic concurrency, the
//!   status subresource, server-owned metadata, generation, managedFields,
//!   the delete by the removal of the last finalizer);
//! - `delete`: DELETE (preconditions, finalizers, graceful deletion).
//!
//! Every write that changes an object commits it with a new
//! resourceVersion and one change in the history (one watch event).

mod create;
mod delete;
mod reads;
mod update;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::SystemRandom;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::fields::API_SERVER;
use super::resources::{ApiError, NAMESPACES, RESOURCES, meta_mut, meta_str};

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

/// Who makes a write, as `metadata.managedFields` records it.
#[derive(Debug, Clone, Copy)]
pub(super) enum By<'a> {
    /// A write that is not an apply (POST, PUT, merge/JSON patch, the
    /// emulated controllers), by this manager: recorded as an `Update`.
    Manager(&'a str),
    /// A server-side apply: the object comes with the managedFields
    /// `apply` computed.
    Applied,
}

/// All objects plus history.
pub(super) struct Store {
    /// Whether every write records `metadata.managedFields`, as a real
    /// server does (see `fields`); `false` only for the resources that
    /// serve apply (the fake before issue 19).
    managed_fields: bool,
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
            managed_fields: true,
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

    /// Creates the default namespaces.
    fn seed(&mut self) {
        for ns in DEFAULT_NAMESPACES {
            let namespace = json!({"metadata": {"name": ns}});
            self.create(NAMESPACES, None, namespace, By::Manager(API_SERVER))
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

    /// Whether every write records `metadata.managedFields` (`true`, the
    /// default, like a real server) or only the writes to resources that
    /// serve apply.
    pub fn set_managed_fields(&mut self, on: bool) {
        self.managed_fields = on;
    }

    /// Whether writes to `res` record managedFields.
    fn records_fields(&self, res: usize) -> bool {
        self.managed_fields || RESOURCES[res].applies
    }

    /// Forgets the history: watches from any resourceVersion older than the
    /// current one get 410 Expired.
    pub fn expire(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    /// Commits a change: a new resourceVersion on the object, the object
    /// stored (or removed), the change in the history, watchers told.
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
