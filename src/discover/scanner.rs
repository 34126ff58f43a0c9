//! The scan step of a reconcile: keeps the [device cache](crate::discover::cache)
//! and the [inotify watch](crate::discover::dir_watch) of the spec's `deviceDir`,
//! scans incrementally (everything on a full rescan, only the entries
//! inotify named otherwise), and tells which PVs' devices are missing (their
//! path no longer leads to a block device). The blocking work runs off the
//! async runtime.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::device::blockdev::block_device_number;
use crate::discover::cache::{Changes, DeviceCache};
use crate::discover::devices::Scan;
use crate::discover::dir_watch::DirWatch;
use crate::objects::spec::PvSpec;

/// What a scan found.
#[derive(Debug, Default)]
pub struct Scanned {
    /// The devices; `None` when `deviceDir` does not exist.
    pub devices: Option<Scan>,
    /// PVs (by name) whose device path no longer leads to a block device.
    pub missing: BTreeSet<String>,
}

/// The cache and the watch of one node's `deviceDir`.
#[derive(Default)]
pub struct Scanner {
    cache: Option<DeviceCache>,
    watch: Option<DirWatch>,
}

impl Scanner {
    /// Scans `spec.device_dir`: everything when `full`, else what changed,
    /// and tells which of `paths` (PV name → `spec.local.path`) no longer
    /// lead to a block device. `trigger` is what the inotify watch wakes
    /// (`None`: no watch, every scan is full).
    pub async fn scan(
        &mut self,
        spec: &PvSpec,
        paths: Vec<(String, PathBuf)>,
        full: bool,
        trigger: Option<&Arc<Notify>>,
    ) -> Result<Scanned, String> {
        let dir = spec.device_dir.clone();
        let filter = spec.device_name_filter.clone();
        if let Some(trigger) = trigger
            && self
                .watch
                .as_ref()
                .is_none_or(|watch| !watch.watches(&dir, &filter))
        {
            self.watch = Some(DirWatch::start(&dir, &filter, trigger.clone()));
        }
        let seen = self.watch.as_ref().map(|watch| watch.changes.take());
        let changes = match seen {
            _ if full => Changes::All,
            Some(changes) => changes,
            None => Changes::All,
        };
        let mut cache = self.cache.take().unwrap_or_default();
        let (cache, scanned, missing) = tokio::task::spawn_blocking(move || {
            let scanned = cache.scan(&dir, &filter, changes);
            let missing = match &scanned {
                Ok(_) => missing(&cache, &dir, &paths),
                // No deviceDir: every PV path is looked at directly.
                Err(error) if error.source.kind() == std::io::ErrorKind::NotFound => {
                    paths_missing(paths.iter())
                }
                Err(_) => BTreeSet::new(),
            };
            (cache, scanned, missing)
        })
        .await
        .map_err(|error| format!("device scan failed: {error}"))?;
        let kept = scanned.is_ok();
        if kept {
            self.cache = Some(cache);
        }
        match scanned {
            Ok(scan) => Ok(Scanned {
                devices: Some(scan),
                missing,
            }),
            Err(error) if error.source.kind() == std::io::ErrorKind::NotFound => Ok(Scanned {
                devices: None,
                missing,
            }),
            Err(error) => Err(error.to_string()),
        }
    }
}

/// The PVs whose path no longer leads to a block device: from the cache for
/// entries of `dir`, by a `stat` for any other path.
fn missing(cache: &DeviceCache, dir: &Path, paths: &[(String, PathBuf)]) -> BTreeSet<String> {
    let (inside, outside): (Vec<_>, Vec<_>) = paths
        .iter()
        .partition(|(_, path)| path.parent() == Some(dir));
    let mut missing: BTreeSet<String> = inside
        .into_iter()
        .filter(|(_, path)| {
            let entry = path.file_name().map(|name| name.to_string_lossy());
            !entry.is_some_and(|entry| cache.leads_to_block_device(&entry))
        })
        .map(|(name, _)| name.clone())
        .collect();
    missing.extend(paths_missing(outside));
    missing
}

/// The PVs whose path does not `stat` as a block device.
fn paths_missing<'a>(paths: impl IntoIterator<Item = &'a (String, PathBuf)>) -> BTreeSet<String> {
    paths
        .into_iter()
        .filter(|(_, path)| {
            std::fs::metadata(path)
                .ok()
                .and_then(|metadata| block_device_number(&metadata))
                .is_none()
        })
        .map(|(name, _)| name.clone())
        .collect()
}
