//! The benchmark's own watch of one node's PVs, recording when each change
//! reached it: the clock every latency is read from. It works the same on
//! the fake API server and on a cluster. Its requests carry the field
//! selector `metadata.name!=lpp-bench-watch`, by which they are told apart
//! from the program's in the fake server's request log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use local_pv_provisioner::objects::naming::node_label_value;
use local_pv_provisioner::objects::pv::{CLAIMED_BY_ANNOTATION, CLEANUP_FINALIZER, NODE_LABEL};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The marker in the query of the benchmark's own requests.
pub const OWN_REQUEST_MARKER: &str = "lpp-bench-watch";

/// One PV as one watch event showed it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When the event arrived.
    pub at: Instant,
    /// The PV's name.
    pub name: String,
    /// Its UID.
    pub uid: String,
    /// `spec.local.path`.
    pub path: String,
    /// `status.phase` (`""` when none).
    pub phase: String,
    /// Whether it is being deleted.
    pub deleting: bool,
    /// Whether it still has the program's cleanup finalizer.
    pub finalizer: bool,
    /// Whether the program recorded a claim on it.
    pub claimed: bool,
    /// Whether this event is its deletion.
    pub gone: bool,
}

/// What the watch saw of one PV (one UID).
#[derive(Debug, Clone)]
pub struct History {
    /// Its latest record.
    pub latest: Seen,
    /// When it was first seen.
    pub first_at: Instant,
    /// When it was first seen in each phase.
    pub phase_at: HashMap<String, Instant>,
}

/// Everything the watch saw: each event, and a summary per PV.
#[derive(Debug, Default)]
pub struct Seens {
    /// Every record, oldest first.
    pub all: Vec<Seen>,
    /// Per UID.
    pub pvs: HashMap<String, History>,
}

impl Seens {
    fn push(&mut self, record: Seen) {
        let history = self
            .pvs
            .entry(record.uid.clone())
            .or_insert_with(|| History {
                latest: record.clone(),
                first_at: record.at,
                phase_at: HashMap::new(),
            });
        history
            .phase_at
            .entry(record.phase.clone())
            .or_insert(record.at);
        history.latest = record.clone();
        self.all.push(record);
    }
}

/// The running watch and everything it saw.
pub struct Timeline {
    seen: Arc<Mutex<Seens>>,
    changed: Arc<Notify>,
    task: JoinHandle<()>,
}

fn record_of(pv: &PersistentVolume, gone: bool) -> Seen {
    Seen {
        at: Instant::now(),
        name: pv.name_any(),
        uid: pv.uid().unwrap_or_default(),
        path: pv
            .spec
            .as_ref()
            .and_then(|spec| spec.local.as_ref())
            .map(|local| local.path.clone())
            .unwrap_or_default(),
        phase: pv
            .status
            .as_ref()
            .and_then(|status| status.phase.clone())
            .unwrap_or_default(),
        deleting: pv.metadata.deletion_timestamp.is_some(),
        finalizer: pv.finalizers().iter().any(|f| f == CLEANUP_FINALIZER),
        claimed: pv.annotations().contains_key(CLAIMED_BY_ANNOTATION),
        gone,
    }
}

impl Timeline {
    /// Starts watching the PVs of Node `node` and waits until the watch
    /// has listed them.
    pub async fn start(client: Client, node: &str) -> Timeline {
        let seen = Arc::new(Mutex::new(Seens::default()));
        let changed = Arc::new(Notify::new());
        let config = watcher::Config::default()
            .labels(&format!("{NODE_LABEL}={}", node_label_value(node)))
            .fields(&format!("metadata.name!={OWN_REQUEST_MARKER}"));
        let (listed_tx, listed_rx) = tokio::sync::oneshot::channel();
        let api = Api::<PersistentVolume>::all(client);
        let task = tokio::spawn(follow(
            api,
            config,
            seen.clone(),
            changed.clone(),
            listed_tx,
        ));
        tokio::time::timeout(Duration::from_secs(60), listed_rx)
            .await
            .expect("the benchmark's PV watch lists within 60 s")
            .expect("PV watch task");
        Timeline {
            seen,
            changed,
            task,
        }
    }

    /// Waits until `check` finds what it looks for in everything seen so
    /// far; panics naming `what` after `limit`.
    pub async fn wait<T>(
        &self,
        what: &str,
        limit: Duration,
        mut check: impl FnMut(&Seens) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(found) = check(&self.seen.lock().expect("timeline")) {
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out after {limit:?} waiting for {what}"
            );
            let _ = tokio::time::timeout(left, changed).await;
        }
    }

    /// The first time the PV at `path` was seen with a UID not in `old`.
    pub async fn added(&self, path: &str, old: &[String], limit: Duration) -> Seen {
        self.wait(&format!("a new PV for {path}"), limit, |seen| {
            seen.all
                .iter()
                .find(|s| s.path == path && !s.gone && !old.contains(&s.uid))
                .cloned()
        })
        .await
    }

    /// The first record of PV `uid` that `check` accepts.
    pub async fn first(
        &self,
        uid: &str,
        what: &str,
        limit: Duration,
        check: impl Fn(&Seen) -> bool,
    ) -> Seen {
        self.wait(what, limit, |seen| {
            seen.all.iter().find(|s| s.uid == uid && check(s)).cloned()
        })
        .await
    }

    /// Waits until `count` live PVs are `phase` (any phase when `None`);
    /// returns when the last of them first reached it.
    pub async fn all_live(&self, count: usize, phase: Option<&str>, limit: Duration) -> Instant {
        let what = format!("{count} PVs {}", phase.unwrap_or("created"));
        self.wait(&what, limit, |seen| {
            let reached: Vec<Instant> = seen
                .pvs
                .values()
                .filter(|pv| !pv.latest.gone)
                .filter_map(|pv| match phase {
                    None => Some(pv.first_at),
                    Some(p) if pv.latest.phase == p => pv.phase_at.get(p).copied(),
                    Some(_) => None,
                })
                .collect();
            (reached.len() >= count).then(|| reached.into_iter().max().expect("a PV"))
        })
        .await
    }

    /// When the first PV seen so far was first seen.
    pub fn first_seen(&self) -> Option<Instant> {
        let seen = self.seen.lock().expect("timeline");
        seen.pvs.values().map(|pv| pv.first_at).min()
    }

    /// Waits until no PV of the node is left (after its Node went away).
    pub async fn none_left(&self, limit: Duration) {
        self.wait("every PV of the node gone", limit, |seen| {
            seen.pvs.values().all(|pv| pv.latest.gone).then_some(())
        })
        .await;
    }
}

/// Records every event of the watch; says when the first list is done.
async fn follow(
    api: Api<PersistentVolume>,
    config: watcher::Config,
    seen: Arc<Mutex<Seens>>,
    changed: Arc<Notify>,
    listed: tokio::sync::oneshot::Sender<()>,
) {
    let mut listed = Some(listed);
    let mut stream = watcher(api, config).boxed();
    while let Some(event) = stream.next().await {
        let record = match event {
            Ok(watcher::Event::Apply(pv) | watcher::Event::InitApply(pv)) => record_of(&pv, false),
            Ok(watcher::Event::Delete(pv)) => record_of(&pv, true),
            Ok(watcher::Event::InitDone) => {
                if let Some(tx) = listed.take() {
                    let _ = tx.send(());
                }
                continue;
            }
            Ok(watcher::Event::Init) => continue,
            Err(error) => {
                eprintln!("bench: PV watch error (retrying): {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        seen.lock().expect("timeline").push(record);
        changed.notify_waiters();
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        self.task.abort();
    }
}
