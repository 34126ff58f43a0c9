//! The pure decision of a reconcile: given the scan, this node's existing
//! PVs and the wipes in flight, which PVs to create and which devices to
//! report. This is where "never recreate while wiping", "never two PVs for
//! one device" and "never touch an existing PV" live, as plain data in and
//! plain data out.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::PersistentVolume;

use crate::device::blockdev::DeviceNumber;
use crate::discover::devices::{Device, DeviceProblem, ProblemKind, Scan};
use crate::objects::naming::{NameAssignment, assign_pv_names};
use crate::objects::pv;
use crate::objects::spec::PvSpec;
use crate::provision::build::{NodeFacts, build_pv};

/// What the planner needs to know about one existing PV of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingPv {
    /// The PV's name.
    pub name: String,
    /// Its `spec.local.path`.
    pub path: Option<PathBuf>,
    /// The device number recorded on it, if any.
    pub number: Option<DeviceNumber>,
    /// `status.phase`.
    pub phase: Option<String>,
    /// Whether `spec.claimRef` is set (bound, or reserved for a claim).
    pub claimed: bool,
    /// Whether the PV is being deleted.
    pub deleting: bool,
}

impl ExistingPv {
    /// Name and `spec.local.path` of each PV not being deleted: the paths
    /// whose devices device loss watches.
    pub fn live_paths(existing: &[ExistingPv]) -> Vec<(String, PathBuf)> {
        existing
            .iter()
            .filter(|pv| !pv.deleting)
            .filter_map(|pv| Some((pv.name.clone(), pv.path.clone()?)))
            .collect()
    }

    /// Extracts the facts from a PV object.
    pub fn from_pv(pv: &PersistentVolume) -> Self {
        ExistingPv {
            name: pv.metadata.name.clone().unwrap_or_default(),
            path: pv::local_path(pv).map(PathBuf::from),
            number: pv
                .metadata
                .annotations
                .as_ref()
                .and_then(|annotations| annotations.get(pv::DEVICE_NUMBER_ANNOTATION))
                .and_then(|text| text.parse().ok()),
            phase: pv.status.as_ref().and_then(|status| status.phase.clone()),
            claimed: pv
                .spec
                .as_ref()
                .is_some_and(|spec| spec.claim_ref.is_some()),
            deleting: pv.metadata.deletion_timestamp.is_some(),
        }
    }
}

/// The outcome of planning one reconcile.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// PVs to create, in device-name order.
    pub create: Vec<PersistentVolume>,
    /// Usable devices: those with a PV already and those getting one now.
    pub available: usize,
    /// Matching entries that get no PV, with the reason.
    pub problems: Vec<DeviceProblem>,
    /// Groups of entry names whose plain PV names collided.
    pub collisions: Vec<Vec<String>>,
}

/// This node's existing PVs, indexed the ways the planner looks them up.
struct Covered<'a> {
    by_path: HashMap<&'a Path, &'a ExistingPv>,
    by_name: HashMap<&'a str, &'a ExistingPv>,
    numbers: BTreeSet<DeviceNumber>,
}

impl<'a> Covered<'a> {
    fn new(existing: &'a [ExistingPv]) -> Self {
        Covered {
            by_path: existing
                .iter()
                .filter_map(|pv| pv.path.as_deref().map(|path| (path, pv)))
                .collect(),
            by_name: existing.iter().map(|pv| (pv.name.as_str(), pv)).collect(),
            numbers: existing.iter().filter_map(|pv| pv.number).collect(),
        }
    }

    /// Whether a PV of this node already stands for `device`.
    fn covers(&self, device: &Device) -> bool {
        self.by_path.contains_key(device.path.as_path()) || self.numbers.contains(&device.number)
    }
}

/// What one scanned device gets.
enum Verdict<'a> {
    /// Nothing new: it has a PV, or its wipe is in flight.
    Covered,
    /// No PV, for this reason.
    Problem(String),
    /// A new PV of this name.
    Create(&'a str),
}

