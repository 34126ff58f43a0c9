//! What each `LocalDisk` of the node should say, decided from one
//! reconcile's snapshots (pure): one object per matching entry of each
//! class's `deviceDir` (entries two classes share are one object), plus
//! one per PV of this node whose entry is no longer found (its device is
//! missing). Its state comes from its PV when it has one (`Available`,
//! `Bound`, `Released`, `Kept`, `Wiping`, `Missing`), else from why it got
//! none (`HasData`, `InUse`, `Excluded`, `Error`); its reason is a sentence
//! a person can act on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use crate::cleanup::decide::{claim_of, is_kept};
use crate::discover::devices::{Device, DeviceProblem, ProblemKind, Scan};
use crate::objects::localdisk::{DiskCondition, DiskState, LastWipe, LocalDiskStatus};
use crate::objects::naming::{disk_name, hashed_disk_name};
use crate::objects::pv::{
    DEVICE_NUMBER_ANNOTATION, DEVICE_SIZE_ANNOTATION, DEVICE_STABLE_ID_ANNOTATION, LeanPv,
    NODE_NAME_ANNOTATION, WIPE_PROGRESS_ANNOTATION, WIPE_REQUESTED_ANNOTATION, annotation,
    class_of, local_path,
};
use crate::objects::quantity;
use crate::objects::spec::NodeSpec;
use crate::observe::history::history_of;
use crate::provision::classes::Classified;

/// One disk's object as it should be.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// The object's name.
    pub name: String,
    /// Its class label, when one class has it.
    pub class: Option<String>,
    /// Its status.
    pub status: LocalDiskStatus,
}

/// What one reconcile saw.
pub struct Sources<'a> {
    /// This node's name.
    pub node: &'a str,
    /// The node's spec.
    pub spec: &'a NodeSpec,
    /// Each class's scan (in the spec's order).
    pub scans: &'a [Scan],
    /// The devices each class offers.
    pub classified: &'a Classified,
    /// Every device that gets no PV, and why (after probes and creates).
    pub problems: &'a [DeviceProblem],
    /// This node's PVs.
    pub pvs: &'a [Arc<LeanPv>],
    /// PVs (by name) whose device is missing.
    pub missing: &'a BTreeSet<String>,
}

/// An entry of a class's `deviceDir`, as found.
#[derive(Default)]
struct Entry<'a> {
    name: String,
    class: Option<String>,
    device: Option<&'a Device>,
}

/// The objects the node's disks should have. `names` holds the name of the
/// existing object of each path, kept whatever the naming rule would say now.
pub fn desired(sources: &Sources<'_>, names: &HashMap<String, String>) -> Vec<Desired> {
    let entries = entries(sources);
    let problems: HashMap<&Path, &DeviceProblem> = sources
        .problems
        .iter()
        .map(|problem| (problem.path.as_path(), problem))
        .collect();
    let pvs = pvs_by_path(sources);
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::with_capacity(entries.len());
    for (path, entry) in &entries {
        let path_text = path.display().to_string();
        let name = match names.get(&path_text) {
            Some(name) => name.clone(),
            None => {
                let plain = disk_name(sources.node, &path_text, &entry.name);
                if taken.contains(&plain) || names.values().any(|name| *name == plain) {
                    hashed_disk_name(sources.node, &path_text, &entry.name)
                } else {
                    plain
                }
            }
        };
        taken.insert(name.clone());
        let pv = pvs.get(path.as_path()).copied();
        let mut status = facts(sources.node, &path_text, entry, pv);
        let class = match pv {
            Some(pv) => Some(class_of(pv).to_string()),
            None => entry.class.clone(),
        };
        status.class = class.clone();
        match (pv, problems.get(path.as_path())) {
            (Some(pv), _) => from_pv(&mut status, pv, sources.missing),
            (None, Some(problem)) => from_problem(&mut status, problem),
            (None, None) if entry.device.is_some() => {
                status.state = DiskState::Available;
                status.reason = "offered: its PersistentVolume is being created".into();
            }
            (None, None) => {
                status.state = DiskState::Error;
                status.reason = "found, but its state is not known yet".into();
            }
        }
        status.conditions = conditions(status.state);
        out.push(Desired {
            name,
            class,
            status,
        });
    }
    out
}

/// `disk` again after a change of its PV `pv` that a pass would not act on
/// (its phase, claim, annotations or deletion): what the PV says is read
/// again, what the device says is kept. The object must stand for `pv`
/// (its `persistentVolume`), or for none yet (a PV this process just
/// created); `missing` is the last pass's missing PVs.
pub fn refresh_from_pv(disk: &mut Desired, pv: &LeanPv, missing: &BTreeSet<String>) {
    let status = &mut disk.status;
    status.wipe_count = 0;
    status.last_wipe = None;
    status.wipe_progress = None;
    from_pv(status, pv, missing);
    status.conditions = conditions(status.state);
}

