//! Keeps the node's `LocalDisk` objects as [`desired`](super::desired) says,
//! writing only what changed: a disk without an object gets one (a create,
//! then its status through the status subresource, which a create ignores),
//! a status that differs is patched (a merge patch of the fields that
//! differ, `null` for those that went), an object whose class changed is
//! deleted and made again (its name and labels follow the class), and an
//! object whose disk stopped matching is deleted (UID precondition). In
//! steady state it writes nothing.
//!
//! It runs as a task of its own, off the provisioning loop: a reconcile
//! hands it the latest desired objects and goes on, so a cold start's
//! thousand objects never delay a PV. Its work follows what changed: it
//! looks only at the objects that changed since it last looked, in what is
//! wanted or in its watch (every object after a full list, a retry or a
//! pause), and a PV change a pass would not act on is read into the one
//! object that stands for the PV ([`Inventory::refresh`]). It watches this node's objects (label
//! selector), so a restart rewrites nothing that is still right; what it
//! wrote counts as written until the watch shows it, so a lagging watch
//! never makes it write twice (a create it has not shown for 30 s counts as
//! undone). Best effort: a failed write is counted, logged once per pass
//! and tried again 10 s later, doubling to 5 min while they keep failing,
//! or on the next change; a cluster without the CRD (404)
//! is told once and looked at again every 5 minutes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::{Map, Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::desired::{Desired, refresh_from_pv};
use crate::api::requests::ApiRequests;
use crate::api::watch::{Touched, WatchSetup, Watched};
use crate::backoff::INVENTORY_RETRY;
use crate::error::{Operation, status_code};
use crate::objects::localdisk::{GROUP, KIND, LocalDisk, LocalDiskStatus, VERSION};
use crate::objects::pv::{DEVICE_CLASS_LABEL, LeanPv, NODE_LABEL, NODE_NAME_ANNOTATION};
use crate::observe::health::Health;

/// Writes in flight at once.
const CONCURRENT_WRITES: usize = 16;
/// How long to wait before asking again whether LocalDisks are served,
/// when the answer was not a clear 404.
const PROBE_RETRY: Duration = Duration::from_secs(10);
/// How long writes pause after the API server says the CRD is not there.
const NO_CRD_PAUSE: Duration = Duration::from_secs(300);
/// How long an object this task created may stay unseen by its watch
/// before it counts as gone (deleted by someone since) and is made again.
const WATCH_CATCH_UP: Duration = Duration::from_secs(30);

/// The node an inventory writes for.
#[derive(Debug, Clone, PartialEq)]
pub struct Owner {
    /// The Node's name.
    pub node: String,
    /// The live Node's UID (its objects are owned by it).
    pub uid: String,
    /// The node label value.
    pub label_value: String,
}

/// The objects the node's disks should have now, and which of them changed
/// since the writer last looked.
#[derive(Default)]
struct Wanted {
    /// The node they are written for (none before the first pass).
    owner: Option<Owner>,
    /// Each object by name.
    disks: BTreeMap<String, Desired>,
    /// The name of the object of each path.
    by_path: HashMap<String, String>,
    /// What changed since the writer last looked.
    touched: Touched,
}

