//! The pure decision of a reconcile: given the devices of each class, this
//! node's existing PVs and the wipes in flight, which PVs to create and
//! which devices to report. This is where "never recreate while wiping",
//! "never two PVs for one device", "never touch an existing PV" and "at
//! most `maxDevices` PVs of a class" live, as plain data in and plain data
//! out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::PersistentVolume;

use crate::device::blockdev::DeviceNumber;
use crate::discover::devices::{Device, DeviceProblem, ProblemKind};
use crate::objects::naming::{NameAssignment, NameRequest, assign_pv_names};
use crate::objects::pv::{self, LeanPv};
use crate::objects::spec::PvSpec;
use crate::provision::build::{NodeFacts, build_pv};
use crate::provision::classes::{Classified, in_class};

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
    /// Its device class (its class label; `default` without one).
    pub class: String,
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

    /// What a pass reads of this PV: everything but its phase and whether
    /// it is claimed, which only device loss reads, and only of a PV whose
    /// device is missing (`device_missing`). A PV change that keeps this
    /// key changes no plan, create or delete.
    pub fn pass_key(&self, device_missing: bool) -> ExistingPv {
        let mut key = self.clone();
        if !device_missing {
            key.phase = None;
            key.claimed = false;
        }
        key
    }

    /// Extracts the facts from a PV object.
    pub fn from_pv(pv: &LeanPv) -> Self {
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
            class: pv::class_of(pv).to_string(),
        }
    }
}

/// A PV to create: its class, name and device. The object itself is built
/// just before its create ([`Planned::pv`]): a cold start plans a thousand,
/// and holding every body at once (about 8 KB each) set the process's
/// memory peak.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The class's index in the node's spec.
    pub class: usize,
    /// The PV's name.
    pub name: String,
    /// The device.
    pub device: Device,
}

impl Planned {
    /// The PV to create on `node`, of the class at [`Planned::class`] in
    /// `classes`.
    pub fn pv(&self, node: &NodeFacts, classes: &[PvSpec]) -> PersistentVolume {
        build_pv(node, &classes[self.class], &self.device, &self.name)
    }
}

/// The outcome of planning one reconcile.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// PVs to create, by class, in device-name order.
    pub create: Vec<Planned>,
    /// Usable devices: those with a PV already and those getting one now.
    pub available: usize,
    /// The same, for each class (in the spec's order).
    pub available_by_class: Vec<usize>,
    /// Matching entries that get no PV, with the reason.
    pub problems: Vec<DeviceProblem>,
    /// Groups of entry names whose plain PV names collided.
    pub collisions: Vec<Vec<String>>,
    /// Devices held back because their class has `maxDevices` PVs, in the
    /// order they will be offered when a slot frees.
    pub held: Vec<PathBuf>,
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
    Problem(ProblemKind, String),
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
        return Verdict::Problem(ProblemKind::InUse, format!("in use: {reason}"));
    }
    let Some(name) = names.names.get(&name_key(device)) else {
        return Verdict::Problem(
            ProblemKind::Skipped,
            "its PV name collides with another device's even after hashing".into(),
        );
    };
    if let Some(holder) = covered.by_name.get(name.as_str()) {
        let held_path = holder
            .path
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        return Verdict::Problem(
            ProblemKind::Skipped,
            format!("PV name {name} is taken by an existing PV for {held_path:?}"),
        );
    }
    Verdict::Create(name)
}

/// The key a device's PV name is assigned under: its path.
fn name_key(device: &Device) -> String {
    device.path.display().to_string()
}

