//! Table 3: device trees through `discovery::scan_devices` and `plan::plan`
//! on real directories and loop devices: link loops, links out, 5000
//! entries, colliding, unicode and non-UTF-8 names. Each row is a layout
//! and the scan (and plan) it must give; every row also checks that each
//! device found resolves to its loop device under the configured path, and
//! that nothing was written.

use std::path::Path;

use local_pv_provisioner::discover::devices::{Scan, scan_devices};
use local_pv_provisioner::objects::naming::hashed_pv_name;
use local_pv_provisioner::provision::build::build_pv;
use local_pv_provisioner::provision::plan::ExistingPv;
use regex::Regex;

use crate::catalogue::{assert_untouched, root_disk, run_rows};
use crate::tree_layout::{
    DirKind, Entry, OUTSIDE_CONTENT, Tree, facts, plan_one_class, planned_names, scan, spec_for,
};

/// What the planner must make of a row's scan.
enum Plan {
    /// Not planned.
    Skip,
    /// PVs to create, devices available, problems.
    Counts(usize, usize, usize),
    /// Valid, distinct names for node `.0`; entry `.1`, when given, hashed.
    Names(&'static str, Option<&'static str>),
    /// The entries collide into one plain name; an existing PV of the
    /// holder keeps that name and the others stay hashed.
    Collision(&'static [&'static str], &'static str),
}

/// What a row's scan must give.
enum Outcome {
    /// Exactly these devices; these problems (name, fragments; `*`: every
    /// problem), and that many in all when given; then the plan check.
    Scan(
        &'static [&'static str],
        &'static [(&'static str, &'static [&'static str])],
        Option<usize>,
        Plan,
    ),
    /// The scan fails, its error saying all of these.
    Fails(&'static [&'static str]),
}

/// One row: its name, the outcome as the table prints it, the tree, the
/// filter and the outcome.
type Row = (
    &'static str,
    &'static str,
    DirKind,
    &'static [Entry],
    &'static str,
    Outcome,
);

use DirKind::{Alias, Loop, Plain, RegularFile};
use Entry::*;
use Outcome::{Fails, Scan as Found};

