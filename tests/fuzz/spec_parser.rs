//! The spec parser, `parse_pv_spec`, over arbitrary ConfigMap data: it
//! agrees with the oracle on every input, checks each accepted field and
//! each refusal, and keeps its errors short; `wipeBytes` and
//! `wipeDevicesWithData` alone; and Unicode-class repetitions in the name
//! filter.

use std::collections::BTreeMap;

use local_pv_provisioner::objects::spec::{
    DEFAULT_STORAGE_CLASS_NAME, DEFAULT_WIPE_BYTES, FsType, KEY_DEVICE_DIR, KEY_DEVICE_NAME_FILTER,
    KEY_FS_TYPE, KEY_STORAGE_CLASS_NAME, KEY_VOLUME_MODE, KEY_WIPE_BYTES,
    KEY_WIPE_DEVICES_WITH_DATA, PvSpec, SpecError, VolumeMode, WIPE_BYTES_ALIGNMENT, parse_pv_spec,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::oracles::{
    KNOWN, oracle_device_dir, oracle_verdicts, oracle_wipe_bytes, oracle_wipe_devices_with_data,
    valid_subdomain,
};
use crate::strategies::{spec_data, wipe_bytes, wipe_devices_with_data};
use crate::{config, data};

/// Hard bound on a spec error's length, whatever the input's size: 200
/// shown characters escaped to at most 10 bytes each, plus key and reason.
const MAX_ERROR_BYTES: usize = 2600;

type Data = BTreeMap<String, String>;
type Verdicts = [(&'static str, bool)];

/// An accepted spec: every key was valid by the oracle, and every field
/// holds what the data says (or its default).
fn accepted_agrees(data: &Data, verdicts: &Verdicts, spec: PvSpec) -> Result<(), TestCaseError> {
    for (key, ok) in verdicts {
        prop_assert!(ok, "accepted although {key} is invalid: {data:?}");
    }
    // deviceDir: absolute, normalised, no `..`, not `/`.
    let dir = spec.device_dir.to_str().expect("UTF-8");
    prop_assert_eq!(
        Some(dir.to_string()),
        oracle_device_dir(&data[KEY_DEVICE_DIR])
    );
    prop_assert!(spec.device_dir.is_absolute());
    prop_assert!(dir != "/" && !dir.ends_with('/') && !dir.contains("//"));
    prop_assert!(!dir.split('/').any(|part| part == ".." || part == "."));
    // The filter is the source, unanchored.
    prop_assert_eq!(
        &spec.device_name_filter_source,
        &data[KEY_DEVICE_NAME_FILTER]
    );
    prop_assert_eq!(
        spec.device_name_filter.as_str(),
        data[KEY_DEVICE_NAME_FILTER].as_str()
    );
    // fsType present exactly for Filesystem.
    match spec.volume_mode {
        VolumeMode::Filesystem => {
            prop_assert_eq!(data[KEY_VOLUME_MODE].as_str(), "Filesystem");
            let fs = spec.fs_type.expect("fsType with Filesystem");
            prop_assert_eq!(fs.as_str(), data[KEY_FS_TYPE].as_str());
        }
        VolumeMode::Block => {
            prop_assert_eq!(data[KEY_VOLUME_MODE].as_str(), "Block");
            prop_assert_eq!(spec.fs_type, None::<FsType>);
            prop_assert!(!data.contains_key(KEY_FS_TYPE));
        }
    }
    // Storage class.
    match data.get(KEY_STORAGE_CLASS_NAME) {
        Some(class) => prop_assert_eq!(&spec.storage_class_name, class),
        None => prop_assert_eq!(spec.storage_class_name.as_str(), DEFAULT_STORAGE_CLASS_NAME),
    }
    prop_assert!(valid_subdomain(&spec.storage_class_name));
    // wipeBytes: a positive multiple of 4096.
    prop_assert!(spec.wipe_bytes > 0 && spec.wipe_bytes.is_multiple_of(WIPE_BYTES_ALIGNMENT));
    match data.get(KEY_WIPE_BYTES) {
        Some(text) => prop_assert_eq!(Some(spec.wipe_bytes), oracle_wipe_bytes(text)),
        None => prop_assert_eq!(spec.wipe_bytes, DEFAULT_WIPE_BYTES),
    }
    // wipeDevicesWithData: off unless "true".
    let with_data = data.get(KEY_WIPE_DEVICES_WITH_DATA);
    prop_assert_eq!(
        spec.wipe_devices_with_data,
        with_data.is_some_and(|v| oracle_wipe_devices_with_data(v) == Some(true))
    );
    // Unknown keys: exactly the others, reported.
    let unknown: Vec<String> = data
        .keys()
        .filter(|k| !KNOWN.contains(&k.as_str()))
        .cloned()
        .collect();
    prop_assert_eq!(&spec.unknown_keys, &unknown);
    // Deterministic.
    prop_assert_eq!(Some(spec), parse_pv_spec(data).ok());
    Ok(())
}

/// A refused spec: the error names a key the data has (or lacks), stays
/// short, and is the first key the oracle finds invalid.
fn refusal_agrees(
    data: &Data,
    verdicts: &Verdicts,
    error: &SpecError,
) -> Result<(), TestCaseError> {
    let message = error.to_string();
    let key = match error {
        SpecError::MissingKey { key } => {
            prop_assert!(!data.contains_key(*key), "{key} is present: {message}");
            *key
        }
        SpecError::InvalidValue { key, .. } => {
            prop_assert!(data.contains_key(*key), "{key} is absent: {message}");
            *key
        }
        SpecError::InClass { .. } | SpecError::Classes { .. } => {
            return Err(TestCaseError::fail(format!(
                "the flat keys never give a class error: {message}"
            )));
        }
    };
    prop_assert!(message.contains(&format!("{key:?}")), "{}", message);
    prop_assert!(
        message.len() <= MAX_ERROR_BYTES,
        "{} bytes: {}",
        message.len(),
        message
    );
    // The refused key is the first one the oracle finds invalid,
    // or the filter (whose compilation the oracle leaves alone)
    // with everything before it valid.
    let first_bad = verdicts.iter().find(|(_, ok)| !ok).map(|(key, _)| *key);
    let position = |k: &str| KNOWN.iter().position(|known| *known == k).unwrap();
    if key == KEY_DEVICE_NAME_FILTER && data.contains_key(KEY_DEVICE_NAME_FILTER) {
        prop_assert!(
            first_bad.is_none_or(|bad| position(bad) >= position(key)),
            "{message} / {first_bad:?}"
        );
    } else {
        prop_assert_eq!(Some(key), first_bad, "{}", message);
    }
    Ok(())
}

/// A valid Block spec with `key` set to `value`.
fn block_spec_with(key: &str, value: &str) -> Data {
    data(&[
        (KEY_DEVICE_DIR, "/dev/disk"),
        (KEY_DEVICE_NAME_FILTER, "x"),
        (KEY_VOLUME_MODE, "Block"),
        (key, value),
    ])
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn spec_parser_agrees_with_the_oracle(data in spec_data()) {
        let verdicts = oracle_verdicts(&data);
        match parse_pv_spec(&data) {
            Ok(spec) => accepted_agrees(&data, &verdicts, spec)?,
            Err(error) => refusal_agrees(&data, &verdicts, &error)?,
        }
    }

    #[test]
    fn wipe_bytes_alone_agrees_with_the_oracle(value in wipe_bytes()) {
        let data = block_spec_with(KEY_WIPE_BYTES, &value);
        let parsed = parse_pv_spec(&data).map(|spec| spec.wipe_bytes).ok();
        prop_assert_eq!(parsed, oracle_wipe_bytes(&value));
    }

    #[test]
    fn wipe_devices_with_data_alone_agrees_with_the_oracle(value in wipe_devices_with_data()) {
        let data = block_spec_with(KEY_WIPE_DEVICES_WITH_DATA, &value);
        match parse_pv_spec(&data) {
            Ok(spec) => prop_assert_eq!(
                Some(spec.wipe_devices_with_data),
                oracle_wipe_devices_with_data(&value)
            ),
            Err(error) => {
                prop_assert_eq!(oracle_wipe_devices_with_data(&value), None);
                let message = error.to_string();
                prop_assert!(message.contains("\"wipeDevicesWithData\""), "{}", message);
                prop_assert!(message.contains("must be \"true\" or \"false\""), "{}", message);
            }
        }
    }
}

/// Unicode-class repetitions cost ~0.1 s each to compile (or refuse) in a
/// debug build, so they get a fiftieth of the cases.
fn unicode_bomb_config() -> ProptestConfig {
    let mut config = config();
    config.cases = (config.cases / 50).max(8);
    config
}

proptest! {
    #![proptest_config(unicode_bomb_config())]

    #[test]
    fn unicode_class_repetitions_are_compiled_or_refused_as_too_complex(
        class in prop_oneof![Just("\\w"), Just("\\d"), Just("(?i)\\p{L}"), Just("[^a]")],
        count in 1u32..200,
    ) {
        let filter = format!("{class}{{{count}}}");
        let data = data(&[
            (KEY_DEVICE_DIR, "/dev/disk"),
            (KEY_DEVICE_NAME_FILTER, filter.as_str()),
            (KEY_VOLUME_MODE, "Block"),
        ]);
        match parse_pv_spec(&data) {
            Ok(spec) => prop_assert_eq!(spec.device_name_filter.as_str(), filter.as_str()),
            Err(error) => prop_assert!(error.to_string().contains("too complex"), "{}", error),
        }
    }
}