/// The conditions of a disk in `state`.
fn conditions(state: DiskState) -> Vec<DiskCondition> {
    vec![DiskCondition {
        kind: "Offered".into(),
        status: if state.is_offered() { "True" } else { "False" }.into(),
        reason: (!state.is_offered()).then(|| state.as_str().to_string()),
    }]
}

/// Every matching entry of each class's directory, by path, with the class
/// that found it (the one that offers it, when one does; none when two
/// classes claim it), and every PV path not among them.
fn entries<'a>(sources: &Sources<'a>) -> BTreeMap<std::path::PathBuf, Entry<'a>> {
    let mut entries: BTreeMap<std::path::PathBuf, Entry<'a>> = BTreeMap::new();
    for (class, scan) in sources.spec.classes.iter().zip(sources.scans) {
        for device in &scan.devices {
            let entry = entries.entry(device.path.clone()).or_default();
            entry.name.clone_from(&device.name);
            entry.device.get_or_insert(device);
            entry.class.get_or_insert_with(|| class.class.clone());
        }
        for problem in &scan.problems {
            let entry = entries.entry(problem.path.clone()).or_default();
            entry.name.clone_from(&problem.name);
            entry.class.get_or_insert_with(|| class.class.clone());
        }
    }
    for (class, devices) in sources.spec.classes.iter().zip(&sources.classified.devices) {
        for device in devices {
            if let Some(entry) = entries.get_mut(&device.path) {
                entry.class = Some(class.class.clone());
            }
        }
    }
    for problem in sources.problems {
        if let Some(entry) = entries.get_mut(&problem.path) {
            entry.class.clone_from(&problem.class);
        }
    }
    for pv in sources.pvs {
        let Some(path) = local_path(pv) else { continue };
        let path = std::path::PathBuf::from(path);
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        entries.entry(path).or_insert_with(|| Entry {
            name,
            ..Entry::default()
        });
    }
    entries
}

/// This node's own PVs by path; of two for one path, the one not being deleted.
fn pvs_by_path<'a>(sources: &Sources<'a>) -> HashMap<&'a Path, &'a LeanPv> {
    let mut by_path: HashMap<&Path, &LeanPv> = HashMap::new();
    for pv in sources.pvs {
        let ours = annotation(pv, NODE_NAME_ANNOTATION).is_none_or(|node| node == sources.node);
        let Some(path) = local_path(pv).filter(|_| ours) else {
            continue;
        };
        let path = Path::new(path);
        let replace = by_path
            .get(path)
            .is_none_or(|held| held.metadata.deletion_timestamp.is_some());
        if replace {
            by_path.insert(path, pv);
        }
    }
    by_path
}

/// What is known of the disk itself: from its device when the scan found
/// one, else from what its PV recorded.
fn facts(node: &str, path: &str, entry: &Entry<'_>, pv: Option<&LeanPv>) -> LocalDiskStatus {
    let mut status = LocalDiskStatus {
        node: node.to_string(),
        path: path.to_string(),
        ..LocalDiskStatus::default()
    };
    if let Some(device) = entry.device {
        let facts = &device.facts;
        status.device = Some(device.number.to_string());
        status.stable_id.clone_from(&device.stable_id);
        status.model.clone_from(&facts.model);
        status.vendor.clone_from(&facts.vendor);
        status.serial.clone_from(&facts.serial);
        status.device_type = facts.device_type.map(|kind| kind.as_str().to_string());
        status.rotational = facts.rotational;
        status.size_bytes = Some(device.size_bytes);
    } else if let Some(pv) = pv {
        status.device = annotation(pv, DEVICE_NUMBER_ANNOTATION).map(str::to_string);
        status.stable_id = annotation(pv, DEVICE_STABLE_ID_ANNOTATION).map(str::to_string);
        status.size_bytes = annotation(pv, DEVICE_SIZE_ANNOTATION).and_then(|s| s.parse().ok());
    }
    status.size = status.size_bytes.map(quantity::human);
    status
}

