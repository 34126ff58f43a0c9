//! Event-driven discovery: an inotify watch on `deviceDir` turns entries
//! created, removed, renamed or retargeted (udev replaces a link by a
//! rename) into [`Changes`] for the [device cache](crate::discover::cache) and
//! wakes the provisioning loop at once: a new disk waits for nothing but
//! its pass. A burst (udev creating dozens of links) costs few passes: the
//! events that arrive while a pass runs are taken together by the next one
//! (the loop's wake-ups coalesce). A `deviceDir`
//! that does not exist yet is watched from its nearest existing parent, and
//! a directory that is removed or replaced is watched again; an event queue
//! overflow means "rescan everything". The poll stays the safety net.
//!
//! inotify reports what happens to the directory's inodes, whichever mount
//! shows them: a pod that mounts the host's `/dev` (a hostPath bind mount
//! of devtmpfs) sees the links udev makes on the host. Checked by
//! `tests/devices/events.rs`, which watches a bind mount of a directory
//! and changes it through the original path.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent};
use regex::Regex;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::discover::cache::Changes;

/// The changes seen since the loop last took them.
#[derive(Debug, Default)]
pub struct PendingChanges {
    changes: Mutex<Changes>,
}

impl PendingChanges {
    fn add(&self, changes: Changes) {
        self.changes.lock().expect("changes lock").merge(changes);
    }

    /// Takes what changed since the last call.
    pub fn take(&self) -> Changes {
        std::mem::take(&mut *self.changes.lock().expect("changes lock"))
    }
}

/// A running watch of one `deviceDir`.
pub struct DirWatch {
    dir: PathBuf,
    filter: String,
    /// What it saw since the loop last looked.
    pub changes: Arc<PendingChanges>,
    task: JoinHandle<()>,
}

impl DirWatch {
    /// Starts watching `dir`; every burst of changes to entries whose name
    /// matches `filter` notifies `trigger` (other entries are ignored).
    pub fn start(dir: &Path, filter: &Regex, trigger: Arc<Notify>) -> DirWatch {
        let changes = Arc::new(PendingChanges::default());
        let watched = Watching {
            dir: dir.to_path_buf(),
            filter: filter.clone(),
        };
        let task = tokio::spawn(watch(watched, changes.clone(), trigger));
        DirWatch {
            dir: dir.to_path_buf(),
            filter: filter.as_str().to_string(),
            changes,
            task,
        }
    }

    /// Whether this watches `dir` for entries matching `filter`.
    pub fn watches(&self, dir: &Path, filter: &Regex) -> bool {
        self.dir == dir && self.filter == filter.as_str()
    }
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// What is being watched: the directory itself, or the nearest existing
/// parent until the directory appears.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Dir,
    Parent,
}

const ENTRY_EVENTS: AddWatchFlags = AddWatchFlags::IN_CREATE
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_ATTRIB)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF);

/// Adds a watch on `dir`, or on its nearest existing parent.
fn establish(inotify: &Inotify, dir: &Path) -> Target {
    let mut current = Some(dir);
    while let Some(path) = current {
        let mask = if path == dir {
            ENTRY_EVENTS
        } else {
            AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_MOVE_SELF
        };
        if inotify
            .add_watch(path, mask | AddWatchFlags::IN_ONLYDIR)
            .is_ok()
        {
            return if path == dir {
                Target::Dir
            } else {
                Target::Parent
            };
        }
        current = path.parent();
    }
    Target::Parent
}

fn new_fd() -> std::io::Result<AsyncFd<InotifyFd>> {
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    // SAFETY: the descriptor is owned by the `Inotify` inside the `AsyncFd`,
    // so it stays open and the same for the `AsyncFd`'s whole life.
    unsafe { AsyncFd::register_with_interest(InotifyFd(inotify), tokio::io::Interest::READABLE) }
        .map_err(|error| std::io::Error::other(error.to_string()))
}

/// The directory and the names that matter in it.
struct Watching {
    dir: PathBuf,
    filter: Regex,
}

