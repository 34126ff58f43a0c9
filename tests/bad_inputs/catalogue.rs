//! How a catalogue table runs: a table is a list of rows, each with its
//! input and the outcome it must give; one function per table runs every
//! row (catching each row's panic), prints the table and fails naming every
//! row that did not hold. Also the checks every table shares: a finding's
//! comeback, and the loop device that must still hold its fill byte.

use std::fs;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use crate::support::loop_device::{FILL_BYTE, LoopDevice};

/// Size of every loop device here: small, so checking all of it is cheap.
pub const DEVICE_BYTES: u64 = 1024 * 1024;

/// Asserts the behaviour a finding of the catalogue broke, naming the
/// finding when it comes back.
pub fn fixed_bug(id: &str, holds: bool, what: &str) {
    assert!(holds, "{id} is back: {what}");
}

/// A row's result: its input, its expected outcome, and the verdict.
pub type Verdict = (String, String, Result<(), String>);

/// The check of one async row, run in a task of its own.
pub type RowFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".to_string())
}

/// Prints the table and fails naming every row that did not hold.
fn conclude(table: &str, results: Vec<Verdict>) {
    let mut out = format!(
        "\n## {table}: {} rows\n\n| input | outcome | verdict |\n|---|---|---|\n",
        results.len()
    );
    let mut failures = Vec::new();
    for (input, expected, result) in &results {
        let verdict = match result {
            Ok(()) => "ok".to_string(),
            Err(error) => {
                failures.push(format!("{input}: {error}"));
                format!("FAILED: {error}")
            }
        };
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            input.replace('|', "\\|").replace('\n', "\\n"),
            expected.replace('|', "\\|"),
            verdict.replace('|', "\\|").replace('\n', " ")
        ));
    }
    println!("{out}");
    assert!(
        failures.is_empty(),
        "{} of {} rows of {table} failed:\n{}",
        failures.len(),
        results.len(),
        failures.join("\n")
    );
}

/// Runs `check` on every row, one after the other, catching each row's
/// panic; `label` gives a row's input and expected outcome.
pub fn run_rows<R>(
    table: &str,
    rows: Vec<R>,
    label: impl Fn(&R) -> (String, String),
    check: impl Fn(&R),
) {
    let results = rows
        .iter()
        .map(|row| {
            let (input, expected) = label(row);
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| check(row)))
                .map_err(|payload| panic_text(&*payload));
            (input, expected, result)
        })
        .collect();
    conclude(table, results);
}

/// Runs `check` on every row concurrently, each in its own task (own fake
/// server, node, loop devices and provisioner process).
pub async fn run_async_rows<R: Send + Sync + 'static>(
    table: &str,
    rows: Vec<R>,
    label: impl Fn(&R) -> (String, String),
    check: fn(Arc<R>) -> RowFuture,
) {
    let mut running = Vec::new();
    for row in rows {
        let row = Arc::new(row);
        running.push((label(&row), tokio::spawn(check(row))));
    }
    let mut results = Vec::new();
    for ((input, expected), handle) in running {
        let result = handle.await.map_err(|error| match error.try_into_panic() {
            Ok(payload) => panic_text(&*payload),
            Err(error) => error.to_string(),
        });
        results.push((input, expected, result));
    }
    conclude(table, results);
}

/// Asserts every block of the device still holds the fill byte.
pub fn assert_untouched(device: &LoopDevice) {
    let content = device.read(0, DEVICE_BYTES as usize);
    if let Some(offset) = content.iter().position(|byte| *byte != FILL_BYTE) {
        panic!(
            "{} was written: byte {offset} is {:#04x}",
            device.path.display(),
            content[offset]
        );
    }
}

/// A fresh filled loop device of [`DEVICE_BYTES`].
pub fn device() -> LoopDevice {
    LoopDevice::filled(DEVICE_BYTES)
}

/// The block device mounted at `/` on this machine (`/dev/vda`, …) with
/// its `major:minor`, or `None` when `/` is not on a block device visible
/// in `/dev` (an overlay in a container).
pub fn root_disk() -> Option<(PathBuf, String)> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let number = mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        (fields.get(4) == Some(&"/")).then(|| fields[2].to_string())
    })?;
    let target = fs::read_link(format!("/sys/dev/block/{number}")).ok()?;
    let path = Path::new("/dev").join(target.file_name()?);
    use std::os::unix::fs::FileTypeExt;
    fs::metadata(&path)
        .ok()?
        .file_type()
        .is_block_device()
        .then_some((path, number))
}
