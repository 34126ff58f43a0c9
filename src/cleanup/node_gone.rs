//! What the node-cleanup controller does with one PV whose Node may be
//! gone for good, decided from snapshots (the PV, whether its Node exists,
//! the time) alone. Pure: `controller::node_cleanup` applies the decision.
//!
//! A PV's node is its [`NODE_NAME_ANNOTATION`]; a PV without it, or without
//! the [`CLEANUP_FINALIZER`], is left alone (nothing of this program holds
//! it). While the Node is absent the PV carries
//! [`NODE_GONE_SINCE_ANNOTATION`], the time this controller first saw it
//! absent, so the grace survives restarts; a Node that comes back within
//! the grace only loses that mark. A Node absent for the whole grace gets
//! its PVs released **without a wipe** (the disk left with the node): the
//! release is recorded ([`WIPE_SKIPPED_ANNOTATION`] and the device's
//! history), the bound claim is deleted where the PV says so
//! ([`DELETE_CLAIMS_ON_NODE_GONE_ANNOTATION`]), the PV is deleted unless it
//! is already being deleted, and the cleanup finalizer goes last, so a
//! crash half-way leaves a PV that the next pass finishes.
//!
//! [`NODE_NAME_ANNOTATION`]: crate::objects::pv::NODE_NAME_ANNOTATION
//! [`CLEANUP_FINALIZER`]: crate::objects::pv::CLEANUP_FINALIZER
//! [`NODE_GONE_SINCE_ANNOTATION`]: crate::objects::pv::NODE_GONE_SINCE_ANNOTATION
//! [`WIPE_SKIPPED_ANNOTATION`]: crate::objects::pv::WIPE_SKIPPED_ANNOTATION
//! [`DELETE_CLAIMS_ON_NODE_GONE_ANNOTATION`]: crate::objects::pv::DELETE_CLAIMS_ON_NODE_GONE_ANNOTATION

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::objects::pv::{
    CLEANUP_FINALIZER, DELETE_CLAIMS_ON_NODE_GONE_ANNOTATION, LeanPv, NODE_GONE_SINCE_ANNOTATION,
    NODE_NAME_ANNOTATION, WIPE_SKIPPED_ANNOTATION, annotation, has_cleanup_finalizer,
};
use crate::observe::history::{self, HISTORY_ANNOTATION};

/// What the wipe-skipped note of a PV released by node-cleanup says after
/// its time.
pub const NODE_GONE_NOTE: &str = "node gone, released without a wipe";

/// The step for one PV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeGoneStep {
    /// Not this program's, or no cleanup finalizer: never touched.
    LeaveAlone,
    /// Its Node exists and it carries no mark: nothing to do.
    Nothing,
    /// Its Node is back within the grace: remove the mark, nothing else.
    ClearMark,
    /// Its Node is absent and the PV is not marked yet: record `since`
    /// (RFC 3339) as the time the Node was first seen absent.
    Mark {
        /// The annotation value, the current time.
        since: String,
    },
    /// Its Node is absent, but not for the whole grace yet: look again at
    /// `until`.
    Wait {
        /// When the grace ends.
        until: Timestamp,
    },
    /// Its Node has been absent for the grace: release the PV without a wipe.
    Release(Release),
}

/// How a PV of a Node gone for good is released, in this order: annotate,
/// delete the claim, delete the PV, remove the cleanup finalizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The Node the PV was made for.
    pub node: String,
    /// Annotations to record before anything else (the wipe-skipped note
    /// and the device's history); `None` when they are already there (a
    /// release an earlier pass began).
    pub annotations: Option<BTreeMap<String, String>>,
    /// The bound claim to delete, when the PV asks for it.
    pub delete_claim: Option<ClaimToDelete>,
    /// Whether the PV must be deleted (it is not being deleted yet).
    pub delete_pv: bool,
    /// The finalizers the PV keeps once the cleanup finalizer is removed.
    pub kept_finalizers: Vec<String>,
}

/// A claim deleted because its PV's Node is gone for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimToDelete {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The UID in the PV's `claimRef` (the delete's precondition).
    pub uid: String,
}

