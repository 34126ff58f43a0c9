//! Narrow watches kept as in-memory stores: the one Node by name, this
//! node's PVs by label, the one PV spec ConfigMap by name. Each runs as a
//! task that feeds a reflector store, wakes the reconciler on every change,
//! and records whether it is currently failing (for readiness).

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use kube::Api;
use kube::Resource;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How often a failing watch checks whether the API server answers again.
const RECOVERY_PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// A running watch and its store.
pub struct Watched<K: Resource + 'static>
where
    K::DynamicType: Hash + Eq,
{
    /// The objects seen, kept current by the watch.
    pub store: Store<K>,
    synced: Arc<AtomicBool>,
    failing: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl<K> Watched<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Hash + Eq + Clone + Default,
{
    /// Starts watching `api` with `config`; every change notifies `trigger`.
    pub fn spawn(
        api: Api<K>,
        config: watcher::Config,
        what: &'static str,
        trigger: Arc<Notify>,
    ) -> Self {
        let (store, writer) = reflector::store();
        let synced = Arc::new(AtomicBool::new(false));
        let failing = Arc::new(AtomicBool::new(false));
        let task = {
            let synced = synced.clone();
            let failing = failing.clone();
            // While failing, a cheap one-item list every few seconds tells
            // when the API server answers again: the watcher reconnects
            // silently when nothing changed, and readiness must recover.
            let probe_api = api.clone();
            let probe = kube::api::ListParams {
                label_selector: config.label_selector.clone(),
                field_selector: config.field_selector.clone(),
                limit: Some(1),
                ..Default::default()
            };
            tokio::spawn(async move {
                let mut events = reflector::reflector(writer, watcher(api, config))
                    .default_backoff()
                    .boxed();
                loop {
                    let event = if failing.load(Ordering::Relaxed) {
                        tokio::select! {
                            event = events.next() => event,
                            _ = tokio::time::sleep(RECOVERY_PROBE_INTERVAL) => {
                                if probe_api.list_metadata(&probe).await.is_ok()
                                    && failing.swap(false, Ordering::Relaxed)
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
                            failing.store(false, Ordering::Relaxed);
                        }
                        Ok(event) => {
                            if matches!(event, watcher::Event::InitDone) {
                                synced.store(true, Ordering::Relaxed);
                            }
                            failing.store(false, Ordering::Relaxed);
                            trigger.notify_one();
                        }
                        Err(error) => {
                            if !failing.swap(true, Ordering::Relaxed) {
                                tracing::warn!(%error, what, "watch failed; retrying with backoff");
                            } else {
                                tracing::debug!(%error, what, "watch still failing");
                            }
                            trigger.notify_one();
                        }
                    }
                }
            })
        };
        Watched {
            store,
            synced,
            failing,
            task,
        }
    }

    /// Whether the first full list has arrived.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// Whether the last attempt to reach the API server failed.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
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
