//! Narrow watches kept as in-memory stores: the one Node by name, this
//! node's PVs by label, the one PV spec ConfigMap by name. Each runs as a
//! task that feeds a reflector store, wakes the reconciler on every change
//! (the Node's only on a change of what is kept of it, not on its status
//! reports),
//! records which objects each event touched ([`ChangedNames`], for work per
//! object rather than per wake-up) and records in a [`WatchHealth`] whether
//! it is failing. The PV watch is
//! shared: the cleanup controller gets its objects from the same watch, so
//! a node costs the API server one PV watch, not two.
//!
//! Custom code rather than kube-runtime's `Controller` watches alone: the
//! reconciler of the whole node must wake on any change (including
//! deletions, which a `Controller` does not reconcile), and readiness must
//! know when a watch cannot reach the API server. Whether the first list
//! has arrived is tracked here too, not with `Store::wait_until_ready`: in
//! kube-runtime 5 that future keeps only the last waiter's waker, so with
//! the cleanup controller waiting on the same PV store one of the two
//! waiters could sleep forever (seen as a start that never reconciled).
//!
//! The PV watch hands its objects to the cleanup controller through a
//! [`Subscription`] of our own, not kube-runtime's shared store
//! (`store_shared` and its `ReflectHandle`): in kube-runtime 5 a
//! `ReflectHandle` whose next reference names an object already gone from
//! the store (a PV changed and then deleted before the controller read the
//! change) returns `Pending` without arranging to be woken; the
//! controller's `SelectAll` never polls it again, and the controller saw no
//! further PV event in that process: a PV deleted later was never wiped,
//! seen as a flaky fault test (`tests/clean_offer/vanished.rs` now fails on
//! that code every time).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::SinkExt;
use futures::StreamExt;
use futures::channel::mpsc;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::Resource;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::objects::pv::LeanPv;
use crate::observe::health::{Health, WatchHealth};

/// How often a failing watch checks whether the API server answers again.
const RECOVERY_PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Objects a shared watch can buffer for a slow subscriber before it waits.
const SHARED_BUFFER: usize = 1024;

/// A second consumer's view of a watch: every object the watch applied to
/// its store (after the store has it), and after each full list every
/// object in the store.
pub type Subscription<K> = mpsc::Receiver<K>;

/// What a watch changed since its consumer last looked: the objects (by
/// name) it applied or deleted, or everything after a full list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    /// These objects changed (none: nothing did).
    Names(BTreeSet<String>),
    /// A full list arrived: any object may have changed.
    All,
}

impl Default for Touched {
    fn default() -> Self {
        Touched::Names(BTreeSet::new())
    }
}

impl Touched {
    /// Adds object `name` (none: an object without a name, so everything).
    pub fn insert(&mut self, name: Option<&str>) {
        match (&mut *self, name) {
            (Touched::Names(names), Some(name)) => {
                names.insert(name.to_string());
            }
            (Touched::Names(_), None) => *self = Touched::All,
            (Touched::All, _) => {}
        }
    }

    /// Adds what `more` says changed.
    pub fn merge(&mut self, more: Touched) {
        match (&mut *self, more) {
            (Touched::All, _) => {}
            (_, Touched::All) => *self = Touched::All,
            (Touched::Names(names), Touched::Names(more)) => names.extend(more),
        }
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        matches!(self, Touched::Names(names) if names.is_empty())
    }
}

/// Where a watch records what it [touched](Touched), for a consumer that
/// does work per object rather than per wake-up.
#[derive(Debug, Default)]
pub struct ChangedNames {
    touched: Mutex<Touched>,
}

impl ChangedNames {
    fn record(&self, name: Option<&str>) {
        self.touched.lock().expect("changed names").insert(name);
    }

    /// Takes what changed since the last call.
    pub fn take(&self) -> Touched {
        std::mem::take(&mut *self.touched.lock().expect("changed names"))
    }
}

/// What a distinct watch last let through of each object (trimmed, without
/// its resourceVersion), to drop updates that change nothing kept.
struct Distinct<K> {
    last: HashMap<String, K>,
}

impl<K> Default for Distinct<K> {
    fn default() -> Self {
        Distinct {
            last: HashMap::new(),
        }
    }
}

