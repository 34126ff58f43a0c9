//! Table: `deviceClasses` through `spec::parse_node_spec`: every key a
//! class adds (and the list itself) with wrong types, bad regular
//! expressions, `minSize` above `maxSize`, unknown device types, label
//! values too long, unknown keys and duplicate names. Each row must be
//! refused with a message naming the entry, the key and the value, short
//! enough for an Event note.

use local_pv_provisioner::objects::spec::parse_node_spec;

use crate::catalogue::run_rows;
use crate::support::world::data;

/// The same budget as the flat keys' table: an Event note keeps the reason.
const SPEC_ERROR_BUDGET: usize = 600;

/// One row: the `deviceClasses` text and the words its error must hold.
type Row = (String, &'static [&'static str]);

/// One entry with `extra` lines added to a valid minimal class.
fn one(extra: &str) -> String {
    format!(
        "- name: c\n  deviceDir: /dev/disk/by-id\n  deviceNameFilter: \".*\"\n  volumeMode: Block\n{extra}"
    )
}

fn rows() -> Vec<Row> {
    vec![
        ("not: a list".into(), &["\"deviceClasses\"", "YAML list"]),
        ("[]".into(), &["at least one class"]),
        ("- [".into(), &["not valid YAML"]),
        (
            "- just-a-string".into(),
            &["entry 1", "a class must be a map"],
        ),
        (
            one("  name2: x\n"),
            &["entry 1 (\"c\")", "unknown key in a class", "\"name2\""],
        ),
        (
            "- {deviceDir: /dev, deviceNameFilter: x, volumeMode: Block}".into(),
            &["entry 1", "key \"name\" is missing"],
        ),
        (
            "- {name: Fast_SSD, deviceDir: /dev, deviceNameFilter: x, volumeMode: Block}".into(),
            &["\"name\"", "DNS label", "\"Fast_SSD\""],
        ),
        (
            format!("{}{}", one(""), one("")),
            &["entries 1 and 2", "unique"],
        ),
        (
            "- {name: c, deviceNameFilter: x, volumeMode: Block}".into(),
            &["key \"deviceDir\" is missing"],
        ),
        (one("  volumeMode2: Block\n"), &["unknown key"]),
        (
            one("  minSize: big\n"),
            &["\"minSize\"", "quantity of bytes", "\"big\""],
        ),
        (one("  maxSize: [1]\n"), &["\"maxSize\"", "quantity"]),
        (one("  minSize: 1.5\n"), &["\"minSize\"", "quantity"]),
        (
            one("  minSize: 2Ti\n  maxSize: 1Ti\n"),
            &["\"minSize\"", "larger than maxSize"],
        ),
        (
            one("  rotational: yes\n"),
            &["\"rotational\"", "true or false"],
        ),
        (
            one("  rotational: 1\n"),
            &["\"rotational\"", "true or false"],
        ),
        (
            one("  models: Samsung\n"),
            &["\"models\"", "list of regular expressions"],
        ),
        (
            one("  vendors: [\"(\"]\n"),
            &["\"vendors\"", "not a valid regular expression"],
        ),
        (
            one("  serials: [\" x\"]\n"),
            &["\"serials\"", "white space"],
        ),
        (
            one("  deviceTypes: [disk, nvme]\n"),
            &["\"deviceTypes\"", "\"nvme\"", "not a device type"],
        ),
        (
            one("  deviceTypes: []\n"),
            &["\"deviceTypes\"", "at least one type"],
        ),
        (
            one("  deviceTypes: disk\n"),
            &["\"deviceTypes\"", "list of device types"],
        ),
        (one("  maxDevices: 0\n"), &["\"maxDevices\"", "at least 1"]),
        (
            one("  maxDevices: two\n"),
            &["\"maxDevices\"", "whole number"],
        ),
        (one("  labels: [a]\n"), &["\"labels\"", "map of label keys"]),
        (
            one(&format!("  labels: {{tier: {}}}\n", "x".repeat(64))),
            &["\"labels\"", "not a valid label value", "\"tier\""],
        ),
        (
            one("  labels: {\"bad key!\": x}\n"),
            &["\"labels\"", "not a valid label key"],
        ),
        (
            one("  labels: {local-pv-provisioner.cybozu.io/node: x}\n"),
            &["\"labels\"", "this program's own"],
        ),
        (
            one("  nodeLabels: zone\n"),
            &["\"nodeLabels\"", "list of Node label keys"],
        ),
        (
            one("  nodeLabels: [\"-zone\"]\n"),
            &["\"nodeLabels\"", "not a valid label key"],
        ),
        (
            one("  volumeMode: [Block]\n").replace("  volumeMode: Block\n", ""),
            &["\"volumeMode\"", "single value"],
        ),
        (
            one("  wipeBytes: 1000\n"),
            &["\"wipeBytes\"", "multiple of 4096"],
        ),
    ]
}

fn check((yaml, wanted): &Row) {
    let error = parse_node_spec(&data(&[("deviceClasses", yaml)]))
        .expect_err("refused")
        .to_string();
    for part in *wanted {
        assert!(error.contains(part), "{error:?} lacks {part:?}");
    }
    assert!(
        error.len() <= SPEC_ERROR_BUDGET,
        "{} bytes: {error}",
        error.len()
    );
}

#[test]
fn device_classes_table() {
    let label = |row: &Row| {
        (
            row.0.replace('\n', " ⏎ "),
            format!("refused: {}", row.1.join(" … ")),
        )
    };
    run_rows("deviceClasses (parse_node_spec)", rows(), label, check);
}