/// The node's inventory writer.
pub struct Inventory {
    wanted: Arc<Mutex<Wanted>>,
    wake: Arc<Notify>,
    store: Arc<Mutex<Option<Store<LocalDisk>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Inventory {
    /// Starts the writer: once the API server serves LocalDisks (asked
    /// again every few minutes while it does not), it watches the node's
    /// objects and writes them.
    pub fn start(client: &Client, label_value: &str, requests: ApiRequests) -> Inventory {
        let api: Api<LocalDisk> = Api::all(client.clone());
        let store = Arc::new(Mutex::new(None));
        let wanted = Arc::new(Mutex::new(Wanted::default()));
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(run(
            api,
            format!("{NODE_LABEL}={label_value}"),
            requests,
            Wish {
                wanted: wanted.clone(),
                wake: wake.clone(),
            },
            store.clone(),
        ));
        Inventory {
            wanted,
            wake,
            store,
            task,
        }
    }

    /// The name of the existing object of each path (kept as it is).
    pub fn names(&self) -> HashMap<String, String> {
        let store = self.store.lock().expect("inventory store").clone();
        store
            .map(|store| store.state())
            .unwrap_or_default()
            .iter()
            .filter_map(|disk| {
                let path = disk.status.as_ref()?.path.clone();
                Some((path, disk.metadata.name.clone()?))
            })
            .collect()
    }

    /// Hands over every object the node's disks should have now (a pass);
    /// the writer looks at those that differ from the last ones.
    pub fn set(&self, owner: Owner, desired: Vec<Desired>) {
        let mut wanted = self.wanted.lock().expect("inventory wanted");
        if wanted.owner.as_ref() != Some(&owner) {
            wanted.owner = Some(owner);
            wanted.touched = Touched::All;
        }
        let mut disks = BTreeMap::new();
        for disk in desired {
            if wanted.disks.get(&disk.name) != Some(&disk) {
                wanted.touched.insert(Some(&disk.name));
            }
            disks.insert(disk.name.clone(), disk);
        }
        let gone: Vec<String> = wanted
            .disks
            .keys()
            .filter(|name| !disks.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            wanted.touched.insert(Some(&name));
        }
        wanted.by_path = disks
            .values()
            .map(|disk| (disk.status.path.clone(), disk.name.clone()))
            .collect();
        wanted.disks = disks;
        let changed = !wanted.touched.is_empty();
        drop(wanted);
        if changed {
            self.wake.notify_one();
        }
    }

    /// Reads the PVs `pvs` again into the objects that stand for them,
    /// after changes a pass would not act on (see
    /// [`refresh_from_pv`]); `missing` is the last pass's missing PVs. The
    /// writer looks at those objects only.
    pub fn refresh(&self, pvs: &[Arc<LeanPv>], missing: &BTreeSet<String>) {
        let mut wanted = self.wanted.lock().expect("inventory wanted");
        let mut changed = false;
        for pv in pvs {
            let Some(path) = crate::objects::pv::local_path(pv) else {
                continue;
            };
            let Some(name) = wanted.by_path.get(path).cloned() else {
                continue;
            };
            let Some(disk) = wanted.disks.get_mut(&name) else {
                continue;
            };
            // The object of another PV of the path (one being deleted) waits for the pass that follows.
            if disk.status.persistent_volume.is_some()
                && disk.status.persistent_volume != pv.metadata.name
            {
                continue;
            }
            let before = disk.status.clone();
            refresh_from_pv(disk, pv, missing);
            if disk.status != before {
                wanted.touched.insert(Some(&name));
                changed = true;
            }
        }
        drop(wanted);
        if changed {
            self.wake.notify_one();
        }
    }
}

impl Drop for Inventory {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The writer's side of what is wanted.
struct Wish {
    wanted: Arc<Mutex<Wanted>>,
    wake: Arc<Notify>,
}

/// A status this task wrote, and when.
struct Written {
    status: LocalDiskStatus,
    at: Instant,
}

/// What the writing task keeps.
struct Writer {
    api: Api<LocalDisk>,
    requests: ApiRequests,
    watched: Watched<LocalDisk>,
    /// What this task wrote that the watch may not show yet.
    written: HashMap<String, Written>,
    paused_until: Option<Instant>,
    /// When to try again after a failed write.
    retry_at: Option<Instant>,
    /// Passes in a row with a failed write (for the retry delay).
    failures: u32,
}

/// What one write did: what it wrote (to count until the watch shows it),
/// its error, and its operation.
type Outcome = (
    Option<(String, LocalDiskStatus)>,
    Option<kube::Error>,
    Operation,
);

/// One write.
enum Write {
    Create(Box<Desired>, Owner),
    Status(String, Value),
    Delete(String, Option<String>),
}

/// Waits until the API server serves LocalDisks, then keeps the node's
/// objects as wanted.
async fn run(
    api: Api<LocalDisk>,
    selector: String,
    requests: ApiRequests,
    wish: Wish,
    store: Arc<Mutex<Option<Store<LocalDisk>>>>,
) {
    let mut told = false;
    loop {
        match api
            .list_metadata(&ListParams::default().labels(&selector).limit(1))
            .await
        {
            Ok(_) => break,
            Err(error) if status_code(&error) == Some(404) => {
                if !told {
                    tracing::warn!(
                        "the LocalDisk CRD (localdisks.local-pv-provisioner.cybozu.io) is not installed: no disk inventory until it is (install the chart's crds/ or config/crd; asked again every 5 minutes)"
                    );
                    told = true;
                }
                tokio::time::sleep(NO_CRD_PAUSE).await;
            }
            Err(error) => {
                tracing::debug!(%error, "cannot tell whether LocalDisks are served; asking again");
                tokio::time::sleep(PROBE_RETRY).await;
            }
        }
    }
    let changed = Arc::new(Notify::new());
    let watched = Watched::spawn_trimmed(
        api.clone(),
        watcher::Config::default().labels(&selector),
        WatchSetup {
            what: "localdisk",
            trigger: changed.clone(),
            // The inventory never makes the pod unready.
            health: &Health::default(),
        },
        keep_what_is_read,
    );
    *store.lock().expect("inventory store") = Some(watched.store.clone());
    let mut writer = Writer {
        api,
        requests,
        watched,
        written: HashMap::new(),
        paused_until: None,
        retry_at: None,
        failures: 0,
    };
    // What changed while the writer could not look (not listed yet, paused).
    let mut pending = Touched::All;
    loop {
        // A retry stays due until it fires (a wake-up for another reason
        // while paused must not lose it).
        let retry = writer.retry_at;
        tokio::select! {
            () = wish.wake.notified() => {}
            () = changed.notified() => {}
            () = sleep_until(retry), if retry.is_some() => {
                writer.retry_at = None;
                pending = Touched::All;
            }
        }
        pending.merge(writer.watched.changes.take());
        pending.merge(std::mem::take(
            &mut wish.wanted.lock().expect("inventory wanted").touched,
        ));
        if !writer.watched.is_synced()
            || writer
                .paused_until
                .is_some_and(|until| Instant::now() < until)
        {
            continue;
        }
        let touched = std::mem::take(&mut pending);
        writer.apply(&wish.wanted, touched).await;
    }
}

impl Writer {
    /// Makes the node's objects `touched` (every one: [`Touched::All`])
    /// what `wanted` says.
    async fn apply(&mut self, wanted: &Mutex<Wanted>, touched: Touched) {
        let store = &self.watched.store;
        let observed: BTreeMap<String, Arc<LocalDisk>> = match &touched {
            Touched::All => store
                .state()
                .into_iter()
                .filter_map(|disk| Some((disk.metadata.name.clone()?, disk)))
                .collect(),
            Touched::Names(names) => names
                .iter()
                .chain(self.written.keys())
                .filter_map(|name| Some((name.clone(), store.get(&ObjectRef::new(name))?)))
                .collect(),
        };
        // A write counts until the watch shows it; one the watch has not
        // shown at all (a create) for long was undone by someone.
        self.written
            .retain(|name, written| match observed.get(name) {
                Some(disk) => disk.status.as_ref() != Some(&written.status),
                None => written.at.elapsed() < WATCH_CATCH_UP,
            });
        // A cold start writes every object at once; the table would keep
        // room for all of them (about 1 KB each) for good.
        if self.written.capacity() > 4 * self.written.len().max(16) {
            self.written.shrink_to_fit();
        }
        let writes = {
            let wanted = wanted.lock().expect("inventory wanted");
            let Some(owner) = wanted.owner.clone() else {
                return;
            };
            let desired: Vec<&Desired> = match &touched {
                Touched::All => wanted.disks.values().collect(),
                Touched::Names(names) => names
                    .iter()
                    .filter_map(|name| wanted.disks.get(name))
                    .collect(),
            };
            let gone: Vec<(&String, &Arc<LocalDisk>)> = observed
                .iter()
                .filter(|(name, _)| !wanted.disks.contains_key(*name))
                .collect();
            self.writes(&owner, &desired, &observed, &gone)
        };
        if self.written.keys().any(|name| !observed.contains_key(name)) {
            // Look again once a create the watch has not shown counts as undone.
            self.retry_at = Some(Instant::now() + WATCH_CATCH_UP);
        }
        if writes.is_empty() {
            return;
        }
        let api = &self.api;
        let results: Vec<Outcome> = futures::stream::iter(writes)
            .map(|write| perform(api, write))
            .buffer_unordered(CONCURRENT_WRITES)
            .collect()
            .await;
        let (mut failed, mut first_error, mut crd_gone) = (0usize, None, false);
        for (done, error, operation) in results {
            if let Some((name, status)) = done {
                let at = Instant::now();
                self.written.insert(name, Written { status, at });
            }
            let Some(error) = error else { continue };
            if status_code(&error) == Some(404) && operation == Operation::CreateLocalDisk {
                crd_gone = true;
                continue;
            }
            let error = self.requests.failed(operation, error);
            failed += 1;
            first_error.get_or_insert(error);
        }
        if crd_gone {
            tracing::warn!("the LocalDisk CRD went away: the disk inventory pauses for 5 minutes");
            self.paused_until = Some(Instant::now() + NO_CRD_PAUSE);
            self.retry_at = self.paused_until;
        } else if let Some(error) = first_error {
            self.failures += 1;
            let delay = INVENTORY_RETRY.delay(self.failures);
            tracing::warn!(
                %error,
                failed,
                retry_in_seconds = delay.as_secs(),
                "writing the disk inventory failed; trying again"
            );
            self.retry_at = Some(Instant::now() + delay);
        } else {
            self.failures = 0;
        }
    }

