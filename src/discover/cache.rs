//! Incremental discovery: what was learnt about each entry of `deviceDir`
//! is kept, and a scan inspects again only the entries that changed — all
//! of them on a full rescan (start, the poll tick, a new `deviceDir` or
//! filter, an inotify overflow), the entries inotify named otherwise, none
//! for a PV or Node event. Blocking (it reads the directory, sysfs and the
//! devices): run it off the async runtime.
//!
//! Entries that were unusable are inspected again on every scan (a wipe's
//! lock or an unopenable device passes without a change in `deviceDir`).
//! What a cached usable entry may miss until the next full rescan — a
//! device mounted, unmounted, claimed or resized without any change in
//! `deviceDir` — cannot lead to a wrong offer: before a first offer the device is opened with
//! `O_EXCL` and probed ([`crate::device::probe`]), and a wipe checks everything again.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use regex::Regex;

use crate::discover::devices::{
    DiscoveryError, Inspected, Mounts, Scan, assemble, inspect_all, inspect_entry, matching_name,
    read_mounts,
};

/// Which entries changed since the last scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Changes {
    /// None: the cache holds.
    #[default]
    None,
    /// These entry names (created, removed, renamed, retargeted).
    Entries(BTreeSet<OsString>),
    /// Unknown: scan everything.
    All,
}

impl Changes {
    /// Adds what `other` says changed.
    pub fn merge(&mut self, other: Changes) {
        *self = match (std::mem::take(self), other) {
            (Changes::All, _) | (_, Changes::All) => Changes::All,
            (Changes::None, other) | (other, Changes::None) => other,
            (Changes::Entries(mut mine), Changes::Entries(theirs)) => {
                mine.extend(theirs);
                Changes::Entries(mine)
            }
        };
    }
}

/// The entries of one `deviceDir` under one filter, as last inspected.
#[derive(Debug, Default)]
pub struct DeviceCache {
    key: Option<(PathBuf, String)>,
    entries: BTreeMap<String, Inspected>,
    /// Entries inspected by the last scan (for the benchmark and tests).
    pub last_inspected: usize,
}

impl DeviceCache {
    /// Scans `dir` for entries matching `filter`, inspecting again what
    /// `changes` names.
    pub fn scan(
        &mut self,
        dir: &Path,
        filter: &Regex,
        changes: Changes,
    ) -> Result<Scan, DiscoveryError> {
        let key = (dir.to_path_buf(), filter.as_str().to_string());
        let changes = if self.key.as_ref() != Some(&key) {
            Changes::All
        } else {
            changes
        };
        self.last_inspected = 0;
        match changes {
            Changes::None => self.recheck_unusable(dir, filter, None),
            Changes::All => {
                self.key = None;
                self.entries = inspect_all(dir, filter)?;
                self.last_inspected = self.entries.len();
                self.key = Some(key);
            }
            Changes::Entries(names) => {
                let mounts = read_mounts();
                self.recheck_unusable(dir, filter, Some(&mounts));
                for raw in names {
                    let lossy = raw.to_string_lossy().into_owned();
                    self.entries.remove(&lossy);
                    let exists = dir.join(&raw).symlink_metadata().is_ok();
                    if let Some(name) = matching_name(&raw, filter).filter(|_| exists) {
                        self.entries
                            .insert(name.0.clone(), inspect_entry(dir, &name, &mounts));
                        self.last_inspected += 1;
                    }
                }
            }
        }
        Ok(assemble(dir, self.entries.iter()))
    }

    /// Inspects again the entries that were unusable: what made them so
    /// (a wipe's lock, a device that could not be opened) can pass without
    /// any change in the directory. Reads the mount table unless given
    /// `mounts`.
    fn recheck_unusable(&mut self, dir: &Path, filter: &Regex, mounts: Option<&Mounts>) {
        let unusable: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, inspected)| inspected.is_err())
            .map(|(name, _)| name.clone())
            .collect();
        if unusable.is_empty() {
            return;
        }
        let read;
        let mounts = match mounts {
            Some(mounts) => mounts,
            None => {
                read = read_mounts();
                &read
            }
        };
        for name in unusable {
            if let Some(matching) = matching_name(std::ffi::OsStr::new(&name), filter) {
                self.entries
                    .insert(name, inspect_entry(dir, &matching, mounts));
                self.last_inspected += 1;
            }
        }
    }

    /// Whether the entry `name` was last seen leading to a block device
    /// (usable or not: a busy or locked device is still there).
    pub fn leads_to_block_device(&self, name: &str) -> bool {
        match self.entries.get(name) {
            Some(Ok(_)) => true,
            Some(Err(unusable)) => unusable.number.is_some(),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(names: &[&str]) -> Changes {
        Changes::Entries(names.iter().map(OsString::from).collect())
    }

    #[test]
    fn changes_merge_to_the_widest() {
        let mut changes = Changes::None;
        changes.merge(entries(&["a"]));
        changes.merge(entries(&["b"]));
        assert_eq!(changes, entries(&["a", "b"]));
        changes.merge(Changes::None);
        assert_eq!(changes, entries(&["a", "b"]));
        changes.merge(Changes::All);
        changes.merge(entries(&["c"]));
        assert_eq!(changes, Changes::All);
    }

    #[test]
    fn unusable_entries_are_looked_at_again_and_removed_ones_dropped() {
        // Regular files stand for unusable entries here; usable block
        // devices kept without a read are proved on loop devices in
        // `tests/devices/discovery.rs`.
        let dir = tempfile::tempdir().unwrap();
        for name in ["a", "b", "c"] {
            std::fs::write(dir.path().join(name), b"not a device").unwrap();
        }
        let filter = Regex::new(".*").unwrap();
        let mut cache = DeviceCache::default();
        let scan = cache.scan(dir.path(), &filter, Changes::None).unwrap();
        assert_eq!(cache.last_inspected, 3, "a new cache scans everything");
        assert_eq!(scan.problems.len(), 3);
        cache.scan(dir.path(), &filter, Changes::None).unwrap();
        assert_eq!(
            cache.last_inspected, 3,
            "unusable entries are looked at again"
        );
        std::fs::remove_file(dir.path().join("b")).unwrap();
        let scan = cache.scan(dir.path(), &filter, entries(&["b"])).unwrap();
        assert_eq!(scan.problems.len(), 2, "a removed entry is dropped");
        std::fs::write(dir.path().join("d"), b"x").unwrap();
        let scan = cache.scan(dir.path(), &filter, entries(&["d"])).unwrap();
        assert_eq!(scan.problems.len(), 3);
        let other = Regex::new(".+").unwrap();
        cache.scan(dir.path(), &other, Changes::None).unwrap();
        assert_eq!(cache.last_inspected, 3, "another filter: a full rescan");
    }
}
