//! The bad-input catalogue: every kind of wrong input this controller can
//! meet, each with the outcome it must give and the proof that nothing was
//! destroyed. Needs root (loop devices), as in CI.
//!
//! Six tables, one test each; every table prints itself (run with
//! `--nocapture` to read it) and fails naming every row that did not hold:
//!
//! | table | driven through | rows |
//! |---|---|---|
//! | [`spec_table`] | `spec::parse_pv_spec` | ConfigMap data: missing, unknown and mis-cased keys, bad paths, regexes, modes, sizes, huge values |
//! | [`wipe_request_table`] | `WipeRequest::from_pv` and `wipe_device` on a loop device | PV objects a Released PV could carry |
//! | [`device_tree_table`] | `discovery::scan_devices` and `plan::plan` on real directories and loop devices | link loops, links out, 5000 entries, colliding, unicode and non-UTF-8 names |
//! | [`configmap_and_annotation_table`] | the real binary against the fake API server | the same mistakes as a user makes them: Events, metrics, no PV, then the fix |
//! | [`api_object_table`] | the real binary | PVs edited, bound, foreign or of another node; colliding entry names |
//! | [`node_name_table`] | the real binary, restarted | node names too long for a label value |
//!
//! A row's expected outcome is either a clear error naming what is wrong or
//! a documented choice. "Nothing destroyed" is proven, depending on the row,
//! by: no PV create/delete request in the fake server's request log, the
//! PV's UID and resourceVersion unchanged, and the loop device still holding
//! its fill byte in every block. Rows that change the controller's input
//! end by fixing it and waiting for the PV, which shows the setup would
//! have produced a PV if the input had been good.
//!
//! Rows that exposed a bug when the catalogue was written assert the right
//! behaviour through [`fixed_bug`], which names the finding if it comes back
//! (all were fixed; none destroyed anything):
//!
//! - BUG-1: `wipeBytes` `""` or a bare unit (`Mi`) was refused as "not a
//!   number of bytes that fits in 64 bits" instead of "must be a whole
//!   number of bytes".
//! - BUG-2: a spec error showed 200 *characters* of the value, escaped;
//!   control characters escape to 5–10 bytes each, so the message could reach
//!   ~2 kB and the Event note (cut at 1000 bytes) lost the reason.
//! - BUG-3: a node annotation that is not a valid object name (`spec,other`)
//!   made the ConfigMap watch's field selector invalid and nothing was
//!   reported.
//! - BUG-4: kube's Event Recorder names Events `<regarding name>.<16 hex
//!   digits>`; for a Node or PV name over 236 characters every Event was refused.
//! - BUG-5: a device whose PV name is taken by a foreign PV was counted in
//!   `error_devices` and in `available_devices`.
//! - UNCLEAR-1: a `deviceDir` that does not exist (a typo, or a trailing
//!   newline from a YAML `|` scalar) yielded no devices and was logged at
//!   debug level only; now white space around `deviceDir` and
//!   `deviceNameFilter` is refused, and a missing `deviceDir` is a warning
//!   and part of the `PVSpecApplied` note.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node, PersistentVolume};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use local_pv_provisioner::discovery::{Scan, scan_devices};
use local_pv_provisioner::naming::{
    hashed_pv_name, is_dns1123_subdomain, is_label_value, node_label_value,
};
use local_pv_provisioner::plan::{ExistingPv, plan};
use local_pv_provisioner::pv::{self, NodeFacts, build_pv};
use local_pv_provisioner::spec::{self, PvSpec, VolumeMode, parse_pv_spec};
use local_pv_provisioner::wipe::{Guard, Owner, WipeError, WipeRequest, wipe_device};
use regex::Regex;
use serde_json::{Value, json};
use support::fake_api::FakeApiServer;
use support::loop_device::{FILL_BYTE, LoopDevice};
use support::provisioner::{ProvisionerOptions, ProvisionerProcess, eventually};
use tempfile::TempDir;

const MIB: u64 = 1024 * 1024;
/// Size of every loop device here: small, so checking all of it is cheap.
const DEVICE_BYTES: u64 = MIB;
const NAMESPACE: &str = "lpp-system";
const ANNOTATION: &str = spec::PV_SPEC_CONFIGMAP_ANNOTATION;
/// Limit of every wait: generous, never a timing assertion.
const WAIT: Duration = Duration::from_secs(90);
/// An Event note is cut at 1000 bytes and the provisioner wraps a spec
/// error in about 80 bytes plus the ConfigMap name; a spec error longer
/// than this loses its end (the reason) in the Event.
const SPEC_ERROR_BUDGET: usize = 600;

// ---------------------------------------------------------------------------
// Rows, verdicts and fixed findings
// ---------------------------------------------------------------------------

/// Asserts the behaviour a finding of the catalogue broke, naming the
/// finding when it comes back.
fn fixed_bug(id: &str, holds: bool, what: &str) {
    assert!(holds, "{id} is back: {what}");
}

type RowFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One catalogue row: what goes in, what must come out, and the check.
struct Row<F> {
    input: String,
    expected: String,
    check: F,
}

fn row<F>(input: impl Into<String>, expected: impl Into<String>, check: F) -> Row<F> {
    Row {
        input: input.into(),
        expected: expected.into(),
        check,
    }
}

fn case(
    input: impl Into<String>,
    expected: impl Into<String>,
    check: impl FnOnce() + 'static,
) -> Row<Box<dyn FnOnce()>> {
    row(input, expected, Box::new(check))
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".to_string())
}