/// Watches the directory until the task is aborted: each batch of events
/// read is added to `pending` and notifies `trigger`.
async fn watch(watching: Watching, pending: Arc<PendingChanges>, trigger: Arc<Notify>) {
    let dir = &watching.dir;
    let mut first = true;
    loop {
        let fd = match new_fd() {
            Ok(fd) => fd,
            Err(error) => {
                tracing::warn!(%error, dir = %dir.display(), "cannot watch deviceDir; the poll still rescans");
                return;
            }
        };
        let target = establish(&fd.get_ref().0, dir);
        if !first && target == Target::Dir {
            // It appeared or was replaced: everything in it is new.
            pending.add(Changes::All);
            trigger.notify_one();
        }
        first = false;
        loop {
            let Some(events) = read_some(&fd).await else {
                tracing::warn!(dir = %dir.display(), "the inotify watch of deviceDir failed; the poll still rescans");
                return;
            };
            let (changes, reestablish) = interpret(&events, &target, &watching.filter);
            if changes != Changes::None {
                pending.add(changes);
                trigger.notify_one();
            }
            if reestablish {
                break;
            }
        }
    }
}

/// What a batch of events means: the changes, and whether the watch must be
/// set up again (the directory appeared, went away or was replaced).
fn interpret(events: &[InotifyEvent], target: &Target, filter: &Regex) -> (Changes, bool) {
    if *target == Target::Parent {
        return (Changes::None, true);
    }
    let mut changes = Changes::None;
    let mut reestablish = false;
    for event in events {
        let gone =
            AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF | AddWatchFlags::IN_IGNORED;
        if event.mask.intersects(gone) {
            reestablish = true;
            changes.merge(Changes::All);
        } else if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
            changes.merge(Changes::All);
        } else if let Some(name) = &event.name
            && filter.is_match(&name.to_string_lossy())
        {
            changes.merge(Changes::Entries([OsString::from(name)].into()));
        }
    }
    (changes, reestablish)
}

/// Waits for events and reads them.
async fn read_some(fd: &AsyncFd<InotifyFd>) -> Option<Vec<InotifyEvent>> {
    loop {
        let mut ready = fd.readable().await.ok()?;
        let read = ready.try_io(|inner| {
            inner
                .get_ref()
                .0
                .read_events()
                .map_err(std::io::Error::from)
        });
        match read {
            Ok(Ok(events)) => return Some(events),
            Ok(Err(_)) => return None,
            Err(_would_block) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Waits for the watch to wake the loop; the limit only ends a broken test.
    async fn woken(trigger: &Notify) {
        tokio::time::timeout(Duration::from_secs(30), trigger.notified())
            .await
            .expect("the watch woke the loop");
    }

    fn names(list: &[&str]) -> Changes {
        Changes::Entries(list.iter().map(OsString::from).collect())
    }

    #[tokio::test]
    async fn a_burst_of_new_entries_wakes_the_loop_with_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let trigger = Arc::new(Notify::new());
        let watch = DirWatch::start(dir.path(), &Regex::new("^disk").unwrap(), trigger.clone());
        // The watch is set up by its task; a first entry proves it is.
        loop {
            std::fs::write(dir.path().join("disk-probe"), b"").unwrap();
            if tokio::time::timeout(Duration::from_millis(200), trigger.notified())
                .await
                .is_ok()
            {
                break;
            }
            std::fs::remove_file(dir.path().join("disk-probe")).unwrap();
        }
        watch.changes.take();
        for name in ["disk0", "disk1", "other"] {
            std::os::unix::fs::symlink("/dev/null", dir.path().join(name)).unwrap();
        }
        woken(&trigger).await;
        let mut seen = watch.changes.take();
        while !matches!(&seen, Changes::Entries(names) if names.len() == 2) {
            woken(&trigger).await;
            seen.merge(watch.changes.take());
        }
        assert_eq!(
            seen,
            names(&["disk0", "disk1"]),
            "`other` does not match the filter"
        );
    }

    #[tokio::test]
    async fn a_directory_that_appears_later_is_rescanned_whole() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("by-id");
        let trigger = Arc::new(Notify::new());
        let watch = DirWatch::start(&dir, &Regex::new(".*").unwrap(), trigger.clone());
        // Until the task watches the parent, creating the directory could be
        // missed: retry the creation until the watch reports it.
        loop {
            std::fs::create_dir(&dir).unwrap();
            if tokio::time::timeout(Duration::from_millis(200), trigger.notified())
                .await
                .is_ok()
            {
                break;
            }
            std::fs::remove_dir(&dir).unwrap();
        }
        assert_eq!(watch.changes.take(), Changes::All);
    }
}
