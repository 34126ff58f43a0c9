//! The PV controller's first step: a new PV goes `Pending` → `Available`.
//!
//! Observed on a real kube-apiserver and kube-controller-manager (v1.36)
//! with 1000 devices: the controller-manager moves each new PV with a `PUT`
//! of its own to the `status` subresource, one PV at a time, each write its
//! own resourceVersion and its own MODIFIED event: 623 such `PUT`s in the
//! 30 s after 1000 PVs were created, so the phases settle over seconds, not
//! in one batch. That is its client's rate limit (20 requests a second,
//! bursts of 30: 30 + 20 × 30 = 630), which the emulation reproduces with a
//! work queue (PVs in the order they appeared) drained through a token
//! bucket. The old emulation, every pending PV in one pass every 50 ms, is
//! kept as [`PvPhases::Batch`] for the benchmark's comparison.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::super::Shared;
use super::super::resources::{PVS, meta_str, str_at};
use super::super::store::Store;
use super::{POLL, deleting, modify};

/// How the emulated PV controller moves new PVs from `Pending` to
/// `Available`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PvPhases {
    /// One status write per PV, in the order the PVs appeared, at most
    /// `per_second` a second on average with bursts of up to `burst` (a
    /// token bucket, as client-go's rate limiter), reacting to each change
    /// at once rather than polling.
    Paced {
        /// Writes per second, on average.
        per_second: f64,
        /// Writes allowed back to back after a quiet time.
        burst: u32,
    },
    /// Every pending PV in one pass of the emulation (every 50 ms), one
    /// write each, back to back: the fake before issue 19.
    Batch,
}

impl PvPhases {
    /// kube-controller-manager's pace: its client's default rate limit,
    /// 20 requests a second with bursts of 30 (`--kube-api-qps`,
    /// `--kube-api-burst`), as measured on v1.36 (623 status `PUT`s in the
    /// 30 s after 1000 PVs were created). The default.
    pub const KUBE_CONTROLLER_MANAGER: PvPhases = PvPhases::Paced {
        per_second: 20.0,
        burst: 30,
    };
}

fn pending(pv: &Value) -> bool {
    str_at(pv, "/status/phase") == "Pending" && !deleting(pv)
}

fn settle(store: &mut Store, name: &str) -> Option<Value> {
    modify(store, PVS, "", name, true, |pv| {
        pv["status"]["phase"] = json!("Available")
    })
}

/// [`PvPhases::Batch`]: every pending PV, one write each.
pub(super) fn batch(store: &mut Store) {
    let names: Vec<String> = store
        .list(PVS, None)
        .filter(|pv| pending(pv))
        .map(|pv| meta_str(pv, "name").to_string())
        .collect();
    for name in names {
        settle(store, &name);
    }
}

/// The PV controller's work queue: pending PVs in the order they were
/// seen, each once.
#[derive(Default)]
struct Queue {
    order: VecDeque<String>,
    queued: HashSet<String>,
    /// The store's resourceVersion at the last look.
    seen: u64,
}

impl Queue {
    /// Queues the pending PVs not queued yet, oldest change first.
    fn refresh(&mut self, store: &Store) {
        if store.rv() == self.seen {
            return;
        }
        self.seen = store.rv();
        let mut new: Vec<(u64, String)> = store
            .list(PVS, None)
            .filter(|pv| pending(pv) && !self.queued.contains(meta_str(pv, "name")))
            .map(|pv| {
                let rv = meta_str(pv, "resourceVersion").parse().unwrap_or(0);
                (rv, meta_str(pv, "name").to_string())
            })
            .collect();
        new.sort();
        for (_, name) in new {
            self.queued.insert(name.clone());
            self.order.push_back(name);
        }
    }

    /// Settles the first queued PV that is still pending; whether one was
    /// written.
    fn settle_next(&mut self, store: &mut Store) -> bool {
        while let Some(name) = self.order.pop_front() {
            self.queued.remove(&name);
            let still = store.get(PVS, "", &name).is_some_and(pending);
            if still && settle(store, &name).is_some() {
                return true;
            }
        }
        false
    }

    fn clear(&mut self) {
        *self = Queue::default();
    }
}

/// A token bucket.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// How long until a token is there (`None`: now), after refilling.
    fn wait(&mut self, per_second: f64, burst: u32) -> Option<Duration> {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * per_second;
        self.tokens = (self.tokens + refill).min(f64::from(burst.max(1)));
        self.at = now;
        (self.tokens < 1.0)
            .then(|| Duration::from_secs_f64((1.0 - self.tokens) / per_second.max(1e-3)))
    }
}

/// [`PvPhases::Paced`]: the PV controller as a task of its own; runs until
/// aborted.
pub(super) async fn paced(shared: Arc<Shared>) {
    let mut changed = shared.store.lock().expect("store").subscribe();
    let mut queue = Queue::default();
    // Full at the start (capped to the burst at the first refill).
    let mut bucket = Bucket {
        tokens: f64::INFINITY,
        at: Instant::now(),
    };
    loop {
        let mode = *shared.pv_phases.lock().expect("PV phases");
        let PvPhases::Paced { per_second, burst } = mode else {
            queue.clear();
            tokio::time::sleep(POLL).await;
            continue;
        };
        if !shared.controller_on.load(Ordering::SeqCst) {
            tokio::time::sleep(POLL).await;
            continue;
        }
        if let Some(wait) = bucket.wait(per_second, burst) {
            tokio::time::sleep(wait).await;
            continue;
        }
        let wrote = {
            let mut store = shared.store.lock().expect("store");
            queue.refresh(&store);
            queue.settle_next(&mut store)
        };
        if wrote {
            bucket.tokens -= 1.0;
            continue;
        }
        // Nothing pending: wait for the next change (or a switch).
        tokio::select! {
            result = changed.changed() => {
                if result.is_err() {
                    tokio::time::sleep(POLL).await;
                }
            }
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}