fn judge<'a>(
    device: &Device,
    covered: &Covered<'_>,
    names: &'a NameAssignment,
    wipes_in_flight: &BTreeSet<DeviceNumber>,
) -> Verdict<'a> {
    if covered.covers(device) || wipes_in_flight.contains(&device.number) {
        return Verdict::Covered;
    }
    if let Some(reason) = &device.in_use {
        return Verdict::Problem(format!("in use: {reason}"));
    }
    let Some(name) = names.names.get(&device.name) else {
        return Verdict::Problem(
            "its PV name collides with another device's even after hashing".into(),
        );
    };
    if let Some(holder) = covered.by_name.get(name.as_str()) {
        let held_path = holder
            .path
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        return Verdict::Problem(format!(
            "PV name {name} is taken by an existing PV for {held_path:?}"
        ));
    }
    Verdict::Create(name)
}

/// Decides what to create for `scan`.
///
/// A device gets no new PV when an existing PV of this node already points
/// at its path or its device number (whatever state that PV is in,
/// including Terminating), when a wipe of its device is in flight, when it
/// is busy, or when its name is taken by an existing PV for another path.
pub fn plan(
    node: &NodeFacts,
    spec: &PvSpec,
    scan: &Scan,
    existing: &[ExistingPv],
    wipes_in_flight: &BTreeSet<DeviceNumber>,
) -> Plan {
    let covered = Covered::new(existing);
    let holders: HashMap<String, String> = existing
        .iter()
        .filter_map(|pv| {
            let entry = pv.path.as_deref()?.file_name()?.to_str()?;
            Some((pv.name.clone(), entry.to_string()))
        })
        .collect();
    let names = assign_pv_names(
        &node.name,
        scan.devices.iter().map(|d| d.name.as_str()),
        &holders,
    );
    // A device locked by this node's own wipe is not a problem: its PV is
    // being cleaned and it comes back.
    let (own_wipes, problems): (Vec<&DeviceProblem>, Vec<&DeviceProblem>) =
        scan.problems.iter().partition(|problem| {
            problem
                .number
                .is_some_and(|number| wipes_in_flight.contains(&number))
        });
    let mut result = Plan {
        problems: problems.into_iter().cloned().collect(),
        available: own_wipes.len(),
        collisions: names.collisions.clone(),
        ..Plan::default()
    };
    for device in &scan.devices {
        match judge(device, &covered, &names, wipes_in_flight) {
            Verdict::Covered => result.available += 1,
            Verdict::Problem(reason) => result.problems.push(DeviceProblem {
                name: device.name.clone(),
                path: device.path.clone(),
                reason,
                number: Some(device.number),
                kind: ProblemKind::Skipped,
            }),
            Verdict::Create(name) => {
                result.create.push(build_pv(node, spec, device, name));
                result.available += 1;
            }
        }
    }
    result.problems.sort_by(|a, b| a.name.cmp(&b.name));
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::spec::parse_pv_spec;

    fn node() -> NodeFacts {
        NodeFacts {
            name: "n1".into(),
            uid: "uid".into(),
            hostname: "n1".into(),
            label_value: "n1".into(),
        }
    }

    fn spec() -> PvSpec {
        parse_pv_spec(
            &[
                ("deviceDir", "/dev/disks"),
                ("deviceNameFilter", ".*"),
                ("volumeMode", "Block"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        )
        .unwrap()
    }

    fn device(name: &str, minor: u32) -> Device {
        Device {
            name: name.into(),
            path: PathBuf::from(format!("/dev/disks/{name}")),
            resolved: PathBuf::from(format!("/dev/loop{minor}")),
            number: DeviceNumber { major: 7, minor },
            size_bytes: 1 << 30,
            in_use: None,
            stable_id: None,
        }
    }

    fn existing_pv() -> ExistingPv {
        ExistingPv {
            name: String::new(),
            path: None,
            number: None,
            phase: Some("Available".into()),
            claimed: false,
            deleting: false,
        }
    }

    fn scan(devices: Vec<Device>) -> Scan {
        Scan {
            devices,
            problems: vec![],
        }
    }

    fn created(plan: &Plan) -> Vec<String> {
        plan.create
            .iter()
            .map(|pv| pv.metadata.name.clone().unwrap())
            .collect()
    }

    #[test]
    fn new_devices_get_pvs() {
        let plan = plan(
            &node(),
            &spec(),
            &scan(vec![device("a", 1), device("b", 2)]),
            &[],
            &BTreeSet::new(),
        );
        assert_eq!(created(&plan), vec!["local-n1-a", "local-n1-b"]);
        assert_eq!(plan.available, 2);
        assert!(plan.problems.is_empty());
    }

    #[test]
    fn existing_pvs_by_path_or_number_are_never_recreated() {
        let existing = vec![
            ExistingPv {
                name: "local-n1-a".into(),
                path: Some("/dev/disks/a".into()),
                number: None,
                ..existing_pv()
            },
            ExistingPv {
                name: "local-n1-old-alias".into(),
                path: Some("/dev/disks/old-alias".into()),
                number: Some(DeviceNumber { major: 7, minor: 2 }),
                ..existing_pv()
            },
        ];
        let plan = plan(
            &node(),
            &spec(),
            &scan(vec![device("a", 1), device("b", 2)]),
            &existing,
            &BTreeSet::new(),
        );
        assert!(plan.create.is_empty());
        assert_eq!(plan.available, 2);
    }

    #[test]
    fn devices_being_wiped_are_not_recreated() {
        let wiping = BTreeSet::from([DeviceNumber { major: 7, minor: 1 }]);
        let plan = plan(&node(), &spec(), &scan(vec![device("a", 1)]), &[], &wiping);
        assert!(plan.create.is_empty());
        assert_eq!(plan.available, 1);
    }

    #[test]
    fn a_device_locked_by_our_own_wipe_is_available_not_a_problem() {
        let locked = |minor| DeviceProblem {
            name: format!("d{minor}"),
            path: PathBuf::from(format!("/dev/disks/d{minor}")),
            reason: "locked by a wipe in progress".into(),
            number: Some(DeviceNumber { major: 7, minor }),
            kind: ProblemKind::Skipped,
        };
        let scan = Scan {
            devices: vec![],
            problems: vec![locked(1), locked(2)],
        };
        let wiping = BTreeSet::from([DeviceNumber { major: 7, minor: 1 }]);
        let plan = plan(&node(), &spec(), &scan, &[], &wiping);
        assert_eq!(plan.available, 1);
        assert_eq!(
            plan.problems.len(),
            1,
            "another process's lock is still reported"
        );
        assert_eq!(plan.problems[0].name, "d2");
    }

    #[test]
    fn busy_devices_are_problems() {
        let mut busy = device("a", 1);
        busy.in_use = Some("mounted at /var".into());
        let plan = plan(&node(), &spec(), &scan(vec![busy]), &[], &BTreeSet::new());
        assert!(plan.create.is_empty());
        assert_eq!(plan.available, 0);
        assert_eq!(plan.problems[0].reason, "in use: mounted at /var");
    }

    #[test]
    fn a_name_held_by_a_pv_for_another_path_is_a_problem() {
        let existing = vec![ExistingPv {
            name: "local-n1-a".into(),
            path: Some("/dev/other/a".into()),
            number: Some(DeviceNumber { major: 8, minor: 0 }),
            ..existing_pv()
        }];
        let plan = plan(
            &node(),
            &spec(),
            &scan(vec![device("a", 1)]),
            &existing,
            &BTreeSet::new(),
        );
        assert!(plan.create.is_empty());
        assert!(
            plan.problems[0].reason.contains("taken by an existing PV"),
            "{:?}",
            plan.problems
        );
    }

    #[test]
    fn colliding_names_are_reported_and_hashed() {
        let plan = plan(
            &node(),
            &spec(),
            &scan(vec![device("a_b", 1), device("a:b", 2)]),
            &[],
            &BTreeSet::new(),
        );
        let names = created(&plan);
        assert_eq!(names.len(), 2);
        assert_ne!(names[0], names[1]);
        assert_eq!(plan.collisions.len(), 1);
    }
}
