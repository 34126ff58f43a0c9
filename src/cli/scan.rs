//! The `scan` subcommand: a dry run that reads a PV spec from a file or
//! flags, scans this machine's devices, and prints, class by class, the
//! PersistentVolumes that would be created as YAML and the skipped devices
//! and why.
//! It needs no cluster and writes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;

use serde_yaml_ng::Value;

use crate::config::ScanArgs;
use crate::discover::devices::{DeviceProblem, ProblemKind, scan_devices};
use crate::objects::naming::node_label_value;
use crate::objects::spec::{
    KEY_DEVICE_CLASSES, KEY_DEVICE_DIR, KEY_DEVICE_NAME_FILTER, KEY_FS_TYPE,
    KEY_STORAGE_CLASS_NAME, KEY_VOLUME_MODE, PvSpec, parse_node_spec,
};
use crate::provision::build::NodeFacts;
use crate::provision::classes::classify;
use crate::provision::plan::{Plan, plan};

/// Runs the dry run and returns what to print, or a one-line error.
pub fn run_scan(args: &ScanArgs) -> Result<String, String> {
    let data = match &args.spec_file {
        Some(path) => {
            let text = fs::read_to_string(path)
                .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
            spec_data_from_yaml(&text).map_err(|error| format!("{}: {error}", path.display()))?
        }
        None => spec_data_from_flags(args),
    };
    let spec = parse_node_spec(&data).map_err(|error| format!("invalid PV spec: {error}"))?;
    let node_name = match &args.node_name {
        Some(name) => name.clone(),
        None => fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_string())
            .map_err(|error| {
                format!("cannot read this machine's hostname (pass --node-name): {error}")
            })?,
    };
    let mut scans = Vec::with_capacity(spec.classes.len());
    for class in &spec.classes {
        scans.push(
            scan_devices(&class.device_dir, &class.device_name_filter)
                .map_err(|error| error.to_string())?,
        );
    }
    let classified = classify(&spec.classes, &scans);
    let facts = NodeFacts {
        uid: format!("<uid of Node {node_name}>"),
        hostname: node_name.clone(),
        label_value: node_label_value(&node_name),
        name: node_name.clone(),
        labels: BTreeMap::new(),
    };
    let mut decided = plan(
        &facts,
        &spec.classes,
        &classified,
        &[],
        &BTreeSet::new(),
        &[],
    );
    let probes = probe_candidates(&mut decided, &spec.classes);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# local-pv-provisioner scan (dry run) on node {node_name:?}: {} PersistentVolume(s) would be created, {} device(s) skipped.",
        decided.create.len(),
        decided.problems.len()
    );
    let _ = writeln!(
        out,
        "# The ownerReference UID is a placeholder: the controller fills in the live Node's UID; Node labels a class copies are not known here."
    );
    for (index, class) in spec.classes.iter().enumerate() {
        let _ = writeln!(
            out,
            "\n# class {}: deviceDir {}, storageClassName {}, volumeMode {}",
            class.class,
            class.device_dir.display(),
            class.storage_class_name,
            class.volume_mode.as_str()
        );
        for (planned, probe) in decided.create.iter().zip(&probes) {
            if planned.class != index {
                continue;
            }
            let _ = writeln!(out, "# {}: {probe}", planned.device.path.display());
            out.push_str("---\n");
            out.push_str(
                &serde_yaml_ng::to_string(&planned.pv(&facts, &spec.classes))
                    .map_err(|error| format!("cannot render YAML: {error}"))?,
            );
        }
        for problem in &decided.problems {
            if problem.class.as_deref() == Some(&class.class) {
                say_skipped(&mut out, problem);
            }
        }
    }
    let classless: Vec<&DeviceProblem> = decided
        .problems
        .iter()
        .filter(|problem| problem.class.is_none())
        .collect();
    if !classless.is_empty() {
        let _ = writeln!(out, "\n# devices of no single class");
        for problem in classless {
            say_skipped(&mut out, problem);
        }
    }
    for group in &decided.collisions {
        let _ = writeln!(
            out,
            "# name collision, hashed names used: {}",
            group.join(", ")
        );
    }
    Ok(out)
}