/// Prints the table and fails naming every row that did not hold.
fn conclude(table: &str, results: Vec<(String, String, Result<(), String>)>) {
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

/// Runs blocking rows one after the other, catching each row's panic.
fn run_rows(table: &str, rows: Vec<Row<Box<dyn FnOnce()>>>) {
    let results = rows
        .into_iter()
        .map(|row| {
            let result = std::panic::catch_unwind(AssertUnwindSafe(row.check))
                .map_err(|payload| panic_text(&*payload));
            (row.input, row.expected, result)
        })
        .collect();
    conclude(table, results);
}

/// Runs async rows concurrently, each in its own task (own fake server,
/// node, loop devices and provisioner process).
async fn run_async_rows(table: &str, rows: Vec<Row<RowFuture>>) {
    let mut handles = Vec::new();
    let mut labels = Vec::new();
    for row in rows {
        labels.push((row.input, row.expected));
        handles.push(tokio::spawn(row.check));
    }
    let mut results = Vec::new();
    for ((input, expected), handle) in labels.into_iter().zip(handles) {
        let result = handle.await.map_err(|error| match error.try_into_panic() {
            Ok(payload) => panic_text(&*payload),
            Err(error) => error.to_string(),
        });
        results.push((input, expected, result));
    }
    conclude(table, results);
}

fn boxed(future: impl Future<Output = ()> + Send + 'static) -> RowFuture {
    Box::pin(future)
}

/// Asserts every block of the device still holds the fill byte.
fn assert_untouched(device: &LoopDevice) {
    let content = device.read(0, DEVICE_BYTES as usize);
    if let Some(offset) = content.iter().position(|byte| *byte != FILL_BYTE) {
        panic!(
            "{} was written: byte {offset} is {:#04x}",
            device.path.display(),
            content[offset]
        );
    }
}

fn device() -> LoopDevice {
    LoopDevice::filled(DEVICE_BYTES)
}

/// The block device mounted at `/` on this machine (`/dev/vda`, …) with
/// its `major:minor`, or `None` when `/` is not on a block device visible
/// in `/dev` (an overlay in a container).
fn root_disk() -> Option<(PathBuf, String)> {
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

// ---------------------------------------------------------------------------
// Table 1: ConfigMap data through parse_pv_spec
// ---------------------------------------------------------------------------

type Data = BTreeMap<String, String>;

fn data(pairs: &[(&str, &str)]) -> Data {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn block() -> Data {
    data(&[
        ("deviceDir", "/dev/disk/by-path"),
        ("deviceNameFilter", "^disk"),
        ("volumeMode", "Block"),
    ])
}

fn filesystem() -> Data {
    data(&[
        ("deviceDir", "/dev/disk/by-path"),
        ("deviceNameFilter", "^disk"),
        ("volumeMode", "Filesystem"),
        ("fsType", "ext4"),
    ])
}

fn with(mut map: Data, key: &str, value: impl Into<String>) -> Data {
    map.insert(key.to_string(), value.into());
    map
}

fn without(mut map: Data, key: &str) -> Data {
    map.remove(key);
    map
}

/// What a ConfigMap row expects from `parse_pv_spec`.
enum SpecExpect {
    /// Refused; the message names the key (quoted), contains `says`, and
    /// fits [`SPEC_ERROR_BUDGET`].
    Refused {
        key: &'static str,
        says: &'static str,
    },
    /// Refused, but the message is unclear: known bug `bug`, whose fixed
    /// message would contain `should_say`.
    RefusedUnclearly {
        key: &'static str,
        should_say: &'static str,
        bug: &'static str,
    },
    /// Refused with the right words, but too long for an Event: known bug `bug`.
    RefusedTooLong {
        key: &'static str,
        says: &'static str,
        bug: &'static str,
    },
    /// Accepted: a documented choice, and `check` holds on the spec.
    Accepted { check: fn(&PvSpec) -> bool },
}

fn spec_row(input: impl Into<String>, data: Data, expect: SpecExpect) -> Row<Box<dyn FnOnce()>> {
    let expected = match &expect {
        SpecExpect::Refused { key, says } => format!("refused: key {key:?} … {says}"),
        SpecExpect::RefusedUnclearly {
            key,
            should_say,
            bug,
        } => format!("refused: key {key:?} … should say {should_say:?} ({bug})"),
        SpecExpect::RefusedTooLong { key, says, bug } => {
            format!("refused: key {key:?} … {says}, message too long for an Event ({bug})")
        }
        SpecExpect::Accepted { .. } => "accepted (documented choice)".to_string(),
    };
    row(
        input,
        expected,
        Box::new(move || check_spec(&data, &expect)) as Box<dyn FnOnce()>,
    )
}

fn check_spec(data: &Data, expect: &SpecExpect) {
    let result = parse_pv_spec(data);
    match (expect, result) {
        (SpecExpect::Accepted { check }, Ok(spec)) => {
            assert!(check(&spec), "accepted, but the check fails on {spec:?}")
        }
        (SpecExpect::Accepted { .. }, Err(error)) => panic!("refused: {error}"),
        (_, Ok(spec)) => panic!("accepted: {spec:?}"),
        (SpecExpect::Refused { key, says }, Err(error)) => {
            let message = error.to_string();
            assert!(message.contains(&format!("{key:?}")), "{message}");
            assert!(message.contains(says), "{message}");
            assert!(
                message.len() <= SPEC_ERROR_BUDGET,
                "{} bytes: {message}",
                message.len()
            );
        }
        (
            SpecExpect::RefusedUnclearly {
                key,
                should_say,
                bug,
            },
            Err(error),
        ) => {
            let message = error.to_string();
            assert!(message.contains(&format!("{key:?}")), "{message}");
            fixed_bug(
                bug,
                message.contains(should_say),
                &format!("the error for this value is {message:?}"),
            );
        }
        (SpecExpect::RefusedTooLong { key, says, bug }, Err(error)) => {
            let message = error.to_string();
            assert!(message.contains(&format!("{key:?}")), "{message}");
            assert!(message.contains(says), "{message}");
            fixed_bug(
                bug,
                message.len() <= SPEC_ERROR_BUDGET,
                &format!(
                    "a {}-byte spec error does not fit an Event note",
                    message.len()
                ),
            );
        }
    }
}

fn refused(key: &'static str, says: &'static str) -> SpecExpect {
    SpecExpect::Refused { key, says }
}

fn accepted(check: fn(&PvSpec) -> bool) -> SpecExpect {
    SpecExpect::Accepted { check }
}

#[test]
fn spec_table() {
    let huge = "d".repeat(1 << 20);
    let rows = vec![
        // Missing and mis-spelt keys.
        spec_row(
            "empty data",
            Data::new(),
            refused("deviceDir", "is missing"),
        ),
        spec_row(
            "no deviceDir",
            without(block(), "deviceDir"),
            refused("deviceDir", "is missing"),
        ),
        spec_row(
            "no deviceNameFilter",
            without(block(), "deviceNameFilter"),
            refused("deviceNameFilter", "is missing"),
        ),
        spec_row(
            "no volumeMode",
            without(block(), "volumeMode"),
            refused("volumeMode", "is missing"),
        ),
        spec_row(
            "Filesystem without fsType",
            without(filesystem(), "fsType"),
            refused("fsType", "is missing"),
        ),
        spec_row(
            "keys in the wrong case: DeviceDir, DeviceNameFilter, VolumeMode",
            data(&[
                ("DeviceDir", "/dev"),
                ("DeviceNameFilter", ".*"),
                ("VolumeMode", "Block"),
            ]),
            refused("deviceDir", "is missing"),
        ),
        // Unknown keys: ignored and reported (documented choice).
        spec_row(
            "unknown key futureKey=x",
            with(block(), "futureKey", "x"),
            accepted(|spec| spec.unknown_keys == ["futureKey"]),
        ),
        spec_row(
            "unknown key comment with a 1 MiB value",
            with(block(), "comment", "c".repeat(1 << 20)),
            accepted(|spec| spec.unknown_keys == ["comment"]),
        ),
        spec_row(
            "misspelt optional key storageClass=fast",
            with(block(), "storageClass", "fast"),
            accepted(|spec| {
                spec.unknown_keys == ["storageClass"] && spec.storage_class_name == "local-storage"
            }),
        ),
        // deviceDir.
        spec_row(
            "deviceDir \"\"",
            with(block(), "deviceDir", ""),
            refused("deviceDir", "must not be empty"),
        ),
        spec_row(
            "deviceDir relative dev/disk/by-path",
            with(block(), "deviceDir", "dev/disk/by-path"),
            refused("deviceDir", "absolute"),
        ),
        spec_row(
            "deviceDir ./dev",
            with(block(), "deviceDir", "./dev"),
            refused("deviceDir", "absolute"),
        ),
        spec_row(
            "deviceDir ~/disks",
            with(block(), "deviceDir", "~/disks"),
            refused("deviceDir", "absolute"),
        ),
        spec_row(
            "deviceDir with a leading space",
            with(block(), "deviceDir", " /dev/disk"),
            refused("deviceDir", "white space"),
        ),
        spec_row(
            "deviceDir C:\\disks",
            with(block(), "deviceDir", "C:\\disks"),
            refused("deviceDir", "absolute"),
        ),
        spec_row(
            "deviceDir /dev/../etc",
            with(block(), "deviceDir", "/dev/../etc"),
            refused("deviceDir", "\"..\""),
        ),
        spec_row(
            "deviceDir /dev/disk/..",
            with(block(), "deviceDir", "/dev/disk/.."),
            refused("deviceDir", "\"..\""),
        ),
        spec_row(
            "deviceDir /..",
            with(block(), "deviceDir", "/.."),
            refused("deviceDir", "\"..\""),
        ),
        spec_row(
            "deviceDir /",
            with(block(), "deviceDir", "/"),
            refused("deviceDir", "root directory"),
        ),
        spec_row(
            "deviceDir //./",
            with(block(), "deviceDir", "//./"),
            refused("deviceDir", "root directory"),
        ),
        spec_row(
            "deviceDir with a NUL byte",
            with(block(), "deviceDir", "/dev/a\0b"),
            refused("deviceDir", "NUL"),
        ),
        spec_row(
            "deviceDir of 1 MiB",
            with(block(), "deviceDir", format!("/{huge}")),
            refused("deviceDir", "longer than 4096 bytes"),
        ),
        spec_row(
            "deviceDir /dev//disk/./by-path/ (normalised: documented choice)",
            with(block(), "deviceDir", "/dev//disk/./by-path/"),
            accepted(|spec| spec.device_dir == Path::new("/dev/disk/by-path")),
        ),
        spec_row(
            "deviceDir \"/dev/disk \" with a trailing space",
            with(block(), "deviceDir", "/dev/disk "),
            refused("deviceDir", "white space"),
        ),
        spec_row(
            "deviceDir with a trailing newline (a YAML `|` block scalar, UNCLEAR-1)",
            with(block(), "deviceDir", "/dev/disk/by-path\n"),
            refused("deviceDir", "quote the value"),
        ),
        // deviceNameFilter.
        spec_row(
            "filter ^disk$ with a trailing newline (a YAML `|` block scalar, UNCLEAR-1)",
            with(block(), "deviceNameFilter", "^disk$\n"),
            refused("deviceNameFilter", "white space"),
        ),
        spec_row(
            "filter sd[a-",
            with(block(), "deviceNameFilter", "sd[a-"),
            refused("deviceNameFilter", "not a valid regular expression"),
        ),
        spec_row(
            "filter (",
            with(block(), "deviceNameFilter", "("),
            refused("deviceNameFilter", "not a valid regular expression"),
        ),
        spec_row(
            "filter with a duplicate group name",
            with(block(), "deviceNameFilter", "(?P<x>a)(?P<x>b)"),
            refused("deviceNameFilter", "not a valid regular expression"),
        ),
        spec_row(
            "filter a{4294967296}",
            with(block(), "deviceNameFilter", "a{4294967296}"),
            refused("deviceNameFilter", "not a valid regular expression"),
        ),
        spec_row(
            "filter (a{1000}){1000}",
            with(block(), "deviceNameFilter", "(a{1000}){1000}"),
            refused("deviceNameFilter", "too complex"),
        ),
        spec_row(
            "filter \\w{1000}{1000}",
            with(block(), "deviceNameFilter", "\\w{1000}{1000}"),
            refused("deviceNameFilter", "too complex"),
        ),
        spec_row(
            "filter of 4097 bytes",
            with(block(), "deviceNameFilter", "a".repeat(4097)),
            refused("deviceNameFilter", "longer than 4096 bytes"),
        ),
        spec_row(
            "filter of 1 MiB",
            with(block(), "deviceNameFilter", huge.clone()),
            refused("deviceNameFilter", "longer than 4096 bytes"),
        ),
        spec_row(
            "filter \"\" (matches every entry, like .*)",
            with(block(), "deviceNameFilter", ""),
            accepted(|spec| spec.device_name_filter.is_match("anything")),
        ),
        spec_row(
            "filter (a*)*b (no catastrophic backtracking: linear-time engine)",
            with(block(), "deviceNameFilter", "(a*)*b"),
            accepted(|spec| {
                !spec
                    .device_name_filter
                    .is_match(&format!("{}c", "a".repeat(100_000)))
            }),
        ),
        // volumeMode and fsType.
        spec_row(
            "volumeMode block",
            with(block(), "volumeMode", "block"),
            refused("volumeMode", "\"Filesystem\" or \"Block\""),
        ),
        spec_row(
            "volumeMode \"Block \"",
            with(block(), "volumeMode", "Block "),
            refused("volumeMode", "\"Filesystem\" or \"Block\""),
        ),
        spec_row(
            "volumeMode \"\"",
            with(block(), "volumeMode", ""),
            refused("volumeMode", "\"Filesystem\" or \"Block\""),
        ),
        spec_row(
            "volumeMode of 1 MiB",
            with(block(), "volumeMode", "v".repeat(1 << 20)),
            refused("volumeMode", "(1048576 bytes)"),
        ),
        spec_row(
            "volumeMode of 100000 DEL characters",
            with(block(), "volumeMode", "\u{7f}".repeat(100_000)),
            SpecExpect::RefusedTooLong {
                key: "volumeMode",
                says: "\"Filesystem\" or \"Block\"",
                bug: "BUG-2",
            },
        ),
        spec_row(
            "Block with fsType ext4",
            with(block(), "fsType", "ext4"),
            refused("fsType", "must not be set when volumeMode is \"Block\""),
        ),
        spec_row(
            "Block with fsType \"\" (must be absent, not empty)",
            with(block(), "fsType", ""),
            refused("fsType", "must not be set"),
        ),
        spec_row(
            "Filesystem with fsType ntfs",
            with(filesystem(), "fsType", "ntfs"),
            refused("fsType", "\"ext4\", \"xfs\" or \"btrfs\""),
        ),
        spec_row(
            "Filesystem with fsType EXT4",
            with(filesystem(), "fsType", "EXT4"),
            refused("fsType", "\"ext4\", \"xfs\" or \"btrfs\""),
        ),
        spec_row(
            "Filesystem with fsType \"\"",
            with(filesystem(), "fsType", ""),
            refused("fsType", "\"ext4\", \"xfs\" or \"btrfs\""),
        ),
        // storageClassName.
        spec_row(
            "storageClassName \"\"",
            with(block(), "storageClassName", ""),
            refused("storageClassName", "DNS-1123"),
        ),
        spec_row(
            "storageClassName Local_Storage",
            with(block(), "storageClassName", "Local_Storage"),
            refused("storageClassName", "DNS-1123"),
        ),
        spec_row(
            "storageClassName of 254 characters",
            with(block(), "storageClassName", "a".repeat(254)),
            refused("storageClassName", "DNS-1123"),
        ),
        // wipeBytes.
        spec_row(
            "wipeBytes \"\"",
            with(block(), "wipeBytes", ""),
            SpecExpect::RefusedUnclearly {
                key: "wipeBytes",
                should_say: "whole number of bytes",
                bug: "BUG-1",
            },
        ),
        spec_row(
            "wipeBytes Mi (a unit without a number)",
            with(block(), "wipeBytes", "Mi"),
            SpecExpect::RefusedUnclearly {
                key: "wipeBytes",
                should_say: "whole number of bytes",
                bug: "BUG-1",
            },
        ),
        spec_row(
            "wipeBytes 0",
            with(block(), "wipeBytes", "0"),
            refused("wipeBytes", "positive multiple of 4096"),
        ),
        spec_row(
            "wipeBytes 1000",
            with(block(), "wipeBytes", "1000"),
            refused("wipeBytes", "positive multiple of 4096"),
        ),
        spec_row(
            "wipeBytes 0Ki",
            with(block(), "wipeBytes", "0Ki"),
            refused("wipeBytes", "positive multiple of 4096"),
        ),
        spec_row(
            "wipeBytes -4096",
            with(block(), "wipeBytes", "-4096"),
            refused("wipeBytes", "whole number of bytes"),
        ),
        spec_row(
            "wipeBytes +4096",
            with(block(), "wipeBytes", "+4096"),
            refused("wipeBytes", "whole number of bytes"),
        ),
        spec_row(
            "wipeBytes 4096.0",
            with(block(), "wipeBytes", "4096.0"),
            refused("wipeBytes", "whole number of bytes"),
        ),
        spec_row(
            "wipeBytes 1e6",
            with(block(), "wipeBytes", "1e6"),
            refused("wipeBytes", "whole number of bytes"),
        ),
        spec_row(
            "wipeBytes 0x1000",
            with(block(), "wipeBytes", "0x1000"),
            refused("wipeBytes", "whole number of bytes"),
        ),
        spec_row(
            "wipeBytes \" 4096\"",
            with(block(), "wipeBytes", " 4096"),
            refused("wipeBytes", "whole number of bytes"),
        ),
        spec_row(
            "wipeBytes \"4096 \"",
            with(block(), "wipeBytes", "4096 "),
            refused("wipeBytes", "whole number of bytes"),
        ),
        spec_row(
            "wipeBytes 1MB",
            with(block(), "wipeBytes", "1MB"),
            refused("wipeBytes", "Ki, Mi, Gi or Ti"),
        ),
        spec_row(
            "wipeBytes 1mi",
            with(block(), "wipeBytes", "1mi"),
            refused("wipeBytes", "Ki, Mi, Gi or Ti"),
        ),
        spec_row(
            "wipeBytes 1Pi",
            with(block(), "wipeBytes", "1Pi"),
            refused("wipeBytes", "Ki, Mi, Gi or Ti"),
        ),
        spec_row(
            "wipeBytes in Arabic-Indic digits ٤٠٩٦",
            with(block(), "wipeBytes", "٤٠٩٦"),
            refused("wipeBytes", "whole number of bytes"),
        ),
        spec_row(
            "wipeBytes 2^64",
            with(block(), "wipeBytes", "18446744073709551616"),
            refused("wipeBytes", "64 bits"),
        ),
        spec_row(
            "wipeBytes 16777216Ti (2^64)",
            with(block(), "wipeBytes", "16777216Ti"),
            refused("wipeBytes", "64 bits"),
        ),
        spec_row(
            "wipeBytes of 1 MiB of digits",
            with(block(), "wipeBytes", "1".repeat(1 << 20)),
            refused("wipeBytes", "64 bits"),
        ),
        spec_row(
            "wipeBytes 0004096 (leading zeros: accepted)",
            with(block(), "wipeBytes", "0004096"),
            accepted(|spec| spec.wipe_bytes == 4096),
        ),
        spec_row(
            "wipeBytes 1Ti (larger than most disks: the wipe stops at the device's end)",
            with(block(), "wipeBytes", "1Ti"),
            accepted(|spec| spec.wipe_bytes == 1 << 40 && spec.volume_mode == VolumeMode::Block),
        ),
    ];
    run_rows("ConfigMap data (parse_pv_spec)", rows);
}

// ---------------------------------------------------------------------------
// Table 2: PV objects through WipeRequest::from_pv and wipe_device
// ---------------------------------------------------------------------------

const NODE: &str = "node-w";

fn owner() -> Owner<'static> {
    Owner {
        node_name: NODE,
        label_value: NODE,
    }
}

/// A PV of ours for `device` linked as `dir/disk0`, as JSON to edit.
fn our_pv_json(dir: &Path, device: &LoopDevice) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": format!("local-{NODE}-disk0"),
            "labels": {pv::NODE_LABEL: NODE},
            "annotations": {
                pv::DEVICE_DIR_ANNOTATION: dir.display().to_string(),
                pv::DEVICE_NUMBER_ANNOTATION: device.number(),
                pv::DEVICE_SIZE_ANNOTATION: DEVICE_BYTES.to_string(),
                pv::NODE_NAME_ANNOTATION: NODE,
                pv::WIPE_BYTES_ANNOTATION: "4096",
            },
        },
        "spec": {
            "capacity": {"storage": DEVICE_BYTES.to_string()},
            "accessModes": ["ReadWriteOnce"],
            "volumeMode": "Block",
            "local": {"path": dir.join("disk0").display().to_string()},
        },
        "status": {"phase": "Released"},
    })
}

