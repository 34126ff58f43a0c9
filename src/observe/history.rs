//! A device's history, carried from PV to PV: when a wiped device comes
//! back as a new PV, the new PV carries (annotation [`HISTORY_ANNOTATION`],
//! JSON) the last [`MAX_CLAIMS`] claims that had the device (namespace/name,
//! bound and released times), its last wipe (time, regions, duration) and
//! how many wipes it has had. So "who had this disk before, and was it
//! wiped?" is answered from the cluster alone, without a database. Pure:
//! the cleanup computes a history when a PV goes, the provisioning flow
//! puts it on the device's next PV.
//!
//! Between the two, the history lives in memory for a moment (keyed by the
//! device's stable identity); a restart in that moment loses it.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::objects::pv::{CLAIMED_AT_ANNOTATION, CLAIMED_BY_ANNOTATION, LeanPv, annotation};

/// Annotation holding a device's history on its PV.
pub const HISTORY_ANNOTATION: &str = "local-pv-provisioner.cybozu.io/history";
/// Claims a history keeps.
pub const MAX_CLAIMS: usize = 10;

/// What happened to a device before its current PV.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceHistory {
    /// Completed wipes.
    pub wipes: u64,
    /// The last completed wipe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_wipe: Option<WipeRecord>,
    /// The last claims, oldest first.
    #[serde(default)]
    pub claims: Vec<ClaimRecord>,
}

/// One completed wipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WipeRecord {
    /// When it finished (RFC 3339).
    pub at: String,
    /// The byte ranges zeroed, `start-end` joined by `,`.
    pub regions: String,
    /// How long it took.
    pub duration_seconds: f64,
}

/// One claim that had the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRecord {
    /// `namespace/name`.
    pub claim: String,
    /// When it was seen bound (RFC 3339), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_at: Option<String>,
    /// When it let go (the PV's deletion, RFC 3339), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<String>,
}

/// The history a PV carries (empty when it carries none or it is unreadable).
pub fn history_of(pv: &LeanPv) -> DeviceHistory {
    annotation(pv, HISTORY_ANNOTATION)
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

/// Ranges as `start-end,start-end`.
pub fn regions_text(regions: &[Range<u64>]) -> String {
    regions
        .iter()
        .map(|r| format!("{}-{}", r.start, r.end))
        .collect::<Vec<_>>()
        .join(",")
}

/// The history the device of `pv` has once `pv` is gone: what it carried,
/// plus the claim it had (from the claim recorded on it), plus `wipe` when
/// it was wiped.
pub fn after_release(pv: &LeanPv, wipe: Option<WipeRecord>) -> DeviceHistory {
    let mut history = history_of(pv);
    if let Some(claim) = annotation(pv, CLAIMED_BY_ANNOTATION) {
        history.claims.push(ClaimRecord {
            claim: claim.to_string(),
            bound_at: annotation(pv, CLAIMED_AT_ANNOTATION).map(str::to_string),
            released_at: pv
                .metadata
                .deletion_timestamp
                .as_ref()
                .map(|time| time.0.to_string()),
        });
    }
    let excess = history.claims.len().saturating_sub(MAX_CLAIMS);
    history.claims.drain(..excess);
    if let Some(wipe) = wipe {
        history.wipes += 1;
        history.last_wipe = Some(wipe);
    }
    history
}

/// The key a device's history is kept under between two PVs: its stable
/// id where it has one, else its `major:minor`.
pub fn device_key(stable_id: Option<&str>, number: &str) -> String {
    stable_id.map_or_else(|| number.to_string(), str::to_string)
}

/// The device key recorded on a PV of ours.
pub fn device_key_of(pv: &LeanPv) -> Option<String> {
    let number = annotation(pv, crate::objects::pv::DEVICE_NUMBER_ANNOTATION)?;
    Some(device_key(
        annotation(pv, crate::objects::pv::DEVICE_STABLE_ID_ANNOTATION),
        number,
    ))
}

/// The annotation value of `history`.
pub fn to_annotation(history: &DeviceHistory) -> String {
    serde_json::to_string(history).expect("a history serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn released(claim: &str, carried: Option<&DeviceHistory>) -> LeanPv {
        let mut pv = LeanPv::default();
        let mut annotations = std::collections::BTreeMap::from([
            (CLAIMED_BY_ANNOTATION.to_string(), claim.to_string()),
            (
                CLAIMED_AT_ANNOTATION.to_string(),
                "2026-11-01T00:00:00Z".to_string(),
            ),
        ]);
        if let Some(history) = carried {
            annotations.insert(HISTORY_ANNOTATION.to_string(), to_annotation(history));
        }
        pv.metadata.annotations = Some(annotations);
        pv.metadata.deletion_timestamp = Some(Time("2026-11-02T00:00:00Z".parse().unwrap()));
        pv
    }

    fn wipe() -> WipeRecord {
        WipeRecord {
            at: "2026-11-02T00:00:01Z".into(),
            regions: regions_text(&[0..1024, 4096..8192]),
            duration_seconds: 0.5,
        }
    }

    #[test]
    fn a_release_adds_the_claim_and_the_wipe_to_what_was_carried() {
        let first = after_release(&released("ns/a", None), Some(wipe()));
        assert_eq!(first.wipes, 1);
        assert_eq!(first.claims.len(), 1);
        assert_eq!(first.claims[0].claim, "ns/a");
        assert_eq!(
            first.claims[0].bound_at.as_deref(),
            Some("2026-11-01T00:00:00Z")
        );
        assert_eq!(
            first.claims[0].released_at.as_deref(),
            Some("2026-11-02T00:00:00Z")
        );
        assert_eq!(
            first.last_wipe.as_ref().unwrap().regions,
            "0-1024,4096-8192"
        );
        let second = after_release(&released("ns/b", Some(&first)), Some(wipe()));
        assert_eq!(second.wipes, 2);
        let claims: Vec<&str> = second.claims.iter().map(|c| c.claim.as_str()).collect();
        assert_eq!(claims, vec!["ns/a", "ns/b"]);
        assert_eq!(
            history_of(&released("x/y", Some(&second))),
            second,
            "round trip"
        );
    }

    #[test]
    fn the_history_keeps_the_last_ten_claims() {
        let mut history = DeviceHistory::default();
        for n in 0..15 {
            history = after_release(&released(&format!("ns/c{n}"), Some(&history)), Some(wipe()));
        }
        assert_eq!(history.wipes, 15);
        assert_eq!(history.claims.len(), MAX_CLAIMS);
        assert_eq!(history.claims[0].claim, "ns/c5");
        assert!(to_annotation(&history).len() < 4096, "bounded");
    }

    #[test]
    fn an_unreadable_history_counts_as_none() {
        let mut pv = LeanPv::default();
        pv.metadata.annotations =
            Some([(HISTORY_ANNOTATION.to_string(), "{not json".to_string())].into());
        assert_eq!(history_of(&pv), DeviceHistory::default());
    }
}
