//! Table 1: ConfigMap data through `spec::parse_pv_spec`: missing, unknown
//! and mis-cased keys, bad paths, regexes, modes, sizes, huge values. Each
//! row is a base spec, one edit, and the expected verdict.

use std::path::Path;

use local_pv_provisioner::objects::spec::{PvSpec, VolumeMode, parse_pv_spec};

use crate::catalogue::{fixed_bug, run_rows};
use crate::support::world::{Data, data};

/// An Event note is cut at 1000 bytes and the provisioner wraps a spec
/// error in about 80 bytes plus the ConfigMap name; a spec error longer
/// than this loses its end (the reason) in the Event.
const SPEC_ERROR_BUDGET: usize = 600;

/// The spec a row starts from.
enum Base {
    /// No keys at all.
    Empty,
    /// A valid Block spec.
    Block,
    /// A valid Filesystem spec (ext4).
    Filesystem,
    /// Exactly these keys.
    Keys(&'static [(&'static str, &'static str)]),
}

/// The one change a row makes to its base.
enum Edit {
    /// None.
    Keep,
    /// Removes the key.
    Remove(&'static str),
    /// Sets the key to the text.
    Set(&'static str, &'static str),
    /// Sets the key to `prefix` followed by `unit` repeated `times` times.
    Repeat(&'static str, &'static str, &'static str, usize),
}

/// What a row expects from `parse_pv_spec`.
enum Expect {
    /// Refused; the message names the key (quoted), contains the text, and
    /// fits [`SPEC_ERROR_BUDGET`].
    Refused(&'static str, &'static str),
    /// Refused, naming the key; finding `.2` if the message lacks `.1`.
    RefusedUnclearly(&'static str, &'static str, &'static str),
    /// Refused with the right words; finding `.2` if too long for an Event.
    RefusedTooLong(&'static str, &'static str, &'static str),
    /// Accepted (a documented choice), and the check holds on the spec.
    Accepted(fn(&PvSpec) -> bool),
}

use Base::{Block, Empty, Filesystem, Keys};
use Edit::{Keep, Remove, Repeat, Set};
use Expect::{Accepted, Refused, RefusedTooLong, RefusedUnclearly};

/// One row: its name, the spec and the verdict.
type Row = (&'static str, Base, Edit, Expect);

const WRONG_CASE: &[(&str, &str)] = &[
    ("DeviceDir", "/dev"),
    ("DeviceNameFilter", ".*"),
    ("VolumeMode", "Block"),
];
const MIB: usize = 1 << 20;

/// Every row of the table.
fn rows() -> Vec<Row> {
    [key_rows(), filter_and_mode_rows(), wipe_bytes_rows()]
        .into_iter()
        .flatten()
        .collect()
}

/// Rows about keys and `deviceDir`.
#[rustfmt::skip]
fn key_rows() -> Vec<Row> {
    vec![
        // Missing and mis-spelt keys.
        ("empty data", Empty, Keep, Refused("deviceDir", "is missing")),
        ("no deviceDir", Block, Remove("deviceDir"), Refused("deviceDir", "is missing")),
        ("no deviceNameFilter", Block, Remove("deviceNameFilter"), Refused("deviceNameFilter", "is missing")),
        ("no volumeMode", Block, Remove("volumeMode"), Refused("volumeMode", "is missing")),
        ("Filesystem without fsType", Filesystem, Remove("fsType"), Refused("fsType", "is missing")),
        ("keys in the wrong case: DeviceDir, DeviceNameFilter, VolumeMode", Keys(WRONG_CASE), Keep, Refused("deviceDir", "is missing")),
        // Unknown keys: ignored and reported (documented choice).
        ("unknown key futureKey=x", Block, Set("futureKey", "x"), Accepted(|spec| spec.unknown_keys == ["futureKey"])),
        ("unknown key comment with a 1 MiB value", Block, Repeat("comment", "", "c", MIB), Accepted(|spec| spec.unknown_keys == ["comment"])),
        ("misspelt optional key storageClass=fast", Block, Set("storageClass", "fast"),
            Accepted(|spec| spec.unknown_keys == ["storageClass"] && spec.storage_class_name == "local-storage")),
        // deviceDir.
        ("deviceDir \"\"", Block, Set("deviceDir", ""), Refused("deviceDir", "must not be empty")),
        ("deviceDir relative dev/disk/by-path", Block, Set("deviceDir", "dev/disk/by-path"), Refused("deviceDir", "absolute")),
        ("deviceDir ./dev", Block, Set("deviceDir", "./dev"), Refused("deviceDir", "absolute")),
        ("deviceDir ~/disks", Block, Set("deviceDir", "~/disks"), Refused("deviceDir", "absolute")),
        ("deviceDir with a leading space", Block, Set("deviceDir", " /dev/disk"), Refused("deviceDir", "white space")),
        ("deviceDir C:\\disks", Block, Set("deviceDir", "C:\\disks"), Refused("deviceDir", "absolute")),
        ("deviceDir /dev/../etc", Block, Set("deviceDir", "/dev/../etc"), Refused("deviceDir", "\"..\"")),
        ("deviceDir /dev/disk/..", Block, Set("deviceDir", "/dev/disk/.."), Refused("deviceDir", "\"..\"")),
        ("deviceDir /..", Block, Set("deviceDir", "/.."), Refused("deviceDir", "\"..\"")),
        ("deviceDir /", Block, Set("deviceDir", "/"), Refused("deviceDir", "root directory")),
        ("deviceDir //./", Block, Set("deviceDir", "//./"), Refused("deviceDir", "root directory")),
        ("deviceDir with a NUL byte", Block, Set("deviceDir", "/dev/a\0b"), Refused("deviceDir", "NUL")),
        ("deviceDir of 1 MiB", Block, Repeat("deviceDir", "/", "d", MIB), Refused("deviceDir", "longer than 4096 bytes")),
        ("deviceDir /dev//disk/./by-path/ (normalised: documented choice)", Block, Set("deviceDir", "/dev//disk/./by-path/"),
            Accepted(|spec| spec.device_dir == Path::new("/dev/disk/by-path"))),
        ("deviceDir \"/dev/disk \" with a trailing space", Block, Set("deviceDir", "/dev/disk "), Refused("deviceDir", "white space")),
        ("deviceDir with a trailing newline (a YAML `|` block scalar, UNCLEAR-1)", Block, Set("deviceDir", "/dev/disk/by-path\n"),
            Refused("deviceDir", "quote the value")),
    ]
}

/// Rows about `deviceNameFilter`, `volumeMode`, `fsType` and `storageClassName`.
#[rustfmt::skip]
fn filter_and_mode_rows() -> Vec<Row> {
    vec![
        // deviceNameFilter.
        ("filter ^disk$ with a trailing newline (a YAML `|` block scalar, UNCLEAR-1)", Block, Set("deviceNameFilter", "^disk$\n"),
            Refused("deviceNameFilter", "white space")),
        ("filter sd[a-", Block, Set("deviceNameFilter", "sd[a-"), Refused("deviceNameFilter", "not a valid regular expression")),
        ("filter (", Block, Set("deviceNameFilter", "("), Refused("deviceNameFilter", "not a valid regular expression")),
        ("filter with a duplicate group name", Block, Set("deviceNameFilter", "(?P<x>a)(?P<x>b)"),
            Refused("deviceNameFilter", "not a valid regular expression")),
        ("filter a{4294967296}", Block, Set("deviceNameFilter", "a{4294967296}"), Refused("deviceNameFilter", "not a valid regular expression")),
        ("filter (a{1000}){1000}", Block, Set("deviceNameFilter", "(a{1000}){1000}"), Refused("deviceNameFilter", "too complex")),
        ("filter \\w{1000}{1000}", Block, Set("deviceNameFilter", "\\w{1000}{1000}"), Refused("deviceNameFilter", "too complex")),
        ("filter of 4097 bytes", Block, Repeat("deviceNameFilter", "", "a", 4097), Refused("deviceNameFilter", "longer than 4096 bytes")),
        ("filter of 1 MiB", Block, Repeat("deviceNameFilter", "", "d", MIB), Refused("deviceNameFilter", "longer than 4096 bytes")),
        ("filter \"\" (matches every entry, like .*)", Block, Set("deviceNameFilter", ""),
            Accepted(|spec| spec.device_name_filter.is_match("anything"))),
        ("filter (a*)*b (no catastrophic backtracking: linear-time engine)", Block, Set("deviceNameFilter", "(a*)*b"),
            Accepted(|spec| !spec.device_name_filter.is_match(&format!("{}c", "a".repeat(100_000))))),
        // volumeMode and fsType.
        ("volumeMode block", Block, Set("volumeMode", "block"), Refused("volumeMode", "\"Filesystem\" or \"Block\"")),
        ("volumeMode \"Block \"", Block, Set("volumeMode", "Block "), Refused("volumeMode", "\"Filesystem\" or \"Block\"")),
        ("volumeMode \"\"", Block, Set("volumeMode", ""), Refused("volumeMode", "\"Filesystem\" or \"Block\"")),
        ("volumeMode of 1 MiB", Block, Repeat("volumeMode", "", "v", MIB), Refused("volumeMode", "(1048576 bytes)")),
        ("volumeMode of 100000 DEL characters", Block, Repeat("volumeMode", "", "\u{7f}", 100_000),
            RefusedTooLong("volumeMode", "\"Filesystem\" or \"Block\"", "BUG-2")),
        ("Block with fsType ext4", Block, Set("fsType", "ext4"), Refused("fsType", "must not be set when volumeMode is \"Block\"")),
        ("Block with fsType \"\" (must be absent, not empty)", Block, Set("fsType", ""), Refused("fsType", "must not be set")),
        ("Filesystem with fsType ntfs", Filesystem, Set("fsType", "ntfs"), Refused("fsType", "\"ext4\", \"xfs\" or \"btrfs\"")),
        ("Filesystem with fsType EXT4", Filesystem, Set("fsType", "EXT4"), Refused("fsType", "\"ext4\", \"xfs\" or \"btrfs\"")),
        ("Filesystem with fsType \"\"", Filesystem, Set("fsType", ""), Refused("fsType", "\"ext4\", \"xfs\" or \"btrfs\"")),
        // storageClassName.
        ("storageClassName \"\"", Block, Set("storageClassName", ""), Refused("storageClassName", "DNS-1123")),
        ("storageClassName Local_Storage", Block, Set("storageClassName", "Local_Storage"), Refused("storageClassName", "DNS-1123")),
        ("storageClassName of 254 characters", Block, Repeat("storageClassName", "", "a", 254), Refused("storageClassName", "DNS-1123")),
    ]
}

/// Rows about `wipeBytes` and `wipeDevicesWithData`.
#[rustfmt::skip]
fn wipe_bytes_rows() -> Vec<Row> {
    vec![
        ("wipeBytes \"\"", Block, Set("wipeBytes", ""), RefusedUnclearly("wipeBytes", "whole number of bytes", "BUG-1")),
        ("wipeBytes Mi (a unit without a number)", Block, Set("wipeBytes", "Mi"), RefusedUnclearly("wipeBytes", "whole number of bytes", "BUG-1")),
        ("wipeBytes 0", Block, Set("wipeBytes", "0"), Refused("wipeBytes", "positive multiple of 4096")),
        ("wipeBytes 1000", Block, Set("wipeBytes", "1000"), Refused("wipeBytes", "positive multiple of 4096")),
        ("wipeBytes 0Ki", Block, Set("wipeBytes", "0Ki"), Refused("wipeBytes", "positive multiple of 4096")),
        ("wipeBytes -4096", Block, Set("wipeBytes", "-4096"), Refused("wipeBytes", "whole number of bytes")),
        ("wipeBytes +4096", Block, Set("wipeBytes", "+4096"), Refused("wipeBytes", "whole number of bytes")),
        ("wipeBytes 4096.0", Block, Set("wipeBytes", "4096.0"), Refused("wipeBytes", "whole number of bytes")),
        ("wipeBytes 1e6", Block, Set("wipeBytes", "1e6"), Refused("wipeBytes", "whole number of bytes")),
        ("wipeBytes 0x1000", Block, Set("wipeBytes", "0x1000"), Refused("wipeBytes", "whole number of bytes")),
        ("wipeBytes \" 4096\"", Block, Set("wipeBytes", " 4096"), Refused("wipeBytes", "whole number of bytes")),
        ("wipeBytes \"4096 \"", Block, Set("wipeBytes", "4096 "), Refused("wipeBytes", "whole number of bytes")),
        ("wipeBytes 1MB", Block, Set("wipeBytes", "1MB"), Refused("wipeBytes", "Ki, Mi, Gi or Ti")),
        ("wipeBytes 1mi", Block, Set("wipeBytes", "1mi"), Refused("wipeBytes", "Ki, Mi, Gi or Ti")),
        ("wipeBytes 1Pi", Block, Set("wipeBytes", "1Pi"), Refused("wipeBytes", "Ki, Mi, Gi or Ti")),
        ("wipeBytes in Arabic-Indic digits ٤٠٩٦", Block, Set("wipeBytes", "٤٠٩٦"), Refused("wipeBytes", "whole number of bytes")),
        ("wipeBytes 2^64", Block, Set("wipeBytes", "18446744073709551616"), Refused("wipeBytes", "64 bits")),
        ("wipeBytes 16777216Ti (2^64)", Block, Set("wipeBytes", "16777216Ti"), Refused("wipeBytes", "64 bits")),
        ("wipeBytes of 1 MiB of digits", Block, Repeat("wipeBytes", "", "1", MIB), Refused("wipeBytes", "64 bits")),
        ("wipeBytes 0004096 (leading zeros: accepted)", Block, Set("wipeBytes", "0004096"), Accepted(|spec| spec.wipe_bytes == 4096)),
        ("wipeBytes 1Ti (larger than most disks: the wipe stops at the device's end)", Block, Set("wipeBytes", "1Ti"),
            Accepted(|spec| spec.wipe_bytes == 1 << 40 && spec.volume_mode == VolumeMode::Block)),
        // wipeDevicesWithData: "true" or "false" only; off when absent.
        ("wipeDevicesWithData absent (off: a device holding data is never offered)", Block, Keep,
            Accepted(|spec| !spec.wipe_devices_with_data)),
        ("wipeDevicesWithData true", Block, Set("wipeDevicesWithData", "true"), Accepted(|spec| spec.wipe_devices_with_data)),
        ("wipeDevicesWithData True", Block, Set("wipeDevicesWithData", "True"),
            Refused("wipeDevicesWithData", "must be \"true\" or \"false\"")),
        ("wipeDevicesWithData yes", Block, Set("wipeDevicesWithData", "yes"),
            Refused("wipeDevicesWithData", "must be \"true\" or \"false\"")),
        ("wipeDevicesWithData \"\"", Block, Set("wipeDevicesWithData", ""),
            Refused("wipeDevicesWithData", "must be \"true\" or \"false\"")),
    ]
}

/// The data a row's base and edit give.
fn input(base: &Base, edit: &Edit) -> Data {
    let mut map = match base {
        Empty => Data::new(),
        Block => data(&[
            ("deviceDir", "/dev/disk/by-path"),
            ("deviceNameFilter", "^disk"),
            ("volumeMode", "Block"),
        ]),
        Filesystem => data(&[
            ("deviceDir", "/dev/disk/by-path"),
            ("deviceNameFilter", "^disk"),
            ("volumeMode", "Filesystem"),
            ("fsType", "ext4"),
        ]),
        Keys(pairs) => data(pairs),
    };
    match edit {
        Keep => {}
        Remove(key) => {
            map.remove(*key);
        }
        Set(key, value) => {
            map.insert(key.to_string(), value.to_string());
        }
        Repeat(key, prefix, unit, times) => {
            map.insert(key.to_string(), format!("{prefix}{}", unit.repeat(*times)));
        }
    }
    map
}

/// The expected outcome as the printed table says it.
fn described(expect: &Expect) -> String {
    match expect {
        Refused(key, says) => format!("refused: key {key:?} … {says}"),
        RefusedUnclearly(key, should_say, bug) => {
            format!("refused: key {key:?} … should say {should_say:?} ({bug})")
        }
        RefusedTooLong(key, says, bug) => {
            format!("refused: key {key:?} … {says}, message too long for an Event ({bug})")
        }
        Accepted(_) => "accepted (documented choice)".to_string(),
    }
}

/// Runs one row.
fn check((_, base, edit, expect): &Row) {
    let message = match (expect, parse_pv_spec(&input(base, edit))) {
        (Accepted(check), Ok(spec)) => {
            assert!(check(&spec), "accepted, but the check fails on {spec:?}");
            return;
        }
        (Accepted(_), Err(error)) => panic!("refused: {error}"),
        (_, Ok(spec)) => panic!("accepted: {spec:?}"),
        (_, Err(error)) => error.to_string(),
    };
    match expect {
        Refused(key, says) | RefusedTooLong(key, says, _) | RefusedUnclearly(key, says, _) => {
            assert!(message.contains(&format!("{key:?}")), "{message}");
            let clear = message.contains(says);
            let fits = message.len() <= SPEC_ERROR_BUDGET;
            match expect {
                RefusedUnclearly(.., bug) => fixed_bug(
                    bug,
                    clear,
                    &format!("the error for this value is {message:?}"),
                ),
                RefusedTooLong(.., bug) => {
                    assert!(clear, "{message}");
                    let what = format!(
                        "a {}-byte spec error does not fit an Event note",
                        message.len()
                    );
                    fixed_bug(bug, fits, &what);
                }
                _ => assert!(clear && fits, "{} bytes: {message}", message.len()),
            }
        }
        Accepted(_) => unreachable!("handled above"),
    }
}

#[test]
fn spec_table() {
    let label = |row: &Row| (row.0.to_string(), described(&row.3));
    run_rows("ConfigMap data (parse_pv_spec)", rows(), label, check);
}
