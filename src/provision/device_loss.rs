//! Device loss, decided from snapshots: which PVs' devices have been
//! missing for the whole grace period, which of those PVs to delete (an
//! unclaimed `Available` PV, so no claim binds to a missing disk) and which
//! to keep and report (in use or reserved: nothing is lost if the device
//! returns), and which reported PVs got their device back. Each PV is
//! reported once per loss. Pure: the caller passes the time and applies
//! the decision.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use crate::provision::plan::ExistingPv;

/// What to do about lost devices after one observation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LossDecision {
    /// Unclaimed Available PVs whose device is lost: delete them.
    pub delete: Vec<String>,
    /// PVs kept although their device is lost, reported for the first time.
    pub newly_kept: Vec<String>,
    /// PVs reported as kept whose device is present again.
    pub returned: Vec<String>,
    /// PVs kept although their device is lost (the `missing_devices` gauge).
    pub kept: usize,
    /// When a device missing now but not yet for the grace period will be lost.
    pub recheck_at: Option<Instant>,
}

/// Remembers since when each PV's device is missing.
#[derive(Debug, Clone)]
pub struct DeviceLossTracker {
    grace: Duration,
    missing_since: HashMap<String, Instant>,
    reported_kept: BTreeSet<String>,
}

impl DeviceLossTracker {
    /// A tracker counting a device as lost after `grace`.
    pub fn new(grace: Duration) -> Self {
        DeviceLossTracker {
            grace,
            missing_since: HashMap::new(),
            reported_kept: BTreeSet::new(),
        }
    }

    /// Takes the PVs whose device is `missing` at `now` and decides.
    pub fn observe(
        &mut self,
        now: Instant,
        missing: &BTreeSet<String>,
        existing: &[ExistingPv],
    ) -> LossDecision {
        self.missing_since.retain(|name, _| missing.contains(name));
        for name in missing {
            self.missing_since.entry(name.clone()).or_insert(now);
        }
        let grace = self.grace;
        let lost: BTreeSet<&String> = self
            .missing_since
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= grace)
            .map(|(name, _)| name)
            .collect();
        let mut decision = LossDecision {
            recheck_at: self
                .missing_since
                .values()
                .map(|since| *since + grace)
                .filter(|deadline| *deadline > now)
                .min(),
            ..LossDecision::default()
        };
        decision.returned = self
            .reported_kept
            .iter()
            .filter(|name| !lost.contains(name))
            .cloned()
            .collect();
        for name in &decision.returned {
            self.reported_kept.remove(name);
        }
        for pv in existing
            .iter()
            .filter(|pv| lost.contains(&pv.name) && !pv.deleting)
        {
            if pv.phase.as_deref() == Some("Available") && !pv.claimed {
                decision.delete.push(pv.name.clone());
            } else {
                decision.kept += 1;
                if self.reported_kept.insert(pv.name.clone()) {
                    decision.newly_kept.push(pv.name.clone());
                }
            }
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(30);

    fn pv(name: &str, phase: &str, claimed: bool, deleting: bool) -> ExistingPv {
        ExistingPv {
            name: name.into(),
            path: None,
            number: None,
            phase: Some(phase.into()),
            claimed,
            deleting,
            class: "default".into(),
        }
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_happens_before_the_grace_period_ends() {
        let mut tracker = DeviceLossTracker::new(GRACE);
        let existing = vec![pv("free", "Available", false, false)];
        let start = Instant::now();
        let first = tracker.observe(start, &names(&["free"]), &existing);
        assert_eq!(first.delete, Vec::<String>::new());
        assert_eq!(first.recheck_at, Some(start + GRACE));
        tokio::time::advance(GRACE - Duration::from_secs(1)).await;
        let almost = tracker.observe(Instant::now(), &names(&["free"]), &existing);
        assert!(almost.delete.is_empty());
        assert_eq!(almost.recheck_at, Some(start + GRACE), "the deadline holds");
        tokio::time::advance(Duration::from_secs(1)).await;
        let lost = tracker.observe(Instant::now(), &names(&["free"]), &existing);
        assert_eq!(lost.delete, vec!["free".to_string()]);
        assert_eq!(lost.recheck_at, None);
    }

    #[tokio::test(start_paused = true)]
    async fn only_unclaimed_available_pvs_are_deleted_and_the_rest_reported_once() {
        let mut tracker = DeviceLossTracker::new(GRACE);
        let existing = vec![
            pv("free", "Available", false, false),
            pv("reserved", "Available", true, false),
            pv("bound", "Bound", true, false),
            pv("released", "Released", true, false),
            pv("going", "Available", false, true),
            pv("present", "Available", false, false),
        ];
        let missing = names(&["free", "reserved", "bound", "released", "going"]);
        tracker.observe(Instant::now(), &missing, &existing);
        tokio::time::advance(GRACE).await;
        let decision = tracker.observe(Instant::now(), &missing, &existing);
        assert_eq!(decision.delete, vec!["free".to_string()]);
        assert_eq!(decision.newly_kept, vec!["reserved", "bound", "released"]);
        assert_eq!(decision.kept, 3);
        let again = tracker.observe(Instant::now(), &missing, &existing);
        assert!(again.newly_kept.is_empty(), "reported once");
        assert_eq!(again.kept, 3, "still counted");
    }

    #[tokio::test(start_paused = true)]
    async fn a_device_that_returns_is_reported_and_its_clock_restarts() {
        let mut tracker = DeviceLossTracker::new(GRACE);
        let existing = vec![pv("bound", "Bound", true, false)];
        tracker.observe(Instant::now(), &names(&["bound"]), &existing);
        tokio::time::advance(GRACE).await;
        let lost = tracker.observe(Instant::now(), &names(&["bound"]), &existing);
        assert_eq!(lost.newly_kept, vec!["bound".to_string()]);
        let back = tracker.observe(Instant::now(), &BTreeSet::new(), &existing);
        assert_eq!(back.returned, vec!["bound".to_string()]);
        assert_eq!(back.kept, 0);
        let missing_again = tracker.observe(Instant::now(), &names(&["bound"]), &existing);
        assert!(missing_again.newly_kept.is_empty(), "a new grace period");
        assert!(missing_again.recheck_at.is_some());
    }
}