/// Builds the request from the edited PV and, when accepted, runs the wipe.
fn refused_by(pv: Value, expected: Guard, device: &LoopDevice) {
    let pv: PersistentVolume = serde_json::from_value(pv).unwrap();
    let result = WipeRequest::from_pv(&pv, &owner())
        .and_then(|request| wipe_device(&request, &AtomicBool::new(false)));
    match result {
        Err(WipeError::Refused { guard, detail }) => {
            assert_eq!(guard, expected, "{detail}");
            assert!(!detail.is_empty());
        }
        other => panic!("expected a refusal by {expected}, got {other:?}"),
    }
    assert_untouched(device);
}

#[test]
fn wipe_request_table() {
    support::loop_device::require_root();
    let device = std::sync::Arc::new(device());
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    symlink(&device.path, dir.path().join("disk0")).unwrap();
    let file = dir.path().join("disk-file");
    fs::write(&file, vec![FILL_BYTE; 4096]).unwrap();
    fs::create_dir(dir.path().join("sub")).unwrap();
    symlink(&device.path, dir.path().join("sub").join("disk0")).unwrap();

    // The unedited PV is accepted (its wipe would run): each row's refusal
    // comes from its edit alone.
    let unedited: PersistentVolume =
        serde_json::from_value(our_pv_json(dir.path(), &device)).unwrap();
    let request = WipeRequest::from_pv(&unedited, &owner()).expect("the unedited PV is ours");
    assert_eq!(request.head_bytes, 4096);

    type Edit = Box<dyn Fn(&mut Value, &Path) + Send>;
    let cases: Vec<(&str, Guard, Edit)> = vec![
        (
            "no node label",
            Guard::OwnedByThisNode,
            Box::new(|pv, _| {
                pv["metadata"]["labels"] = json!({});
            }),
        ),
        (
            "node label of another node",
            Guard::OwnedByThisNode,
            Box::new(|pv, _| {
                pv["metadata"]["labels"][pv::NODE_LABEL] = json!("node-x");
            }),
        ),
        (
            "node label \"\"",
            Guard::OwnedByThisNode,
            Box::new(|pv, _| {
                pv["metadata"]["labels"][pv::NODE_LABEL] = json!("");
            }),
        ),
        (
            "our label, node-name annotation missing",
            Guard::OwnedByThisNode,
            Box::new(|pv, _| {
                pv["metadata"]["annotations"]
                    .as_object_mut()
                    .unwrap()
                    .remove(pv::NODE_NAME_ANNOTATION);
            }),
        ),
        (
            "our label, node-name annotation of another node",
            Guard::OwnedByThisNode,
            Box::new(|pv, _| {
                pv["metadata"]["annotations"][pv::NODE_NAME_ANNOTATION] = json!("node-x");
            }),
        ),
        (
            "no spec",
            Guard::RecordedIdentity,
            Box::new(|pv, _| {
                pv.as_object_mut().unwrap().remove("spec");
            }),
        ),
        (
            "a hostPath PV (no spec.local)",
            Guard::RecordedIdentity,
            Box::new(|pv, dir| {
                pv["spec"].as_object_mut().unwrap().remove("local");
                pv["spec"]["hostPath"] = json!({"path": dir.join("disk0")});
            }),
        ),
        (
            "no device-dir annotation",
            Guard::RecordedIdentity,
            Box::new(|pv, _| {
                pv["metadata"]["annotations"]
                    .as_object_mut()
                    .unwrap()
                    .remove(pv::DEVICE_DIR_ANNOTATION);
            }),
        ),
        (
            "device-size abc",
            Guard::RecordedIdentity,
            Box::new(|pv, _| {
                pv["metadata"]["annotations"][pv::DEVICE_SIZE_ANNOTATION] = json!("abc");
            }),
        ),
        (
            "device-size -1",
            Guard::RecordedIdentity,
            Box::new(|pv, _| {
                pv["metadata"]["annotations"][pv::DEVICE_SIZE_ANNOTATION] = json!("-1");
            }),
        ),
        (
            "device-size 1Mi (not plain bytes)",
            Guard::RecordedIdentity,
            Box::new(|pv, _| {
                pv["metadata"]["annotations"][pv::DEVICE_SIZE_ANNOTATION] = json!("1Mi");
            }),
        ),
        (
            "no device-number annotation",
            Guard::RecordedIdentity,
            Box::new(|pv, _| {
                pv["metadata"]["annotations"]
                    .as_object_mut()
                    .unwrap()
                    .remove(pv::DEVICE_NUMBER_ANNOTATION);
            }),
        ),
        (
            "device-number 7",
            Guard::RecordedIdentity,
            Box::new(|pv, _| {
                pv["metadata"]["annotations"][pv::DEVICE_NUMBER_ANNOTATION] = json!("7");
            }),
        ),
        (
            "device-number a:b",
            Guard::RecordedIdentity,
            Box::new(|pv, _| {
                pv["metadata"]["annotations"][pv::DEVICE_NUMBER_ANNOTATION] = json!("a:b");
            }),
        ),
        (
            "wipe-bytes 0",
            Guard::RecordedIdentity,
            Box::new(|pv, _| {
                pv["metadata"]["annotations"][pv::WIPE_BYTES_ANNOTATION] = json!("0");
            }),
        ),
        (
            "wipe-bytes 1000",
            Guard::RecordedIdentity,
            Box::new(|pv, _| {
                pv["metadata"]["annotations"][pv::WIPE_BYTES_ANNOTATION] = json!("1000");
            }),
        ),
        (
            "wipe-bytes 1Mi (the PV records plain bytes)",
            Guard::RecordedIdentity,
            Box::new(|pv, _| {
                pv["metadata"]["annotations"][pv::WIPE_BYTES_ANNOTATION] = json!("1Mi");
            }),
        ),
        (
            "local.path relative (disk0)",
            Guard::PathInsideDeviceDir,
            Box::new(|pv, _| {
                pv["spec"]["local"]["path"] = json!("disk0");
            }),
        ),
        (
            "local.path DIR/sub/../disk0",
            Guard::PathInsideDeviceDir,
            Box::new(|pv, dir| {
                pv["spec"]["local"]["path"] = json!(format!("{}/sub/../disk0", dir.display()));
            }),
        ),
        (
            "local.path is deviceDir itself",
            Guard::PathInsideDeviceDir,
            Box::new(|pv, dir| {
                pv["spec"]["local"]["path"] = json!(dir.display().to_string());
            }),
        ),
        (
            "local.path one level deeper (DIR/sub/disk0, a link to the same device)",
            Guard::PathInsideDeviceDir,
            Box::new(|pv, dir| {
                pv["spec"]["local"]["path"] = json!(dir.join("sub").join("disk0"));
            }),
        ),
        (
            "local.path the device node itself (/dev/loopN, outside deviceDir)",
            Guard::PathInsideDeviceDir,
            Box::new(|pv, _| {
                let number = pv["metadata"]["annotations"][pv::DEVICE_NUMBER_ANNOTATION]
                    .as_str()
                    .unwrap()
                    .to_string();
                let minor = number.split(':').nth(1).unwrap().to_string();
                pv["spec"]["local"]["path"] = json!(format!("/dev/loop{minor}"));
            }),
        ),
        (
            "device-dir annotation relative",
            Guard::PathInsideDeviceDir,
            Box::new(|pv, _| {
                pv["metadata"]["annotations"][pv::DEVICE_DIR_ANNOTATION] = json!("relative/dir");
            }),
        ),
        (
            "local.path a regular file inside deviceDir",
            Guard::BlockDevice,
            Box::new(|pv, dir| {
                pv["spec"]["local"]["path"] = json!(dir.join("disk-file"));
            }),
        ),
        (
            "local.path a missing entry inside deviceDir",
            Guard::BlockDevice,
            Box::new(|pv, dir| {
                pv["spec"]["local"]["path"] = json!(dir.join("disk-gone"));
            }),
        ),
        (
            "device-number of another device",
            Guard::SameDevice,
            Box::new(|pv, _| {
                pv["metadata"]["annotations"][pv::DEVICE_NUMBER_ANNOTATION] = json!("1:3");
            }),
        ),
        (
            "stable id of another disk",
            Guard::SameDevice,
            Box::new(|pv, _| {
                pv["metadata"]["annotations"][pv::DEVICE_STABLE_ID_ANNOTATION] =
                    json!("wwid:naa.0000");
            }),
        ),
    ];
    let rows = cases
        .into_iter()
        .map(|(input, guard, edit)| {
            let device = device.clone();
            let dir = dir.clone();
            let file = file.clone();
            row(
                format!("Released PV: {input}"),
                format!("refused by {guard}, device untouched"),
                Box::new(move || {
                    let mut pv = our_pv_json(dir.path(), &device);
                    edit(&mut pv, dir.path());
                    refused_by(pv, guard, &device);
                    assert_eq!(fs::read(&file).unwrap(), vec![FILL_BYTE; 4096]);
                }) as Box<dyn FnOnce()>,
            )
        })
        .collect();
    let mut rows: Vec<Row<Box<dyn FnOnce()>>> = rows;
    rows.push(case(
        "Released PV of ours for this machine's root disk (deviceDir /dev, its real major:minor; size recorded wrong as a backstop)",
        "refused by NotMounted before the device is opened for writing (skipped when / is not on a block device)",
        || {
            let Some((disk, number)) = root_disk() else {
                println!("/ is not on a visible block device: root-disk row skipped");
                return;
            };
            let mut pv = json!({
                "metadata": {
                    "name": "local-node-w-root",
                    "labels": {pv::NODE_LABEL: NODE},
                    "annotations": {
                        pv::DEVICE_DIR_ANNOTATION: "/dev",
                        pv::DEVICE_NUMBER_ANNOTATION: number,
                        pv::DEVICE_SIZE_ANNOTATION: "512",
                        pv::NODE_NAME_ANNOTATION: NODE,
                    },
                },
                "spec": {"local": {"path": disk.display().to_string()}},
            });
            pv["status"] = json!({"phase": "Released"});
            let pv: PersistentVolume = serde_json::from_value(pv).unwrap();
            let request = WipeRequest::from_pv(&pv, &owner()).unwrap();
            match wipe_device(&request, &AtomicBool::new(false)) {
                Err(WipeError::Refused { guard: Guard::NotMounted, detail }) => {
                    assert!(detail.contains("mounted at /"), "{detail}")
                }
                other => panic!("expected a NotMounted refusal, got {other:?}"),
            }
        },
    ));
    run_rows("PV objects (WipeRequest::from_pv, wipe_device)", rows);
}

