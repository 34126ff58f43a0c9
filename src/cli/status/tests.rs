//! Unit tests of the pure parts of `status`: units, ages, the Event notes
//! and the rules deciding which error devices still stand.

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::model::build_report;
use super::node_events::{NodeEvent, device_of, summarize};
use super::read::ClusterState;
use super::render::human_duration;
use crate::objects::pv::LeanPv;
use crate::objects::quantity::human as format_capacity;

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn event(reason: &str, note: &str, time: &str) -> NodeEvent {
    NodeEvent {
        node: "n1".into(),
        reason: reason.into(),
        note: note.into(),
        time: Some(at(time)),
        name: format!("n1.{time}"),
    }
}

#[test]
fn capacities_are_exact_units_from_mi_up_else_bytes() {
    assert_eq!(format_capacity(107_374_182_400), "100Gi");
    assert_eq!(format_capacity(1 << 40), "1Ti");
    assert_eq!(format_capacity(3 << 20), "3Mi");
    assert_eq!(format_capacity(1_000_204_886_016), "1000204886016");
    assert_eq!(format_capacity(4096), "4096");
    assert_eq!(format_capacity(0), "0");
}

#[test]
fn ages_read_like_kubectl() {
    let cases = [
        (-5, "<invalid>"),
        (-1, "0s"),
        (45, "45s"),
        (119, "119s"),
        (330, "5m30s"),
        (600, "10m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 60 * 7, "3h7m"),
        (30 * 3600, "30h"),
        (2 * 86_400, "2d"),
        (2 * 86_400 + 5 * 3600, "2d5h"),
        (40 * 86_400, "40d"),
        (800 * 86_400, "2y70d"),
        (3000 * 86_400, "8y"),
    ];
    for (seconds, expected) in cases {
        assert_eq!(human_duration(seconds), expected, "{seconds}");
    }
}

#[test]
fn notes_name_their_device() {
    assert_eq!(
        device_of(
            "DeviceSkipped",
            "/dev/sdb gets no PersistentVolume: in use: mounted at /var"
        ),
        Some(("/dev/sdb".into(), "in use: mounted at /var".into()))
    );
    assert_eq!(
        device_of(
            "InvalidVolume",
            "refused (403): denied (x) (device /dev/sdc)"
        ),
        Some(("/dev/sdc".into(), "refused (403): denied (x)".into()))
    );
    assert_eq!(
        device_of("InvalidVolume", "cut short by the 1 kB lim..."),
        None
    );
    assert_eq!(device_of("DeviceHasData", "no path here"), None);
}

#[test]
fn the_latest_report_per_device_stands_until_resolved() {
    let events = [
        event(
            "DeviceSkipped",
            "/dev/a gets no PersistentVolume: old",
            "2030-01-01T00:00:00Z",
        ),
        event(
            "DeviceSkipped",
            "/dev/a gets no PersistentVolume: new",
            "2030-01-01T00:10:00Z",
        ),
        event(
            "DeviceHasData",
            "/dev/b gets no PersistentVolume: ext4",
            "2030-01-01T00:10:00Z",
        ),
        event("PVSpecInvalid", "bad", "2030-01-01T00:11:00Z"),
        event(
            "DevicesDiscovered",
            "3 device(s) usable (with or getting a PersistentVolume), 2 without one",
            "2030-01-01T00:12:00Z",
        ),
    ];
    // /dev/b got a PV after it was reported.
    let report = summarize(&events, |path| {
        (path == "/dev/b").then(|| at("2030-01-01T00:20:00Z"))
    });
    let devices: Vec<(&str, &str)> = report
        .error_devices
        .iter()
        .map(|d| (d.device.as_str(), d.message.as_str()))
        .collect();
    assert_eq!(devices, vec![("/dev/a", "new")]);
    assert_eq!(report.spec.unwrap().reason, "PVSpecInvalid");
    let count = report.count.unwrap();
    assert_eq!((count.usable, count.without_pv), (Some(3), Some(2)));

    // A newer count of none without a PV clears every earlier report.
    let mut cleared = events.to_vec();
    cleared.push(event(
        "DevicesDiscovered",
        "4 device(s) usable (with or getting a PersistentVolume), 0 without one",
        "2030-01-01T00:30:00Z",
    ));
    assert!(summarize(&cleared, |_| None).error_devices.is_empty());
}

fn object<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> K {
    serde_json::from_value(value).unwrap()
}

#[test]
fn volumes_find_their_node_and_the_pods_using_them_there() {
    let long = "n".repeat(70);
    let label = crate::objects::naming::node_label_value(&long);
    let pv = |name: &str, label: &str, node_name: Option<&str>| -> LeanPv {
        let mut annotations = serde_json::Map::new();
        if let Some(node) = node_name {
            annotations.insert(crate::objects::pv::NODE_NAME_ANNOTATION.into(), json!(node));
        }
        object(json!({
            "metadata": {"name": name, "labels": {crate::objects::pv::NODE_LABEL: label}, "annotations": annotations},
            "spec": {"local": {"path": format!("/dev/{name}")}, "capacity": {"storage": "1Gi"},
                     "claimRef": {"namespace": "app", "name": "data"}},
        }))
    };
    let pod = |name: &str, node: &str, phase: &str| -> Pod {
        object(json!({
            "metadata": {"name": name, "namespace": "app"},
            "spec": {"nodeName": node, "containers": [],
                     "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]},
            "status": {"phase": phase},
        }))
    };
    let state = ClusterState {
        nodes: vec![object::<Node>(json!({"metadata": {"name": long}}))],
        pvs: vec![
            pv("ours", &label, Some(&long)),
            pv("upstream", &label, None),
            pv("orphan", "gone", Some("gone")),
        ],
        pods: vec![
            pod("here", &long, "Running"),
            pod("elsewhere", "other", "Running"),
            pod("done", &long, "Succeeded"),
        ],
        events: vec![],
        disks: None,
    };
    let report = build_report(&state, None).unwrap();
    let names: Vec<&str> = report.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, vec!["gone", long.as_str()]);
    assert!(!report.nodes[0].node_found);
    let node = &report.nodes[1];
    let volumes: Vec<(&str, bool, &[String])> = node
        .volumes
        .iter()
        .map(|v| (v.pv.as_str(), v.upstream, v.pods.as_slice()))
        .collect();
    let here = ["app/here".to_string()];
    assert_eq!(
        volumes,
        vec![("ours", false, &here[..]), ("upstream", true, &here[..])]
    );
    assert_eq!(node.volumes[0].capacity_bytes, Some(1 << 30));
    assert!(build_report(&state, Some("nowhere")).is_err());
}

#[test]
fn the_inventory_lists_every_disk_not_offered_with_its_reason() {
    let disk = |name: &str,
                node: &str,
                state: &str,
                reason: &str|
     -> crate::objects::localdisk::LocalDisk {
        serde_json::from_value(json!({
            "metadata": {"name": name, "creationTimestamp": "2026-12-01T00:00:00Z"},
            "status": {"node": node, "path": format!("/dev/disk/by-id/{name}"), "state": state, "reason": reason},
        }))
        .unwrap()
    };
    let state = ClusterState {
        nodes: vec![serde_json::from_value::<Node>(json!({"metadata": {"name": "n1"}})).unwrap()],
        pvs: vec![],
        pods: vec![],
        events: vec![],
        disks: Some(vec![
            disk(
                "a",
                "n1",
                "Available",
                "offered as PersistentVolume local-n1-a",
            ),
            disk(
                "b",
                "n1",
                "HasData",
                "holds data (XFS signature); never offered",
            ),
            disk(
                "c",
                "n1",
                "Excluded",
                "read-only (sysfs ro is 1): never offered in any class",
            ),
            disk("d", "n2", "InUse", "in use: mounted at /var"),
        ]),
    };
    let report = build_report(&state, None).unwrap();
    let listed = |node: usize| {
        report.nodes[node]
            .error_devices
            .iter()
            .map(|d| (d.device.as_str(), d.reason.as_str()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        report.nodes.len(),
        2,
        "a node known only from its disks is shown"
    );
    assert_eq!(
        listed(0),
        vec![
            ("/dev/disk/by-id/b", "HasData"),
            ("/dev/disk/by-id/c", "Excluded")
        ]
    );
    assert_eq!(listed(1), vec![("/dev/disk/by-id/d", "InUse")]);
    assert_eq!(
        report.nodes[0].error_devices[0].at.as_deref(),
        Some("2026-12-01T00:00:00Z")
    );
}
