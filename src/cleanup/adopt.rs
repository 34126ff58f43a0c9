//! Adoption of the PersistentVolumes the Go local-pv-provisioner made, so
//! an upgrade is a drop-in: such a PV carries this node's label but records
//! no device identity, so it could not be wiped safely. When the identity
//! its path resolves to is unambiguous — the path is an entry directly
//! inside its recorded `deviceDir`, the entry name matches its recorded
//! `deviceNameFilter`, the entry is a block device whose exact size equals
//! the PV's capacity, and no other PV of this node names that device — the
//! identity is recorded on it (the same annotations this program's own PVs
//! carry), and from then on it is wiped and offered again like any other.
//! Otherwise it is refused with a reason an admin can act on.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use regex::Regex;

use crate::device::blockdev::{self, DeviceNumber};
use crate::objects::pv::{self, LeanPv, NODE_LABEL};
use crate::objects::quantity;
use crate::provision::plan::ExistingPv;

/// Upstream's annotation recording `deviceDir`.
pub const UPSTREAM_DEVICE_DIR_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/deviceDir";
/// Upstream's annotation recording `deviceNameFilter`.
pub const UPSTREAM_DEVICE_NAME_FILTER_ANNOTATION: &str =
    "local-pv-provisioner.cybozu.io/deviceNameFilter";
/// Annotation set when a PV is adopted: when (RFC 3339).
pub const ADOPTED_AT_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/adopted-at";

/// Whether `pv` was made by the Go upstream for this node and not adopted yet.
pub fn is_upstream_pv(pv: &LeanPv, node_name: &str) -> bool {
    let labelled = pv
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(NODE_LABEL))
        .is_some_and(|value| value == node_name);
    let annotations = pv.metadata.annotations.as_ref();
    let has = |key: &str| annotations.is_some_and(|a| a.contains_key(key));
    labelled && has(UPSTREAM_DEVICE_DIR_ANNOTATION) && !has(pv::NODE_NAME_ANNOTATION)
}

/// Checks an upstream PV against the device its path leads to (blocking:
/// it resolves the path and reads the size). `others` are this node's other
/// PVs. Returns the annotations to record, or why it cannot be adopted.
pub fn check(
    pv: &LeanPv,
    others: &[ExistingPv],
    wipe_bytes: u64,
) -> Result<BTreeMap<String, String>, String> {
    let annotations = pv.metadata.annotations.clone().unwrap_or_default();
    let recorded = |key: &str| {
        annotations
            .get(key)
            .cloned()
            .ok_or_else(|| format!("it does not record {key}"))
    };
    let path = PathBuf::from(pv::local_path(pv).ok_or("it has no spec.local.path")?);
    let device_dir = PathBuf::from(recorded(UPSTREAM_DEVICE_DIR_ANNOTATION)?);
    let filter = recorded(UPSTREAM_DEVICE_NAME_FILTER_ANNOTATION)?;
    let entry = entry_inside(&path, &device_dir)?;
    let filter = Regex::new(&filter).map_err(|_| {
        format!("its deviceNameFilter {filter:?} is not a valid regular expression")
    })?;
    if !filter.is_match(&entry) {
        return Err(format!(
            "entry {entry:?} does not match its deviceNameFilter"
        ));
    }
    let (number, size) = block_device(&path)?;
    let capacity = pv
        .spec
        .as_ref()
        .and_then(|spec| spec.capacity.as_ref())
        .and_then(|capacity| capacity.get("storage"))
        .map(|quantity| quantity.0.clone())
        .ok_or("it has no capacity")?;
    if quantity::bytes(&capacity) != Some(size) {
        return Err(format!(
            "{} is {size} bytes but the PV's capacity is {capacity}: the disk at that path is not the one the PV was made for",
            path.display()
        ));
    }
    let name = pv.metadata.name.as_deref().unwrap_or_default();
    if let Some(other) = others.iter().find(|other| {
        other.name != name
            && (other.number == Some(number) || other.path.as_deref() == Some(path.as_path()))
    }) {
        return Err(format!("PV {} names the same device {number}", other.name));
    }
    let mut adopted = BTreeMap::from([
        (pv::NODE_NAME_ANNOTATION.to_string(), node_name_of(pv)),
        (
            pv::DEVICE_DIR_ANNOTATION.to_string(),
            device_dir.display().to_string(),
        ),
        (pv::DEVICE_NUMBER_ANNOTATION.to_string(), number.to_string()),
        (pv::DEVICE_SIZE_ANNOTATION.to_string(), size.to_string()),
        (
            pv::WIPE_BYTES_ANNOTATION.to_string(),
            wipe_bytes.to_string(),
        ),
        (
            ADOPTED_AT_ANNOTATION.to_string(),
            k8s_openapi::jiff::Timestamp::now().to_string(),
        ),
    ]);
    if let Some(id) = blockdev::stable_id(number) {
        adopted.insert(pv::DEVICE_STABLE_ID_ANNOTATION.to_string(), id);
    }
    Ok(adopted)
}

