//! Every disk that is not offered says why, in its LocalDisk and in the
//! REASON column of `kubectl get localdisks -o wide`: one holding a
//! filesystem (`HasData`), one opened exclusively by someone else
//! (`InUse`), a read-only one and one two classes select (`Excluded`), and
//! one whose PV's device went away (`Missing`).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;

use local_pv_provisioner::objects::localdisk::{DiskState, LocalDiskStatus};

use crate::common::MIB;
use crate::disks::{self, kubectl_wide, row_of};
use crate::support::world::{QUICK_POLLING, World, data, polling};

/// Opens `path` the way a mount or a database holding a raw device does:
/// exclusively, so the kernel refuses every other exclusive open.
fn hold_exclusively(path: &std::path::Path) -> File {
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_EXCL)
        .open(path)
        .unwrap_or_else(|error| panic!("exclusive open of {}: {error}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_disk_that_is_not_offered_says_why() {
    let world = World::fake().await;
    let with_data = world.attach_linked("data", 32 * MIB);
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&with_data.path)
        .status()
        .expect("mkfs.ext4 (e2fsprogs) is needed by this test");
    assert!(status.success(), "mkfs.ext4 failed");
    let busy = world.attach_linked("busy", 16 * MIB);
    let holder = hold_exclusively(&busy.path);
    let read_only = world.attach_read_only(16 * MIB);
    world.link("ro", &read_only);
    world.attach_linked("both", 16 * MIB);
    world.attach_linked("gone", 16 * MIB);
    let classes = format!(
        r#"
- {{name: main, deviceDir: {dir}, deviceNameFilter: "^(data|busy|ro|both|gone)$", volumeMode: Block}}
- {{name: extra, deviceDir: {dir}, deviceNameFilter: "^both$", volumeMode: Block}}
"#,
        dir = world.dir_text(),
    );
    world
        .put_configmap("classes", data(&[("deviceClasses", &classes)]))
        .await;
    world.add_node("node-a", Some("classes")).await;
    let process = world.start(
        "node-a",
        vec![
            polling(QUICK_POLLING),
            ("LP_DEVICE_LOSS_GRACE", "1s".to_string()),
        ],
    );
    world.wait_for_pv("local-node-a-gone").await;
    world.unlink("gone");

    let refused = |state: DiskState, words: &'static str| {
        move |s: &LocalDiskStatus| s.state == state && s.reason.contains(words)
    };
    let cases = [
        (
            "data",
            DiskState::HasData,
            "holds data (ext2/3/4 signature)",
        ),
        ("busy", DiskState::InUse, "refuses an exclusive open"),
        ("ro", DiskState::Excluded, "read-only"),
        (
            "both",
            DiskState::Excluded,
            "selected by the classes main and extra",
        ),
        ("gone", DiskState::Missing, "is missing"),
    ];
    for (entry, state, words) in cases {
        let disk = disks::wait(&world, entry, words, refused(state, words)).await;
        let status = disk.status.expect("a status");
        assert_eq!(status.conditions[0].status, "False", "{entry}: not offered");
        assert_eq!(status.conditions[0].reason.as_deref(), Some(state.as_str()));
    }
    let busy_reason = disks::of_entry(&world, "busy")
        .await
        .unwrap()
        .status
        .unwrap()
        .reason;
    assert!(
        busy_reason.contains("offered once nothing uses it"),
        "says what to do: {busy_reason}"
    );
    let both = disks::of_entry(&world, "both")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(both.class, None, "two classes claim it: it is in neither");
    let gone = disks::of_entry(&world, "gone")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(gone.persistent_volume.as_deref(), Some("local-node-a-gone"));

    let rows = kubectl_wide(&world);
    for (entry, state, words) in cases {
        let row = row_of(&rows, &world, entry);
        assert_eq!(row["STATE"], state.as_str(), "{entry}: {row:?}");
        assert!(row["REASON"].contains(words), "{entry}: {row:?}");
        assert_eq!(row["NODE"], "node-a");
    }
    assert_eq!(row_of(&rows, &world, "both")["CLASS"], "");
    assert_eq!(row_of(&rows, &world, "data")["CLASS"], "main");
    assert_eq!(
        world.pv_names().await,
        vec!["local-node-a-gone".to_string()],
        "none of the others got a PV"
    );
    drop(holder);
    drop(process);
    world.teardown().await;
}