    /// The writes that make `observed` what `desired` says, and delete
    /// `gone` (observed, not wanted).
    fn writes(
        &self,
        owner: &Owner,
        desired: &[&Desired],
        observed: &BTreeMap<String, Arc<LocalDisk>>,
        gone: &[(&String, &Arc<LocalDisk>)],
    ) -> Vec<Write> {
        let mut writes = Vec::new();
        for disk in desired {
            let Some(current) = observed.get(&disk.name) else {
                if !self.written.contains_key(&disk.name) {
                    writes.push(Write::Create(Box::new((*disk).clone()), owner.clone()));
                }
                continue;
            };
            let seen = self
                .written
                .get(&disk.name)
                .map(|written| &written.status)
                .or(current.status.as_ref());
            if seen != Some(&disk.status) {
                let patch = merge_patch(
                    seen.map(|status| serde_json::to_value(status).unwrap_or(Value::Null)),
                    serde_json::to_value(&disk.status).unwrap_or(Value::Null),
                );
                writes.push(Write::Status(disk.name.clone(), patch));
            }
            // A disk that changed class is made again with its new label.
            let class = current.metadata.labels.as_ref();
            if class.and_then(|labels| labels.get(DEVICE_CLASS_LABEL)) != disk.class.as_ref() {
                writes.push(Write::Delete(
                    disk.name.clone(),
                    current.metadata.uid.clone(),
                ));
            }
        }
        for (name, disk) in gone {
            writes.push(Write::Delete((*name).clone(), disk.metadata.uid.clone()));
        }
        writes
    }
}

/// Performs one write.
async fn perform(api: &Api<LocalDisk>, write: Write) -> Outcome {
    match write {
        Write::Create(disk, owner) => {
            let created = api
                .create(&PostParams::default(), &new_object(&disk, &owner))
                .await;
            match created {
                Err(error) if status_code(&error) != Some(409) => {
                    (None, Some(error), Operation::CreateLocalDisk)
                }
                // Created (or created already): its status next; a create ignores it.
                _ => {
                    let patch = json!({"status": disk.status});
                    let patched = api
                        .patch_status(&disk.name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await;
                    match patched {
                        Ok(_) => {
                            let Desired { name, status, .. } = *disk;
                            (Some((name, status)), None, Operation::PatchLocalDisk)
                        }
                        Err(error) => (None, Some(error), Operation::PatchLocalDisk),
                    }
                }
            }
        }
        Write::Status(name, status) => {
            let patch = json!({"status": status});
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(disk) => (
                    disk.status.map(|status| (name, status)),
                    None,
                    Operation::PatchLocalDisk,
                ),
                Err(error) => (None, Some(error), Operation::PatchLocalDisk),
            }
        }
        Write::Delete(name, uid) => {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid,
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            let deleted = api.delete(&name, &params).await;
            let error = deleted
                .err()
                .filter(|error| status_code(error) != Some(404));
            (None, error, Operation::DeleteLocalDisk)
        }
    }
}

/// Keeps of a watched object what the writer reads: its name, UID,
/// resourceVersion, class label and status (a thousand disks' labels,
/// annotations and owner would otherwise stay in memory twice, once here and
/// once in what is wanted).
fn keep_what_is_read(disk: &mut LocalDisk) {
    let meta = &mut disk.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    meta.owner_references = None;
    // A map keeps its node (about 0.5 KB) when emptied: a disk of the
    // default class has no class label to keep.
    let class = meta.labels.take().and_then(|mut labels| {
        let value = labels.remove(DEVICE_CLASS_LABEL)?;
        Some(BTreeMap::from([(DEVICE_CLASS_LABEL.to_string(), value)]))
    });
    meta.labels = class;
}

/// A new object for `disk`: its name, the node and class labels, the node's
/// name, and the Node as owner (the garbage collector deletes it with the Node).
fn new_object(disk: &Desired, owner: &Owner) -> LocalDisk {
    let mut labels = BTreeMap::from([(NODE_LABEL.to_string(), owner.label_value.clone())]);
    if let Some(class) = &disk.class {
        labels.insert(DEVICE_CLASS_LABEL.to_string(), class.clone());
    }
    LocalDisk {
        api_version: format!("{GROUP}/{VERSION}"),
        kind: KIND.to_string(),
        metadata: ObjectMeta {
            name: Some(disk.name.clone()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                NODE_NAME_ANNOTATION.to_string(),
                owner.node.clone(),
            )])),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: owner.node.clone(),
                uid: owner.uid.clone(),
                block_owner_deletion: None,
                controller: None,
            }]),
            ..ObjectMeta::default()
        },
        status: None,
    }
}

