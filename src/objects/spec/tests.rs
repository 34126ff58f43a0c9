//! Unit tests of the PV spec parser: every key, every error message.

use super::*;

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn fs_spec() -> BTreeMap<String, String> {
    data(&[
        ("deviceDir", "/dev/disk/by-path/"),
        ("deviceNameFilter", ".*"),
        ("volumeMode", "Filesystem"),
        ("fsType", "ext4"),
    ])
}

#[test]
fn upstream_filesystem_example_parses() {
    let spec = parse_pv_spec(&fs_spec()).unwrap();
    assert_eq!(spec.device_dir, Path::new("/dev/disk/by-path"));
    assert_eq!(spec.volume_mode, VolumeMode::Filesystem);
    assert_eq!(spec.fs_type, Some(FsType::Ext4));
    assert_eq!(spec.storage_class_name, "local-storage");
    assert_eq!(spec.wipe_bytes, 100 * 1024 * 1024);
    assert!(spec.unknown_keys.is_empty());
}

#[test]
fn block_mode_and_storage_class_parse() {
    let spec = parse_pv_spec(&data(&[
        ("deviceDir", "/dev//mapper/./"),
        ("deviceNameFilter", "^loop[0-9]+$"),
        ("volumeMode", "Block"),
        ("storageClassName", "fast-local"),
        ("comment", "ignored"),
    ]))
    .unwrap();
    assert_eq!(spec.device_dir, Path::new("/dev/mapper"));
    assert_eq!(spec.fs_type, None);
    assert_eq!(spec.storage_class_name, "fast-local");
    assert_eq!(spec.unknown_keys, vec!["comment".to_string()]);
}

#[test]
fn every_fs_type_is_accepted() {
    for (text, expected) in [
        ("ext4", FsType::Ext4),
        ("xfs", FsType::Xfs),
        ("btrfs", FsType::Btrfs),
    ] {
        let mut map = fs_spec();
        map.insert("fsType".into(), text.into());
        assert_eq!(parse_pv_spec(&map).unwrap().fs_type, Some(expected));
        assert_eq!(expected.as_str(), text);
    }
}

/// Each bad value is refused with an error naming the key and, for
/// invalid values, the value itself.
#[test]
fn each_bad_value_names_key_and_value() {
    let cases: Vec<(&str, Option<&str>, &str)> = vec![
        ("deviceDir", None, "missing"),
        ("deviceDir", Some(""), "empty"),
        ("deviceDir", Some("dev/disk"), "absolute"),
        ("deviceDir", Some("/dev/../etc"), ".."),
        ("deviceDir", Some("/"), "root"),
        ("deviceDir", Some("/dev/disk/by-path/\n"), "white space"),
        ("deviceNameFilter", Some("^sd[a-z]$\n"), "white space"),
        ("deviceDir", Some("/dev/a\0b"), "NUL"),
        ("deviceNameFilter", None, "missing"),
        ("deviceNameFilter", Some("sd[a-"), "regular expression"),
        ("deviceNameFilter", Some("(a{1000}){1000}"), "too complex"),
        ("volumeMode", None, "missing"),
        (
            "volumeMode",
            Some("filesystem"),
            "\"Filesystem\" or \"Block\"",
        ),
        ("fsType", None, "missing"),
        ("fsType", Some("ntfs"), "\"ext4\""),
        ("storageClassName", Some("Local_Storage"), "DNS-1123"),
        ("wipeBytes", Some("100MB"), "Ki, Mi, Gi or Ti"),
        ("wipeBytes", Some("-1"), "whole number"),
        ("wipeBytes", Some("0"), "positive multiple of 4096"),
        ("wipeBytes", Some("1000"), "positive multiple of 4096"),
        ("wipeBytes", Some("99999999999999999999"), "64 bits"),
        ("wipeBytes", Some("99999999Ti"), "64 bits"),
    ];
    for (key, value, expected) in cases {
        let mut map = fs_spec();
        match value {
            None => {
                map.remove(key);
            }
            Some(value) => {
                map.insert(key.to_string(), value.to_string());
            }
        }
        let error = parse_pv_spec(&map).expect_err(&format!("{key}={value:?}"));
        let message = error.to_string();
        assert!(message.contains(&format!("{key:?}")), "{message}");
        assert!(message.contains(expected), "{key}: {message}");
        if let Some(value) = value {
            let shown = format!("{:?}", value.chars().take(20).collect::<String>());
            assert!(message.contains(shown.trim_end_matches('"')), "{message}");
            assert!(
                message.find(expected) < message.find("(value"),
                "the reason comes first: {message}"
            );
        }
    }
}

#[test]
fn wipe_bytes_accepts_bytes_and_binary_suffixes() {
    for (text, bytes) in [
        ("4096", 4096),
        ("1Mi", 1 << 20),
        ("64Ki", 64 << 10),
        ("2Gi", 2 << 30),
        ("1Ti", 1 << 40),
    ] {
        let mut map = fs_spec();
        map.insert("wipeBytes".into(), text.into());
        assert_eq!(parse_pv_spec(&map).unwrap().wipe_bytes, bytes, "{text}");
    }
}

#[test]
fn fs_type_is_forbidden_with_block() {
    let mut map = fs_spec();
    map.insert("volumeMode".into(), "Block".into());
    let error = parse_pv_spec(&map).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("must not be set when volumeMode is \"Block\"")
    );
}

#[test]
fn control_characters_cannot_blow_up_errors() {
    let mut map = fs_spec();
    map.insert("volumeMode".into(), "\u{7f}".repeat(100_000));
    let message = parse_pv_spec(&map).unwrap_err().to_string();
    assert!(message.len() < 400, "{}", message.len());
    assert!(message.contains("must be \"Filesystem\" or \"Block\""));
    map.insert("volumeMode".into(), "Block".into());
    map.remove("fsType");
    for empty in ["", "Mi"] {
        map.insert("wipeBytes".into(), empty.into());
        let message = parse_pv_spec(&map).unwrap_err().to_string();
        assert!(message.contains("whole number of bytes"), "{message}");
    }
}

#[test]
fn huge_values_are_shortened_in_errors() {
    let mut map = fs_spec();
    map.insert("volumeMode".into(), "x".repeat(100_000));
    let message = parse_pv_spec(&map).unwrap_err().to_string();
    assert!(message.len() < 500, "{}", message.len());
    assert!(message.contains("100000 bytes"));
}

#[test]
fn filter_is_unanchored_like_upstream() {
    let mut map = fs_spec();
    map.insert("deviceNameFilter".into(), "sd[a-z]".into());
    let spec = parse_pv_spec(&map).unwrap();
    assert!(spec.device_name_filter.is_match("sda1"));
    assert!(spec.device_name_filter.is_match("xsdb"));
    assert!(!spec.device_name_filter.is_match("nvme0n1"));
}