/// The state of a disk whose PV stands for it.
fn from_pv(status: &mut LocalDiskStatus, pv: &LeanPv, missing: &BTreeSet<String>) {
    let name = pv.metadata.name.clone().unwrap_or_default();
    let claim = claim_of(pv);
    let history = history_of(pv);
    status.wipe_count = history.wipes;
    status.last_wipe = history.last_wipe.map(|wipe| LastWipe {
        mode: Some(
            if status
                .size_bytes
                .is_some_and(|size| wipe.regions == format!("0-{size}"))
            {
                "Full"
            } else {
                "Signatures"
            }
            .to_string(),
        ),
        time: wipe.at,
        duration_seconds: wipe.duration_seconds,
    });
    status.persistent_volume = Some(name.clone());
    let phase = pv
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or("Pending");
    let deleting = pv.metadata.deletion_timestamp.is_some();
    let (state, reason) = if missing.contains(&name) {
        (
            DiskState::Missing,
            format!(
                "the device of PersistentVolume {name} is missing (unplugged, or its entry gone from deviceDir); plug it back in, or once the disk is gone for good delete the PersistentVolume"
            ),
        )
    } else if deleting && phase == "Bound" {
        (
            DiskState::Bound,
            format!(
                "PersistentVolume {name} is being deleted; it is wiped once claim {} lets go",
                claim.clone().unwrap_or_default()
            ),
        )
    } else if deleting {
        status.wipe_progress = annotation(pv, WIPE_PROGRESS_ANNOTATION).map(str::to_string);
        let progress = status
            .wipe_progress
            .as_deref()
            .and_then(percent)
            .map_or(String::new(), |percent| format!(" ({percent}% done)"));
        (
            DiskState::Wiping,
            format!("being wiped before PersistentVolume {name} goes{progress}"),
        )
    } else if is_kept(pv) {
        (
            DiskState::Kept,
            format!(
                "released and kept with its data (releasePolicy Keep); to wipe it and offer it again: kubectl annotate pv {name} {WIPE_REQUESTED_ANNOTATION}=true"
            ),
        )
    } else {
        match phase {
            "Bound" => (
                DiskState::Bound,
                format!(
                    "used through PersistentVolume {name} by claim {}",
                    claim.clone().unwrap_or_default()
                ),
            ),
            "Released" | "Failed" => (
                DiskState::Released,
                format!(
                    "its claim let go: PersistentVolume {name} is wiped, then the disk is offered again"
                ),
            ),
            _ => (
                DiskState::Available,
                format!("offered as PersistentVolume {name}"),
            ),
        }
    };
    status.state = state;
    status.reason = reason;
    status.claim = claim;
}

/// The state of a disk that gets no PV.
fn from_problem(status: &mut LocalDiskStatus, problem: &DeviceProblem) {
    let (state, hint) = match problem.kind {
        ProblemKind::HasData => (DiskState::HasData, ""),
        ProblemKind::InUse => (
            DiskState::InUse,
            "; it is offered once nothing uses it (unmount it, or stop what holds it)",
        ),
        ProblemKind::Excluded | ProblemKind::Ineligible => (DiskState::Excluded, ""),
        ProblemKind::Refused | ProblemKind::Skipped => (DiskState::Error, ""),
    };
    status.state = state;
    status.reason = format!("{}{hint}", problem.reason);
    if status.device.is_none() {
        status.device = problem.number.map(|number| number.to_string());
    }
}

