//! Reading the inventory: the LocalDisks of a world, waits on one disk's
//! status, and `kubectl get localdisks -o wide` run for real and parsed
//! into rows by its header.

use std::collections::BTreeMap;
use std::process::Command;

use local_pv_provisioner::objects::localdisk::{LocalDisk, LocalDiskStatus};

use crate::support::world::World;
use crate::support::world::waits::{WAIT, eventually};

/// Every LocalDisk stored.
pub async fn all(world: &World) -> Vec<LocalDisk> {
    world.list::<LocalDisk>(None).await
}

/// The LocalDisk of the entry `entry` of the world's device directory.
pub async fn of_entry(world: &World, entry: &str) -> Option<LocalDisk> {
    let path = world.dir().join(entry);
    let path = path.to_string_lossy();
    all(world)
        .await
        .into_iter()
        .find(|disk| disk.status.as_ref().is_some_and(|s| s.path == path))
}

/// Waits until the LocalDisk of `entry` exists and its status holds
/// `check`; returns it.
pub async fn wait(
    world: &World,
    entry: &str,
    what: &str,
    check: impl Fn(&LocalDiskStatus) -> bool,
) -> LocalDisk {
    eventually(&format!("LocalDisk of {entry}: {what}"), WAIT, || async {
        of_entry(world, entry)
            .await
            .filter(|disk| disk.status.as_ref().is_some_and(&check))
    })
    .await
}

/// One row of `kubectl get localdisks -o wide`: column header → cell.
pub type Row = BTreeMap<String, String>;

/// Runs `kubectl get localdisks -o wide` against the world's API server
/// (the real kubectl: discovery, the Table the server builds from the
/// CRD's printer columns, kubectl's own printing) and returns its rows.
pub fn kubectl_wide(world: &World) -> Vec<Row> {
    let output = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(world.kubeconfig())
        .args(["get", "localdisks", "-o", "wide"])
        .env("HOME", world.work_dir())
        .output()
        .unwrap_or_else(|error| {
            panic!("kubectl is needed by these tests (apt-get install kubectl): {error}")
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "kubectl get localdisks failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    rows(&stdout)
}

/// Splits kubectl's table at the columns its header line starts.
fn rows(table: &str) -> Vec<Row> {
    let mut lines = table.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let mut starts = Vec::new();
    let mut previous = ' ';
    for (index, c) in header.char_indices() {
        if c != ' ' && previous == ' ' {
            starts.push(index);
        }
        previous = c;
    }
    let cell = |line: &str, column: usize| -> String {
        let start = starts[column];
        let end = starts.get(column + 1).copied().unwrap_or(line.len());
        line.get(start..end.min(line.len()))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    lines
        .map(|line| {
            (0..starts.len())
                .map(|column| (cell(header, column), cell(line, column)))
                .collect()
        })
        .collect()
}

/// The row whose DEVICE is the world's entry `entry`.
pub fn row_of(rows: &[Row], world: &World, entry: &str) -> Row {
    let path = world.dir().join(entry).to_string_lossy().into_owned();
    rows.iter()
        .find(|row| row.get("DEVICE") == Some(&path))
        .cloned()
        .unwrap_or_else(|| panic!("no row for {path} in {rows:#?}"))
}

#[test]
fn a_table_splits_at_its_header() {
    let table = "NAME   NODE     REASON\n\
                 disk   node-a   held by dm-0\n\
                 other  n\n";
    let rows = rows(table);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["REASON"], "held by dm-0");
    assert_eq!(rows[1]["NODE"], "n");
    assert_eq!(rows[1]["REASON"], "", "an empty cell");
}