/// Decides what to create for the devices of each class.
///
/// A device gets no new PV when an existing PV of this node already points
/// at its path or its device number (whatever state that PV is in,
/// including Terminating), when a wipe of its device is in flight, when it
/// is busy, when its name is taken by an existing PV for another path, or
/// when its class already has `maxDevices` PVs. Devices held back by
/// `maxDevices` get the free slots first, in `held_order`.
pub fn plan(
    node: &NodeFacts,
    classes: &[PvSpec],
    classified: &Classified,
    existing: &[ExistingPv],
    wipes_in_flight: &BTreeSet<DeviceNumber>,
    held_order: &[PathBuf],
) -> Plan {
    let covered = Covered::new(existing);
    let holders: HashMap<String, String> = existing
        .iter()
        .filter_map(|pv| Some((pv.name.clone(), pv.path.as_deref()?.display().to_string())))
        .collect();
    let requests: Vec<(String, &PvSpec, &Device)> = classes
        .iter()
        .zip(&classified.devices)
        .flat_map(|(class, devices)| devices.iter().map(move |d| (name_key(d), class, d)))
        .collect();
    let names = assign_pv_names(
        &node.name,
        requests.iter().map(|(key, class, device)| NameRequest {
            key,
            class: &class.class,
            entry: &device.name,
        }),
        &holders,
    );
    let mut result = Plan {
        available_by_class: vec![0; classes.len()],
        collisions: names.collisions.clone(),
        ..Plan::default()
    };
    let class_index: BTreeMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(index, class)| (class.class.as_str(), index))
        .collect();
    for problem in &classified.problems {
        // A device locked by this node's own wipe is not a problem: its PV
        // is being cleaned and it comes back.
        let own_wipe = problem
            .number
            .is_some_and(|number| wipes_in_flight.contains(&number));
        if own_wipe {
            result.available += 1;
            let class = problem.class.as_deref().and_then(|c| class_index.get(c));
            if let Some(index) = class {
                result.available_by_class[*index] += 1;
            }
        } else {
            result.problems.push(problem.clone());
        }
    }
    let held_rank: HashMap<&Path, usize> = held_order
        .iter()
        .enumerate()
        .map(|(rank, path)| (path.as_path(), rank))
        .collect();
    for (index, (class, devices)) in classes.iter().zip(&classified.devices).enumerate() {
        let mut slots = class.max_devices.map(|max| {
            let held = existing.iter().filter(|pv| pv.class == class.class).count();
            max.saturating_sub(held)
        });
        let mut verdicts: Vec<(&Device, Verdict<'_>)> = devices
            .iter()
            .map(|device| (device, judge(device, &covered, &names, wipes_in_flight)))
            .collect();
        // Devices waiting longest for a slot of their class come first.
        verdicts.sort_by_key(|(device, _)| {
            (
                held_rank
                    .get(device.path.as_path())
                    .copied()
                    .unwrap_or(usize::MAX),
                device.name.clone(),
            )
        });
        for (device, verdict) in verdicts {
            let problem = |kind: ProblemKind, reason: String| DeviceProblem {
                name: device.name.clone(),
                path: device.path.clone(),
                reason: format!("{reason}{}", in_class(&class.class)),
                number: Some(device.number),
                kind,
                class: Some(class.class.clone()),
            };
            match verdict {
                Verdict::Covered => {
                    result.available += 1;
                    result.available_by_class[index] += 1;
                }
                Verdict::Problem(kind, reason) => result.problems.push(problem(kind, reason)),
                Verdict::Create(_) if slots == Some(0) => {
                    let max = class.max_devices.unwrap_or_default();
                    result.problems.push(problem(
                        ProblemKind::Ineligible,
                        format!(
                        "class {} already has maxDevices ({max}) PersistentVolumes on this node; offered when one of them goes",
                        class.class
                    )));
                    result.held.push(device.path.clone());
                }
                Verdict::Create(name) => {
                    if let Some(left) = slots.as_mut() {
                        *left -= 1;
                    }
                    result.create.push(Planned {
                        class: index,
                        name: name.to_string(),
                        device: device.clone(),
                    });
                    result.available += 1;
                    result.available_by_class[index] += 1;
                }
            }
        }
    }
    result
        .create
        .sort_by(|a, b| (a.class, &a.name).cmp(&(b.class, &b.name)));
    result.problems.sort_by(|a, b| a.name.cmp(&b.name));
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::facts::DeviceFacts;
    use crate::discover::devices::Scan;
    use crate::objects::classes::parse_device_classes;
    use crate::objects::spec::parse_pv_spec;
    use crate::provision::classes::classify;

    fn node() -> NodeFacts {
        NodeFacts {
            name: "n1".into(),
            uid: "uid".into(),
            hostname: "n1".into(),
            label_value: "n1".into(),
            labels: BTreeMap::new(),
        }
    }

    /// Plans one class's scan (the flat keys' `default` class).
    fn plan(
        node: &NodeFacts,
        spec: &PvSpec,
        scan: &Scan,
        existing: &[ExistingPv],
        wipes: &BTreeSet<DeviceNumber>,
    ) -> Plan {
        let classes = [spec.clone()];
        let classified = classify(&classes, std::slice::from_ref(scan));
        super::plan(node, &classes, &classified, existing, wipes, &[])
    }

    fn usable() -> DeviceFacts {
        DeviceFacts {
            read_only: Some(false),
            removable: Some(false),
            ..DeviceFacts::default()
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
            facts: usable(),
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
            class: "default".into(),
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
            .map(|planned| planned.name.clone())
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
            class: None,
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

    #[test]
    fn a_class_gets_at_most_max_devices_pvs_and_the_longest_held_device_goes_first() {
        let classes = parse_device_classes(
            "- {name: two, deviceDir: /dev/disks, deviceNameFilter: \".*\", volumeMode: Block, maxDevices: 2}",
        )
        .unwrap();
        let scan = scan(vec![device("a", 1), device("b", 2), device("c", 3)]);
        let classified = classify(&classes, std::slice::from_ref(&scan));
        let first = super::plan(&node(), &classes, &classified, &[], &BTreeSet::new(), &[]);
        assert_eq!(created(&first), vec!["local-n1-a", "local-n1-b"]);
        assert_eq!(first.held, vec![PathBuf::from("/dev/disks/c")]);
        assert!(
            first.problems[0].reason.contains("maxDevices (2)"),
            "{:?}",
            first.problems
        );
        // a's PV went and a came back wiped: c waited longer and gets the slot.
        let b = ExistingPv {
            name: "local-n1-b".into(),
            path: Some("/dev/disks/b".into()),
            class: "two".into(),
            ..existing_pv()
        };
        let next = super::plan(
            &node(),
            &classes,
            &classified,
            &[b],
            &BTreeSet::new(),
            &first.held,
        );
        assert_eq!(created(&next), vec!["local-n1-c"]);
        assert_eq!(next.held, vec![PathBuf::from("/dev/disks/a")]);
        assert_eq!(next.available_by_class, vec![2]);
    }
}
