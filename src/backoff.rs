//! Retry schedules: how long to wait after the n-th failure in a row, and a
//! table of keys (PVs, devices) each waiting for its own next try. Pure:
//! the caller passes the time, so the schedules are tested with paused
//! tokio time. A shared leaf of the crate root.
//!
//! Uses: nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// A doubling retry delay with a ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Delay after the first failure.
    pub first: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Schedule {
    /// The delay after `failures` failures in a row (1 for the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.first.saturating_mul(factor).min(self.max)
    }
}

/// Cleanup of a PV after a refused or failed wipe: 10 s doubling to 10 min.
pub const CLEANUP_RETRY: Schedule = Schedule {
    first: Duration::from_secs(10),
    max: Duration::from_secs(600),
};

/// Creating PVs after the API server could not be reached or failed
/// (5xx, timeouts): the whole batch waits, 2 s doubling to 30 s, so an
/// outage costs a few requests a minute, not one per device.
pub const UNREACHABLE_RETRY: Schedule = Schedule {
    first: Duration::from_secs(2),
    max: Duration::from_secs(30),
};

/// Creating the PV of one device the API server refused (403 from a
/// policy or quota, 422, a name taken by a foreign PV): only that device
/// waits, 30 s doubling to 10 min.
pub const REFUSED_CREATE_RETRY: Schedule = Schedule {
    first: Duration::from_secs(30),
    max: Duration::from_secs(600),
};

/// Writing the disk inventory after a write failed or was refused: the
/// next pass waits, 10 s doubling to 5 min (best effort: a LocalDisk never
/// holds up a PV).
pub const INVENTORY_RETRY: Schedule = Schedule {
    first: Duration::from_secs(10),
    max: Duration::from_secs(300),
};

#[derive(Debug, Clone)]
struct Waiting {
    failures: u32,
    not_before: Instant,
}

/// Keys that failed, each with its own retry time.
#[derive(Debug, Clone)]
pub struct BackoffTable<K: Ord> {
    schedule: Schedule,
    waiting: BTreeMap<K, Waiting>,
}

impl<K: Ord + Clone> BackoffTable<K> {
    /// An empty table retrying on `schedule`.
    pub fn new(schedule: Schedule) -> Self {
        BackoffTable {
            schedule,
            waiting: BTreeMap::new(),
        }
    }

    /// Records a failure of `key` at `now`; returns the delay until its next try.
    pub fn record_failure(&mut self, key: &K, now: Instant) -> Duration {
        let failures = self.waiting.get(key).map_or(0, |w| w.failures) + 1;
        let delay = self.schedule.delay(failures);
        self.waiting.insert(
            key.clone(),
            Waiting {
                failures,
                not_before: now + delay,
            },
        );
        delay
    }

    /// Forgets `key` after a success.
    pub fn clear(&mut self, key: &K) {
        self.waiting.remove(key);
    }

    /// How long `key` must still wait at `now`, if it must.
    pub fn remaining(&self, key: &K, now: Instant) -> Option<Duration> {
        self.waiting
            .get(key)
            .map(|w| w.not_before.saturating_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    /// Failures of `key` in a row so far.
    pub fn failures(&self, key: &K) -> u32 {
        self.waiting.get(key).map_or(0, |w| w.failures)
    }

    /// When the earliest waiting key is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.waiting.values().map(|w| w.not_before).min()
    }

    /// Forgets every key `keep` rejects (keys that no longer exist).
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.waiting.retain(|key, _| keep(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_retries_double_from_ten_seconds_to_ten_minutes() {
        let delays: Vec<u64> = [1, 2, 3, 4, 6, 7, 1000]
            .map(|n| CLEANUP_RETRY.delay(n).as_secs())
            .into();
        assert_eq!(delays, vec![10, 20, 40, 80, 320, 600, 600]);
    }

    #[test]
    fn unreachable_and_refused_schedules_have_their_ceilings() {
        assert_eq!(UNREACHABLE_RETRY.delay(1), Duration::from_secs(2));
        assert_eq!(UNREACHABLE_RETRY.delay(5), Duration::from_secs(30));
        assert_eq!(REFUSED_CREATE_RETRY.delay(1), Duration::from_secs(30));
        assert_eq!(REFUSED_CREATE_RETRY.delay(9), Duration::from_secs(600));
    }

    #[tokio::test(start_paused = true)]
    async fn each_key_waits_for_its_own_schedule() {
        let mut table = BackoffTable::new(CLEANUP_RETRY);
        let start = Instant::now();
        assert_eq!(table.record_failure(&"a", start), Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            table.record_failure(&"b", Instant::now()),
            Duration::from_secs(10)
        );
        assert_eq!(table.next_due(), Some(start + Duration::from_secs(10)));
        assert_eq!(
            table.remaining(&"a", Instant::now()),
            Some(Duration::from_secs(5))
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(table.remaining(&"a", Instant::now()), None, "a is due");
        assert!(table.remaining(&"b", Instant::now()).is_some());
        assert_eq!(
            table.record_failure(&"a", Instant::now()),
            Duration::from_secs(20),
            "a second failure in a row doubles"
        );
        table.clear(&"a");
        assert_eq!(table.failures(&"a"), 0);
        table.retain(|key| *key != "b");
        assert_eq!(table.next_due(), None);
    }
}
