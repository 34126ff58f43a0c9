//! What the cleanup controller does with one PV, decided from the PV alone.
//! Pure: the controller applies the decision.

use crate::cleanup::adopt::is_upstream_pv;
use crate::objects::pv::{
    CLAIMED_BY_ANNOTATION, LeanPv, RELEASE_POLICY_ANNOTATION, WIPE_REQUESTED_ANNOTATION,
    WIPE_STARTED_AT_ANNOTATION, annotation,
};
use crate::objects::spec::ReleasePolicy;

/// For a PV of this node that is not being deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyStep {
    /// A PV of the Go upstream: record the identity its path resolves to.
    Adopt,
    /// A claim is bound: record it (`namespace/name`), so the PV counts as used.
    RecordClaim(String),
    /// Released (or marked by an interrupted wipe of an older version):
    /// delete it, so the finalizer's cleanup wipes it.
    StartCleanup,
    /// Released under the release policy `Keep`, no wipe requested: keep
    /// it, with its data, and say so.
    Keep,
    /// Nothing to do until it changes.
    Nothing,
}

/// For a PV of this node that is being deleted and still carries our finalizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CleanupStep {
    /// A claim may still use it: wait (as `pv-protection` makes it wait).
    WaitForClaim(String),
    /// Never claimed: nobody wrote to it, release it without a wipe.
    SkipWipe,
    /// Wipe the device, then release it.
    Wipe,
}

fn phase(pv: &LeanPv) -> Option<&str> {
    pv.status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
}

/// The claim in `spec.claimRef`, as `namespace/name`.
pub fn claim_of(pv: &LeanPv) -> Option<String> {
    let claim = pv.spec.as_ref()?.claim_ref.as_ref()?;
    Some(format!(
        "{}/{}",
        claim.namespace.as_deref().unwrap_or_default(),
        claim.name.as_deref().unwrap_or_default()
    ))
}

/// Whether a PV carries the mark of a wipe an older version started and
/// did not finish.
pub fn has_wipe_mark(pv: &LeanPv) -> bool {
    annotation(pv, WIPE_STARTED_AT_ANNOTATION).is_some()
}

/// The release policy recorded on a PV at its creation: `Wipe` without one
/// (PVs made before policies keep today's fate); `Keep` when the value is
/// not a policy (data is never destroyed on a guess; a wipe request or
/// deleting the PV still wipes it).
pub fn release_policy(pv: &LeanPv) -> ReleasePolicy {
    match annotation(pv, RELEASE_POLICY_ANNOTATION) {
        None => ReleasePolicy::Wipe,
        Some(text) => ReleasePolicy::parse(text).unwrap_or(ReleasePolicy::Keep),
    }
}

/// Whether an admin asked for a kept PV's wipe (`wipe-requested: "true"`).
pub fn wipe_requested(pv: &LeanPv) -> bool {
    annotation(pv, WIPE_REQUESTED_ANNOTATION) == Some("true")
}

/// Whether a PV is kept: Released under the policy `Keep`, no wipe asked
/// for, not being deleted.
pub fn is_kept(pv: &LeanPv) -> bool {
    pv.metadata.deletion_timestamp.is_none()
        && phase(pv) == Some("Released")
        && release_policy(pv) == ReleasePolicy::Keep
        && !wipe_requested(pv)
}

/// Whether a PV must be cleaned: Released (and not kept), or marked by an
/// interrupted wipe and not bound to a claim; never while being deleted
/// (that is the finalizer's cleanup).
pub fn needs_cleanup(pv: &LeanPv) -> bool {
    pv.metadata.deletion_timestamp.is_none()
        && !is_kept(pv)
        && (phase(pv) == Some("Released") || (has_wipe_mark(pv) && phase(pv) != Some("Bound")))
}

/// Whether a claim ever had the PV: a claim recorded, a claim reference, a
/// phase only a claim gives, or the mark of an interrupted wipe.
pub fn was_claimed(pv: &LeanPv) -> bool {
    annotation(pv, CLAIMED_BY_ANNOTATION).is_some()
        || claim_of(pv).is_some()
        || matches!(phase(pv), Some("Bound" | "Released" | "Failed"))
        || has_wipe_mark(pv)
}

/// The next step for a PV that is not being deleted. `paused`: the node's
/// spec is unusable or its Node is gone, so no cleanup is started.
pub fn apply_step(pv: &LeanPv, node_name: &str, paused: bool) -> ApplyStep {
    if is_upstream_pv(pv, node_name) {
        return ApplyStep::Adopt;
    }
    if phase(pv) == Some("Bound")
        && let Some(claim) = claim_of(pv)
        && annotation(pv, CLAIMED_BY_ANNOTATION) != Some(claim.as_str())
    {
        return ApplyStep::RecordClaim(claim);
    }
    if needs_cleanup(pv) && !paused {
        return ApplyStep::StartCleanup;
    }
    if is_kept(pv) {
        return ApplyStep::Keep;
    }
    ApplyStep::Nothing
}

