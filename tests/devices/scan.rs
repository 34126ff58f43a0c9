//! The `scan` dry run on real loop devices with device classes: its output
//! is grouped by class, each device under the class that selects it, a
//! device no class selects said so, and a device two classes select under
//! neither.

use std::os::unix::fs::symlink;

use local_pv_provisioner::cli::scan::run_scan;
use local_pv_provisioner::config::ScanArgs;

use crate::support::loop_device::LoopDevice;

const MIB: u64 = 1024 * 1024;

#[test]
fn scan_groups_its_output_by_class() {
    let small = LoopDevice::sparse(8 * MIB);
    let large = LoopDevice::sparse(32 * MIB);
    let both = LoopDevice::sparse(16 * MIB);
    let dir = tempfile::tempdir().unwrap();
    symlink(&small.path, dir.path().join("disk-small")).unwrap();
    symlink(&large.path, dir.path().join("disk-large")).unwrap();
    symlink(&both.path, dir.path().join("both-16")).unwrap();
    let spec = dir.path().join("spec.yaml");
    let path = dir.path().display();
    std::fs::write(
        &spec,
        format!(
            r#"deviceClasses:
  - {{name: small, deviceDir: {path}, deviceNameFilter: "^disk-", volumeMode: Block, maxSize: 16Mi}}
  - {{name: large, deviceDir: {path}, deviceNameFilter: "^disk-", volumeMode: Block, minSize: 24Mi, storageClassName: local-large}}
  - {{name: any-a, deviceDir: {path}, deviceNameFilter: "^both-", volumeMode: Block}}
  - {{name: any-b, deviceDir: {path}, deviceNameFilter: "^both-", volumeMode: Block, minSize: 1Mi}}
"#
        ),
    )
    .unwrap();
    let args = ScanArgs {
        spec_file: Some(spec),
        device_dir: None,
        device_name_filter: None,
        volume_mode: None,
        fs_type: None,
        storage_class_name: None,
        node_name: Some("node-a".into()),
    };
    let out = run_scan(&args).expect("scan");
    let section = |class: &str| {
        let start = out
            .find(&format!("# class {class}:"))
            .unwrap_or_else(|| panic!("no section for class {class}:\n{out}"));
        let rest = &out[start + 1..];
        let end = rest.find("\n# class ").map_or(rest.len(), |end| end + 1);
        rest[..end].to_string()
    };
    assert!(out.starts_with("# local-pv-provisioner scan (dry run) on node \"node-a\": 2 PersistentVolume(s) would be created"), "{out}");
    let small_section = section("small");
    assert!(
        small_section.contains("name: local-node-a-disk-small"),
        "{out}"
    );
    assert!(!small_section.contains("disk-large"), "{out}");
    let large_section = section("large");
    assert!(
        large_section.contains("name: local-node-a-disk-large"),
        "{out}"
    );
    assert!(
        large_section.contains("storageClassName: local-large"),
        "{out}"
    );
    assert!(large_section.contains("device-class: large"), "{out}");
    assert!(
        out.contains("# devices of no single class")
            && out.contains("selected by the classes any-a and any-b"),
        "{out}"
    );
}