const LOOPS: &[(&str, &[&str])] = &[
    ("disk-a", &["cannot resolve", "symbolic links"]),
    ("disk-b", &["cannot resolve", "symbolic links"]),
    ("disk-self", &["cannot resolve", "symbolic links"]),
];
const LINKS_OUT: &[(&str, &[&str])] = &[
    ("disk-file", &["regular file"]),
    ("disk-root", &["a directory"]),
    ("disk-zero", &["character device"]),
];

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    vec![
        ("symlink loops: disk-a -> disk-b -> disk-a, disk-self -> disk-self",
            "each an error device (cannot resolve: too many levels of symbolic links); the scan completes",
            Plain, &[Link("disk-a", "disk-b"), Link("disk-b", "disk-a"), SelfLink("disk-self"), Device("disk-real")], "^disk",
            Found(&["disk-real"], LOOPS, None, Plan::Skip)),
        ("link in deviceDir to a device elsewhere (/dev/loopN), absolute and relative",
            "allowed (the by-path case); the PV records the link's path, not the device node",
            Plain, &[Device("disk-abs"), DeviceElsewhere("disk-rel")], "^disk", Found(&["disk-abs", "disk-rel"], &[], None, Plan::Skip)),
        ("links out of deviceDir to a regular file, to /, to /dev/zero",
            "error devices: not a block device (regular file / directory / character device)",
            Plain, &[OutsideFile("disk-file"), Link("disk-root", "/"), Link("disk-zero", "/dev/zero")], "^disk",
            Found(&[], LINKS_OUT, None, Plan::Skip)),
        ("a matching directory holding a device link (disk-dir/disk0)", "error device \"a directory\": only the first level is scanned",
            Plain, &[DirWithDevice("disk-dir")], "disk", Found(&[], &[("disk-dir", &["a directory"])], None, Plan::Skip)),
        ("deviceDir is a symlink loop", "the scan fails: cannot read deviceDir … too many levels of symbolic links",
            Loop, &[], ".*", Fails(&["cannot read deviceDir", "symbolic links"])),
        ("deviceDir is a regular file", "the scan fails: cannot read deviceDir … not a directory",
            RegularFile, &[], ".*", Fails(&["cannot read deviceDir", "Not a directory"])),
        ("deviceDir is a link to a directory of device links", "followed (documented choice); PV paths keep the configured deviceDir",
            Alias, &[Device("disk0")], "^disk", Found(&["disk0"], &[], None, Plan::Skip)),
        ("5000 regular files: 2500 matching disk-file-N, 2500 not matching, plus one device link",
            "the scan completes: 1 device, 2500 error devices (regular file), non-matching ignored",
            Plain, &[Files("disk-file-", 2500), Files("other-", 2500), Device("disk-real")], "^disk",
            Found(&["disk-real"], &[("*", &["regular file"])], Some(2500), Plan::Counts(1, 1, 2500))),
        ("entries A_B, a:b, a-b (one plain PV name local-n-a-b)",
            "three devices, three distinct hashed names, the collision reported; an existing holder keeps the plain name",
            Plain, &[Device("A_B"), Device("a:b"), Device("a-b")], ".*",
            Found(&["A_B", "a-b", "a:b"], &[], None, Plan::Collision(&["A_B", "a-b", "a:b"], "a-b"))),
        ("unicode entry names: disk-é, диск-1, disk-🙂, disk-\\u{200b}, DISK-Ä",
            "usable devices; every PV name valid and distinct (hashed when sanitizing leaves a bad name)",
            Plain, &[Device("disk-é"), Device("диск-1"), Device("disk-🙂"), Device("disk-\u{200b}"), Device("DISK-Ä")], ".*",
            Found(&["DISK-Ä", "disk-\u{200b}", "disk-é", "disk-🙂", "диск-1"], &[], Some(0), Plan::Names("n", Some("disk-é")))),
        ("non-UTF-8 entry name disk-\\xff\\xfe linking to a device",
            "error device \"the entry name is not valid UTF-8\" (reported by its lossy name); the same device under a UTF-8 name is usable",
            Plain, &[RawDevice(b"disk-\xff\xfe"), SameDevice("disk-ok")], "^disk",
            Found(&["disk-ok"], &[("disk-\u{fffd}\u{fffd}", &["not valid UTF-8"])], Some(1), Plan::Skip)),
        ("entry names with a newline (disk\\nx), of 255 bytes, and ending in - (disk-)", "usable devices with valid, distinct PV names",
            Plain, &[Device("disk\nx"), LongDevice(255), Device("disk-")], "^disk",
            Found(&["disk-", "disk\nx", LONG_NAME], &[], Some(0), Plan::Names("node-with-a-longer-name", None))),
    ]
}

/// The 255-byte entry name of the last row.
const LONG_NAME: &str = "diskxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

/// The problem reason the scan gives for entry `name`.
fn problem<'a>(scan: &'a Scan, name: &str) -> &'a str {
    scan.problems
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.reason.as_str())
        .unwrap_or_else(|| panic!("{name:?} is not reported: {:?}", scan.problems))
}

/// Checks the devices and problems of a completed scan.
fn check_scan(
    tree: &Tree,
    found: &Scan,
    devices: &[&str],
    problems: &[(&str, &[&str])],
    count: Option<usize>,
) {
    let mut names: Vec<&str> = found.devices.iter().map(|d| d.name.as_str()).collect();
    names.sort();
    let mut expected = devices.to_vec();
    expected.sort();
    assert_eq!(names, expected, "{:?}", found.problems);
    let spec = spec_for(&tree.dir, ".*");
    for device in &found.devices {
        assert_eq!(
            device.resolved, tree.devices[&device.name].path,
            "{} resolves to its device",
            device.name
        );
        assert_eq!(
            device.path,
            tree.dir.join(&device.name),
            "the configured deviceDir is kept"
        );
        let pv = build_pv(&facts("n"), &spec, device, "x");
        assert_eq!(
            pv.spec.unwrap().local.unwrap().path,
            tree.dir.join(&device.name).display().to_string()
        );
    }
    for (name, says) in problems {
        let reasons: Vec<&str> = match *name {
            "*" => found.problems.iter().map(|p| p.reason.as_str()).collect(),
            name => vec![problem(found, name)],
        };
        for reason in reasons {
            assert!(
                says.iter().all(|fragment| reason.contains(fragment)),
                "{name}: {reason}"
            );
        }
    }
    if let Some(count) = count {
        assert_eq!(found.problems.len(), count, "{:?}", found.problems);
    }
}