fn node_name_of(pv: &LeanPv) -> String {
    pv.metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(NODE_LABEL))
        .cloned()
        .unwrap_or_default()
}

/// The entry name of `path` when it lies directly inside `device_dir`.
fn entry_inside(path: &Path, device_dir: &Path) -> Result<String, String> {
    let inside = path.is_absolute()
        && path.parent() == Some(device_dir)
        && !path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir));
    let entry = path.file_name().and_then(|name| name.to_str());
    match entry {
        Some(entry) if inside => Ok(entry.to_string()),
        _ => Err(format!(
            "{} is not an entry directly inside its recorded deviceDir {}",
            path.display(),
            device_dir.display()
        )),
    }
}

/// The device number and exact size of the block device `path` leads to.
fn block_device(path: &Path) -> Result<(DeviceNumber, u64), String> {
    let resolved = fs::canonicalize(path)
        .map_err(|error| format!("cannot resolve {}: {error}", path.display()))?;
    let metadata = fs::metadata(&resolved)
        .map_err(|error| format!("cannot stat {}: {error}", resolved.display()))?;
    let number = blockdev::block_device_number(&metadata)
        .ok_or_else(|| format!("{} is not a block device", resolved.display()))?;
    let file = blockdev::open_read_only(&resolved)
        .map_err(|error| format!("cannot open {}: {error}", resolved.display()))?;
    let size = blockdev::size_in_bytes(&file)
        .map_err(|error| format!("cannot read the size of {}: {error}", resolved.display()))?;
    Ok((number, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> LeanPv {
        let mut pv = LeanPv::default();
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        pv.metadata.labels = Some(map(labels));
        pv.metadata.annotations = Some(map(annotations));
        pv
    }

    #[test]
    fn upstream_pvs_are_recognised_by_label_and_annotations() {
        let dir = (UPSTREAM_DEVICE_DIR_ANNOTATION, "/dev/disk/by-path/");
        assert!(is_upstream_pv(
            &upstream(&[(NODE_LABEL, "n1")], &[dir]),
            "n1"
        ));
        assert!(!is_upstream_pv(
            &upstream(&[(NODE_LABEL, "n2")], &[dir]),
            "n1"
        ));
        assert!(!is_upstream_pv(&upstream(&[(NODE_LABEL, "n1")], &[]), "n1"));
        let adopted = upstream(
            &[(NODE_LABEL, "n1")],
            &[dir, (pv::NODE_NAME_ANNOTATION, "n1")],
        );
        assert!(!is_upstream_pv(&adopted, "n1"), "ours, or adopted already");
    }

    #[test]
    fn the_path_must_be_an_entry_of_the_recorded_directory() {
        let dir = Path::new("/dev/disk/by-path/");
        assert_eq!(
            entry_inside(Path::new("/dev/disk/by-path/pci-1"), dir),
            Ok("pci-1".into())
        );
        assert!(entry_inside(Path::new("/dev/sda"), dir).is_err());
        assert!(entry_inside(Path::new("/dev/disk/by-path/x/../../sda"), dir).is_err());
    }
}