// ---------------------------------------------------------------------------
// Table 3: device trees through scan_devices and plan
// ---------------------------------------------------------------------------

fn facts(node: &str) -> NodeFacts {
    NodeFacts {
        name: node.into(),
        uid: "uid".into(),
        hostname: node.into(),
        label_value: node_label_value(node),
    }
}

fn spec_for(dir: &Path, filter: &str) -> PvSpec {
    parse_pv_spec(&data(&[
        ("deviceDir", dir.to_str().unwrap()),
        ("deviceNameFilter", filter),
        ("volumeMode", "Block"),
    ]))
    .unwrap()
}

fn scan(dir: &Path, filter: &str) -> Scan {
    scan_devices(dir, &Regex::new(filter).unwrap()).expect("the scan completes")
}

fn problem<'a>(scan: &'a Scan, name: &str) -> &'a str {
    scan.problems
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.reason.as_str())
        .unwrap_or_else(|| panic!("{name:?} is not reported: {:?}", scan.problems))
}

fn device_names(scan: &Scan) -> Vec<&str> {
    scan.devices.iter().map(|d| d.name.as_str()).collect()
}

/// Plans `scan` on an empty cluster and checks the PVs: valid, distinct
/// names, paths inside `dir`; returns entry name → PV name.
fn planned_names(node: &str, dir: &Path, scan: &Scan) -> BTreeMap<String, String> {
    let decided = plan(
        &facts(node),
        &spec_for(dir, ".*"),
        scan,
        &[],
        &BTreeSet::new(),
    );
    let mut names = BTreeMap::new();
    for pv in &decided.create {
        let name = pv.metadata.name.clone().unwrap();
        assert!(is_dns1123_subdomain(&name), "{name}");
        let path = PathBuf::from(&pv.spec.as_ref().unwrap().local.as_ref().unwrap().path);
        assert_eq!(path.parent(), Some(dir), "{}", path.display());
        let entry = path.file_name().unwrap().to_str().unwrap().to_string();
        assert!(names.insert(entry, name).is_none());
    }
    let distinct: HashSet<&String> = names.values().collect();
    assert_eq!(
        distinct.len(),
        names.len(),
        "two devices share a name: {names:?}"
    );
    names
}