/// The step for a PV being deleted.
pub fn cleanup_step(pv: &LeanPv) -> CleanupStep {
    let released = matches!(phase(pv), Some("Released" | "Failed"));
    match claim_of(pv) {
        Some(claim) if !released => CleanupStep::WaitForClaim(claim),
        _ if was_claimed(pv) => CleanupStep::Wipe,
        _ => CleanupStep::SkipWipe,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn pv(phase: &str, claim: bool, annotations: &[(&str, &str)]) -> LeanPv {
        let mut value = serde_json::json!({
            "metadata": {"name": "pv", "labels": {crate::objects::pv::NODE_LABEL: "n1"}},
            "spec": {},
            "status": {"phase": phase},
        });
        if claim {
            value["spec"]["claimRef"] = serde_json::json!({"namespace": "ns", "name": "data"});
        }
        let map: serde_json::Map<String, serde_json::Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect();
        value["metadata"]["annotations"] = serde_json::Value::Object(map);
        serde_json::from_value(value).unwrap()
    }

    fn deleting(mut pv: LeanPv) -> LeanPv {
        pv.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        pv
    }

    #[test]
    fn released_or_interrupted_pvs_need_cleanup_but_never_bound_ones() {
        let mark = [(WIPE_STARTED_AT_ANNOTATION, "2026-11-22T00:00:00Z")];
        assert!(needs_cleanup(&pv("Released", true, &[])));
        assert!(
            needs_cleanup(&pv("Available", false, &mark)),
            "a half-wiped device is never offered"
        );
        assert!(!needs_cleanup(&pv("Available", false, &[])));
        assert!(
            !needs_cleanup(&pv("Bound", true, &mark)),
            "never under a claim"
        );
        assert!(!needs_cleanup(&pv("Pending", false, &[])));
        assert!(!needs_cleanup(&deleting(pv("Released", true, &[]))));
    }

    #[test]
    fn a_bound_claim_is_recorded_once_and_a_released_pv_is_cleaned() {
        assert_eq!(
            apply_step(&pv("Bound", true, &[]), "n1", false),
            ApplyStep::RecordClaim("ns/data".into())
        );
        let recorded = [(CLAIMED_BY_ANNOTATION, "ns/data")];
        assert_eq!(
            apply_step(&pv("Bound", true, &recorded), "n1", false),
            ApplyStep::Nothing
        );
        assert_eq!(
            apply_step(&pv("Released", true, &recorded), "n1", false),
            ApplyStep::StartCleanup
        );
        assert_eq!(
            apply_step(&pv("Released", true, &recorded), "n1", true),
            ApplyStep::Nothing,
            "a paused node starts no cleanup"
        );
        let upstream = [(
            crate::cleanup::adopt::UPSTREAM_DEVICE_DIR_ANNOTATION,
            "/dev",
        )];
        assert_eq!(
            apply_step(&pv("Released", true, &upstream), "n1", false),
            ApplyStep::Adopt,
            "identity first"
        );
    }

    #[test]
    fn a_deleted_pv_waits_for_its_claim_and_is_wiped_unless_never_claimed() {
        assert_eq!(
            cleanup_step(&deleting(pv("Bound", true, &[]))),
            CleanupStep::WaitForClaim("ns/data".into())
        );
        assert_eq!(
            cleanup_step(&deleting(pv("Released", true, &[]))),
            CleanupStep::Wipe
        );
        assert_eq!(
            cleanup_step(&deleting(pv("Available", false, &[]))),
            CleanupStep::SkipWipe
        );
        let recorded = [(CLAIMED_BY_ANNOTATION, "ns/data")];
        assert_eq!(
            cleanup_step(&deleting(pv("Available", false, &recorded))),
            CleanupStep::Wipe,
            "a claim was recorded: an admin cleared claimRef, the data may be there"
        );
        let mark = [(WIPE_STARTED_AT_ANNOTATION, "2026-11-22T00:00:00Z")];
        assert_eq!(
            cleanup_step(&deleting(pv("Available", false, &mark))),
            CleanupStep::Wipe
        );
    }

    #[test]
    fn a_kept_pv_waits_for_its_wipe_request_and_deleting_it_still_wipes() {
        let keep = [("local-pv-provisioner.cybozu.io/release-policy", "Keep")];
        let kept = pv("Released", true, &keep);
        assert!(is_kept(&kept));
        assert!(!needs_cleanup(&kept));
        assert_eq!(apply_step(&kept, "n1", false), ApplyStep::Keep);
        let requested = pv(
            "Released",
            true,
            &[
                keep[0],
                ("local-pv-provisioner.cybozu.io/wipe-requested", "true"),
            ],
        );
        assert!(needs_cleanup(&requested));
        assert_eq!(apply_step(&requested, "n1", false), ApplyStep::StartCleanup);
        assert_eq!(cleanup_step(&deleting(kept.clone())), CleanupStep::Wipe);
        assert!(!is_kept(&pv("Bound", true, &keep)));
        let wipe = pv(
            "Released",
            true,
            &[("local-pv-provisioner.cybozu.io/release-policy", "Wipe")],
        );
        assert!(
            needs_cleanup(&wipe),
            "Wipe, and no policy at all, as before"
        );
        let odd = pv(
            "Released",
            true,
            &[("local-pv-provisioner.cybozu.io/release-policy", "Maybe")],
        );
        assert!(is_kept(&odd), "an unreadable policy keeps the data");
    }
}