/// Sleeps until `at` (never returns without one).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A JSON merge patch that turns `from` into `to`: the fields of `to` that
/// differ, and `null` for each field of `from` that `to` lacks.
fn merge_patch(from: Option<Value>, to: Value) -> Value {
    let (Some(Value::Object(from)), Value::Object(to)) = (from, to.clone()) else {
        return to;
    };
    let mut patch = Map::new();
    for (key, value) in &to {
        if from.get(key) != Some(value) {
            patch.insert(key.clone(), value.clone());
        }
    }
    for key in from.keys() {
        if !to.contains_key(key) {
            patch.insert(key.clone(), Value::Null);
        }
    }
    Value::Object(patch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_patch_carries_what_changed_and_nulls_what_went() {
        let from = json!({"state": "Available", "reason": "a", "claim": "ns/c", "node": "n"});
        let to = json!({"state": "Bound", "reason": "a", "node": "n"});
        assert_eq!(
            merge_patch(Some(from), to),
            json!({"state": "Bound", "claim": null})
        );
    }

    #[test]
    fn a_watched_disk_keeps_what_the_writer_reads() {
        let mut disk: LocalDisk = serde_json::from_value(json!({
            "apiVersion": "local-pv-provisioner.cybozu.io/v1alpha1",
            "kind": "LocalDisk",
            "metadata": {
                "name": "n-sda", "uid": "u1", "resourceVersion": "7",
                "labels": {NODE_LABEL: "n", DEVICE_CLASS_LABEL: "fast", "team": "a"},
                "annotations": {"note": "x"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "u0"}],
                "managedFields": [{"manager": "m", "operation": "Update"}],
            },
            "status": {"node": "n", "path": "/dev/disks/sda", "state": "Available", "reason": "offered"},
        }))
        .expect("a LocalDisk");
        let status = disk.status.clone();
        keep_what_is_read(&mut disk);
        let meta = &disk.metadata;
        assert_eq!(meta.name.as_deref(), Some("n-sda"));
        assert_eq!(meta.uid.as_deref(), Some("u1"));
        assert_eq!(meta.resource_version.as_deref(), Some("7"));
        assert_eq!(
            meta.labels,
            Some(BTreeMap::from([(
                DEVICE_CLASS_LABEL.to_string(),
                "fast".to_string()
            )]))
        );
        assert!(meta.annotations.is_none() && meta.owner_references.is_none());
        assert!(meta.managed_fields.is_none());
        assert_eq!(disk.status, status);
        assert!(status.is_some());
        disk.metadata.labels = Some(BTreeMap::from([(NODE_LABEL.to_string(), "n".to_string())]));
        keep_what_is_read(&mut disk);
        assert_eq!(disk.metadata.labels, None, "no class label, no map");
    }
}
