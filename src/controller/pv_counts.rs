//! The gauges of this node's released PVs waiting for their cleanup and of
//! the PVs kept with their data: kept per PV, so a PV event recounts that
//! PV alone and a pass recounts them all.

use std::collections::HashSet;
use std::sync::Arc;

use crate::cleanup::decide::{is_kept, needs_cleanup};
use crate::objects::pv::LeanPv;
use crate::observe::metrics::Metrics;

/// The node's PVs that wait for their cleanup, and those kept, as gauges
/// kept per PV.
#[derive(Default)]
pub struct PvCounts {
    released: HashSet<String>,
    kept: HashSet<String>,
}

impl PvCounts {
    /// Counts every PV of `pvs` (a pass).
    pub fn set_all(&mut self, metrics: &Metrics, pvs: &[Arc<LeanPv>]) {
        self.released.clear();
        self.kept.clear();
        for pv in pvs {
            self.count(pv.metadata.name.as_deref().unwrap_or_default(), Some(pv));
        }
        self.publish(metrics);
    }

    /// Counts the PVs `changed` again (by name, with the PV unless it went).
    pub fn update(&mut self, metrics: &Metrics, changed: &[(String, Option<Arc<LeanPv>>)]) {
        for (name, pv) in changed {
            self.count(name, pv.as_deref());
        }
        self.publish(metrics);
    }

    fn count(&mut self, name: &str, pv: Option<&LeanPv>) {
        let mark = |set: &mut HashSet<String>, on: bool| {
            if on {
                set.insert(name.to_string());
            } else {
                set.remove(name);
            }
        };
        mark(&mut self.released, pv.is_some_and(needs_cleanup));
        mark(&mut self.kept, pv.is_some_and(is_kept));
    }

    fn publish(&self, metrics: &Metrics) {
        metrics.released_pending.set(self.released.len() as i64);
        metrics.kept_pvs.set(self.kept.len() as i64);
    }
}
