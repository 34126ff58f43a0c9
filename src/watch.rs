//! Narrow watches kept as in-memory stores: the one Node by name, this
//! node's PVs by label, the one PV spec ConfigMap by name. Each runs as a
//! task that feeds a reflector store, wakes the reconciler on every change
//! and records in a [`WatchHealth`] whether it is failing. The PV watch is
//! shared: the cleanup controller subscribes to the same stream, so a node
//! costs the API server one PV watch, not two.
//!
//! Custom code rather than kube-runtime's `Controller` watches alone: the
//! reconciler of the whole node must wake on any change (including
//! deletions, which a `Controller` does not reconcile), and readiness must
//! know when a watch cannot reach the API server. Whether the first list
//! has arrived is tracked here too, not with `Store::wait_until_ready`: in
//! kube-runtime 5 that future keeps only the last waiter's waker, so with
//! the cleanup controller waiting on the same PV store one of the two
//! waiters could sleep forever (seen as a start that never reconciled).

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::StreamExt;
use kube::Api;
use kube::Resource;
use kube::runtime::reflector::{self, ReflectHandle, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::health::{Health, WatchHealth};

/// How often a failing watch checks whether the API server answers again.
const RECOVERY_PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Objects a shared watch can buffer for a slow subscriber before it waits.
const SHARED_BUFFER: usize = 1024;

/// A running watch and its store.
pub struct Watched<K: Resource + 'static>
where
    K::DynamicType: Hash + Eq,
{
    /// The objects seen, kept current by the watch.
    pub store: Store<K>,
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
        let (store, writer) = reflector::store();
        Self::drive(api, config, setup, (store, writer), trim)
    }

    /// Starts watching `api` with `config`, with a subscription for a second consumer.
    pub fn spawn_shared(
        api: Api<K>,
        config: watcher::Config,
        setup: WatchSetup<'_>,
    ) -> (Self, ReflectHandle<K>) {
        let (store, writer) = reflector::store_shared(SHARED_BUFFER);
        let subscriber = writer
            .subscribe()
            .expect("a shared store can be subscribed");
        let watched = Self::drive(api, config, setup, (store, writer), |_| {});
        (watched, subscriber)
    }

    /// How many full lists have arrived so far (shared counter).
    pub fn relists(&self) -> Arc<AtomicU64> {
        self.relists.clone()
    }

    /// Whether the first full list has arrived (the trigger is notified when it does).
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    fn drive(
        api: Api<K>,
        config: watcher::Config,
        setup: WatchSetup<'_>,
        (store, writer): (Store<K>, Writer<K>),
        trim: fn(&mut K),
    ) -> Self {
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
        let events = reflector::reflector(writer, watcher(api.clone(), config).modify(trim))
            .default_backoff()
            .boxed();
        let synced = Arc::new(AtomicBool::new(false));
        let relists = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run_watch(
            events,
            Probe { api, params: probe },
            Reporting {
                what: setup.what,
                trigger: setup.trigger,
                health: health.clone(),
                synced: synced.clone(),
                relists: relists.clone(),
            },
        ));
        Watched {
            store,
            synced,
            relists,
            task,
            _health: health,
        }
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
}

async fn run_watch<K>(
    mut events: futures::stream::BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>,
    probe: Probe<K>,
    reporting: Reporting,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let Reporting {
        what,
        trigger,
        health,
        synced,
        relists,
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
                if matches!(event, watcher::Event::InitDone) {
                    relists.fetch_add(1, Ordering::Relaxed);
                    synced.store(true, Ordering::Relaxed);
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