impl<K: Resource + Clone + PartialEq> Distinct<K> {
    /// Whether `event` goes on to the store and the consumer: every event
    /// but an update equal to what was last let through of that object.
    fn keep(&mut self, event: &Result<watcher::Event<K>, watcher::Error>) -> bool {
        match event {
            Ok(watcher::Event::Init) => {
                self.last.clear();
                true
            }
            Ok(watcher::Event::Delete(object)) => {
                self.last.remove(&Self::key(object));
                true
            }
            Ok(watcher::Event::InitApply(object)) => {
                self.remember(object);
                true
            }
            Ok(watcher::Event::Apply(object)) => self.remember(object),
            _ => true,
        }
    }

    /// Records `object` without its resourceVersion; whether that differs
    /// from what was recorded of it before.
    fn remember(&mut self, object: &K) -> bool {
        let mut bare = object.clone();
        bare.meta_mut().resource_version = None;
        let key = Self::key(object);
        let changed = self.last.get(&key) != Some(&bare);
        self.last.insert(key, bare);
        changed
    }

    fn key(object: &K) -> String {
        object.meta().name.clone().unwrap_or_default()
    }
}

/// A running watch and its store.
pub struct Watched<K: Resource + 'static>
where
    K::DynamicType: Hash + Eq,
{
    /// The objects seen, kept current by the watch.
    pub store: Store<K>,
    /// The objects it changed since the consumer last looked.
    pub changes: Arc<ChangedNames>,
    synced: Arc<AtomicBool>,
    relists: Arc<AtomicU64>,
    task: JoinHandle<()>,
    _health: Arc<WatchHealth>,
}

/// What one watch needs besides its API and selector.
pub struct WatchSetup<'a> {
    /// Name of the watched resource, for logs.
    pub what: &'static str,
    /// Notified on every change and every failure.
    pub trigger: Arc<Notify>,
    /// Where the watch reports whether it fails.
    pub health: &'a Health,
}

impl<K> Watched<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Hash + Eq + Clone + Default,
{
    /// Starts watching `api` with `config`.
    pub fn spawn(api: Api<K>, config: watcher::Config, setup: WatchSetup<'_>) -> Self {
        Self::spawn_trimmed(api, config, setup, |_| {})
    }

    /// Starts watching `api` with `config`, keeping only what `trim` leaves
    /// of each object (memory on busy nodes).
    pub fn spawn_trimmed(
        api: Api<K>,
        config: watcher::Config,
        setup: WatchSetup<'_>,
        trim: fn(&mut K),
    ) -> Self {
        let source = move |api, config| watcher(api, config).modify(trim);
        Self::drive(api, config, setup, source, None)
    }

    /// Starts watching `api` with `config`, keeping only what `trim` leaves
    /// of each object, and waking the consumer only when that changed: an
    /// update that changes nothing kept but the resourceVersion (a Node's
    /// status reports, its image list, its conditions) is dropped before
    /// the store and costs no reconcile. Keeps one trimmed copy of each
    /// object to compare with; for watches of a few small objects.
    pub fn spawn_trimmed_distinct(
        api: Api<K>,
        config: watcher::Config,
        setup: WatchSetup<'_>,
        trim: fn(&mut K),
    ) -> Self
    where
        K: PartialEq,
    {
        let source = move |api, config| {
            let mut seen = Distinct::default();
            watcher(api, config)
                .modify(trim)
                .filter(move |event| std::future::ready(seen.keep(event)))
        };
        Self::drive(api, config, setup, source, None)
    }

    /// Starts watching `api` with `config`, keeping what `trim` leaves of
    /// each object, with a subscription for a second consumer.
    pub fn spawn_shared(
        api: Api<K>,
        config: watcher::Config,
        setup: WatchSetup<'_>,
        trim: fn(&mut K),
    ) -> (Self, Subscription<K>) {
        let (sender, subscription) = mpsc::channel(SHARED_BUFFER);
        let source = move |api, config| watcher(api, config).modify(trim);
        let watched = Self::drive(api, config, setup, source, Some(sender));
        (watched, subscription)
    }

    /// How many full lists have arrived so far (shared counter).
    pub fn relists(&self) -> Arc<AtomicU64> {
        self.relists.clone()
    }

