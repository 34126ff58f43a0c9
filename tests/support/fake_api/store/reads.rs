//! Reads of the store: the current resourceVersion and its notifications,
//! one object, the objects of a resource, and the changes since a
//! resourceVersion that a watch replays.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::watch;

use super::{Change, Store};

impl Store {
    /// Current (latest) resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// A receiver told about every new resourceVersion.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    /// One object.
    pub fn get(&self, res: usize, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(res, ns.to_string(), name.to_string()))
    }

    /// Objects of a resource, optionally only one namespace, ordered by
    /// namespace and name like the real server.
    pub fn list<'a>(
        &'a self,
        res: usize,
        ns: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .range((res, String::new(), String::new())..(res + 1, String::new(), String::new()))
            .filter(move |((_, n, _), _)| ns.is_none_or(|want| want == n))
            .map(|(_, v)| v)
    }

    /// Changes of a resource after `since`; `Err(oldest)` when `since` is older
    /// than the retained history.
    pub fn changes_since(&self, res: usize, since: u64) -> Result<Vec<Arc<Change>>, u64> {
        if since < self.compacted {
            return Err(self.compacted);
        }
        Ok(self
            .history
            .iter()
            .filter(|c| c.rv > since && c.res == res)
            .cloned()
            .collect())
    }
}
