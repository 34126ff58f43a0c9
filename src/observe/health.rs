//! Readiness, computed in one place from what the parts report: the
//! reconciler (it has run, the Node exists, its last API requests got
//! through), the watches (each says whether it currently fails to reach the
//! API server) and shutdown. `/readyz` asks [`Health::is_ready`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Whether one watch currently fails to reach the API server; shared
/// between the watch task and [`Health`].
#[derive(Debug, Default)]
pub struct WatchHealth {
    failing: AtomicBool,
}

impl WatchHealth {
    /// Records whether the last attempt failed; returns the previous value.
    pub fn set_failing(&self, failing: bool) -> bool {
        self.failing.swap(failing, Ordering::Relaxed)
    }

    /// Whether the last attempt failed.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }
}

/// What one reconcile found out about the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileHealth {
    /// The Node object exists.
    pub node_present: bool,
    /// Whether the API requests this reconcile made got through; `None`
    /// when it made none (the previous answer stands).
    pub api_reachable: Option<bool>,
}

#[derive(Debug, Default)]
struct State {
    reconciled: AtomicBool,
    node_present: AtomicBool,
    api_unreachable: AtomicBool,
    stopping: AtomicBool,
    watches: Mutex<Vec<Weak<WatchHealth>>>,
}

/// The process's readiness inputs; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Health {
    state: Arc<State>,
}

impl Health {
    /// Counts `watch` in readiness for as long as it lives.
    pub fn track(&self, watch: &Arc<WatchHealth>) {
        let mut watches = self.state.watches.lock().expect("health lock");
        watches.retain(|weak| weak.strong_count() > 0);
        watches.push(Arc::downgrade(watch));
    }

    /// Records the outcome of a reconcile.
    pub fn record_reconcile(&self, outcome: ReconcileHealth) {
        self.state.reconciled.store(true, Ordering::Relaxed);
        self.state
            .node_present
            .store(outcome.node_present, Ordering::Relaxed);
        if let Some(reachable) = outcome.api_reachable {
            self.state
                .api_unreachable
                .store(!reachable, Ordering::Relaxed);
        }
    }

    /// Marks the process as shutting down: never ready again.
    pub fn set_stopping(&self) {
        self.state.stopping.store(true, Ordering::Relaxed);
    }

    /// Ready: a reconcile has run, the Node exists, the API server answered
    /// the last requests, every live watch reaches it, and no shutdown.
    pub fn is_ready(&self) -> bool {
        let state = &self.state;
        let watches_ok = state
            .watches
            .lock()
            .expect("health lock")
            .iter()
            .filter_map(Weak::upgrade)
            .all(|watch| !watch.is_failing());
        state.reconciled.load(Ordering::Relaxed)
            && state.node_present.load(Ordering::Relaxed)
            && !state.api_unreachable.load(Ordering::Relaxed)
            && !state.stopping.load(Ordering::Relaxed)
            && watches_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_after_a_reconcile_with_the_node_and_every_watch_healthy() {
        let health = Health::default();
        let watch = Arc::new(WatchHealth::default());
        health.track(&watch);
        assert!(!health.is_ready(), "no reconcile yet");
        let fine = ReconcileHealth {
            node_present: true,
            api_reachable: Some(true),
        };
        health.record_reconcile(fine);
        assert!(health.is_ready());
        watch.set_failing(true);
        assert!(!health.is_ready(), "a failing watch");
        watch.set_failing(false);
        health.record_reconcile(ReconcileHealth {
            api_reachable: Some(false),
            ..fine
        });
        assert!(!health.is_ready(), "API requests failed");
        health.record_reconcile(ReconcileHealth {
            api_reachable: None,
            ..fine
        });
        assert!(!health.is_ready(), "no request since: the failure stands");
        health.record_reconcile(fine);
        health.set_stopping();
        assert!(!health.is_ready(), "shutting down");
    }

    #[test]
    fn a_dropped_watch_no_longer_counts() {
        let health = Health::default();
        health.record_reconcile(ReconcileHealth {
            node_present: true,
            api_reachable: Some(true),
        });
        let watch = Arc::new(WatchHealth::default());
        health.track(&watch);
        watch.set_failing(true);
        assert!(!health.is_ready());
        drop(watch);
        assert!(health.is_ready());
    }
}
