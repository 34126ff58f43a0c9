//! Which class each device belongs to, decided from the scans of every
//! class (pure). A device is offered by exactly one class or by none:
//!
//! 1. A device the kernel reports read-only or removable is never offered,
//!    in any class; one whose `ro` or `removable` cannot be read is not
//!    offered either (fail closed).
//! 2. Each class whose directory and name filter found the device judges it
//!    with its selectors: *selected*, *excluded* (its size, type,
//!    rotational flag, model, vendor or serial is not what the class asks
//!    for) or *cannot tell* (a fact the selector needs cannot be read).
//! 3. Selected by one class and no other class unsure: offered by it.
//!    Selected by two or more: offered by neither, an error naming them.
//!    Unsure anywhere (and not refused): not offered, the unreadable fact
//!    named. Excluded by every class that found it: not offered, not an
//!    error ([`ProblemKind::Excluded`]), with each class's reason.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::device::blockdev::DeviceNumber;
use crate::discover::devices::{Device, DeviceProblem, ProblemKind, Scan};
use crate::objects::classes::{DEFAULT_CLASS, Selector};
use crate::objects::spec::PvSpec;

/// The devices of a node, each in its class.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Classified {
    /// For each class (in the spec's order), the devices it offers, by entry name.
    pub devices: Vec<Vec<Device>>,
    /// Matching entries no class offers, and why.
    pub problems: Vec<DeviceProblem>,
}

/// What one class makes of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The class takes it.
    Selected,
    /// The class does not take it, for this reason.
    Excluded(String),
    /// A fact the selector needs cannot be read.
    CannotTell(String),
}

/// Judges `device` with `selector`: a definite mismatch excludes it, else
/// an unreadable fact leaves it undecided.
pub fn select(selector: &Selector, device: &Device) -> Selection {
    let facts = &device.facts;
    let mut unsure = None;
    let mut judge = |outcome: Selection| match outcome {
        Selection::Selected => None,
        Selection::Excluded(reason) => Some(reason),
        Selection::CannotTell(reason) => {
            unsure.get_or_insert(reason);
            None
        }
    };
    let size = device.size_bytes;
    if let Some(min) = selector.min_size.filter(|min| size < *min) {
        return Selection::Excluded(format!("its size {size} bytes is below minSize {min}"));
    }
    if let Some(max) = selector.max_size.filter(|max| size > *max) {
        return Selection::Excluded(format!("its size {size} bytes is above maxSize {max}"));
    }
    let checks = [
        check_type(selector, device),
        check_rotational(selector, facts.rotational),
        check_patterns(
            "model",
            "device/model",
            &selector.models,
            facts.model.as_deref(),
        ),
        check_patterns(
            "vendor",
            "device/vendor",
            &selector.vendors,
            facts.vendor.as_deref(),
        ),
        check_patterns(
            "serial",
            "device/serial, serial or wwid",
            &selector.serials,
            facts.serial.as_deref(),
        ),
    ];
    for outcome in checks {
        if let Some(reason) = judge(outcome) {
            return Selection::Excluded(reason);
        }
    }
    match unsure {
        Some(reason) => Selection::CannotTell(reason),
        None => Selection::Selected,
    }
}