fn say_skipped(out: &mut String, problem: &DeviceProblem) {
    let verb = if problem.kind == ProblemKind::Excluded {
        "not selected"
    } else {
        "skipped"
    };
    let _ = writeln!(
        out,
        "# {verb} {}: {}",
        problem.path.display(),
        problem.reason
    );
}

/// Probes each device the plan would offer, as the controller does before
/// a first offer; devices that are not blank move to the plan's problems.
/// Returns what the probe said about each PV left to create.
fn probe_candidates(decided: &mut Plan, classes: &[PvSpec]) -> Vec<String> {
    let mut kept = Vec::new();
    let mut said = Vec::new();
    for planned in std::mem::take(&mut decided.create) {
        match crate::device::probe::probe_device(&planned.device.resolved) {
            Ok(probe) if probe.refusal().is_some() => {
                decided.problems.push(DeviceProblem {
                    name: planned.device.name.clone(),
                    path: planned.device.path.clone(),
                    reason: probe.refusal().unwrap_or_default(),
                    class: Some(classes[planned.class].class.clone()),
                    ..Default::default()
                });
            }
            Err(error) => {
                said.push(format!(
                    "probe failed ({error}); the controller would retry"
                ));
                kept.push(planned);
            }
            Ok(_) => {
                said.push("probed blank: it would be offered".to_string());
                kept.push(planned);
            }
        }
    }
    decided.create = kept;
    said
}

/// Reads the spec's `data` from YAML: a ConfigMap manifest, or the bare
/// key-value map.
pub fn spec_data_from_yaml(text: &str) -> Result<BTreeMap<String, String>, String> {
    let document: Value =
        serde_yaml_ng::from_str(text).map_err(|error| format!("not valid YAML: {error}"))?;
    let map = match document.get("data") {
        Some(data) => data,
        None if document.get("kind").is_some() => return Err("the ConfigMap has no data".into()),
        None => &document,
    };
    let Value::Mapping(entries) = map else {
        return Err("expected a ConfigMap or a mapping of PV spec keys".into());
    };
    entries
        .iter()
        .map(|(key, value)| {
            let key = key.as_str().ok_or("keys must be strings")?.to_string();
            let value = match value {
                Value::String(text) => text.clone(),
                // A bare map may write the class list as YAML, not as a string.
                list @ Value::Sequence(_) if key == KEY_DEVICE_CLASSES => {
                    serde_yaml_ng::to_string(list).map_err(|error| error.to_string())?
                }
                other => return Err(format!("key {key:?} must hold a string, not {other:?}")),
            };
            Ok((key, value))
        })
        .collect()
}

fn spec_data_from_flags(args: &ScanArgs) -> BTreeMap<String, String> {
    [
        (KEY_DEVICE_DIR, &args.device_dir),
        (KEY_DEVICE_NAME_FILTER, &args.device_name_filter),
        (KEY_VOLUME_MODE, &args.volume_mode),
        (KEY_FS_TYPE, &args.fs_type),
        (KEY_STORAGE_CLASS_NAME, &args.storage_class_name),
    ]
    .into_iter()
    .filter_map(|(key, value)| value.clone().map(|value| (key.to_string(), value)))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configmap_manifests_and_bare_maps_are_read() {
        let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  deviceDir: /dev\n  volumeMode: Block\n";
        let data = spec_data_from_yaml(manifest).unwrap();
        assert_eq!(data["deviceDir"], "/dev");
        let bare = spec_data_from_yaml("deviceDir: /dev\nvolumeMode: Block\n").unwrap();
        assert_eq!(bare, data);
    }

    #[test]
    fn bad_yaml_is_a_clear_error() {
        assert!(
            spec_data_from_yaml("kind: ConfigMap\n")
                .unwrap_err()
                .contains("no data")
        );
        assert!(
            spec_data_from_yaml("deviceDir: [a]\n")
                .unwrap_err()
                .contains("must hold a string")
        );
        assert!(
            spec_data_from_yaml("- a\n")
                .unwrap_err()
                .contains("expected a ConfigMap")
        );
        assert!(
            spec_data_from_yaml(":\n  - [")
                .unwrap_err()
                .contains("not valid YAML")
        );
    }
}
