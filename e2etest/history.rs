//! A record of every change to one node's PVs, from a watch the suite
//! keeps open: a state that lasts shorter than a poll (`Released`, or
//! Terminating while the wipe runs) is still seen.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::{Api, Client, ResourceExt};

use crate::support::world::NODE_LABEL;
use crate::support::world::inspect::{held_terminating, phase};

/// Locks a mutex, also after a panic poisoned it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One watch event of a PV, as recorded by [`PvHistory`].
#[derive(Debug, Clone)]
pub struct Seen {
    /// `ADDED`, `MODIFIED`, `DELETED`, or `ERROR` when the watch broke off
    /// with an error (then the record has a gap).
    pub event: &'static str,
    /// The PV's name (the error message for `ERROR`).
    pub name: String,
    /// The PV's UID.
    pub uid: String,
    /// The PV's phase.
    pub phase: String,
    /// Whether the PV was being deleted (Terminating) and still held by the
    /// provisioner's finalizer.
    pub held: bool,
}

/// Every change to one node's PVs from the moment it is started, from a
/// watch resumed at the last resourceVersion it saw: a phase that lasts
/// shorter than a poll (`Released`, while the wipe runs) is still seen.
pub struct PvHistory {
    /// The events so far, oldest first.
    seen: Arc<Mutex<Vec<Seen>>>,
    /// The watching task; aborted on drop.
    task: tokio::task::JoinHandle<()>,
}

impl PvHistory {
    /// Lists the PVs labelled for `node` and watches them from that list's
    /// resourceVersion on.
    pub async fn start(client: Client, node: &str) -> PvHistory {
        let api: Api<PersistentVolume> = Api::all(client);
        let selector = format!("{NODE_LABEL}={node}");
        let list = api
            .list(&ListParams::default().labels(&selector))
            .await
            .expect("listing PVs");
        let mut version = list
            .metadata
            .resource_version
            .clone()
            .expect("the list's resourceVersion");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let params = WatchParams::default().labels(&selector).timeout(60);
                let stream = match api.watch(&params, &version).await {
                    Ok(stream) => stream,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    let (kind, pv) = match event {
                        Ok(WatchEvent::Added(pv)) => ("ADDED", pv),
                        Ok(WatchEvent::Modified(pv)) => ("MODIFIED", pv),
                        Ok(WatchEvent::Deleted(pv)) => ("DELETED", pv),
                        Ok(WatchEvent::Bookmark(bookmark)) => {
                            version = bookmark.metadata.resource_version;
                            continue;
                        }
                        Ok(WatchEvent::Error(status)) => {
                            lock(&sink).push(Seen {
                                event: "ERROR",
                                name: status.message.clone(),
                                uid: String::new(),
                                phase: String::new(),
                                held: false,
                            });
                            return;
                        }
                        Err(_) => break,
                    };
                    if let Some(resource_version) = pv.resource_version() {
                        version = resource_version;
                    }
                    lock(&sink).push(Seen {
                        event: kind,
                        name: pv.name_any(),
                        uid: pv.uid().unwrap_or_default(),
                        phase: phase(&pv).to_string(),
                        held: held_terminating(&pv),
                    });
                }
            }
        });
        PvHistory { seen, task }
    }

    /// The events of the PV with `uid`, once one of them is its deletion;
    /// panics when the watch broke off (the record would have a gap).
    pub fn until_deleted(&self, uid: &str) -> Option<Vec<Seen>> {
        let seen = lock(&self.seen);
        if let Some(error) = seen.iter().find(|seen| seen.event == "ERROR") {
            panic!("the PV watch broke off: {}", error.name);
        }
        let events: Vec<Seen> = seen.iter().filter(|s| s.uid == uid).cloned().collect();
        events
            .iter()
            .any(|seen| seen.event == "DELETED")
            .then_some(events)
    }
}

impl Drop for PvHistory {
    fn drop(&mut self) {
        self.task.abort();
    }
}