fn check_type(selector: &Selector, device: &Device) -> Selection {
    if selector.device_types.is_empty() {
        return Selection::Selected;
    }
    let wanted = || {
        selector
            .device_types
            .iter()
            .map(|kind| kind.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match device.facts.device_type {
        None => Selection::CannotTell("its device type cannot be read from sysfs".into()),
        Some(kind) if selector.device_types.contains(&kind) => Selection::Selected,
        Some(kind) => Selection::Excluded(format!(
            "it is a {kind} device; deviceTypes takes {}",
            wanted()
        )),
    }
}

fn check_rotational(selector: &Selector, rotational: Option<bool>) -> Selection {
    let Some(wanted) = selector.rotational else {
        return Selection::Selected;
    };
    let describe = |flag: bool| if flag { "rotational" } else { "non-rotational" };
    match rotational {
        None => Selection::CannotTell(
            "sysfs does not say whether it is rotational (queue/rotational)".into(),
        ),
        Some(actual) if actual == wanted => Selection::Selected,
        Some(actual) => Selection::Excluded(format!(
            "it is {}; the class takes {} devices",
            describe(actual),
            describe(wanted)
        )),
    }
}

fn check_patterns(
    what: &str,
    file: &str,
    patterns: &[regex::Regex],
    value: Option<&str>,
) -> Selection {
    if patterns.is_empty() {
        return Selection::Selected;
    }
    match value {
        None => Selection::CannotTell(format!("sysfs has no {what} for it ({file})")),
        Some(value) if patterns.iter().any(|pattern| pattern.is_match(value)) => {
            Selection::Selected
        }
        Some(value) => Selection::Excluded(format!(
            "its {what} {value:?} matches none of {:?}",
            patterns.iter().map(|p| p.as_str()).collect::<Vec<_>>()
        )),
    }
}

/// Why a device is never offered in any class, if it is not.
fn refused_everywhere(device: &Device) -> Option<String> {
    let facts = &device.facts;
    match (facts.read_only, facts.removable) {
        (Some(true), _) => Some("read-only (sysfs ro is 1): never offered in any class".into()),
        (_, Some(true)) => {
            Some("removable media (sysfs removable is 1): never offered in any class".into())
        }
        (None, _) => {
            Some("cannot tell whether it is read-only (sysfs ro unreadable): not offered".into())
        }
        (_, None) => Some(
            "cannot tell whether it is removable (sysfs removable unreadable): not offered".into(),
        ),
        _ => None,
    }
}

/// How a class is named in a reason: nothing for the only, default class.
pub fn in_class(class: &str) -> String {
    if class == DEFAULT_CLASS {
        String::new()
    } else {
        format!(" (class {class})")
    }
}

/// What the classes that found one device make of it.
#[derive(Default)]
struct Findings<'a> {
    /// Every entry naming the device, with the class it was found for.
    entries: Vec<(usize, &'a Device)>,
    selected: Vec<usize>,
    excluded: Vec<(usize, String)>,
    unsure: Vec<(usize, String)>,
}

/// Puts each device of `scans` (one per class of `classes`) in its class.
pub fn classify(classes: &[PvSpec], scans: &[Scan]) -> Classified {
    let mut classified = Classified {
        devices: vec![Vec::new(); classes.len()],
        problems: Vec::new(),
    };
    let mut problem_paths: BTreeMap<PathBuf, ()> = BTreeMap::new();
    let mut found: BTreeMap<DeviceNumber, Findings<'_>> = BTreeMap::new();
    for (index, (class, scan)) in classes.iter().zip(scans).enumerate() {
        for problem in &scan.problems {
            if problem_paths.insert(problem.path.clone(), ()).is_none() {
                let mut problem = problem.clone();
                problem.class = Some(class.class.clone());
                classified.problems.push(problem);
            }
        }
        for device in &scan.devices {
            let findings = found.entry(device.number).or_default();
            findings.entries.push((index, device));
            match select(&class.selector, device) {
                Selection::Selected if !findings.selected.contains(&index) => {
                    findings.selected.push(index);
                }
                Selection::Selected => {}
                Selection::Excluded(reason) => findings.excluded.push((index, reason)),
                Selection::CannotTell(reason) => findings.unsure.push((index, reason)),
            }
        }
    }
    for findings in found.into_values() {
        let (first_class, first) = findings.entries[0];
        if let [class] = findings.selected.as_slice()
            && findings.unsure.is_empty()
            && refused_everywhere(first).is_none()
        {
            let device = findings
                .entries
                .iter()
                .find(|(index, _)| index == class)
                .map_or(first, |(_, device)| device);
            classified.devices[*class].push(device.clone());
            continue;
        }
        let name = |index: usize| classes[index].class.as_str();
        let (kind, class, reason) = if let Some(reason) = refused_everywhere(first) {
            (ProblemKind::Ineligible, None, reason)
        } else if findings.selected.len() > 1 {
            let names: Vec<&str> = findings.selected.iter().map(|i| name(*i)).collect();
            (
                ProblemKind::Ineligible,
                None,
                format!(
                    "selected by the classes {}: a device belongs to one class, so neither offers it (narrow their selectors)",
                    names.join(" and ")
                ),
            )
        } else if let Some((index, reason)) = findings.unsure.first() {
            (
                ProblemKind::Skipped,
                Some(name(*index).to_string()),
                format!(
                    "class {} cannot tell whether it selects it: {reason}; not offered",
                    name(*index)
                ),
            )
        } else {
            let reasons: Vec<String> = findings
                .excluded
                .iter()
                .map(|(index, reason)| format!("class {}: {reason}", name(*index)))
                .collect();
            (
                ProblemKind::Excluded,
                Some(name(first_class).to_string()),
                format!("not selected by any class ({})", reasons.join("; ")),
            )
        };
        let mut seen = BTreeMap::new();
        for (_, device) in &findings.entries {
            if seen.insert(device.path.clone(), ()).is_none()
                && problem_paths.insert(device.path.clone(), ()).is_none()
            {
                classified.problems.push(DeviceProblem {
                    name: device.name.clone(),
                    path: device.path.clone(),
                    reason: reason.clone(),
                    number: Some(device.number),
                    kind,
                    class: class.clone(),
                });
            }
        }
    }
    for devices in &mut classified.devices {
        devices.sort_by(|a, b| a.name.cmp(&b.name));
    }
    classified
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::facts::DeviceFacts;
    use crate::objects::classes::{DeviceType, parse_device_classes};

    const GIB: u64 = 1 << 30;

    fn device(name: &str, minor: u32, size: u64, facts: DeviceFacts) -> Device {
        Device {
            name: name.into(),
            path: PathBuf::from(format!("/dev/disk/by-id/{name}")),
            resolved: PathBuf::from(format!("/dev/sd{minor}")),
            number: DeviceNumber { major: 8, minor },
            size_bytes: size,
            in_use: None,
            stable_id: None,
            facts,
        }
    }

    fn ssd() -> DeviceFacts {
        DeviceFacts {
            read_only: Some(false),
            removable: Some(false),
            rotational: Some(false),
            model: Some("Samsung SSD 980 PRO 1TB".into()),
            vendor: None,
            serial: Some("S5GXNF0R123456".into()),
            device_type: Some(DeviceType::Disk),
        }
    }

    fn hdd() -> DeviceFacts {
        DeviceFacts {
            rotational: Some(true),
            model: Some("ST4000NM0035".into()),
            ..ssd()
        }
    }

    fn classes(yaml: &str) -> Vec<PvSpec> {
        parse_device_classes(yaml).expect("valid classes")
    }

    fn scan(devices: Vec<Device>) -> Scan {
        Scan {
            devices,
            problems: Vec::new(),
        }
    }

    const TWO: &str = r#"
- {name: fast, deviceDir: /dev/disk/by-id, deviceNameFilter: ".*", volumeMode: Block, rotational: false}
- {name: bulk, deviceDir: /dev/disk/by-id, deviceNameFilter: ".*", volumeMode: Block, rotational: true, minSize: 1Ti}
"#;

    #[test]
    fn each_device_goes_to_the_one_class_that_selects_it() {
        let classes = classes(TWO);
        let devices = vec![
            device("nvme", 1, 1000 * GIB, ssd()),
            device("big-hdd", 2, 4000 * GIB, hdd()),
            device("small-hdd", 3, 500 * GIB, hdd()),
        ];
        let classified = classify(&classes, &[scan(devices.clone()), scan(devices)]);
        let names = |class: usize| {
            classified.devices[class]
                .iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(0), ["nvme"]);
        assert_eq!(names(1), ["big-hdd"]);
        let [excluded] = classified.problems.as_slice() else {
            panic!("{:?}", classified.problems);
        };
        assert_eq!(excluded.kind, ProblemKind::Excluded);
        assert!(
            excluded.reason.contains("class fast: it is rotational"),
            "{}",
            excluded.reason
        );
        assert!(
            excluded.reason.contains("class bulk: its size"),
            "{}",
            excluded.reason
        );
    }

    #[test]
    fn a_device_two_classes_select_is_offered_by_neither_and_both_are_named() {
        let classes = classes(
            r#"
- {name: a, deviceDir: /dev/disk/by-id, deviceNameFilter: ".*", volumeMode: Block}
- {name: b, deviceDir: /dev/disk/by-path, deviceNameFilter: ".*", volumeMode: Block, models: ["Samsung"]}
"#,
        );
        let by_id = device("nvme", 1, GIB, ssd());
        let mut by_path = by_id.clone();
        by_path.path = PathBuf::from("/dev/disk/by-path/pci-1");
        by_path.name = "pci-1".into();
        let classified = classify(&classes, &[scan(vec![by_id]), scan(vec![by_path])]);
        assert!(classified.devices.iter().all(Vec::is_empty));
        assert_eq!(classified.problems.len(), 2, "both entries are reported");
        for problem in &classified.problems {
            assert_eq!(problem.kind, ProblemKind::Ineligible);
            assert!(
                problem.reason.contains("classes a and b"),
                "{}",
                problem.reason
            );
        }
    }

    #[test]
    fn read_only_and_removable_devices_are_never_offered() {
        let classes = classes(TWO);
        let read_only = device(
            "ro",
            1,
            GIB,
            DeviceFacts {
                read_only: Some(true),
                ..ssd()
            },
        );
        let removable = device(
            "usb",
            2,
            GIB,
            DeviceFacts {
                removable: Some(true),
                ..ssd()
            },
        );
        let unknown = device(
            "odd",
            3,
            GIB,
            DeviceFacts {
                read_only: None,
                ..ssd()
            },
        );
        let classified = classify(
            &classes,
            &[scan(vec![read_only, removable, unknown]), scan(vec![])],
        );
        assert!(classified.devices.iter().all(Vec::is_empty));
        let reasons: Vec<&str> = classified
            .problems
            .iter()
            .map(|p| p.reason.as_str())
            .collect();
        assert!(reasons[0].starts_with("read-only"), "{reasons:?}");
        assert!(reasons[1].starts_with("removable"), "{reasons:?}");
        assert!(
            reasons[2].contains("cannot tell whether it is read-only"),
            "{reasons:?}"
        );
    }

    #[test]
    fn an_unreadable_fact_fails_closed_and_is_named() {
        let classes = classes(
            r#"
- {name: by-model, deviceDir: /dev, deviceNameFilter: "^loop", volumeMode: Block, models: [".*"]}
"#,
        );
        let looped = device(
            "loop0",
            1,
            GIB,
            DeviceFacts {
                model: None,
                ..ssd()
            },
        );
        let classified = classify(&classes, &[scan(vec![looped])]);
        assert!(classified.devices[0].is_empty());
        let problem = &classified.problems[0];
        assert_eq!(problem.kind, ProblemKind::Skipped);
        assert!(
            problem.reason.contains("sysfs has no model"),
            "{}",
            problem.reason
        );
        assert_eq!(problem.class.as_deref(), Some("by-model"));
    }

    #[test]
    fn a_definite_mismatch_wins_over_an_unreadable_fact() {
        let selector = &classes(
            r#"
- {name: c, deviceDir: /dev, deviceNameFilter: "x", volumeMode: Block, deviceTypes: [disk], models: ["x"]}
"#,
        )[0]
        .selector;
        let looped = device(
            "loop0",
            1,
            GIB,
            DeviceFacts {
                model: None,
                device_type: Some(DeviceType::Loop),
                ..ssd()
            },
        );
        assert_eq!(
            select(selector, &looped),
            Selection::Excluded("it is a loop device; deviceTypes takes disk".into())
        );
    }
}