    /// Whether the first full list has arrived (the trigger is notified when it does).
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    fn drive<S>(
        api: Api<K>,
        config: watcher::Config,
        setup: WatchSetup<'_>,
        source: impl FnOnce(Api<K>, watcher::Config) -> S,
        subscriber: Option<mpsc::Sender<K>>,
    ) -> Self
    where
        S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    {
        let (store, writer) = reflector::store();
        let health = Arc::new(WatchHealth::default());
        setup.health.track(&health);
        // While failing, a cheap one-item list every few seconds tells when
        // the API server answers again: the watcher reconnects silently when
        // nothing changed, and readiness must recover.
        let probe = kube::api::ListParams {
            label_selector: config.label_selector.clone(),
            field_selector: config.field_selector.clone(),
            limit: Some(1),
            ..Default::default()
        };
        let events = reflector::reflector(writer, source(api.clone(), config))
            .default_backoff()
            .boxed();
        let synced = Arc::new(AtomicBool::new(false));
        let relists = Arc::new(AtomicU64::new(0));
        let changes = Arc::new(ChangedNames::default());
        let task = tokio::spawn(run_watch(
            events,
            Probe { api, params: probe },
            Reporting {
                what: setup.what,
                trigger: setup.trigger,
                health: health.clone(),
                synced: synced.clone(),
                relists: relists.clone(),
                changes: changes.clone(),
            },
            subscriber.map(|sender| Forward {
                sender,
                store: store.clone(),
            }),
        ));
        Watched {
            store,
            changes,
            synced,
            relists,
            task,
            _health: health,
        }
    }
}

/// Keeps of this node's Node what the program reads: its metadata (name,
/// UID, labels, annotations), without `managedFields`. A real server's Node
/// carries its images, conditions and addresses, and changes with the
/// kubelet's status reports; none of that is kept, and the Node's watch
/// ([`Watched::spawn_trimmed_distinct`]) wakes nothing for a report.
pub fn trim_node(node: &mut Node) {
    node.metadata.managed_fields = None;
    node.spec = None;
    node.status = None;
}

/// Keeps of a PV what the program reads: a [`LeanPv`] (decoded without
/// the spec the program never reads) without `managedFields`, which a real
/// server sends with every object and event (about as large as the rest of
/// a PV), and without its owner reference (written at create, never read).
pub fn trim_pv(pv: &mut LeanPv) {
    pv.metadata.managed_fields = None;
    pv.metadata.owner_references = None;
}

/// Where a shared watch hands its objects on, and the store it reads them
/// from after a full list.
struct Forward<K: Resource + 'static>
where
    K::DynamicType: Hash + Eq,
{
    sender: mpsc::Sender<K>,
    store: Store<K>,
}

impl<K> Forward<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Hash + Eq + Clone,
{
    /// Hands on what `event` changed, waiting while the subscriber's buffer
    /// is full; `false` once the subscriber is gone.
    async fn hand_on(&mut self, event: &watcher::Event<K>) -> bool {
        let objects = match event {
            watcher::Event::Apply(object) => vec![object.clone()],
            watcher::Event::InitDone => self
                .store
                .state()
                .iter()
                .map(|object| K::clone(object))
                .collect(),
            _ => Vec::new(),
        };
        for object in objects {
            if self.sender.send(object).await.is_err() {
                return false;
            }
        }
        true
    }
}

struct Probe<K> {
    api: Api<K>,
    params: kube::api::ListParams,
}

/// Where a watch task reports what it sees.
struct Reporting {
    what: &'static str,
    trigger: Arc<Notify>,
    health: Arc<WatchHealth>,
    synced: Arc<AtomicBool>,
    relists: Arc<AtomicU64>,
    changes: Arc<ChangedNames>,
}