/// The percentage of a `DONE/TOTAL` progress.
fn percent(progress: &str) -> Option<u64> {
    let (done, total) = progress.split_once('/')?;
    let (done, total): (u64, u64) = (done.parse().ok()?, total.parse().ok()?);
    (total > 0).then(|| done * 100 / total)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::json;

    use super::*;
    use crate::device::blockdev::DeviceNumber;
    use crate::device::facts::DeviceFacts;
    use crate::objects::classes::DeviceType;
    use crate::objects::spec::parse_node_spec;

    fn spec() -> NodeSpec {
        let data = [
            ("deviceDir", "/dev/disks"),
            ("deviceNameFilter", ".*"),
            ("volumeMode", "Block"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        parse_node_spec(&data).unwrap()
    }

    fn device(name: &str, minor: u32) -> Device {
        Device {
            name: name.into(),
            path: PathBuf::from(format!("/dev/disks/{name}")),
            resolved: PathBuf::from(format!("/dev/sd{name}")),
            number: DeviceNumber { major: 8, minor },
            size_bytes: 1 << 40,
            in_use: None,
            stable_id: Some(format!("wwid:{name}")),
            facts: DeviceFacts {
                read_only: Some(false),
                removable: Some(false),
                rotational: Some(true),
                model: Some("ST4000".into()),
                vendor: Some("ATA".into()),
                serial: Some(format!("S{minor}")),
                device_type: Some(DeviceType::Disk),
            },
        }
    }

    fn problem(name: &str, kind: ProblemKind, reason: &str) -> DeviceProblem {
        DeviceProblem {
            name: name.into(),
            path: PathBuf::from(format!("/dev/disks/{name}")),
            reason: reason.into(),
            number: Some(DeviceNumber {
                major: 8,
                minor: 99,
            }),
            kind,
            class: Some("default".into()),
        }
    }

    fn pv(name: &str, entry: &str, phase: &str, extra: serde_json::Value) -> Arc<LeanPv> {
        let mut value = json!({
            "metadata": {"name": name, "annotations": {
                "local-pv-provisioner.cybozu.io/node-name": "n1",
                "local-pv-provisioner.cybozu.io/device-number": "8:1",
                "local-pv-provisioner.cybozu.io/device-size": "1099511627776",
            }},
            "spec": {"local": {"path": format!("/dev/disks/{entry}")}},
            "status": {"phase": phase},
        });
        merge(&mut value, extra);
        Arc::new(serde_json::from_value(value).unwrap())
    }

    /// Merges `extra` into `value`, objects key by key.
    fn merge(value: &mut serde_json::Value, extra: serde_json::Value) {
        match (value, extra) {
            (serde_json::Value::Object(value), serde_json::Value::Object(extra)) => {
                for (key, field) in extra {
                    merge(value.entry(key).or_insert(serde_json::Value::Null), field);
                }
            }
            (value, extra) => *value = extra,
        }
    }

    fn state_of<'a>(disks: &'a [Desired], path: &str) -> &'a LocalDiskStatus {
        &disks
            .iter()
            .find(|d| d.status.path == path)
            .unwrap_or_else(|| panic!("no disk {path}: {disks:?}"))
            .status
    }

    /// A PV's change that needs no pass (phase, claim, history, deletion,
    /// progress) refreshed on the last object gives what a full pass gives.
    #[test]
    fn a_refresh_from_the_pv_equals_a_fresh_pass() {
        let spec = spec();
        let devices = vec![device("a", 1)];
        let scans = vec![Scan {
            devices: devices.clone(),
            problems: vec![],
        }];
        let classified = Classified {
            devices: vec![devices],
            problems: vec![],
        };
        let claim = json!({"spec": {"claimRef": {"namespace": "ns", "name": "db"}}});
        let wiped = crate::observe::history::DeviceHistory {
            wipes: 2,
            last_wipe: Some(crate::observe::history::WipeRecord {
                at: "2026-12-07T00:00:00Z".into(),
                regions: "0-1099511627776".into(),
                duration_seconds: 3.0,
            }),
            claims: vec![],
        };
        let history = json!({"metadata": {"annotations": {
            crate::observe::history::HISTORY_ANNOTATION: serde_json::to_string(&wiped).unwrap()}}});
        let deleting = json!({"metadata": {
            "deletionTimestamp": "2026-12-07T00:00:00Z",
            "annotations": {"local-pv-provisioner.cybozu.io/wipe-progress": "512/1024"}}});
        let versions = [
            pv("local-n1-a", "a", "Pending", json!({})),
            pv("local-n1-a", "a", "Available", history.clone()),
            pv("local-n1-a", "a", "Bound", claim.clone()),
            pv("local-n1-a", "a", "Released", claim.clone()),
            pv("local-n1-a", "a", "Released", deleting),
            pv("local-n1-a", "a", "Available", json!({})),
        ];
        let pass = |pvs: &[Arc<LeanPv>], missing: &BTreeSet<String>| {
            let sources = Sources {
                node: "n1",
                spec: &spec,
                scans: &scans,
                classified: &classified,
                problems: &[],
                pvs,
                missing,
            };
            desired(&sources, &HashMap::new())
        };
        let none = pass(&[], &BTreeSet::new());
        assert_eq!(none[0].status.persistent_volume, None, "being created");
        for missing in [BTreeSet::new(), BTreeSet::from(["local-n1-a".to_string()])] {
            let mut disks = none.clone();
            for version in &versions {
                refresh_from_pv(&mut disks[0], version, &missing);
                let fresh = pass(std::slice::from_ref(version), &missing);
                assert_eq!(disks, fresh, "after {version:?}");
            }
        }
    }

    #[test]
    fn every_state_comes_from_the_pv_or_the_reason_it_got_none() {
        let spec = spec();
        let devices = vec![
            device("a", 1),
            device("b", 2),
            device("c", 3),
            device("d", 4),
            device("e", 5),
            device("f", 6),
        ];
        let problems = vec![
            problem(
                "g",
                ProblemKind::HasData,
                "holds data (XFS signature); never offered",
            ),
            problem("h", ProblemKind::InUse, "in use: sdh is mounted at /var"),
            problem(
                "i",
                ProblemKind::Ineligible,
                "read-only (sysfs ro is 1): never offered in any class",
            ),
            problem("j", ProblemKind::Skipped, "cannot open /dev/sdj: I/O error"),
        ];
        let scans = vec![Scan {
            devices: devices.clone(),
            problems: problems.clone(),
        }];
        let classified = Classified {
            devices: vec![devices],
            problems: vec![],
        };
        let claim = json!({"spec": {"claimRef": {"namespace": "ns", "name": "db"}}});
        let pvs = vec![
            pv("local-n1-a", "a", "Available", json!({})),
            pv("local-n1-b", "b", "Bound", claim.clone()),
            pv("local-n1-c", "c", "Released", claim.clone()),
            pv(
                "local-n1-d",
                "d",
                "Released",
                json!({"metadata": {"annotations": {
                "local-pv-provisioner.cybozu.io/release-policy": "Keep"}}}),
            ),
            pv(
                "local-n1-e",
                "e",
                "Released",
                json!({"metadata": {
                "deletionTimestamp": "2026-12-07T00:00:00Z",
                "annotations": {"local-pv-provisioner.cybozu.io/wipe-progress": "512/1024"}}}),
            ),
            pv("local-n1-gone", "gone", "Bound", claim),
        ];
        let missing = BTreeSet::from(["local-n1-gone".to_string()]);
        let sources = Sources {
            node: "n1",
            spec: &spec,
            scans: &scans,
            classified: &classified,
            problems: &problems,
            pvs: &pvs,
            missing: &missing,
        };
        let disks = desired(&sources, &HashMap::new());
        let states: Vec<(&str, DiskState)> = disks
            .iter()
            .map(|d| (d.status.path.as_str(), d.status.state))
            .collect();
        assert_eq!(
            states,
            vec![
                ("/dev/disks/a", DiskState::Available),
                ("/dev/disks/b", DiskState::Bound),
                ("/dev/disks/c", DiskState::Released),
                ("/dev/disks/d", DiskState::Kept),
                ("/dev/disks/e", DiskState::Wiping),
                ("/dev/disks/f", DiskState::Available),
                ("/dev/disks/g", DiskState::HasData),
                ("/dev/disks/gone", DiskState::Missing),
                ("/dev/disks/h", DiskState::InUse),
                ("/dev/disks/i", DiskState::Excluded),
                ("/dev/disks/j", DiskState::Error),
            ]
        );
        let bound = state_of(&disks, "/dev/disks/b");
        assert_eq!(bound.claim.as_deref(), Some("ns/db"));
        assert_eq!(bound.persistent_volume.as_deref(), Some("local-n1-b"));
        assert_eq!(bound.size.as_deref(), Some("1Ti"));
        assert_eq!(bound.model.as_deref(), Some("ST4000"));
        assert_eq!(bound.class.as_deref(), Some("default"));
        assert!(
            state_of(&disks, "/dev/disks/d")
                .reason
                .contains("wipe-requested=true")
        );
        assert!(
            state_of(&disks, "/dev/disks/e")
                .reason
                .contains("(50% done)")
        );
        assert!(
            state_of(&disks, "/dev/disks/h")
                .reason
                .contains("unmount it")
        );
        let gone = state_of(&disks, "/dev/disks/gone");
        assert!(gone.reason.contains("is missing"), "{}", gone.reason);
        assert_eq!(
            gone.device.as_deref(),
            Some("8:1"),
            "from what the PV recorded"
        );
        assert_eq!(
            disks[0].name, "local-n1-a",
            "a disk and its PV share a name"
        );
        assert_eq!(
            state_of(&disks, "/dev/disks/g").conditions[0]
                .reason
                .as_deref(),
            Some("HasData")
        );
    }

    #[test]
    fn an_existing_object_keeps_its_name_and_colliding_entries_are_hashed() {
        let spec = spec();
        let names = HashMap::from([("/dev/disks/a".to_string(), "old-name".to_string())]);
        let scans = vec![Scan {
            devices: vec![device("a", 1), device("A", 2)],
            problems: vec![],
        }];
        let classified = Classified::default();
        let sources = Sources {
            node: "n1",
            spec: &spec,
            scans: &scans,
            classified: &classified,
            problems: &[],
            pvs: &[],
            missing: &BTreeSet::new(),
        };
        let disks = desired(&sources, &names);
        let mut got: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
        got.sort();
        assert_eq!(got[1], "old-name");
        assert_eq!(got[0], "local-n1-a", "the plain name, free again");
    }
}
