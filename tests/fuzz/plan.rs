//! The planner, `plan`, over scans of fuzzed entry names (some built to
//! collide) with some devices already covered by PVs and some names held by
//! PVs of other paths: it never creates two PVs of one name or for one
//! device, never reuses an existing PV's name, and accounts for every device
//! exactly once.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::PersistentVolume;
use local_pv_provisioner::device::blockdev::DeviceNumber;
use local_pv_provisioner::device::facts::DeviceFacts;
use local_pv_provisioner::discover::devices::{Device, Scan};
use local_pv_provisioner::objects::naming::{hashed_pv_name, node_label_value, plain_pv_name};
use local_pv_provisioner::objects::pv::{NODE_LABEL, NODE_NAME_ANNOTATION};
use local_pv_provisioner::objects::spec::{
    KEY_DEVICE_DIR, KEY_DEVICE_NAME_FILTER, KEY_VOLUME_MODE, PvSpec, parse_pv_spec,
};
use local_pv_provisioner::provision::build::NodeFacts;
use local_pv_provisioner::provision::classes::classify;
use local_pv_provisioner::provision::plan::{ExistingPv, Plan, plan};
use proptest::collection::{btree_set, vec};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::oracles::{valid_label_value, valid_subdomain};
use crate::strategies::{colliding_entries, entry_name, node_name};
use crate::{config, data};

/// The device directory of every fuzzed scan.
const DIR: &str = "/dev/disk/by-fuzz";

fn facts(node: &str) -> NodeFacts {
    NodeFacts {
        name: node.to_string(),
        uid: "uid".into(),
        hostname: node.to_string(),
        label_value: node_label_value(node),
        labels: Default::default(),
    }
}

fn block_spec() -> PvSpec {
    parse_pv_spec(&data(&[
        (KEY_DEVICE_DIR, DIR),
        (KEY_DEVICE_NAME_FILTER, ""),
        (KEY_VOLUME_MODE, "Block"),
    ]))
    .unwrap()
}

/// One 1 GiB device per entry, `7:<index>`, linked in [`DIR`].
fn devices(entries: &BTreeSet<String>) -> Vec<Device> {
    entries
        .iter()
        .enumerate()
        .map(|(index, name)| Device {
            name: name.to_string(),
            path: Path::new(DIR).join(name),
            resolved: PathBuf::from(format!("/dev/fake{index}")),
            number: DeviceNumber {
                major: 7,
                minor: index as u32,
            },
            size_bytes: 1 << 30,
            in_use: None,
            stable_id: None,
            facts: DeviceFacts {
                read_only: Some(false),
                removable: Some(false),
                ..DeviceFacts::default()
            },
        })
        .collect()
}

/// The name the controller gives the PV of `device`.
fn pv_name(node: &str, device: &Device) -> String {
    plain_pv_name(node, &device.name).unwrap_or_else(|| hashed_pv_name(node, &device.name))
}

/// An Available, unclaimed PV.
fn available(name: String, path: PathBuf, number: Option<DeviceNumber>) -> ExistingPv {
    ExistingPv {
        name,
        path: Some(path),
        number,
        phase: Some("Available".into()),
        claimed: false,
        deleting: false,
        class: "default".into(),
    }
}

/// Existing PVs: the devices marked `covered` already have theirs; the
/// names of the `foreign` devices are held by PVs for paths elsewhere.
fn existing_pvs(
    node: &str,
    devices: &[Device],
    covered: &[bool],
    foreign: &[prop::sample::Index],
) -> Vec<ExistingPv> {
    let mut existing = Vec::new();
    for (device, has_pv) in devices.iter().zip(covered) {
        if *has_pv {
            let name = pv_name(node, device);
            existing.push(available(name, device.path.clone(), Some(device.number)));
        }
    }
    for index in foreign {
        let name = pv_name(node, index.get(devices));
        if !existing.iter().any(|pv| pv.name == name) {
            existing.push(available(name, PathBuf::from("/elsewhere/x"), None));
        }
    }
    existing
}

/// Every PV to create has a new, valid, unique name and a device of its own
/// in [`DIR`] with no PV yet; every device is accounted for exactly once.
fn decision_holds(
    node: &str,
    devices: &[Device],
    existing: &[ExistingPv],
    decided: &Plan,
    built: &[PersistentVolume],
) -> Result<(), TestCaseError> {
    let existing_names: HashSet<&str> = existing.iter().map(|pv| pv.name.as_str()).collect();
    let covered_paths: HashSet<&PathBuf> =
        existing.iter().filter_map(|pv| pv.path.as_ref()).collect();
    let mut names = HashSet::new();
    let mut paths = HashSet::new();
    prop_assert_eq!(built.len(), decided.create.len());
    for pv in built {
        let name = pv.metadata.name.clone().unwrap();
        prop_assert!(valid_subdomain(&name), "{}", name);
        prop_assert!(names.insert(name.clone()), "two PVs named {}", name);
        prop_assert!(
            !existing_names.contains(name.as_str()),
            "{} reuses an existing name",
            name
        );
        let path = PathBuf::from(&pv.spec.as_ref().unwrap().local.as_ref().unwrap().path);
        prop_assert!(
            !covered_paths.contains(&path),
            "{} already has a PV",
            path.display()
        );
        prop_assert!(paths.insert(path.clone()), "two PVs for {}", path.display());
        prop_assert_eq!(path.parent(), Some(Path::new(DIR)));
        let labels = pv.metadata.labels.as_ref().unwrap();
        prop_assert!(valid_label_value(&labels[NODE_LABEL]));
        prop_assert_eq!(
            &pv.metadata.annotations.as_ref().unwrap()[NODE_NAME_ANNOTATION],
            node
        );
    }
    // Every device is accounted for exactly once.
    let already = devices
        .iter()
        .filter(|d| covered_paths.contains(&d.path))
        .count();
    prop_assert_eq!(decided.available, already + decided.create.len());
    prop_assert_eq!(decided.available + decided.problems.len(), devices.len());
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn plan_never_creates_a_duplicate_or_reuses_a_name(
        node in node_name(),
        entries in prop_oneof![colliding_entries(), btree_set(entry_name(), 1..10)],
        covered in vec(any::<bool>(), 10),
        foreign in vec(any::<prop::sample::Index>(), 0..3),
    ) {
        let devices = devices(&entries);
        let existing = existing_pvs(&node, &devices, &covered, &foreign);
        let scan = Scan { devices: devices.clone(), problems: vec![] };
        let classes = [block_spec()];
        let classified = classify(&classes, &[scan]);
        let decided = plan(&facts(&node), &classes, &classified, &existing, &BTreeSet::new(), &[]);
        // The PVs as the controller builds them just before each create.
        let built: Vec<PersistentVolume> = decided
            .create
            .iter()
            .map(|planned| planned.pv(&facts(&node), &classes))
            .collect();
        decision_holds(&node, &devices, &existing, &decided, &built)?;
    }
}