async fn run_watch<K>(
    mut events: futures::stream::BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>,
    probe: Probe<K>,
    reporting: Reporting,
    mut forward: Option<Forward<K>>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Hash + Eq + Clone,
{
    let Reporting {
        what,
        trigger,
        health,
        synced,
        relists,
        changes,
    } = reporting;
    loop {
        let event = if health.is_failing() {
            tokio::select! {
                event = events.next() => event,
                _ = tokio::time::sleep(RECOVERY_PROBE_INTERVAL) => {
                    if probe.api.list_metadata(&probe.params).await.is_ok()
                        && health.set_failing(false)
                    {
                        trigger.notify_one();
                    }
                    continue;
                }
            }
        } else {
            events.next().await
        };
        let Some(event) = event else { break };
        match event {
            Ok(watcher::Event::InitApply(_)) | Ok(watcher::Event::Init) => {
                health.set_failing(false);
            }
            Ok(event) => {
                if let Some(subscriber) = forward.as_mut()
                    && !subscriber.hand_on(&event).await
                {
                    forward = None;
                }
                match &event {
                    watcher::Event::InitDone => {
                        changes.record(None);
                        relists.fetch_add(1, Ordering::Relaxed);
                        synced.store(true, Ordering::Relaxed);
                    }
                    watcher::Event::Apply(object) | watcher::Event::Delete(object) => {
                        changes.record(object.meta().name.as_deref());
                    }
                    _ => {}
                }
                health.set_failing(false);
                trigger.notify_one();
            }
            Err(error) => {
                if !health.set_failing(true) {
                    tracing::warn!(%error, what, "watch failed; retrying with backoff");
                } else {
                    tracing::debug!(%error, what, "watch still failing");
                }
                trigger.notify_one();
            }
        }
    }
}

impl<K: Resource + 'static> Drop for Watched<K>
where
    K::DynamicType: Hash + Eq,
{
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::api::core::v1::PersistentVolume;
    use kube::runtime::controller::{Action, Controller};
    use kube::runtime::reflector::store::Writer;
    use serde_json::json;

    use super::*;

    fn pv(name: &str, version: &str) -> LeanPv {
        serde_json::from_value(json!({
            "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": version},
        }))
        .expect("a PV")
    }

    #[test]
    fn a_distinct_watch_drops_updates_that_change_nothing_kept() {
        let mut seen = Distinct::default();
        let node = |version: &str, zone: &str| {
            let mut node: Node = serde_json::from_value(json!({
                "metadata": {"name": "n1", "uid": "u1", "resourceVersion": version,
                             "labels": {"topology.kubernetes.io/zone": zone}},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            }))
            .expect("a Node");
            trim_node(&mut node);
            node
        };
        let apply = |node| Ok(watcher::Event::Apply(node));
        assert!(seen.keep(&Ok(watcher::Event::Init)));
        assert!(seen.keep(&Ok(watcher::Event::InitApply(node("1", "a")))));
        assert!(
            seen.keep(&Ok(watcher::Event::InitDone)),
            "a relist always wakes"
        );
        assert!(
            !seen.keep(&apply(node("2", "a"))),
            "a status report: only the resourceVersion moved in what is kept"
        );
        assert!(seen.keep(&apply(node("3", "b"))), "a label changed");
        assert!(!seen.keep(&apply(node("4", "b"))));
        assert!(seen.keep(&Ok(watcher::Event::Delete(node("5", "b")))));
        assert!(
            seen.keep(&apply(node("6", "b"))),
            "created again after a delete"
        );
        assert!(seen.keep(&Ok(watcher::Event::Init)));
        assert!(
            seen.keep(&Ok(watcher::Event::InitApply(node("7", "b")))),
            "every object of a relist reaches the store"
        );
    }

    #[test]
    fn a_stored_pv_keeps_what_the_program_reads() {
        let object = json!({
            "metadata": {
                "name": "local-n1-disk0", "uid": "u1", "resourceVersion": "7",
                "labels": {"local-pv-provisioner.cybozu.io/node": "n1"},
                "annotations": {"local-pv-provisioner.cybozu.io/device-number": "7:0"},
                "finalizers": ["kubernetes.io/pv-protection"],
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "n"}],
                "managedFields": [{"manager": "kube-controller-manager", "operation": "Update"}],
            },
            "spec": {
                "capacity": {"storage": "1Gi"},
                "local": {"path": "/dev/disks/disk0"},
                "claimRef": {"namespace": "a", "name": "b"},
                "storageClassName": "local", "volumeMode": "Block",
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "mountOptions": ["noatime"],
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}},
            },
            "status": {"phase": "Bound"},
        });
        let mut stored: LeanPv = serde_json::from_value(object.clone()).expect("a PV");
        trim_pv(&mut stored);
        let full: PersistentVolume = serde_json::from_value(object).expect("a PV");
        let mut kept = LeanPv::from(full);
        kept.metadata.managed_fields = None;
        kept.metadata.owner_references = None;
        assert_eq!(
            stored, kept,
            "decoded lean, the PV keeps what the conversion keeps"
        );
        let spec = stored.spec.as_ref().expect("spec");
        assert!(spec.local.is_some() && spec.claim_ref.is_some() && spec.capacity.is_some());
        assert_eq!(spec.volume_mode.as_deref(), Some("Block"));
        assert_eq!(spec.storage_class_name.as_deref(), Some("local"));
        assert!(stored.metadata.finalizers.is_some() && stored.metadata.annotations.is_some());
        assert_eq!(
            stored.status.and_then(|status| status.phase).as_deref(),
            Some("Bound")
        );
        let sent = serde_json::to_value(&kept.spec).expect("JSON");
        assert_eq!(
            sent.as_object().map(|spec| spec.len()),
            Some(5),
            "the five fields read, under their API names: {sent}"
        );
    }

    /// Applies `event` to the store as the reflector does, then hands it on.
    async fn watch_sees(
        writer: &mut Writer<LeanPv>,
        forward: &mut Forward<LeanPv>,
        event: watcher::Event<LeanPv>,
    ) {
        writer.apply_watcher_event(&event);
        assert!(forward.hand_on(&event).await, "the subscriber is there");
    }

    /// The case kube-runtime 5's `ReflectHandle` loses: a PV changed and
    /// deleted before the cleanup controller reads the change. A later
    /// change of another PV must still reach the controller's reconcile.
    #[tokio::test(start_paused = true)]
    async fn a_change_after_a_vanished_object_still_reaches_the_controller() {
        let (store, mut writer) = reflector::store();
        let (sender, subscription) = mpsc::channel(SHARED_BUFFER);
        let mut forward = Forward {
            sender,
            store: store.clone(),
        };
        let (reconciled, mut names) = tokio::sync::mpsc::unbounded_channel();
        let controller = Controller::for_stream(subscription.map(Ok), store)
            .run(
                |pv: Arc<LeanPv>,
                 seen: Arc<tokio::sync::mpsc::UnboundedSender<String>>| async move {
                    let name = pv.metadata.name.clone().unwrap_or_default();
                    seen.send(name).expect("the test listens");
                    Ok::<_, std::convert::Infallible>(Action::await_change())
                },
                |_, _, _| Action::await_change(),
                Arc::new(reconciled),
            )
            .for_each(|_| async {});
        let controller = tokio::spawn(controller);
        watch_sees(&mut writer, &mut forward, watcher::Event::Init).await;
        watch_sees(&mut writer, &mut forward, watcher::Event::InitDone).await;
        watch_sees(
            &mut writer,
            &mut forward,
            watcher::Event::Apply(pv("a", "2")),
        )
        .await;
        watch_sees(
            &mut writer,
            &mut forward,
            watcher::Event::Delete(pv("a", "3")),
        )
        .await;
        watch_sees(
            &mut writer,
            &mut forward,
            watcher::Event::Apply(pv("b", "4")),
        )
        .await;
        let next = tokio::time::timeout(Duration::from_secs(60), names.recv()).await;
        assert_eq!(
            next.ok().flatten().as_deref(),
            Some("b"),
            "b's change reconciled (a is gone; a reconcile of it would have named it)"
        );
        controller.abort();
    }

    /// After a full list the subscriber gets every object of the store, so
    /// a relist looks at every PV again.
    #[tokio::test]
    async fn a_full_list_hands_on_every_object() {
        let (store, mut writer) = reflector::store();
        let (sender, subscription) = mpsc::channel(SHARED_BUFFER);
        let mut forward = Forward { sender, store };
        watch_sees(&mut writer, &mut forward, watcher::Event::Init).await;
        for name in ["a", "b"] {
            let event = watcher::Event::InitApply(pv(name, "1"));
            watch_sees(&mut writer, &mut forward, event).await;
        }
        watch_sees(&mut writer, &mut forward, watcher::Event::InitDone).await;
        drop(forward);
        let mut names: Vec<String> = subscription
            .map(|pv| pv.metadata.name.unwrap_or_default())
            .collect()
            .await;
        names.sort();
        assert_eq!(names, ["a", "b"]);
    }
}