#[test]
fn device_tree_table() {
    support::loop_device::require_root();
    let rows: Vec<Row<Box<dyn FnOnce()>>> = vec![
        case(
            "symlink loops: disk-a -> disk-b -> disk-a, disk-self -> disk-self",
            "each an error device (cannot resolve: too many levels of symbolic links); the scan completes",
            || {
                let dir = tempfile::tempdir().unwrap();
                symlink("disk-b", dir.path().join("disk-a")).unwrap();
                symlink("disk-a", dir.path().join("disk-b")).unwrap();
                symlink(dir.path().join("disk-self"), dir.path().join("disk-self")).unwrap();
                let disk = device();
                symlink(&disk.path, dir.path().join("disk-real")).unwrap();
                let found = scan(dir.path(), "^disk");
                assert_eq!(device_names(&found), vec!["disk-real"]);
                for name in ["disk-a", "disk-b", "disk-self"] {
                    let reason = problem(&found, name);
                    assert!(
                        reason.contains("cannot resolve") && reason.contains("symbolic links"),
                        "{reason}"
                    );
                }
                assert_untouched(&disk);
            },
        ),
        case(
            "link in deviceDir to a device elsewhere (/dev/loopN), absolute and relative",
            "allowed (the by-path case); the PV records the link's path, not the device node",
            || {
                let root = tempfile::tempdir().unwrap();
                let dir = root.path().join("by-path");
                let elsewhere = root.path().join("elsewhere");
                fs::create_dir(&dir).unwrap();
                fs::create_dir(&elsewhere).unwrap();
                let (one, two) = (device(), device());
                symlink(&one.path, dir.join("disk-abs")).unwrap();
                symlink(&two.path, elsewhere.join("hop")).unwrap();
                symlink("../elsewhere/hop", dir.join("disk-rel")).unwrap();
                let found = scan(&dir, "^disk");
                assert_eq!(device_names(&found), vec!["disk-abs", "disk-rel"]);
                assert_eq!(found.devices[0].resolved, one.path);
                assert_eq!(found.devices[1].resolved, two.path);
                let spec = spec_for(&dir, "^disk");
                for device in &found.devices {
                    let pv = build_pv(&facts("n"), &spec, device, "x");
                    assert_eq!(
                        pv.spec.unwrap().local.unwrap().path,
                        dir.join(&device.name).display().to_string()
                    );
                }
                assert_untouched(&one);
                assert_untouched(&two);
            },
        ),
        case(
            "links out of deviceDir to a regular file, to /, to /dev/zero",
            "error devices: not a block device (regular file / directory / character device)",
            || {
                let dir = tempfile::tempdir().unwrap();
                let outside = tempfile::NamedTempFile::new().unwrap();
                fs::write(outside.path(), b"keep me").unwrap();
                symlink(outside.path(), dir.path().join("disk-file")).unwrap();
                symlink("/", dir.path().join("disk-root")).unwrap();
                symlink("/dev/zero", dir.path().join("disk-zero")).unwrap();
                let found = scan(dir.path(), "^disk");
                assert!(found.devices.is_empty(), "{:?}", found.devices);
                assert!(problem(&found, "disk-file").contains("regular file"));
                assert!(problem(&found, "disk-root").contains("a directory"));
                assert!(problem(&found, "disk-zero").contains("character device"));
                assert_eq!(fs::read(outside.path()).unwrap(), b"keep me");
            },
        ),
        case(
            "a matching directory holding a device link (disk-dir/disk0)",
            "error device \"a directory\": only the first level is scanned",
            || {
                let dir = tempfile::tempdir().unwrap();
                let disk = device();
                fs::create_dir(dir.path().join("disk-dir")).unwrap();
                symlink(&disk.path, dir.path().join("disk-dir").join("disk0")).unwrap();
                let found = scan(dir.path(), "disk");
                assert!(found.devices.is_empty());
                assert!(problem(&found, "disk-dir").contains("a directory"));
                assert_untouched(&disk);
            },
        ),
        case(
            "deviceDir is a symlink loop",
            "the scan fails: cannot read deviceDir … too many levels of symbolic links",
            || {
                let root = tempfile::tempdir().unwrap();
                let dir = root.path().join("loop");
                symlink(&dir, &dir).unwrap();
                let error = scan_devices(&dir, &Regex::new(".*").unwrap()).unwrap_err();
                let message = error.to_string();
                assert!(
                    message.contains("cannot read deviceDir") && message.contains("symbolic links"),
                    "{message}"
                );
            },
        ),
        case(
            "deviceDir is a regular file",
            "the scan fails: cannot read deviceDir … not a directory",
            || {
                let file = tempfile::NamedTempFile::new().unwrap();
                let error = scan_devices(file.path(), &Regex::new(".*").unwrap()).unwrap_err();
                let message = error.to_string();
                assert!(
                    message.contains("cannot read deviceDir")
                        && message.contains("Not a directory"),
                    "{message}"
                );
            },
        ),
        case(
            "deviceDir is a link to a directory of device links",
            "followed (documented choice); PV paths keep the configured deviceDir",
            || {
                let root = tempfile::tempdir().unwrap();
                let real = root.path().join("real");
                fs::create_dir(&real).unwrap();
                let disk = device();
                symlink(&disk.path, real.join("disk0")).unwrap();
                let dir = root.path().join("alias");
                symlink(&real, &dir).unwrap();
                let found = scan(&dir, "^disk");
                assert_eq!(found.devices[0].path, dir.join("disk0"));
                assert_untouched(&disk);
            },
        ),
        case(
            "5000 regular files: 2500 matching disk-file-N, 2500 not matching, plus one device link",
            "the scan completes: 1 device, 2500 error devices (regular file), non-matching ignored",
            || {
                let dir = tempfile::tempdir().unwrap();
                for index in 0..2500 {
                    fs::write(dir.path().join(format!("disk-file-{index}")), b"x").unwrap();
                    fs::write(dir.path().join(format!("other-{index}")), b"x").unwrap();
                }
                let disk = device();
                symlink(&disk.path, dir.path().join("disk-real")).unwrap();
                let found = scan(dir.path(), "^disk");
                assert_eq!(device_names(&found), vec!["disk-real"]);
                assert_eq!(found.problems.len(), 2500);
                assert!(
                    found
                        .problems
                        .iter()
                        .all(|p| p.reason.contains("regular file"))
                );
                let decided = plan(
                    &facts("n"),
                    &spec_for(dir.path(), "^disk"),
                    &found,
                    &[],
                    &BTreeSet::new(),
                );
                assert_eq!(decided.create.len(), 1);
                assert_eq!(decided.available, 1);
                assert_eq!(decided.problems.len(), 2500);
                assert_untouched(&disk);
            },
        ),
        case(
            "entries A_B, a:b, a-b (one plain PV name local-n-a-b)",
            "three devices, three distinct hashed names, the collision reported; an existing holder keeps the plain name",
            || {
                let dir = tempfile::tempdir().unwrap();
                let disks: Vec<LoopDevice> = (0..3).map(|_| device()).collect();
                for (name, disk) in ["A_B", "a:b", "a-b"].iter().zip(&disks) {
                    symlink(&disk.path, dir.path().join(name)).unwrap();
                }
                let found = scan(dir.path(), ".*");
                assert_eq!(found.devices.len(), 3);
                let decided = plan(
                    &facts("n"),
                    &spec_for(dir.path(), ".*"),
                    &found,
                    &[],
                    &BTreeSet::new(),
                );
                assert_eq!(
                    decided.collisions,
                    vec![vec![
                        "A_B".to_string(),
                        "a-b".to_string(),
                        "a:b".to_string()
                    ]]
                );
                let names = planned_names("n", dir.path(), &found);
                assert_eq!(names.len(), 3);
                assert!(
                    !names.values().any(|name| name == "local-n-a-b"),
                    "{names:?}"
                );
                // a-b's PV already holds the plain name: it keeps it, the others stay hashed.
                let existing = [ExistingPv {
                    name: "local-n-a-b".into(),
                    path: Some(dir.path().join("a-b")),
                    number: Some(
                        found
                            .devices
                            .iter()
                            .find(|d| d.name == "a-b")
                            .unwrap()
                            .number,
                    ),
                    phase: Some("Available".into()),
                    claimed: false,
                    deleting: false,
                }];
                let later = plan(
                    &facts("n"),
                    &spec_for(dir.path(), ".*"),
                    &found,
                    &existing,
                    &BTreeSet::new(),
                );
                let later_names: Vec<String> = later
                    .create
                    .iter()
                    .map(|pv| pv.metadata.name.clone().unwrap())
                    .collect();
                assert_eq!(
                    later_names,
                    vec![names["A_B"].clone(), names["a:b"].clone()]
                );
                for disk in &disks {
                    assert_untouched(disk);
                }
            },
        ),
        case(
            "unicode entry names: disk-é, диск-1, disk-🙂, disk-\\u{200b}, DISK-Ä",
            "usable devices; every PV name valid and distinct (hashed when sanitizing leaves a bad name)",
            || {
                let dir = tempfile::tempdir().unwrap();
                let names = ["disk-é", "диск-1", "disk-🙂", "disk-\u{200b}", "DISK-Ä"];
                let disks: Vec<LoopDevice> = names.iter().map(|_| device()).collect();
                for (name, disk) in names.iter().zip(&disks) {
                    symlink(&disk.path, dir.path().join(name)).unwrap();
                }
                let found = scan(dir.path(), ".*");
                assert_eq!(found.devices.len(), 5, "{:?}", found.problems);
                let planned = planned_names("n", dir.path(), &found);
                assert_eq!(planned.len(), 5);
                assert_eq!(planned["disk-é"], hashed_pv_name("n", "disk-é"));
                for disk in &disks {
                    assert_untouched(disk);
                }
            },
        ),
        case(
            "non-UTF-8 entry name disk-\\xff\\xfe linking to a device",
            "error device \"the entry name is not valid UTF-8\" (reported by its lossy name); the same device under a UTF-8 name is usable",
            || {
                let dir = tempfile::tempdir().unwrap();
                let disk = device();
                let raw = std::ffi::OsStr::from_bytes(b"disk-\xff\xfe");
                symlink(&disk.path, dir.path().join(raw)).unwrap();
                let found = scan(dir.path(), "^disk");
                assert!(found.devices.is_empty());
                assert!(problem(&found, "disk-\u{fffd}\u{fffd}").contains("not valid UTF-8"));
                symlink(&disk.path, dir.path().join("disk-ok")).unwrap();
                let found = scan(dir.path(), "^disk");
                assert_eq!(device_names(&found), vec!["disk-ok"]);
                assert_eq!(found.problems.len(), 1);
                assert_untouched(&disk);
            },
        ),
        case(
            "entry names with a newline (disk\\nx), of 255 bytes, and ending in - (disk-)",
            "usable devices with valid, distinct PV names",
            || {
                let dir = tempfile::tempdir().unwrap();
                let long = format!("disk{}", "x".repeat(251));
                let names = ["disk\nx".to_string(), long.clone(), "disk-".to_string()];
                let disks: Vec<LoopDevice> = names.iter().map(|_| device()).collect();
                for (name, disk) in names.iter().zip(&disks) {
                    symlink(&disk.path, dir.path().join(name)).unwrap();
                }
                let found = scan(dir.path(), "^disk");
                assert_eq!(found.devices.len(), 3, "{:?}", found.problems);
                let planned = planned_names("node-with-a-longer-name", dir.path(), &found);
                assert_eq!(planned.len(), 3);
                assert!(planned[&long].len() <= 253);
                for disk in &disks {
                    assert_untouched(disk);
                }
            },
        ),
    ];
    let mut rows = rows;
    rows.push(case(
        "deviceDir /dev with a filter matching this machine's root disk",
        "never a PV: marked in use (mounted at /), or an error device when it cannot be opened; reported with the reason",
        || {
            let Some((disk, _)) = root_disk() else {
                println!("/ is not on a visible block device: root-disk row skipped");
                return;
            };
            let name = disk.file_name().unwrap().to_str().unwrap().to_string();
            let filter = format!("^{}$", regex::escape(&name));
            let found = scan(Path::new("/dev"), &filter);
            // Either usable but in use, or not even openable (some sandboxes
            // refuse to open the root disk): never a PV.
            match found.devices.first() {
                Some(device) => {
                    let busy = device.in_use.clone().expect("in use");
                    assert!(busy.contains("mounted at /"), "{busy}");
                }
                None => println!("root disk not usable here: {:?}", found.problems),
            }
            let decided = plan(
                &facts("n"),
                &spec_for(Path::new("/dev"), &filter),
                &found,
                &[],
                &BTreeSet::new(),
            );
            assert!(decided.create.is_empty());
            assert_eq!(decided.problems.len(), 1);
            assert!(
                decided.problems[0].reason.starts_with("in use:")
                    || decided.problems[0].reason.starts_with("cannot open"),
                "{:?}",
                decided.problems
            );
        },
    ));
    run_rows("device trees (scan_devices, plan)", rows);
}

// ---------------------------------------------------------------------------
// The binary against the fake API server
// ---------------------------------------------------------------------------

/// One row's world: its own fake API server, node, device directory and
/// loop devices.
struct World {
    server: FakeApiServer,
    client: Client,
    node: String,
    work: TempDir,
    device_dir: TempDir,
    devices: Vec<LoopDevice>,
}

impl World {
    /// A world whose device directory holds `disk0`, `disk1`, … linked to
    /// `count` fresh loop devices.
    async fn new(node: &str, count: usize) -> World {
        support::loop_device::require_root();
        let server = FakeApiServer::start().await;
        let client = server.client().await;
        server.create_object(
            "namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
        );
        let device_dir = tempfile::tempdir().unwrap();
        let devices: Vec<LoopDevice> = (0..count).map(|_| device()).collect();
        for (index, device) in devices.iter().enumerate() {
            symlink(&device.path, device_dir.path().join(format!("disk{index}"))).unwrap();
        }
        World {
            server,
            client,
            node: node.to_string(),
            work: tempfile::tempdir().unwrap(),
            device_dir,
            devices,
        }
    }

    fn dir(&self) -> String {
        self.device_dir.path().to_str().unwrap().to_string()
    }

    fn pv_name(&self, entry: &str) -> String {
        format!("local-{}-{entry}", self.node)
    }

    async fn add_node(&self, annotation: Option<&str>) {
        let mut node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node, "labels": {"kubernetes.io/hostname": "host-of-test-node"}},
        });
        if let Some(value) = annotation {
            node["metadata"]["annotations"] = json!({ ANNOTATION: value });
        }
        Api::<Node>::all(self.client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(node).unwrap(),
            )
            .await
            .unwrap();
    }

    async fn annotate(&self, value: &str) {
        Api::<Node>::all(self.client.clone())
            .patch(
                &self.node,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {ANNOTATION: value}}})),
            )
            .await
            .unwrap();
    }

    /// Creates ConfigMap `namespace/name` or replaces its data in one write.
    async fn put_configmap(&self, namespace: &str, name: &str, data: Data) {
        let api = Api::<ConfigMap>::namespaced(self.client.clone(), namespace);
        match api.get_opt(name).await.unwrap() {
            Some(mut configmap) => {
                configmap.data = Some(data);
                api.replace(name, &PostParams::default(), &configmap)
                    .await
                    .unwrap();
            }
            None => {
                let configmap = ConfigMap {
                    metadata: kube::api::ObjectMeta {
                        name: Some(name.into()),
                        namespace: Some(namespace.into()),
                        ..Default::default()
                    },
                    data: Some(data),
                    ..Default::default()
                };
                api.create(&PostParams::default(), &configmap)
                    .await
                    .unwrap();
            }
        }
    }

    /// A valid Block spec over this world's directory.
    fn good_spec(&self) -> Data {
        data(&[
            ("deviceDir", &self.dir()),
            ("deviceNameFilter", "^disk"),
            ("volumeMode", "Block"),
        ])
    }

    fn start(&self, env: Vec<(&'static str, String)>) -> ProvisionerProcess {
        ProvisionerProcess::start(ProvisionerOptions {
            kubeconfig: &self.server.write_kubeconfig(self.work.path()),
            node: &self.node,
            namespace: NAMESPACE,
            env,
            log_dir: self.work.path(),
        })
    }

    async fn pvs(&self) -> Vec<PersistentVolume> {
        Api::<PersistentVolume>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
    }

    async fn pv(&self, name: &str) -> Option<PersistentVolume> {
        Api::<PersistentVolume>::all(self.client.clone())
            .get_opt(name)
            .await
            .unwrap()
    }

    async fn events(&self) -> Vec<Event> {
        Api::<Event>::namespaced(self.client.clone(), "default")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
    }

    async fn event(&self, reason: &str) -> Option<Event> {
        self.events()
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some(reason))
    }

    async fn wait_event(&self, reason: &str) -> Event {
        eventually(&format!("{}: an Event {reason}", self.node), WAIT, || {
            self.event(reason)
        })
        .await
    }

    /// Requests of `verb` on PVs (optionally one PV by name).
    fn pv_requests(&self, verb: &str, name: Option<&str>) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.verb == verb && r.resource == "persistentvolumes")
            .filter(|r| name.is_none_or(|name| r.path.ends_with(&format!("/{name}"))))
            .count()
    }

    /// Waits until the PV of `entry` exists; returns its UID.
    async fn wait_pv(&self, entry: &str) -> String {
        let name = self.pv_name(entry);
        eventually(&format!("PV {name}"), WAIT, || async {
            self.pv(&name).await?.metadata.uid
        })
        .await
    }

    fn metric_name(&self, name: &str) -> String {
        format!("local_pv_provisioner_{name}{{node=\"{}\"}}", self.node)
    }

    async fn wait_metric(&self, process: &ProvisionerProcess, name: &str, value: f64) {
        let sample = self.metric_name(name);
        eventually(&format!("{sample} == {value}"), WAIT, || async {
            (process.metric(&sample).await == Some(value)).then_some(())
        })
        .await;
    }

    fn assert_devices_untouched(&self) {
        for device in &self.devices {
            assert_untouched(device);
        }
    }
}