impl ClaimToDelete {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The node a PV of this program was made for.
pub fn node_of(pv: &LeanPv) -> Option<&str> {
    annotation(pv, NODE_NAME_ANNOTATION).filter(|node| !node.is_empty())
}

/// When the PV's Node was first seen absent, if it is marked (an
/// unreadable mark counts as none).
pub fn gone_since(pv: &LeanPv) -> Option<Timestamp> {
    annotation(pv, NODE_GONE_SINCE_ANNOTATION)?.parse().ok()
}

/// Whether the PV was released by node-cleanup already (its wipe-skipped
/// note says so).
fn release_recorded(pv: &LeanPv) -> bool {
    annotation(pv, WIPE_SKIPPED_ANNOTATION).is_some_and(|note| note.ends_with(NODE_GONE_NOTE))
}

/// The claim to delete with the PV: only when the PV asks for it
/// ([`DELETE_CLAIMS_ON_NODE_GONE_ANNOTATION`] `"true"`) and its `claimRef`
/// names a claim with a UID (without one a claim made anew under the same
/// name could be deleted).
pub fn claim_to_delete(pv: &LeanPv) -> Option<ClaimToDelete> {
    if annotation(pv, DELETE_CLAIMS_ON_NODE_GONE_ANNOTATION) != Some("true") {
        return None;
    }
    let claim = pv.spec.as_ref()?.claim_ref.as_ref()?;
    let namespace = claim.namespace.clone().filter(|ns| !ns.is_empty())?;
    let name = claim.name.clone().filter(|name| !name.is_empty())?;
    let uid = claim.uid.clone().filter(|uid| !uid.is_empty())?;
    Some(ClaimToDelete {
        namespace,
        name,
        uid,
    })
}

/// The annotations recording a release without a wipe at `now`: the
/// wipe-skipped note and the device's history with this PV's claim
/// (released now, unless the PV's deletion says when).
pub fn release_annotations(pv: &LeanPv, now: Timestamp) -> BTreeMap<String, String> {
    let mut history = history::after_release(pv, None);
    if pv.metadata.deletion_timestamp.is_none()
        && let Some(last) = history.claims.last_mut()
        && annotation(pv, crate::objects::pv::CLAIMED_BY_ANNOTATION) == Some(last.claim.as_str())
        && last.released_at.is_none()
    {
        last.released_at = Some(now.to_string());
    }
    BTreeMap::from([
        (
            WIPE_SKIPPED_ANNOTATION.to_string(),
            format!("{now}: {NODE_GONE_NOTE}"),
        ),
        (
            HISTORY_ANNOTATION.to_string(),
            history::to_annotation(&history),
        ),
    ])
}

/// The step for `pv`, given whether its Node exists (`node_exists` is asked
/// only about the PV's own node), the time and the grace.
pub fn step(
    pv: &LeanPv,
    node_exists: impl Fn(&str) -> bool,
    now: Timestamp,
    grace: Duration,
) -> NodeGoneStep {
    let Some(node) = node_of(pv) else {
        return NodeGoneStep::LeaveAlone;
    };
    if !has_cleanup_finalizer(pv) {
        return NodeGoneStep::LeaveAlone;
    }
    let marked = annotation(pv, NODE_GONE_SINCE_ANNOTATION).is_some();
    if node_exists(node) {
        return if marked {
            NodeGoneStep::ClearMark
        } else {
            NodeGoneStep::Nothing
        };
    }
    let Some(since) = gone_since(pv) else {
        return NodeGoneStep::Mark {
            since: now.to_string(),
        };
    };
    let grace = SignedDuration::try_from(grace).unwrap_or(SignedDuration::MAX);
    let until = since.checked_add(grace).unwrap_or(Timestamp::MAX);
    if now < until {
        return NodeGoneStep::Wait { until };
    }
    let kept_finalizers = pv
        .metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|finalizer| *finalizer != CLEANUP_FINALIZER)
        .cloned()
        .collect();
    NodeGoneStep::Release(Release {
        node: node.to_string(),
        annotations: (!release_recorded(pv)).then(|| release_annotations(pv, now)),
        delete_claim: claim_to_delete(pv),
        delete_pv: pv.metadata.deletion_timestamp.is_none(),
        kept_finalizers,
    })
}

