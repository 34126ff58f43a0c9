//! Table 4: ConfigMaps and annotations as a user gets them wrong, through
//! the real binary against the fake API server. Each row sets up one bad
//! input on a device holding data and expects the Event, the metric, no PV
//! and the device untouched while it is bad; then the device is cleared (a
//! device holding data is never offered) and the input fixed, and the PV
//! comes (which shows the setup would have produced one all along) and its
//! device, written to by its tenant, is left alone.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;

use crate::catalogue::{RowFuture, fixed_bug, run_async_rows};
use crate::fixture::RowWorld;
use crate::support::provisioner::ProvisionerProcess;
use crate::support::world::data;

/// A value a row puts in its ConfigMap, maybe built from its directory.
enum Value {
    /// The text.
    Text(&'static str),
    /// `.0` followed by `.1` repeated `.2` times.
    Repeat(&'static str, &'static str, usize),
    /// `DIR/../<DIR's name>`: resolves to the real directory.
    DirThroughParent,
    /// The directory's name only (a relative path).
    DirName,
    /// The directory followed by the text.
    DirWith(&'static str),
    /// A regular file made inside the directory, by that name.
    FileInDir(&'static str),
    /// A symlink loop made in the world's work directory, by that name.
    LinkLoop(&'static str),
}

/// A row's bad input.
enum Input {
    /// ConfigMap `spec` holds the good spec with the key set to the value.
    Key(&'static str, Value),
    /// ConfigMap `spec` holds exactly these keys.
    Keys(&'static [(&'static str, &'static str)]),
    /// The Node's annotation is the text; the good spec exists as these
    /// ConfigMaps (`namespace`, `name`; `""`: the world's namespace).
    Annotation(&'static str, &'static [(&'static str, &'static str)]),
}

/// A check a row adds to the common ones.
enum Extra {
    /// None.
    Nothing,
    /// The Event note fits its 1000 bytes.
    NoteFits,
    /// BUG-2: the note keeps the reason.
    NoteKeepsReason,
    /// UNCLEAR-1: the log warns about the missing deviceDir.
    WarnsMissingDir,
}

/// How a row runs.
enum Case {
    /// Bad input: Event `.1` saying all of `.2`, `pv_spec_errors` `.3`, no
    /// PV; then fixed.
    Paused(Input, &'static str, &'static [&'static str], f64, Extra),
    /// An unknown key: reported, ignored, the PV created.
    UnknownKey,
    /// An annotation that would break the ConfigMap watch's field selector.
    BrokenSelector,
}

/// One row: name, expected outcome as printed, node, case.
type Row = (&'static str, &'static str, &'static str, Case);

use Case::{BrokenSelector, Paused, UnknownKey};
use Extra::{NoteFits, NoteKeepsReason, Nothing, WarnsMissingDir};
use Input::{Annotation, Key, Keys};
use Value::*;

const SPEC: &[(&str, &str)] = &[("", "spec")];

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    vec![
        ("ConfigMap deviceNameFilter sd[a-", "PVSpecInvalid naming the key and value, pv_spec_errors 1, no PV; fixed → PV", "node-regex",
            Paused(Key("deviceNameFilter", Text("sd[a-")), "PVSpecInvalid",
                &["\"deviceNameFilter\"", "\"sd[a-\"", "not a valid regular expression", "no PV is created"], 1.0, Nothing)),
        ("ConfigMap deviceNameFilter (a{1000}){1000}", "PVSpecInvalid \"too complex\", no PV; fixed → PV", "node-complex",
            Paused(Key("deviceNameFilter", Text("(a{1000}){1000}")), "PVSpecInvalid", &["\"deviceNameFilter\"", "too complex"], 1.0, Nothing)),
        ("ConfigMap deviceDir DIR/../DIR-NAME (would resolve to the real directory)", "PVSpecInvalid naming \"..\", no PV; fixed → PV", "node-dotdot",
            Paused(Key("deviceDir", DirThroughParent), "PVSpecInvalid", &["\"deviceDir\"", "must not contain \"..\""], 1.0, Nothing)),
        ("ConfigMap deviceDir relative (the directory's name only)", "PVSpecInvalid \"must be an absolute path\", no PV; fixed → PV", "node-relative",
            Paused(Key("deviceDir", DirName), "PVSpecInvalid", &["\"deviceDir\"", "must be an absolute path"], 1.0, Nothing)),
        ("ConfigMap deviceDir of 512 KiB", "PVSpecInvalid \"longer than 4096 bytes\" in a short note, no PV; fixed → PV", "node-huge",
            Paused(Key("deviceDir", Repeat("/", "d", 512 * 1024)), "PVSpecInvalid",
                &["\"deviceDir\"", "longer than 4096 bytes", "(524289 bytes)"], 1.0, NoteFits)),
        ("ConfigMap with volumeMode only (deviceDir, deviceNameFilter missing)", "PVSpecInvalid \"key \\\"deviceDir\\\" is missing\", no PV; fixed → PV",
            "node-missing", Paused(Keys(&[("volumeMode", "Block")]), "PVSpecInvalid", &["key \"deviceDir\" is missing"], 1.0, Nothing)),
        ("ConfigMap Block with fsType ext4", "PVSpecInvalid naming fsType, no PV; fixed → PV", "node-fstype",
            Paused(Key("fsType", Text("ext4")), "PVSpecInvalid",
                &["\"fsType\"", "\"ext4\"", "must not be set when volumeMode is \"Block\""], 1.0, Nothing)),
        ("ConfigMap wipeBytes 1000", "PVSpecInvalid \"positive multiple of 4096\", no PV; fixed → PV", "node-wipebytes",
            Paused(Key("wipeBytes", Text("1000")), "PVSpecInvalid", &["\"wipeBytes\"", "\"1000\"", "positive multiple of 4096"], 1.0, Nothing)),
        ("ConfigMap volumeMode of 100000 DEL characters",
            "PVSpecInvalid whose note keeps the reason (BUG-2: the escaped value fills the note and the reason is cut)", "node-escapes",
            Paused(Key("volumeMode", Repeat("", "\u{7f}", 100_000)), "PVSpecInvalid", &["\"volumeMode\""], 1.0, NoteKeepsReason)),
        ("ConfigMap with an unknown key futureKey",
            "documented choice: PVSpecApplied mentions \"ignored unknown keys: futureKey\", the PV is created", "node-unknown", UnknownKey),
        ("annotation \"\" (empty value)", "documented choice: treated as absent → PVSpecNotConfigured, pv_spec_errors 0, no PV; fixed → PV",
            "node-empty-annotation", Paused(Annotation("", SPEC), "PVSpecNotConfigured", &["no PV spec ConfigMap"], 0.0, Nothing)),
        ("annotation naming a missing ConfigMap", "PVSpecNotFound naming it, pv_spec_errors 1, no PV; fixed → PV", "node-missing-cm",
            Paused(Annotation("no-such-spec", SPEC), "PVSpecNotFound", &["\"no-such-spec\" is not found"], 1.0, Nothing)),
        ("annotation naming a ConfigMap that exists only in kube-system", "PVSpecNotFound (only --namespace-name is read), no PV; fixed → PV",
            "node-other-ns", Paused(Annotation("elsewhere", &[("kube-system", "elsewhere"), ("", "spec")]), "PVSpecNotFound",
                &["\"elsewhere\" is not found"], 1.0, Nothing)),
        ("annotation kube-system/spec (namespace-qualified)", "PVSpecInvalid (the value is a name, never a namespace/name), no PV; fixed → PV",
            "node-qualified", Paused(Annotation("kube-system/spec", &[("kube-system", "spec"), ("", "spec")]), "PVSpecInvalid",
                &["\"kube-system/spec\"", "not a valid ConfigMap name"], 1.0, Nothing)),
        ("annotation spec,other (not an object name; would break the field selector)",
            "PVSpecInvalid with pv_spec_errors 1 (BUG-3), no ConfigMap request at all; no PV; fixed → PV", "node-comma", BrokenSelector),
        ("deviceDir DIR followed by a newline (a YAML `|` block scalar)",
            "PVSpecInvalid naming the white space (UNCLEAR-1), pv_spec_errors 1, no PV; fixed → PV", "node-newline-dir",
            Paused(Key("deviceDir", DirWith("\n")), "PVSpecInvalid", &["\"deviceDir\"", "white space"], 1.0, Nothing)),
        ("deviceDir that does not exist",
            "documented choice (the disks may not be there yet): no devices, PVSpecApplied saying deviceDir does not exist, \
             a warning in the log (UNCLEAR-1), pv_spec_errors 0, no PV; fixed → PV", "node-no-dir",
            Paused(Key("deviceDir", DirWith("/not-there")), "PVSpecApplied", &["not-there", "deviceDir does not exist yet"], 0.0, WarnsMissingDir)),
        ("deviceDir that is a regular file", "DeviceDirUnreadable naming the directory, pv_spec_errors 1, no PV; fixed → PV", "node-dir-file",
            Paused(Key("deviceDir", FileInDir("plain-file")), "DeviceDirUnreadable",
                &["cannot read deviceDir", "plain-file", "Not a directory"], 1.0, Nothing)),
        ("deviceDir that is a symlink loop", "DeviceDirUnreadable (too many levels of symbolic links), pv_spec_errors 1, no PV; fixed → PV",
            "node-dir-loop", Paused(Key("deviceDir", LinkLoop("loop")), "DeviceDirUnreadable", &["symbolic links"], 1.0, Nothing)),
    ]
}

/// The text of `value` in `row`'s world.
fn text(row: &RowWorld, value: &Value) -> String {
    let dir = row.world.dir_text();
    match value {
        Text(text) => text.to_string(),
        Repeat(prefix, unit, times) => format!("{prefix}{}", unit.repeat(*times)),
        DirThroughParent => format!(
            "{dir}/../{}",
            Path::new(&dir).file_name().unwrap().to_str().unwrap()
        ),
        DirName => Path::new(&dir)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string(),
        DirWith(suffix) => format!("{dir}{suffix}"),
        FileInDir(name) => {
            let file = row.world.dir().join(name);
            std::fs::write(&file, b"x").unwrap();
            file.display().to_string()
        }
        LinkLoop(name) => {
            let looped = row.world.work_dir().join(name);
            symlink(&looped, &looped).unwrap();
            looped.display().to_string()
        }
    }
}

/// Sets up `input` in `row`'s world, with the node.
async fn set_up(row: &RowWorld, input: &Input) {
    let world = &row.world;
    let annotation = match input {
        Key(key, value) => {
            let mut spec = row.good_spec();
            spec.insert(key.to_string(), text(row, value));
            world.put_configmap("spec", spec).await;
            "spec"
        }
        Keys(pairs) => {
            world.put_configmap("spec", data(pairs)).await;
            "spec"
        }
        Annotation(value, configmaps) => {
            for (namespace, name) in configmaps.iter() {
                let namespace = if namespace.is_empty() {
                    world.namespace()
                } else {
                    namespace
                };
                world
                    .put_configmap_in(namespace, name, row.good_spec())
                    .await;
            }
            value
        }
    };
    world.add_node(&row.node, Some(annotation)).await;
}

/// Applies the fix of `input`: the good spec, or the annotation `spec`.
async fn fix(row: &RowWorld, input: &Input) {
    match input {
        Annotation(..) => row.world.annotate(&row.node, "spec").await,
        Key(..) | Keys(..) => row.world.put_configmap("spec", row.good_spec()).await,
    }
}

/// While the input is bad: the Event about the node saying all of `says`,
/// then — after a pass that began after it, the signal that the program
/// has settled on the input — `pv_spec_errors` at `errors`, no device
/// available, no PV created, every device untouched. Returns the note.
async fn check_paused(
    row: &RowWorld,
    process: &ProvisionerProcess,
    reason: &str,
    says: &[&str],
    errors: f64,
) -> String {
    let event = row
        .world
        .wait_for_event_about(reason, "Node", &row.node)
        .await;
    let note = event.note.unwrap_or_default();
    for fragment in says {
        assert!(note.contains(fragment), "note lacks {fragment:?}: {note}");
    }
    process.wait_for_fresh_passes(1).await;
    assert_eq!(process.value("pv_spec_errors").await, Some(errors));
    assert_eq!(process.value("available_devices").await, Some(0.0));
    assert_eq!(row.world.pv_requests("create", None), 0, "no PV created");
    assert!(row.world.pvs().await.is_empty());
    row.assert_devices_untouched();
    note
}

/// A paused row: bad input, checked; fixed, the PV comes.
async fn paused_then_fixed(
    node: &str,
    input: &Input,
    reason: &str,
    says: &[&str],
    errors: f64,
    extra: &Extra,
) {
    let row = RowWorld::new(node, 1).await;
    row.fill_devices();
    set_up(&row, input).await;
    let process = row.start(vec![]);
    let note = check_paused(&row, &process, reason, says, errors).await;
    let log = process.log();
    row.blank_devices();
    fix(&row, input).await;
    row.wait_pv("disk0").await;
    process.wait_metric("pv_spec_errors", 0.0).await;
    row.fill_and_check_untouched(&process).await;
    match extra {
        Nothing => {}
        NoteFits => assert!(note.len() <= 1000, "{} bytes", note.len()),
        NoteKeepsReason => {
            assert!(note.len() <= 1000, "{} bytes", note.len());
            let kept = note.contains("must be \"Filesystem\" or \"Block\"");
            fixed_bug(
                "BUG-2",
                kept,
                "the PVSpecInvalid note for a value full of control characters loses the reason",
            );
        }
        WarnsMissingDir => {
            let warned = log
                .lines()
                .any(|line| line.contains("does not exist") && line.contains("WARN"));
            fixed_bug(
                "UNCLEAR-1",
                warned,
                &format!("no warning about the missing deviceDir:\n{log}"),
            );
        }
    }
}

/// An unknown key is a documented choice: reported, ignored, the PV made.
async fn unknown_key_is_reported_and_ignored(node: &str) {
    let row = RowWorld::new(node, 1).await;
    let mut spec = row.good_spec();
    spec.insert("futureKey".into(), "x".repeat(64 * 1024));
    row.world.put_configmap("spec", spec).await;
    row.world.add_node(node, Some("spec")).await;
    let process = row.start(vec![]);
    row.wait_pv("disk0").await;
    let note = row.world.wait_for_note("PVSpecApplied").await;
    assert!(note.contains("ignored unknown keys: futureKey"), "{note}");
    process.wait_metric("pv_spec_errors", 0.0).await;
    assert!(process.log().contains("futureKey"), "logged");
    row.fill_and_check_untouched(&process).await;
}

/// BUG-3: an annotation value that is not a valid object name (here with a
/// comma) would make the ConfigMap watch's field selector invalid; it is
/// refused before any request, and reported.
async fn annotation_breaking_the_field_selector(node: &str) {
    let row = RowWorld::new(node, 1).await;
    row.fill_devices();
    row.world.put_configmap("spec", row.good_spec()).await;
    row.world.add_node(node, Some("spec,other")).await;
    let process = row.start(vec![]);
    process.wait_metric("pv_spec_errors", 1.0).await;
    // No ConfigMap request: the signal is a pass that began after the metric.
    process.wait_for_fresh_passes(1).await;
    let server = row.world.server();
    let configmap_requests = server
        .requests()
        .iter()
        .filter(|r| r.resource == "configmaps" && (r.verb == "list" || r.verb == "watch"))
        .count();
    assert_eq!(
        configmap_requests, 0,
        "no ConfigMap watch with a broken selector"
    );
    let reported = row.world.event("PVSpecNotFound").await.is_some()
        || row.world.event("PVSpecInvalid").await.is_some();
    let metric = process.value("pv_spec_errors").await;
    let ready = process.is_ready().await;
    let what = format!(
        "annotation \"spec,other\": no PVSpecNotFound/PVSpecInvalid Event (reported: {reported}), pv_spec_errors {metric:?}, /readyz ready: {ready}"
    );
    fixed_bug("BUG-3", reported && metric == Some(1.0), &what);
    assert_eq!(row.world.pv_requests("create", None), 0, "no PV created");
    row.assert_devices_untouched();
    row.blank_devices();
    row.world.annotate(node, "spec").await;
    row.wait_pv("disk0").await;
    row.fill_and_check_untouched(&process).await;
}

/// Runs one row.
fn check(row: Arc<Row>) -> RowFuture {
    Box::pin(async move {
        let (_, _, node, case) = &*row;
        match case {
            Paused(input, reason, says, errors, extra) => {
                paused_then_fixed(node, input, reason, says, *errors, extra).await
            }
            UnknownKey => unknown_key_is_reported_and_ignored(node).await,
            BrokenSelector => annotation_breaking_the_field_selector(node).await,
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn configmap_and_annotation_table() {
    let label = |row: &Row| (row.0.to_string(), row.1.to_string());
    run_async_rows(
        "ConfigMaps and annotations (the binary)",
        rows(),
        label,
        check,
    )
    .await;
}