/// What a spec row expects while its input is bad.
struct Pause {
    /// Event reason on the Node.
    reason: &'static str,
    /// Fragments of the Event note (clear: names the key and value).
    says: Vec<String>,
    /// `pv_spec_errors` while paused.
    spec_errors: f64,
}

/// The fix that ends a spec row.
enum Fix {
    ConfigMap(Data),
    Annotation(&'static str),
}

/// Starts the provisioner on a world whose input is bad, checks the Event,
/// the metric, that no PV was created and the device is untouched; then
/// applies the fix and waits for the PV (the setup was live all along).
/// Returns the world, the Event, and the log written while paused.
async fn paused_then_fixed(world: World, pause: Pause, fix: Fix) -> (World, Event, String) {
    let process = world.start(vec![]);
    let event = world.wait_event(pause.reason).await;
    let note = event.note.clone().unwrap_or_default();
    for fragment in &pause.says {
        assert!(
            note.contains(fragment.as_str()),
            "note lacks {fragment:?}: {note}"
        );
    }
    assert_eq!(
        event.regarding.as_ref().unwrap().name.as_deref(),
        Some(world.node.as_str())
    );
    world
        .wait_metric(&process, "pv_spec_errors", pause.spec_errors)
        .await;
    world.wait_metric(&process, "available_devices", 0.0).await;
    assert_eq!(world.pv_requests("create", None), 0, "no PV created");
    assert!(world.pvs().await.is_empty());
    world.assert_devices_untouched();
    let log = process.log();

    match fix {
        Fix::ConfigMap(data) => world.put_configmap(NAMESPACE, "spec", data).await,
        Fix::Annotation(value) => world.annotate(value).await,
    }
    world.wait_pv("disk0").await;
    world.wait_metric(&process, "pv_spec_errors", 0.0).await;
    world.assert_devices_untouched();
    drop(process);
    (world, event, log)
}

/// A row whose ConfigMap `spec` holds `bad(dir)`; the fix is a good spec.
async fn bad_configmap(
    node: &'static str,
    bad: fn(String) -> Data,
    says: Vec<String>,
) -> (World, Event) {
    let world = World::new(node, 1).await;
    world
        .put_configmap(NAMESPACE, "spec", bad(world.dir()))
        .await;
    world.add_node(Some("spec")).await;
    let fix = Fix::ConfigMap(world.good_spec());
    let (world, event, _) = paused_then_fixed(
        world,
        Pause {
            reason: "PVSpecInvalid",
            says,
            spec_errors: 1.0,
        },
        fix,
    )
    .await;
    (world, event)
}

fn spec_with(dir: &str, key: &str, value: &str) -> Data {
    let mut map = data(&[
        ("deviceDir", dir),
        ("deviceNameFilter", "^disk"),
        ("volumeMode", "Block"),
    ]);
    map.insert(key.into(), value.into());
    map
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn configmap_and_annotation_table() {
    let rows: Vec<Row<RowFuture>> = vec![
        row(
            "ConfigMap deviceNameFilter sd[a-",
            "PVSpecInvalid naming the key and value, pv_spec_errors 1, no PV; fixed → PV",
            boxed(async {
                bad_configmap(
                    "node-regex",
                    |dir| spec_with(&dir, "deviceNameFilter", "sd[a-"),
                    strings(&[
                        "\"deviceNameFilter\"",
                        "\"sd[a-\"",
                        "not a valid regular expression",
                        "no PV is created",
                    ]),
                )
                .await;
            }),
        ),
        row(
            "ConfigMap deviceNameFilter (a{1000}){1000}",
            "PVSpecInvalid \"too complex\", no PV; fixed → PV",
            boxed(async {
                bad_configmap(
                    "node-complex",
                    |dir| spec_with(&dir, "deviceNameFilter", "(a{1000}){1000}"),
                    strings(&["\"deviceNameFilter\"", "too complex"]),
                )
                .await;
            }),
        ),
        row(
            "ConfigMap deviceDir DIR/../DIR-NAME (would resolve to the real directory)",
            "PVSpecInvalid naming \"..\", no PV; fixed → PV",
            boxed(async {
                bad_configmap(
                    "node-dotdot",
                    |dir| {
                        let path = Path::new(&dir);
                        let sneaky =
                            format!("{}/../{}", dir, path.file_name().unwrap().to_str().unwrap());
                        spec_with(&dir, "deviceDir", &sneaky)
                    },
                    strings(&["\"deviceDir\"", "must not contain \"..\""]),
                )
                .await;
            }),
        ),
        row(
            "ConfigMap deviceDir relative (the directory's name only)",
            "PVSpecInvalid \"must be an absolute path\", no PV; fixed → PV",
            boxed(async {
                bad_configmap(
                    "node-relative",
                    |dir| {
                        let name = Path::new(&dir)
                            .file_name()
                            .unwrap()
                            .to_str()
                            .unwrap()
                            .to_string();
                        spec_with(&dir, "deviceDir", &name)
                    },
                    strings(&["\"deviceDir\"", "must be an absolute path"]),
                )
                .await;
            }),
        ),
        row(
            "ConfigMap deviceDir of 512 KiB",
            "PVSpecInvalid \"longer than 4096 bytes\" in a short note, no PV; fixed → PV",
            boxed(async {
                let (_, event) = bad_configmap(
                    "node-huge",
                    |dir| spec_with(&dir, "deviceDir", &format!("/{}", "d".repeat(512 * 1024))),
                    strings(&["\"deviceDir\"", "longer than 4096 bytes", "(524289 bytes)"]),
                )
                .await;
                assert!(event.note.unwrap().len() <= 1000);
            }),
        ),
        row(
            "ConfigMap with volumeMode only (deviceDir, deviceNameFilter missing)",
            "PVSpecInvalid \"key \\\"deviceDir\\\" is missing\", no PV; fixed → PV",
            boxed(async {
                bad_configmap(
                    "node-missing",
                    |_| data(&[("volumeMode", "Block")]),
                    strings(&["key \"deviceDir\" is missing"]),
                )
                .await;
            }),
        ),
        row(
            "ConfigMap Block with fsType ext4",
            "PVSpecInvalid naming fsType, no PV; fixed → PV",
            boxed(async {
                bad_configmap(
                    "node-fstype",
                    |dir| spec_with(&dir, "fsType", "ext4"),
                    strings(&[
                        "\"fsType\"",
                        "\"ext4\"",
                        "must not be set when volumeMode is \"Block\"",
                    ]),
                )
                .await;
            }),
        ),
        row(
            "ConfigMap wipeBytes 1000",
            "PVSpecInvalid \"positive multiple of 4096\", no PV; fixed → PV",
            boxed(async {
                bad_configmap(
                    "node-wipebytes",
                    |dir| spec_with(&dir, "wipeBytes", "1000"),
                    strings(&["\"wipeBytes\"", "\"1000\"", "positive multiple of 4096"]),
                )
                .await;
            }),
        ),
        row(
            "ConfigMap volumeMode of 100000 DEL characters",
            "PVSpecInvalid whose note keeps the reason (BUG-2: the escaped value fills the note and the reason is cut)",
            boxed(async {
                let (_, event) = bad_configmap(
                    "node-escapes",
                    |dir| spec_with(&dir, "volumeMode", &"\u{7f}".repeat(100_000)),
                    strings(&["\"volumeMode\""]),
                )
                .await;
                let note = event.note.unwrap();
                assert!(note.len() <= 1000);
                fixed_bug(
                    "BUG-2",
                    note.contains("must be \"Filesystem\" or \"Block\""),
                    "the PVSpecInvalid note for a value full of control characters loses the reason",
                );
            }),
        ),
        row(
            "ConfigMap with an unknown key futureKey",
            "documented choice: PVSpecApplied mentions \"ignored unknown keys: futureKey\", the PV is created",
            boxed(async {
                let world = World::new("node-unknown", 1).await;
                let mut spec = world.good_spec();
                spec.insert("futureKey".into(), "x".repeat(64 * 1024));
                world.put_configmap(NAMESPACE, "spec", spec).await;
                world.add_node(Some("spec")).await;
                let process = world.start(vec![]);
                world.wait_pv("disk0").await;
                let note = world.wait_event("PVSpecApplied").await.note.unwrap();
                assert!(note.contains("ignored unknown keys: futureKey"), "{note}");
                world.wait_metric(&process, "pv_spec_errors", 0.0).await;
                assert!(process.log().contains("futureKey"), "logged");
                world.assert_devices_untouched();
            }),
        ),
        row(
            "annotation \"\" (empty value)",
            "documented choice: treated as absent → PVSpecNotConfigured, pv_spec_errors 0, no PV; fixed → PV",
            boxed(async {
                let world = World::new("node-empty-annotation", 1).await;
                world
                    .put_configmap(NAMESPACE, "spec", world.good_spec())
                    .await;
                world.add_node(Some("")).await;
                paused_then_fixed(
                    world,
                    Pause {
                        reason: "PVSpecNotConfigured",
                        says: strings(&["no PV spec ConfigMap"]),
                        spec_errors: 0.0,
                    },
                    Fix::Annotation("spec"),
                )
                .await;
            }),
        ),
        row(
            "annotation naming a missing ConfigMap",
            "PVSpecNotFound naming it, pv_spec_errors 1, no PV; fixed → PV",
            boxed(async {
                let world = World::new("node-missing-cm", 1).await;
                world
                    .put_configmap(NAMESPACE, "spec", world.good_spec())
                    .await;
                world.add_node(Some("no-such-spec")).await;
                paused_then_fixed(
                    world,
                    Pause {
                        reason: "PVSpecNotFound",
                        says: strings(&["\"no-such-spec\" is not found"]),
                        spec_errors: 1.0,
                    },
                    Fix::Annotation("spec"),
                )
                .await;
            }),
        ),
        row(
            "annotation naming a ConfigMap that exists only in kube-system",
            "PVSpecNotFound (only --namespace-name is read), no PV; fixed → PV",
            boxed(async {
                let world = World::new("node-other-ns", 1).await;
                world
                    .put_configmap("kube-system", "elsewhere", world.good_spec())
                    .await;
                world
                    .put_configmap(NAMESPACE, "spec", world.good_spec())
                    .await;
                world.add_node(Some("elsewhere")).await;
                paused_then_fixed(
                    world,
                    Pause {
                        reason: "PVSpecNotFound",
                        says: strings(&["\"elsewhere\" is not found"]),
                        spec_errors: 1.0,
                    },
                    Fix::Annotation("spec"),
                )
                .await;
            }),
        ),
        row(
            "annotation kube-system/spec (namespace-qualified)",
            "PVSpecInvalid (the value is a name, never a namespace/name), no PV; fixed → PV",
            boxed(async {
                let world = World::new("node-qualified", 1).await;
                world
                    .put_configmap("kube-system", "spec", world.good_spec())
                    .await;
                world
                    .put_configmap(NAMESPACE, "spec", world.good_spec())
                    .await;
                world.add_node(Some("kube-system/spec")).await;
                paused_then_fixed(
                    world,
                    Pause {
                        reason: "PVSpecInvalid",
                        says: strings(&["\"kube-system/spec\"", "not a valid ConfigMap name"]),
                        spec_errors: 1.0,
                    },
                    Fix::Annotation("spec"),
                )
                .await;
            }),
        ),
        row(
            "annotation spec,other (not an object name; would break the field selector)",
            "PVSpecInvalid with pv_spec_errors 1 (BUG-3), no ConfigMap request at all; no PV; fixed → PV",
            boxed(annotation_breaking_the_field_selector()),
        ),
        row(
            "deviceDir DIR followed by a newline (a YAML `|` block scalar)",
            "PVSpecInvalid naming the white space (UNCLEAR-1), pv_spec_errors 1, no PV; fixed → PV",
            boxed(async {
                let world = World::new("node-newline-dir", 1).await;
                let typo = format!("{}\n", world.dir());
                world
                    .put_configmap(
                        NAMESPACE,
                        "spec",
                        spec_with(&world.dir(), "deviceDir", &typo),
                    )
                    .await;
                world.add_node(Some("spec")).await;
                let fix = Fix::ConfigMap(world.good_spec());
                paused_then_fixed(
                    world,
                    Pause {
                        reason: "PVSpecInvalid",
                        says: strings(&["\"deviceDir\"", "white space"]),
                        spec_errors: 1.0,
                    },
                    fix,
                )
                .await;
            }),
        ),
        row(
            "deviceDir that does not exist",
            "documented choice (the disks may not be there yet): no devices, PVSpecApplied saying deviceDir does not exist, a warning in the log (UNCLEAR-1), pv_spec_errors 0, no PV; fixed → PV",
            boxed(async {
                let world = World::new("node-no-dir", 1).await;
                let missing = format!("{}/not-there", world.dir());
                world
                    .put_configmap(
                        NAMESPACE,
                        "spec",
                        spec_with(&world.dir(), "deviceDir", &missing),
                    )
                    .await;
                world.add_node(Some("spec")).await;
                let fix = Fix::ConfigMap(world.good_spec());
                let (_, _, log) = paused_then_fixed(
                    world,
                    Pause {
                        reason: "PVSpecApplied",
                        says: strings(&["not-there", "deviceDir does not exist yet"]),
                        spec_errors: 0.0,
                    },
                    fix,
                )
                .await;
                assert_warns_about_missing_dir(&log);
            }),
        ),
        row(
            "deviceDir that is a regular file",
            "DeviceDirUnreadable naming the directory, pv_spec_errors 1, no PV; fixed → PV",
            boxed(async {
                let world = World::new("node-dir-file", 1).await;
                let file = world.device_dir.path().join("plain-file");
                fs::write(&file, b"x").unwrap();
                world
                    .put_configmap(
                        NAMESPACE,
                        "spec",
                        spec_with(&world.dir(), "deviceDir", file.to_str().unwrap()),
                    )
                    .await;
                world.add_node(Some("spec")).await;
                let fix = Fix::ConfigMap(world.good_spec());
                paused_then_fixed(
                    world,
                    Pause {
                        reason: "DeviceDirUnreadable",
                        says: strings(&["cannot read deviceDir", "plain-file", "Not a directory"]),
                        spec_errors: 1.0,
                    },
                    fix,
                )
                .await;
            }),
        ),
        row(
            "deviceDir that is a symlink loop",
            "DeviceDirUnreadable (too many levels of symbolic links), pv_spec_errors 1, no PV; fixed → PV",
            boxed(async {
                let world = World::new("node-dir-loop", 1).await;
                let looped = world.work.path().join("loop");
                symlink(&looped, &looped).unwrap();
                world
                    .put_configmap(
                        NAMESPACE,
                        "spec",
                        spec_with(&world.dir(), "deviceDir", looped.to_str().unwrap()),
                    )
                    .await;
                world.add_node(Some("spec")).await;
                let fix = Fix::ConfigMap(world.good_spec());
                paused_then_fixed(
                    world,
                    Pause {
                        reason: "DeviceDirUnreadable",
                        says: strings(&["symbolic links"]),
                        spec_errors: 1.0,
                    },
                    fix,
                )
                .await;
            }),
        ),
    ];
    run_async_rows("ConfigMaps and annotations (the binary)", rows).await;
}

/// UNCLEAR-1: a `deviceDir` that does not exist is a warning in the log,
/// not only a debug line.
fn assert_warns_about_missing_dir(log: &str) {
    let warned = log
        .lines()
        .any(|line| line.contains("does not exist") && line.contains("WARN"));
    fixed_bug(
        "UNCLEAR-1",
        warned,
        &format!("no warning about the missing deviceDir:\n{log}"),
    );
}

/// BUG-3: an annotation value that is not a valid object name (here with a
/// comma) would make the ConfigMap watch's field selector invalid; it is
/// refused before any request, and reported.
async fn annotation_breaking_the_field_selector() {
    let world = World::new("node-comma", 1).await;
    world
        .put_configmap(NAMESPACE, "spec", world.good_spec())
        .await;
    world.add_node(Some("spec,other")).await;
    let process = world.start(vec![]);
    world.wait_metric(&process, "pv_spec_errors", 1.0).await;
    let configmap_requests = world
        .server
        .requests()
        .iter()
        .filter(|r| r.resource == "configmaps" && (r.verb == "list" || r.verb == "watch"))
        .count();
    assert_eq!(
        configmap_requests, 0,
        "no ConfigMap watch with a broken selector"
    );
    let reported = world.event("PVSpecNotFound").await.is_some()
        || world.event("PVSpecInvalid").await.is_some();
    let metric = process.metric(&world.metric_name("pv_spec_errors")).await;
    let ready = process.is_ready().await;
    fixed_bug(
        "BUG-3",
        reported && metric == Some(1.0),
        &format!(
            "annotation \"spec,other\": no PVSpecNotFound/PVSpecInvalid Event (reported: {reported}), pv_spec_errors {metric:?}, /readyz ready: {ready}"
        ),
    );
    assert_eq!(world.pv_requests("create", None), 0, "no PV created");
    world.assert_devices_untouched();
    world.annotate("spec").await;
    world.wait_pv("disk0").await;
    world.assert_devices_untouched();
}

// ---------------------------------------------------------------------------
// API objects through the binary
// ---------------------------------------------------------------------------

/// A world with `count` devices, a good spec, the node annotated, the
/// provisioner started with short sweeps, and every device's PV waited for
/// unless `wait_pvs` is false.
async fn running(node: &str, count: usize, wait_pvs: bool) -> (World, ProvisionerProcess) {
    let world = World::new(node, count).await;
    world
        .put_configmap(NAMESPACE, "spec", world.good_spec())
        .await;
    world.add_node(Some("spec")).await;
    let process = world.start(vec![("LP_CLEANUP_INTERVAL", "1s".into())]);
    if wait_pvs {
        for index in 0..count {
            world.wait_pv(&format!("disk{index}")).await;
        }
    }
    (world, process)
}

/// Waits for a PV-regarding Event `reason` about `pv`.
async fn wait_pv_event(world: &World, reason: &str, pv: &str) -> Event {
    eventually(&format!("{reason} on {pv}"), WAIT, || async {
        world.events().await.into_iter().find(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pv)
        })
    })
    .await
}

