//! Device trees for table 3: a row's layout (what a `deviceDir` holds)
//! built on disk over fresh loop devices, and the scan and plan helpers its
//! checks use.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use local_pv_provisioner::discover::devices::{Scan, scan_devices};
use local_pv_provisioner::objects::naming::{is_dns1123_subdomain, node_label_value};
use local_pv_provisioner::objects::spec::{PvSpec, parse_pv_spec};
use local_pv_provisioner::provision::build::NodeFacts;
use local_pv_provisioner::provision::classes::classify;
use local_pv_provisioner::provision::plan::{ExistingPv, Plan, plan};
use regex::Regex;
use tempfile::{NamedTempFile, TempDir};

use crate::catalogue::device;
use crate::support::loop_device::LoopDevice;
use crate::support::world::data;

/// One entry a row puts in its device directory.
pub enum Entry {
    /// A link to a fresh loop device.
    Device(&'static str),
    /// A link with a non-UTF-8 name to a fresh loop device.
    RawDevice(&'static [u8]),
    /// A second link to the device of the entry before it.
    SameDevice(&'static str),
    /// A link to a fresh loop device, named `disk` and `x` to the length.
    LongDevice(usize),
    /// A link (relative) through `../elsewhere/hop` to a fresh device.
    DeviceElsewhere(&'static str),
    /// A link to a fixed target.
    Link(&'static str, &'static str),
    /// A link to itself.
    SelfLink(&'static str),
    /// A link to a regular file outside the directory, which must keep its content.
    OutsideFile(&'static str),
    /// A directory holding a link `disk0` to a fresh device.
    DirWithDevice(&'static str),
    /// Regular files `<prefix>0`, `<prefix>1`, ….
    Files(&'static str, usize),
}

/// What the `deviceDir` itself is.
#[derive(Clone, Copy)]
pub enum DirKind {
    /// A directory.
    Plain,
    /// A link to a directory.
    Alias,
    /// A link to itself.
    Loop,
    /// A regular file.
    RegularFile,
}

/// A row's tree on disk, kept until the row ends.
pub struct Tree {
    /// The `deviceDir` the spec names.
    pub dir: PathBuf,
    /// The devices by entry name (lossy for non-UTF-8 names).
    pub devices: BTreeMap<String, std::sync::Arc<LoopDevice>>,
    /// Files outside the directory that must keep their content.
    pub outside: Vec<NamedTempFile>,
    _root: TempDir,
}

/// Content of the files a row links to from outside.
pub const OUTSIDE_CONTENT: &[u8] = b"keep me";

impl Tree {
    /// Builds `entries` under a `deviceDir` of `kind`.
    pub fn build(kind: DirKind, entries: &[Entry]) -> Tree {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("by-path");
        let dir = match kind {
            DirKind::Plain => real.clone(),
            DirKind::Alias | DirKind::Loop => root.path().join("alias"),
            DirKind::RegularFile => root.path().join("file"),
        };
        match kind {
            DirKind::Plain | DirKind::Alias => fs::create_dir(&real).unwrap(),
            DirKind::Loop => symlink(&dir, &dir).unwrap(),
            DirKind::RegularFile => fs::write(&dir, b"x").unwrap(),
        }
        if let DirKind::Alias = kind {
            symlink(&real, &dir).unwrap();
        }
        let mut tree = Tree {
            dir,
            devices: BTreeMap::new(),
            outside: Vec::new(),
            _root: root,
        };
        for entry in entries {
            tree.add(&real, entry);
        }
        tree
    }

    /// Links a fresh device as `real/name` and records it.
    fn link_device(&mut self, real: &Path, name: &std::ffi::OsStr) {
        let disk = std::sync::Arc::new(device());
        symlink(&disk.path, real.join(name)).unwrap();
        self.devices
            .insert(name.to_string_lossy().into_owned(), disk);
    }

    fn add(&mut self, real: &Path, entry: &Entry) {
        match entry {
            Entry::Device(name) => self.link_device(real, name.as_ref()),
            Entry::RawDevice(bytes) => self.link_device(real, std::ffi::OsStr::from_bytes(bytes)),
            Entry::LongDevice(length) => {
                let name = format!("disk{}", "x".repeat(length - 4));
                self.link_device(real, name.as_ref());
            }
            Entry::SameDevice(name) => {
                let (_, disk) = self.devices.last_key_value().expect("an entry before");
                let disk = disk.clone();
                symlink(&disk.path, real.join(name)).unwrap();
                self.devices.insert(name.to_string(), disk);
            }
            Entry::DeviceElsewhere(name) => {
                let elsewhere = real.parent().unwrap().join("elsewhere");
                fs::create_dir(&elsewhere).unwrap();
                let disk = std::sync::Arc::new(device());
                symlink(&disk.path, elsewhere.join("hop")).unwrap();
                symlink("../elsewhere/hop", real.join(name)).unwrap();
                self.devices.insert(name.to_string(), disk);
            }
            Entry::Link(name, target) => symlink(target, real.join(name)).unwrap(),
            Entry::SelfLink(name) => symlink(real.join(name), real.join(name)).unwrap(),
            Entry::OutsideFile(name) => {
                let file = NamedTempFile::new().unwrap();
                fs::write(file.path(), OUTSIDE_CONTENT).unwrap();
                symlink(file.path(), real.join(name)).unwrap();
                self.outside.push(file);
            }
            Entry::DirWithDevice(name) => {
                fs::create_dir(real.join(name)).unwrap();
                let disk = device();
                symlink(&disk.path, real.join(name).join("disk0")).unwrap();
                self.devices
                    .insert(format!("{name}/disk0"), std::sync::Arc::new(disk));
            }
            Entry::Files(prefix, count) => {
                for index in 0..*count {
                    fs::write(real.join(format!("{prefix}{index}")), b"x").unwrap();
                }
            }
        }
    }
}

/// The facts of node `node` as the planner sees them.
pub fn facts(node: &str) -> NodeFacts {
    NodeFacts {
        name: node.into(),
        uid: "uid".into(),
        hostname: node.into(),
        label_value: node_label_value(node),
        labels: Default::default(),
    }
}

/// A Block spec over `dir` with `filter`.
pub fn spec_for(dir: &Path, filter: &str) -> PvSpec {
    let dir = dir.to_str().unwrap();
    parse_pv_spec(&data(&[
        ("deviceDir", dir),
        ("deviceNameFilter", filter),
        ("volumeMode", "Block"),
    ]))
    .unwrap()
}

/// Scans `dir` with `filter`; fails the row when the scan fails.
pub fn scan(dir: &Path, filter: &str) -> Scan {
    scan_devices(dir, &Regex::new(filter).unwrap()).expect("the scan completes")
}

/// Plans `scan` as the flat keys' one class `spec` on node `node` with
/// `existing` PVs and no wipe in flight.
pub fn plan_one_class(node: &str, spec: &PvSpec, scan: &Scan, existing: &[ExistingPv]) -> Plan {
    let classes = [spec.clone()];
    let classified = classify(&classes, std::slice::from_ref(scan));
    plan(
        &facts(node),
        &classes,
        &classified,
        existing,
        &BTreeSet::new(),
        &[],
    )
}

/// Plans `scan` on an empty cluster and checks the PVs: valid, distinct
/// names, paths inside `dir`; returns entry name → PV name.
pub fn planned_names(node: &str, dir: &Path, scan: &Scan) -> BTreeMap<String, String> {
    let classes = [spec_for(dir, ".*")];
    let decided = plan_one_class(node, &classes[0], scan, &[]);
    let mut names = BTreeMap::new();
    for planned in &decided.create {
        let pv = planned.pv(&facts(node), &classes);
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