/// The note of the `NodeGone` Event of a released PV.
pub fn event_note(release: &Release, grace: Duration) -> String {
    let claim = release
        .delete_claim
        .as_ref()
        .map_or(String::new(), |claim| {
            format!("; its claim {} is deleted", claim.key())
        });
    format!(
        "Node {} has been gone for at least {}s: released without a wipe (the disk left with the node){claim}",
        release.node,
        grace.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::pv::{CLAIMED_BY_ANNOTATION, NODE_LABEL};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const GRACE: Duration = Duration::from_secs(600);

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn pv(annotations: &[(&str, &str)], finalizers: &[&str]) -> LeanPv {
        let mut map: serde_json::Map<String, serde_json::Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect();
        map.entry(NODE_NAME_ANNOTATION.to_string())
            .or_insert(serde_json::json!("n1"));
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "local-n1-sda",
                "labels": {NODE_LABEL: "n1"},
                "annotations": map,
                "finalizers": finalizers,
            },
            "spec": {"claimRef": {"namespace": "apps", "name": "data-db-0", "uid": "claim-uid"}},
            "status": {"phase": "Bound"},
        }))
        .unwrap()
    }

    fn ours(annotations: &[(&str, &str)]) -> LeanPv {
        pv(
            annotations,
            &[CLEANUP_FINALIZER, "kubernetes.io/pv-protection"],
        )
    }

    const NOW: &str = "2026-11-02T10:00:00Z";
    const GONE: fn(&str) -> bool = |_| false;
    const THERE: fn(&str) -> bool = |_| true;

    #[test]
    fn a_pv_of_a_present_node_is_left_as_it_is_and_loses_a_stale_mark() {
        assert_eq!(
            step(&ours(&[]), THERE, at(NOW), GRACE),
            NodeGoneStep::Nothing
        );
        let marked = ours(&[(NODE_GONE_SINCE_ANNOTATION, "2026-11-02T09:59:00Z")]);
        assert_eq!(
            step(&marked, THERE, at(NOW), GRACE),
            NodeGoneStep::ClearMark
        );
        let asked = std::cell::RefCell::new(Vec::new());
        step(
            &ours(&[]),
            |node| {
                asked.borrow_mut().push(node.to_string());
                true
            },
            at(NOW),
            GRACE,
        );
        assert_eq!(
            asked.into_inner(),
            ["n1"],
            "its own node, by the annotation"
        );
    }

    #[test]
    fn pvs_not_held_by_this_program_are_never_touched() {
        let no_finalizer = pv(&[], &["kubernetes.io/pv-protection"]);
        assert_eq!(
            step(&no_finalizer, GONE, at(NOW), GRACE),
            NodeGoneStep::LeaveAlone
        );
        let mut no_node = ours(&[]);
        no_node
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(NODE_NAME_ANNOTATION);
        assert_eq!(
            step(&no_node, GONE, at(NOW), GRACE),
            NodeGoneStep::LeaveAlone
        );
        let long_gone = pv(
            &[(NODE_GONE_SINCE_ANNOTATION, "2020-01-01T00:00:00Z")],
            &["kubernetes.io/pv-protection"],
        );
        assert_eq!(
            step(&long_gone, GONE, at(NOW), GRACE),
            NodeGoneStep::LeaveAlone,
            "a finalizer someone removed is not needed"
        );
    }

    #[test]
    fn an_absent_node_is_marked_then_waited_for_until_the_grace_ends() {
        assert_eq!(
            step(&ours(&[]), GONE, at(NOW), GRACE),
            NodeGoneStep::Mark {
                since: NOW.to_string()
            }
        );
        let marked = ours(&[(NODE_GONE_SINCE_ANNOTATION, "2026-11-02T09:55:00Z")]);
        assert_eq!(
            step(&marked, GONE, at(NOW), GRACE),
            NodeGoneStep::Wait {
                until: at("2026-11-02T10:05:00Z")
            }
        );
        assert!(matches!(
            step(&marked, GONE, at("2026-11-02T10:05:00Z"), GRACE),
            NodeGoneStep::Release(_)
        ));
        let unreadable = ours(&[(NODE_GONE_SINCE_ANNOTATION, "yesterday")]);
        assert!(
            matches!(
                step(&unreadable, GONE, at(NOW), GRACE),
                NodeGoneStep::Mark { .. }
            ),
            "an unreadable mark starts the grace anew"
        );
        let future = ours(&[(NODE_GONE_SINCE_ANNOTATION, "2026-11-02T11:00:00Z")]);
        assert!(matches!(
            step(&future, GONE, at(NOW), GRACE),
            NodeGoneStep::Wait { .. }
        ));
    }

    #[test]
    fn after_the_grace_the_release_records_deletes_and_keeps_other_finalizers() {
        let marked = ours(&[
            (NODE_GONE_SINCE_ANNOTATION, "2026-11-02T09:00:00Z"),
            (CLAIMED_BY_ANNOTATION, "apps/data-db-0"),
            (DELETE_CLAIMS_ON_NODE_GONE_ANNOTATION, "true"),
        ]);
        let NodeGoneStep::Release(release) = step(&marked, GONE, at(NOW), GRACE) else {
            panic!("not released");
        };
        assert_eq!(release.node, "n1");
        assert_eq!(release.kept_finalizers, ["kubernetes.io/pv-protection"]);
        assert!(release.delete_pv);
        assert_eq!(
            release.delete_claim,
            Some(ClaimToDelete {
                namespace: "apps".into(),
                name: "data-db-0".into(),
                uid: "claim-uid".into()
            })
        );
        let annotations = release.annotations.clone().expect("recorded");
        assert_eq!(
            annotations[WIPE_SKIPPED_ANNOTATION],
            format!("{NOW}: {NODE_GONE_NOTE}")
        );
        let history: history::DeviceHistory =
            serde_json::from_str(&annotations[HISTORY_ANNOTATION]).unwrap();
        assert_eq!(history.wipes, 0, "no wipe");
        assert_eq!(history.claims.len(), 1);
        assert_eq!(history.claims[0].claim, "apps/data-db-0");
        assert_eq!(history.claims[0].released_at.as_deref(), Some(NOW));
        let note = event_note(&release, GRACE);
        assert!(
            note.contains("n1") && note.contains("apps/data-db-0") && note.contains("600s"),
            "{note}"
        );
    }

    #[test]
    fn a_release_begun_earlier_is_finished_without_recording_it_again() {
        let mut begun = ours(&[
            (NODE_GONE_SINCE_ANNOTATION, "2026-11-02T09:00:00Z"),
            (
                WIPE_SKIPPED_ANNOTATION,
                &format!("2026-11-02T09:10:00Z: {NODE_GONE_NOTE}"),
            ),
        ]);
        begun.metadata.deletion_timestamp = Some(Time(at("2026-11-02T09:10:01Z")));
        let NodeGoneStep::Release(release) = step(&begun, GONE, at(NOW), GRACE) else {
            panic!("not released");
        };
        assert_eq!(release.annotations, None);
        assert!(!release.delete_pv, "already being deleted");
        assert_eq!(release.delete_claim, None, "not asked for");
    }

    #[test]
    fn a_claim_is_deleted_only_when_asked_and_named_with_its_uid() {
        let asked = [(DELETE_CLAIMS_ON_NODE_GONE_ANNOTATION, "true")];
        assert!(claim_to_delete(&ours(&asked)).is_some());
        assert!(
            claim_to_delete(&ours(&[(DELETE_CLAIMS_ON_NODE_GONE_ANNOTATION, "false")])).is_none()
        );
        assert!(claim_to_delete(&ours(&[])).is_none());
        let mut no_uid = ours(&asked);
        no_uid
            .spec
            .as_mut()
            .unwrap()
            .claim_ref
            .as_mut()
            .unwrap()
            .uid = None;
        assert!(claim_to_delete(&no_uid).is_none());
        let mut unbound = ours(&asked);
        unbound.spec.as_mut().unwrap().claim_ref = None;
        assert!(claim_to_delete(&unbound).is_none());
    }
}