/// Releases `disk1`'s PV and waits until it is wiped and recreated: proof
/// that this world's cleanup works and has swept every PV meanwhile.
async fn control_wipe(world: &World) {
    let name = world.pv_name("disk1");
    let uid = world.pv(&name).await.unwrap().metadata.uid.unwrap();
    world.server.set_pv_phase(&name, "Released");
    wait_pv_event(world, "VolumeWiped", &name).await;
    eventually("the control PV recreated", WAIT, || async {
        let pv = world.pv(&name).await?;
        (pv.metadata.uid.as_deref() != Some(uid.as_str())).then_some(())
    })
    .await;
    let wiped = world.devices[1].read(0, DEVICE_BYTES as usize);
    assert!(
        wiped.iter().all(|b| *b == 0),
        "the control device is zeroed"
    );
}

fn assert_device_untouched(world: &World, index: usize) {
    assert_untouched(&world.devices[index]);
}

async fn assert_kept(world: &World, name: &str, uid: &str) {
    let pv = world.pv(name).await.expect("the PV is kept");
    assert_eq!(pv.metadata.uid.as_deref(), Some(uid), "the same PV");
    assert!(
        pv.metadata.deletion_timestamp.is_none(),
        "not being deleted"
    );
    assert_eq!(world.pv_requests("delete", Some(name)), 0, "never deleted");
}

