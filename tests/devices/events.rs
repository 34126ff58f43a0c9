//! The inotify watch of `deviceDir` through a bind mount, the way a pod
//! sees the host's `/dev` (a hostPath mount): links made through the
//! original path (as udev makes them on the host) wake the watcher of the
//! mounted path with the entries' names.

use std::os::unix::fs::symlink;
use std::sync::Arc;
use std::time::Duration;

use local_pv_provisioner::discover::cache::Changes;
use local_pv_provisioner::discover::dir_watch::DirWatch;
use regex::Regex;
use tokio::sync::Notify;

use crate::fixture::Mount;

#[tokio::test]
async fn links_made_on_the_host_wake_the_watch_of_a_bind_mount() {
    let host = tempfile::tempdir().unwrap();
    let pod = tempfile::tempdir().unwrap();
    let _mount = Mount::bind(host.path(), pod.path());
    let trigger = Arc::new(Notify::new());
    let watch = DirWatch::start(pod.path(), &Regex::new("^disk").unwrap(), trigger.clone());
    // The watch is set up by its task: repeat a link until it is seen.
    let mut attempt = 0;
    loop {
        let name = format!("disk{attempt}");
        symlink("/dev/null", host.path().join(&name)).unwrap();
        let woken = tokio::time::timeout(Duration::from_millis(500), trigger.notified()).await;
        if woken.is_ok() {
            let seen = watch.changes.take();
            let expected = Changes::Entries([std::ffi::OsString::from(&name)].into());
            assert!(
                seen == expected || seen == Changes::All,
                "the change names the link: {seen:?}"
            );
            return;
        }
        attempt += 1;
        assert!(attempt < 60, "no inotify event through the bind mount");
    }
}
