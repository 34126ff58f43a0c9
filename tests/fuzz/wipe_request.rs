//! PV objects read back for a wipe: `WipeRequest::from_pv` over PVs with
//! arbitrary labels and annotations only ever builds a request from a PV of
//! this node that records every identity field; anything else is refused by
//! `OwnedByThisNode` or `RecordedIdentity`, never a panic.

use local_pv_provisioner::device::blockdev::DeviceNumber;
use local_pv_provisioner::device::wipe::{Guard, Owner, WipeError, WipeRequest};
use local_pv_provisioner::objects::pv::{
    DEVICE_DIR_ANNOTATION, DEVICE_NUMBER_ANNOTATION, DEVICE_SIZE_ANNOTATION, NODE_LABEL,
    NODE_NAME_ANNOTATION, WIPE_BYTES_ANNOTATION,
};
use local_pv_provisioner::objects::spec::DEFAULT_WIPE_BYTES;
use proptest::option;
use proptest::prelude::*;

use crate::config;
use crate::strategies::{text, wipe_bytes};

/// An annotation or label value: ours, near-valid, or anything.
fn recorded(ours: &'static str) -> impl Strategy<Value = Option<String>> {
    option::weighted(
        0.85,
        prop_oneof![
            3 => Just(ours.to_string()),
            1 => "[0-9:]{0,12}",
            1 => text(),
        ],
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn wipe_requests_come_only_from_whole_pvs_of_ours(
        label in recorded("node-f"),
        node_name in recorded("node-f"),
        device_dir in recorded("/dev/disk/by-fuzz"),
        number in recorded("7:3"),
        size in recorded("1048576"),
        wipe in option::weighted(0.5, prop_oneof![wipe_bytes(), Just("4096".to_string())]),
        path in option::weighted(0.9, prop_oneof![Just("/dev/disk/by-fuzz/disk0".to_string()), text()]),
    ) {
        let mut labels = serde_json::Map::new();
        if let Some(label) = &label {
            labels.insert(NODE_LABEL.into(), label.clone().into());
        }
        let mut annotations = serde_json::Map::new();
        for (key, value) in [
            (NODE_NAME_ANNOTATION, &node_name),
            (DEVICE_DIR_ANNOTATION, &device_dir),
            (DEVICE_NUMBER_ANNOTATION, &number),
            (DEVICE_SIZE_ANNOTATION, &size),
            (WIPE_BYTES_ANNOTATION, &wipe),
        ] {
            if let Some(value) = value {
                annotations.insert(key.into(), value.clone().into());
            }
        }
        let mut pv = serde_json::json!({
            "metadata": {"name": "pv", "labels": labels, "annotations": annotations},
            "spec": {},
        });
        if let Some(path) = &path {
            pv["spec"]["local"] = serde_json::json!({"path": path});
        }
        let pv = serde_json::from_value(pv).unwrap();
        let owner = Owner { node_name: "node-f", label_value: "node-f" };
        match WipeRequest::from_pv(&pv, &owner) {
            Ok(request) => {
                prop_assert_eq!(label.as_deref(), Some("node-f"));
                prop_assert_eq!(node_name.as_deref(), Some("node-f"));
                prop_assert_eq!(Some(request.path.to_str().unwrap()), path.as_deref());
                prop_assert_eq!(Some(request.device_dir.to_str().unwrap()), device_dir.as_deref());
                prop_assert_eq!(size.as_deref().map(str::parse::<u64>), Some(Ok(request.size_bytes)));
                prop_assert_eq!(number.as_deref().map(str::parse::<DeviceNumber>), Some(Ok(request.number)));
                prop_assert!(request.head_bytes > 0 && request.head_bytes % 4096 == 0);
                match &wipe {
                    Some(text) => prop_assert_eq!(text.parse::<u64>().ok(), Some(request.head_bytes)),
                    None => prop_assert_eq!(request.head_bytes, DEFAULT_WIPE_BYTES),
                }
            }
            Err(WipeError::Refused { guard, detail }) => {
                let owned = label.as_deref() == Some("node-f") && node_name.as_deref() == Some("node-f");
                let expected = if owned { Guard::RecordedIdentity } else { Guard::OwnedByThisNode };
                prop_assert_eq!(guard, expected, "{}", detail);
            }
            Err(other) => prop_assert!(false, "reading a PV can only refuse: {other:?}"),
        }
    }
}