/// A PV object for `world`'s `disk0`, as the controller would record it,
/// with `node_name` as the recorded node and `labels`.
fn foreign_or_edited_pv(world: &World, name: &str, labels: Value, node_name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                pv::DEVICE_DIR_ANNOTATION: world.dir(),
                pv::DEVICE_NUMBER_ANNOTATION: world.devices[0].number(),
                pv::DEVICE_SIZE_ANNOTATION: DEVICE_BYTES.to_string(),
                pv::NODE_NAME_ANNOTATION: node_name,
            },
        },
        "spec": {
            "capacity": {"storage": DEVICE_BYTES.to_string()},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "local-storage",
            "volumeMode": "Block",
            "local": {"path": format!("{}/disk0", world.dir())},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{
                "key": "kubernetes.io/hostname", "operator": "In", "values": ["host-of-test-node"],
            }]}]}},
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_object_table() {
    let rows: Vec<Row<RowFuture>> = vec![
        row(
            "our PV's spec.local.path edited to a link outside deviceDir (same device), then Released",
            "WipeRefused naming PathInsideDeviceDir, wipe_failures_total{reason=PathInsideDeviceDir}, PV kept, device untouched, no second PV",
            boxed(async {
                let (world, process) = running("node-edited", 1, true).await;
                let name = world.pv_name("disk0");
                let uid = world.pv(&name).await.unwrap().metadata.uid.unwrap();
                let elsewhere = world.work.path().join("elsewhere");
                fs::create_dir(&elsewhere).unwrap();
                symlink(&world.devices[0].path, elsewhere.join("disk0")).unwrap();
                Api::<PersistentVolume>::all(world.client.clone())
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(
                            json!({"spec": {"local": {"path": elsewhere.join("disk0")}}}),
                        ),
                    )
                    .await
                    .unwrap();
                world.server.set_pv_phase(&name, "Released");
                let note = wait_pv_event(&world, "WipeRefused", &name)
                    .await
                    .note
                    .unwrap();
                assert!(
                    note.contains("PathInsideDeviceDir") && note.contains("is kept"),
                    "{note}"
                );
                let sample = format!(
                    "local_pv_provisioner_wipe_failures_total{{node=\"{}\",reason=\"PathInsideDeviceDir\"}}",
                    world.node
                );
                eventually(&sample, WAIT, || async {
                    (process.metric(&sample).await >= Some(1.0)).then_some(())
                })
                .await;
                assert_kept(&world, &name, &uid).await;
                assert_eq!(
                    world.pv_requests("create", None),
                    1,
                    "the device is still covered: no second PV"
                );
                assert_device_untouched(&world, 0);
            }),
        ),
        row(
            "our PV with a claimRef and phase Bound, while sweeps run every second",
            "never wiped: PV kept Bound, device untouched (a Released control PV in the same run is wiped)",
            boxed(async {
                let (world, _process) = running("node-bound", 2, true).await;
                let name = world.pv_name("disk0");
                let uid = world.pv(&name).await.unwrap().metadata.uid.unwrap();
                world.server.bind_pv(&name, "default", "claim-a");
                control_wipe(&world).await;
                assert_kept(&world, &name, &uid).await;
                let pv = world.pv(&name).await.unwrap();
                assert_eq!(pv.status.unwrap().phase.as_deref(), Some("Bound"));
                assert_eq!(
                    pv.spec.unwrap().claim_ref.unwrap().name.as_deref(),
                    Some("claim-a")
                );
                assert_device_untouched(&world, 0);
            }),
        ),
        row(
            "a foreign PV (no node label) holding our name local-NODE-disk0 for our device; later Released",
            "no overwrite: DeviceSkipped naming disk0 and the taken name, error_devices 1, available_devices 1 (BUG-5: 2); foreign PV never written or wiped",
            boxed(async {
                let world = World::new("node-foreign", 2).await;
                let name = world.pv_name("disk0");
                world.server.create_object(
                    "persistentvolumes",
                    foreign_or_edited_pv(
                        &world,
                        &name,
                        json!({"owner": "someone-else"}),
                        "someone-else",
                    ),
                );
                world
                    .put_configmap(NAMESPACE, "spec", world.good_spec())
                    .await;
                world.add_node(Some("spec")).await;
                let process = world.start(vec![("LP_CLEANUP_INTERVAL", "1s".into())]);
                world.wait_pv("disk1").await;
                let note = world.wait_event("DeviceSkipped").await.note.unwrap();
                assert!(
                    note.contains("disk0") && note.contains(&name) && note.contains("does not own"),
                    "{note}"
                );
                world.wait_metric(&process, "error_devices", 1.0).await;
                let available = process
                    .metric(&world.metric_name("available_devices"))
                    .await;
                fixed_bug(
                    "BUG-5",
                    available == Some(1.0),
                    &format!(
                        "a device whose PV name is taken by a foreign PV is counted in error_devices and in available_devices ({available:?})"
                    ),
                );
                world.server.set_pv_phase(&name, "Released");
                let before = world.pv(&name).await.unwrap();
                control_wipe(&world).await;
                let after = world.pv(&name).await.unwrap();
                assert_eq!(after.metadata.uid, before.metadata.uid);
                assert_eq!(
                    after.metadata.resource_version, before.metadata.resource_version,
                    "never written"
                );
                assert_eq!(after.metadata.labels, before.metadata.labels);
                for verb in ["update", "patch", "delete"] {
                    assert_eq!(
                        world.pv_requests(verb, Some(&name)),
                        0,
                        "{verb} on the foreign PV"
                    );
                }
                assert_device_untouched(&world, 0);
            }),
        ),
        row(
            "a PV labelled for this node but recording another node's name (node-name annotation), Released",
            "WipeRefused naming OwnedByThisNode, PV kept, device untouched, no PV of ours created for the device",
            boxed(async {
                let world = World::new("node-impostor", 1).await;
                let name = "local-other-node-disk0";
                world.server.create_object(
                    "persistentvolumes",
                    foreign_or_edited_pv(
                        &world,
                        name,
                        json!({pv::NODE_LABEL: node_label_value("node-impostor")}),
                        "other-node",
                    ),
                );
                let uid = world.pv(name).await.unwrap().metadata.uid.unwrap();
                world
                    .put_configmap(NAMESPACE, "spec", world.good_spec())
                    .await;
                world.add_node(Some("spec")).await;
                let process = world.start(vec![("LP_CLEANUP_INTERVAL", "1s".into())]);
                world.wait_metric(&process, "available_devices", 1.0).await;
                world.server.set_pv_phase(name, "Released");
                let note = wait_pv_event(&world, "WipeRefused", name)
                    .await
                    .note
                    .unwrap();
                assert!(
                    note.contains("OwnedByThisNode") && note.contains("other-node"),
                    "{note}"
                );
                let sample = format!(
                    "local_pv_provisioner_wipe_failures_total{{node=\"{}\",reason=\"OwnedByThisNode\"}}",
                    world.node
                );
                eventually(&sample, WAIT, || async {
                    (process.metric(&sample).await >= Some(1.0)).then_some(())
                })
                .await;
                assert_kept(&world, name, &uid).await;
                assert_eq!(world.pv_requests("create", None), 0);
                assert_device_untouched(&world, 0);
            }),
        ),
    ];
    let mut rows = rows;
    rows.push(row(
        "device entries A_B, a:b, a-b (one plain name local-NODE-a-b), then a restart",
        "three PVs with distinct hashed names, the collision logged; after a restart the same three PVs, none added",
        boxed(colliding_entries_through_the_binary()),
    ));
    run_async_rows("API objects (the binary)", rows).await;
}

async fn colliding_entries_through_the_binary() {
    let mut world = World::new("node-collide", 0).await;
    for name in ["A_B", "a:b", "a-b"] {
        let disk = device();
        symlink(&disk.path, world.device_dir.path().join(name)).unwrap();
        world.devices.push(disk);
    }
    let spec = data(&[
        ("deviceDir", &world.dir()),
        ("deviceNameFilter", "^[Aa].[Bb]$"),
        ("volumeMode", "Block"),
    ]);
    world.put_configmap(NAMESPACE, "spec", spec).await;
    world.add_node(Some("spec")).await;
    let mut process = world.start(vec![]);
    world.wait_metric(&process, "pvs_created_total", 3.0).await;
    let mut names: Vec<String> = world
        .pvs()
        .await
        .into_iter()
        .filter_map(|pv| pv.metadata.name)
        .collect();
    names.sort();
    let mut expected: Vec<String> = ["A_B", "a:b", "a-b"]
        .iter()
        .map(|entry| hashed_pv_name("node-collide", entry))
        .collect();
    expected.sort();
    assert_eq!(names, expected, "each entry its own hashed name");
    assert!(!names.contains(&"local-node-collide-a-b".to_string()));
    let log = process.log();
    assert!(
        log.lines()
            .any(|line| line.contains("WARN") && line.contains("collide")),
        "the collision is logged as a warning"
    );
    assert_eq!(
        process.stop_with(nix::sys::signal::Signal::SIGTERM).code(),
        Some(0)
    );
    let process = world.start(vec![]);
    world.wait_metric(&process, "available_devices", 3.0).await;
    let mut after: Vec<String> = world
        .pvs()
        .await
        .into_iter()
        .filter_map(|pv| pv.metadata.name)
        .collect();
    after.sort();
    assert_eq!(after, names, "the same PVs after the restart");
    assert_eq!(world.pv_requests("create", None), 3);
    world.assert_devices_untouched();
}

// ---------------------------------------------------------------------------
// Node names through the binary
// ---------------------------------------------------------------------------

/// A valid node name (DNS subdomain) of exactly `length` characters.
fn node_name_of(length: usize) -> String {
    let mut name = String::from("node");
    let mut part = 0;
    while name.len() < length {
        part += 1;
        let label = format!(".rack-{part:02}-{}", "x".repeat(40));
        name.push_str(&label);
    }
    name.truncate(length);
    while !name.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        name.pop();
        name.push('z');
    }
    assert_eq!(name.len(), length);
    assert!(is_dns1123_subdomain(&name), "{name}");
    name
}

/// Starts, waits for the PV, restarts, and checks no duplicate appears.
async fn long_node_name(length: usize) -> World {
    let node = node_name_of(length);
    let world = World::new(&node, 1).await;
    world
        .put_configmap(NAMESPACE, "spec", world.good_spec())
        .await;
    world.add_node(Some("spec")).await;
    let mut process = world.start(vec![]);
    world.wait_metric(&process, "pvs_created_total", 1.0).await;
    let pvs = world.pvs().await;
    assert_eq!(pvs.len(), 1);
    let pv = &pvs[0];
    let name = pv.metadata.name.clone().unwrap();
    assert!(is_dns1123_subdomain(&name), "{name}");
    let label = &pv.metadata.labels.as_ref().unwrap()[pv::NODE_LABEL];
    assert!(is_label_value(label), "{label}");
    assert_ne!(label, &node, "the label is hashed");
    assert_eq!(label, &node_label_value(&node));
    assert_eq!(
        pv.metadata.annotations.as_ref().unwrap()[pv::NODE_NAME_ANNOTATION],
        node
    );
    let uid = pv.metadata.uid.clone();

    assert_eq!(
        process.stop_with(nix::sys::signal::Signal::SIGTERM).code(),
        Some(0)
    );
    let process = world.start(vec![]);
    world.wait_metric(&process, "available_devices", 1.0).await;
    eventually("ready after the restart", WAIT, || async {
        process.is_ready().await.then_some(())
    })
    .await;
    let after = world.pvs().await;
    assert_eq!(after.len(), 1, "no duplicate after the restart");
    assert_eq!(after[0].metadata.uid, uid, "the same PV");
    assert_eq!(world.pv_requests("create", None), 1);
    assert_eq!(
        process
            .metric(&world.metric_name("pvs_created_total"))
            .await,
        Some(0.0)
    );
    world.assert_devices_untouched();
    world
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_name_table() {
    let rows: Vec<Row<RowFuture>> = vec![
        row(
            "node name of 64 characters (a valid name, not a valid label value)",
            "PV named local-NODE-disk0, label hashed to a valid value, Events published; restart → same PV, no duplicate",
            boxed(async {
                let world = long_node_name(64).await;
                let names: Vec<String> = world
                    .pvs()
                    .await
                    .into_iter()
                    .filter_map(|pv| pv.metadata.name)
                    .collect();
                assert_eq!(names, vec![world.pv_name("disk0")]);
                world.wait_event("PVSpecApplied").await;
                wait_pv_event(&world, "Provisioned", &world.pv_name("disk0")).await;
            }),
        ),
        row(
            "node name of 253 characters",
            "PV with a valid hashed name, label hashed; restart → same PV, no duplicate; Events should be published (BUG-4: refused, name over 253)",
            boxed(async {
                let world = long_node_name(253).await;
                let pv_name = world.pvs().await[0].metadata.name.clone().unwrap();
                assert_eq!(pv_name, hashed_pv_name(&world.node, "disk0"));
                // Either the Event arrives or the publisher counts a failure.
                let sample = "local_pv_provisioner_api_errors_total";
                let process = world.start(vec![]);
                eventually("an Event or a failed Event", WAIT, || async {
                    if world.event("PVSpecApplied").await.is_some() {
                        return Some(());
                    }
                    let (_, body) = process.get("/metrics").await?;
                    body.lines()
                        .any(|line| line.starts_with(sample) && line.contains("create_event"))
                        .then_some(())
                })
                .await;
                let refused = world
                    .server
                    .requests()
                    .iter()
                    .filter(|r| r.resource == "events" && r.verb == "create" && r.status == 422)
                    .count();
                fixed_bug(
                    "BUG-4",
                    world.event("PVSpecApplied").await.is_some() && refused == 0,
                    &format!(
                        "node name of 253 characters: {refused} Event creations refused (Event name = regarding name + 17 characters)"
                    ),
                );
                world.assert_devices_untouched();
            }),
        ),
    ];
    run_async_rows("node names (the binary)", rows).await;
}
