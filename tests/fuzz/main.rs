//! Property-based fuzzing (proptest) of the code that turns untrusted text
//! into decisions: the PV spec parser and the PV / label name builders.
//! cargo-fuzz would need a nightly toolchain; these run on stable, in CI,
//! with every other test.
//!
//! This file owns the number of cases ([`config`]) and the module list; the
//! properties live in the modules.
//!
//! # Number of cases
//!
//! Each property runs `LPP_FUZZ_CASES` cases (default 2000), e.g. for a
//! longer hunt:
//!
//! ```console
//! LPP_FUZZ_CASES=100000 cargo test --release --test fuzz
//! ```
//!
//! The default keeps this test binary well under 60 s on 2 cores in a debug
//! build. A failure is shrunk to a minimal input and printed; proptest also
//! saves its seed next to the module that failed (e.g.
//! `tests/fuzz/spec_parser.proptest-regressions`) so later runs replay it
//! first (commit that file with the fix).
//!
//! # Properties
//!
//! - `spec_parser`: `parse_pv_spec` over arbitrary ConfigMap data (the known
//!   keys with arbitrary, near-valid and huge values, mis-cased and unknown
//!   keys) never panics, and agrees with an independent oracle of what is
//!   valid. On `Ok`: `deviceDir` is absolute, normalised, without `..` and
//!   not `/`; `fsType` is present exactly for `Filesystem`; `wipe_bytes` is a
//!   positive multiple of 4096; the storage class is a DNS-1123 subdomain;
//!   `wipeDevicesWithData` is on only for `"true"` (`"false"` or absent:
//!   off; anything else is refused); unknown keys are exactly the keys it
//!   does not know. On `Err`: the error
//!   names the first invalid key in parse order, and stays short whatever
//!   the input's size (at most `spec_parser::MAX_ERROR_BYTES`; the tighter
//!   Event budget is BUG-2 in `tests/bad_inputs/`).
//! - `naming`: `plain_pv_name`, `hashed_pv_name` and `node_label_value`
//!   always give valid names (checked with the Kubernetes regular
//!   expressions, not the crate's own validators), stably; `assign_pv_names`
//!   never gives two devices of one scan the same name and follows the
//!   collision rule (a holder keeps its plain name, every other member is
//!   hashed).
//! - `plan`: `plan` never creates two PVs for one device or of one name, and
//!   never reuses an existing PV's name.
//! - `wipe_request`: `WipeRequest::from_pv` over PVs with arbitrary labels
//!   and annotations only ever builds a request from a PV of this node that
//!   records every identity field; anything else is refused by
//!   `OwnedByThisNode` or `RecordedIdentity`, never a panic.
//!
//! The oracles (`oracles`), written from the Kubernetes rules rather than
//! from the crate's code, and the input strategies (`strategies`) are shared.

mod naming;
mod oracles;
mod plan;
mod spec_parser;
mod strategies;
mod wipe_request;

use std::collections::BTreeMap;

use proptest::prelude::ProptestConfig;

/// Cases per property when `LPP_FUZZ_CASES` is not set.
const DEFAULT_CASES: u32 = 2000;

/// The proptest configuration of every property: `LPP_FUZZ_CASES` cases.
fn config() -> ProptestConfig {
    let cases = std::env::var("LPP_FUZZ_CASES")
        .ok()
        .map(|text| {
            text.parse()
                .unwrap_or_else(|_| panic!("LPP_FUZZ_CASES={text:?} is not a number"))
        })
        .unwrap_or(DEFAULT_CASES);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// ConfigMap data from pairs.
fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}
