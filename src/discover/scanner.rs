//! The scan step of a reconcile: keeps a [device cache](crate::discover::cache)
//! and an [inotify watch](crate::discover::dir_watch) for each class's
//! `deviceDir` and filter,
//! scans incrementally (everything on a full rescan, only the entries
//! inotify named otherwise), and tells which PVs' devices are missing (their
//! path no longer leads to a block device). The blocking work runs off the
//! async runtime.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use regex::Regex;
use tokio::sync::Notify;

use crate::device::blockdev::block_device_number;
use crate::discover::cache::{Changes, DeviceCache};
use crate::discover::devices::Scan;
use crate::discover::dir_watch::DirWatch;
use crate::objects::spec::PvSpec;

/// What a scan found.
#[derive(Debug, Default)]
pub struct Scanned {
    /// The devices of each class (in the spec's order); `None` where the
    /// class's `deviceDir` does not exist.
    pub devices: Vec<Option<Scan>>,
    /// PVs (by name) whose device path no longer leads to a block device.
    pub missing: BTreeSet<String>,
}

/// One directory under one filter: what was learnt about its entries, and
/// its inotify watch.
#[derive(Default)]
struct Watched {
    cache: DeviceCache,
    watch: Option<DirWatch>,
}

/// The caches and watches of one node's classes: one per distinct
/// `deviceDir` and filter (classes that share both share them).
#[derive(Default)]
pub struct Scanner {
    sources: BTreeMap<(PathBuf, String), Watched>,
}

/// A directory and filter source, as a scanner's key.
fn key_of(class: &PvSpec) -> (PathBuf, String) {
    (
        class.device_dir.clone(),
        class.device_name_filter.as_str().to_string(),
    )
}

impl Scanner {
    /// Scans each class's `deviceDir`: everything when `full`, else what
    /// changed, and tells which of `paths` (PV name → `spec.local.path`) no
    /// longer lead to a block device. `trigger` is what the inotify watches
    /// wake (`None`: no watch, every scan is full).
    pub async fn scan(
        &mut self,
        classes: &[PvSpec],
        paths: Vec<(String, PathBuf)>,
        full: bool,
        trigger: Option<&Arc<Notify>>,
    ) -> Result<Scanned, String> {
        let wanted: BTreeMap<(PathBuf, String), Regex> = classes
            .iter()
            .map(|class| (key_of(class), class.device_name_filter.clone()))
            .collect();
        self.sources.retain(|key, _| wanted.contains_key(key));
        let mut jobs = Vec::with_capacity(wanted.len());
        for (key, filter) in wanted {
            let mut source = self.sources.remove(&key).unwrap_or_default();
            let (dir, _) = &key;
            if let Some(trigger) = trigger
                && source
                    .watch
                    .as_ref()
                    .is_none_or(|watch| !watch.watches(dir, &filter))
            {
                source.watch = Some(DirWatch::start(dir, &filter, trigger.clone()));
            }
            let seen = source.watch.as_ref().map(|watch| watch.changes.take());
            let changes = match seen {
                _ if full => Changes::All,
                Some(changes) => changes,
                None => Changes::All,
            };
            jobs.push((key, filter, source, changes));
        }
        let (jobs, scans, missing) = tokio::task::spawn_blocking(move || {
            let mut scans = BTreeMap::new();
            for (key, filter, source, changes) in &mut jobs {
                let scanned = source.cache.scan(&key.0, filter, std::mem::take(changes));
                scans.insert(key.clone(), scanned);
            }
            let scanned: Vec<(&Path, &DeviceCache)> = jobs
                .iter()
                .filter(|(key, ..)| scans.get(key).is_some_and(Result::is_ok))
                .map(|((dir, _), _, source, _)| (dir.as_path(), &source.cache))
                .collect();
            let missing = missing(&scanned, &paths);
            (jobs, scans, missing)
        })
        .await
        .map_err(|error| format!("device scan failed: {error}"))?;
        let mut failure = None;
        let mut by_key = BTreeMap::new();
        for ((key, _, source, _), (_, scanned)) in jobs.into_iter().zip(scans) {
            match scanned {
                Ok(scan) => {
                    by_key.insert(key.clone(), Some(scan));
                    self.sources.insert(key, source);
                }
                Err(error) if error.source.kind() == std::io::ErrorKind::NotFound => {
                    by_key.insert(key.clone(), None);
                    // The watch waits for the directory; the cache starts afresh.
                    self.sources.insert(
                        key,
                        Watched {
                            cache: DeviceCache::default(),
                            watch: source.watch,
                        },
                    );
                }
                Err(error) => {
                    failure.get_or_insert(error.to_string());
                }
            }
        }
        if let Some(error) = failure {
            return Err(error);
        }
        Ok(Scanned {
            devices: classes
                .iter()
                .map(|class| by_key.get(&key_of(class)).cloned().flatten())
                .collect(),
            missing,
        })
    }
}

/// The PVs whose path no longer leads to a block device: judged by the
/// caches of the path's directory when it was scanned (a path none of them
/// knows is missing), by a `stat` otherwise.
fn missing(scanned: &[(&Path, &DeviceCache)], paths: &[(String, PathBuf)]) -> BTreeSet<String> {
    paths
        .iter()
        .filter(|(_, path)| {
            let dir = path.parent();
            let caches: Vec<&DeviceCache> = scanned
                .iter()
                .filter(|(scanned_dir, _)| Some(*scanned_dir) == dir)
                .map(|(_, cache)| *cache)
                .collect();
            if caches.is_empty() {
                return !is_block_device(path);
            }
            let entry = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            !caches
                .iter()
                .any(|cache| cache.leads_to_block_device(&entry))
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// Whether `path` `stat`s as a block device.
fn is_block_device(path: &Path) -> bool {
    std::fs::metadata(path)
        .ok()
        .and_then(|metadata| block_device_number(&metadata))
        .is_some()
}