/// Checks what the planner makes of the scan.
fn check_plan(tree: &Tree, found: &Scan, filter: &str, expected: &Plan) {
    let spec = spec_for(&tree.dir, filter);
    let decided = plan_one_class("n", &spec, found, &[]);
    match expected {
        Plan::Skip => {}
        Plan::Counts(create, available, problems) => {
            assert_eq!(
                (
                    decided.create.len(),
                    decided.available,
                    decided.problems.len()
                ),
                (*create, *available, *problems)
            );
        }
        Plan::Names(node, hashed) => {
            let planned = planned_names(node, &tree.dir, found);
            assert_eq!(planned.len(), found.devices.len());
            if let Some(entry) = hashed {
                assert_eq!(planned[*entry], hashed_pv_name(node, entry));
            }
        }
        Plan::Collision(group, holder) => {
            let group: Vec<String> = group.iter().map(|name| name.to_string()).collect();
            assert_eq!(decided.collisions, vec![group]);
            let names = planned_names("n", &tree.dir, found);
            assert_eq!(names.len(), 3);
            let plain = format!("local-n-{}", holder);
            assert!(!names.values().any(|name| *name == plain), "{names:?}");
            let device = found.devices.iter().find(|d| d.name == *holder).unwrap();
            let existing = [ExistingPv {
                name: plain,
                path: Some(tree.dir.join(holder)),
                number: Some(device.number),
                phase: Some("Available".into()),
                claimed: false,
                deleting: false,
                class: "default".into(),
            }];
            let later = plan_one_class("n", &spec, found, &existing);
            let later_names: Vec<String> = later
                .create
                .iter()
                .map(|planned| planned.name.clone())
                .collect();
            let others: Vec<String> = names
                .iter()
                .filter(|(entry, _)| *entry != holder)
                .map(|(_, name)| name.clone())
                .collect();
            assert_eq!(
                later_names, others,
                "the holder keeps the plain name, the others stay hashed"
            );
        }
    }
}

/// Runs one row.
fn check((_, _, kind, entries, filter, outcome): &Row) {
    let tree = Tree::build(*kind, entries);
    match outcome {
        Fails(says) => {
            let error = scan_devices(&tree.dir, &Regex::new(filter).unwrap())
                .unwrap_err()
                .to_string();
            assert!(
                says.iter().all(|fragment| error.contains(fragment)),
                "{error}"
            );
        }
        Found(devices, problems, count, expected) => {
            let found = scan(&tree.dir, filter);
            check_scan(&tree, &found, devices, problems, *count);
            check_plan(&tree, &found, filter, expected);
        }
    }
    for device in tree.devices.values() {
        assert_untouched(device);
    }
    for file in &tree.outside {
        assert_eq!(std::fs::read(file.path()).unwrap(), OUTSIDE_CONTENT);
    }
}

/// The last row: `/dev` with a filter matching this machine's root disk.
fn root_disk_is_never_a_pv() {
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
    let spec = spec_for(Path::new("/dev"), &filter);
    let decided = plan_one_class("n", &spec, &found, &[]);
    assert!(decided.create.is_empty());
    assert_eq!(decided.problems.len(), 1);
    let reason = &decided.problems[0].reason;
    assert!(
        reason.starts_with("in use:") || reason.starts_with("cannot open"),
        "{reason}"
    );
}

#[test]
fn device_tree_table() {
    crate::support::loop_device::require_root();
    let mut rows: Vec<Option<Row>> = rows().into_iter().map(Some).collect();
    rows.push(None);
    let label = |row: &Option<Row>| {
        match row {
        Some((input, expected, ..)) => (input.to_string(), expected.to_string()),
        None => (
            "deviceDir /dev with a filter matching this machine's root disk".to_string(),
            "never a PV: marked in use (mounted at /), or an error device when it cannot be opened; reported with the reason".to_string(),
        ),
    }
    };
    let run = |row: &Option<Row>| match row {
        Some(row) => check(row),
        None => root_disk_is_never_a_pv(),
    };
    run_rows("device trees (scan_devices, plan)", rows, label, run);
}
