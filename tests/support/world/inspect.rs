//! Reading what the program made and said: PVs, claims and Events, waits
//! for them, and (fake API server only) the request log.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use local_pv_provisioner::objects::naming::node_label_value;

use super::waits::{WAIT, eventually};
use super::witness::is_finalizer_removal;
use super::{CLEANUP_FINALIZER, NODE_LABEL, NODE_NAME_ANNOTATION, World};
use crate::support::fake_api::RecordedRequest;

/// The phase of a PV, `""` when it has none yet.
pub fn phase(pv: &PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or("")
}

/// Whether `pv` is being deleted (Terminating) and still held by the
/// provisioner's finalizer: its cleanup has begun and not completed.
pub fn held_terminating(pv: &PersistentVolume) -> bool {
    pv.metadata.deletion_timestamp.is_some()
        && pv.finalizers().iter().any(|f| f == CLEANUP_FINALIZER)
}

/// The phase of a claim, `""` when it has none yet.
pub fn claim_phase(claim: &PersistentVolumeClaim) -> &str {
    claim
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or("")
}

impl World {
    /// Every PV.
    pub async fn pvs(&self) -> Vec<PersistentVolume> {
        self.list(None).await
    }

    /// The PV named `name`, if it exists.
    pub async fn pv(&self, name: &str) -> Option<PersistentVolume> {
        self.get(None, name).await
    }

    /// The names of every PV, sorted.
    pub async fn pv_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.pvs().await.iter().map(ResourceExt::name_any).collect();
        names.sort();
        names
    }

    /// The PVs the provisioner made for Node `node`: labelled for it and
    /// recording it as their node.
    pub async fn pvs_of(&self, node: &str) -> Vec<PersistentVolume> {
        let label = node_label_value(node);
        self.pvs()
            .await
            .into_iter()
            .filter(|pv| {
                pv.labels().get(NODE_LABEL) == Some(&label)
                    && pv
                        .annotations()
                        .get(NODE_NAME_ANNOTATION)
                        .map(String::as_str)
                        == Some(node)
            })
            .collect()
    }

    /// Waits until PV `name` exists; returns it.
    pub async fn wait_for_pv(&self, name: &str) -> PersistentVolume {
        eventually(&format!("PV {name}"), WAIT, || self.pv(name)).await
    }

    /// Waits until the PVs are exactly `names`.
    pub async fn wait_for_pv_names(&self, names: &[&str]) {
        let mut wanted: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        wanted.sort();
        eventually(&format!("exactly the PVs {wanted:?}"), WAIT, || async {
            (self.pv_names().await == wanted).then_some(())
        })
        .await;
    }

    /// The claim `name` in the world's namespace, if it exists.
    pub async fn claim(&self, name: &str) -> Option<PersistentVolumeClaim> {
        self.get(Some(self.namespace()), name).await
    }

    /// The `events.k8s.io/v1` Events in `default`, where Events about
    /// cluster-scoped objects (Nodes, PVs) live.
    pub async fn events(&self) -> Vec<Event> {
        self.list(Some("default")).await
    }

    /// The Events about the object of `kind` named `name`.
    pub async fn events_about(&self, kind: &str, name: &str) -> Vec<Event> {
        self.events()
            .await
            .into_iter()
            .filter(|event| {
                let regarding = event.regarding.as_ref();
                regarding.and_then(|r| r.kind.as_deref()) == Some(kind)
                    && regarding.and_then(|r| r.name.as_deref()) == Some(name)
            })
            .collect()
    }

    /// The notes of the Events with `reason` about the object of `kind`
    /// named `name`, each with how often it occurred (an Event series
    /// counts each occurrence).
    pub async fn occurrences(&self, reason: &str, kind: &str, name: &str) -> Vec<(String, i32)> {
        self.events_about(kind, name)
            .await
            .into_iter()
            .filter(|event| event.reason.as_deref() == Some(reason))
            .map(|event| {
                let count = event.series.as_ref().map_or(1, |series| series.count);
                (event.note.unwrap_or_default(), count)
            })
            .collect()
    }

    /// The first Event with `reason`, if any.
    pub async fn event(&self, reason: &str) -> Option<Event> {
        self.events()
            .await
            .into_iter()
            .find(|event| event.reason.as_deref() == Some(reason))
    }

    /// Waits for an Event with `reason`, about anything.
    pub async fn wait_for_event(&self, reason: &str) -> Event {
        eventually(&format!("an Event {reason}"), WAIT, || self.event(reason)).await
    }

    /// Waits for an Event with `reason`, about anything; returns its note.
    pub async fn wait_for_note(&self, reason: &str) -> String {
        let event = self.wait_for_event(reason).await;
        event.note.unwrap_or_default()
    }

    /// Waits for an Event with `reason` about the object of `kind` named `name`.
    pub async fn wait_for_event_about(&self, reason: &str, kind: &str, name: &str) -> Event {
        eventually(
            &format!("an Event {reason} about {kind} {name}"),
            WAIT,
            || async {
                self.events_about(kind, name)
                    .await
                    .into_iter()
                    .find(|event| event.reason.as_deref() == Some(reason))
            },
        )
        .await
    }

    /// Requests the fake server answered, of `verb` on `resource`.
    pub fn requests(&self, verb: &str, resource: &str) -> Vec<RecordedRequest> {
        self.server()
            .requests()
            .into_iter()
            .filter(|r| r.verb == verb && r.resource == resource)
            .collect()
    }

    /// How many PATCHes removing the provisioner's finalizer the fake server
    /// answered, on PV `name` only when given.
    pub fn finalizer_removals(&self, name: Option<&str>) -> usize {
        self.requests("patch", "persistentvolumes")
            .iter()
            .filter(|r| is_finalizer_removal(r))
            .filter(|r| name.is_none_or(|name| r.name.as_deref() == Some(name)))
            .count()
    }

    /// How many requests of `verb` the fake server answered on PVs, on PV
    /// `name` only when given.
    pub fn pv_requests(&self, verb: &str, name: Option<&str>) -> usize {
        self.requests(verb, "persistentvolumes")
            .iter()
            .filter(|r| name.is_none_or(|name| r.name.as_deref() == Some(name)))
            .count()
    }
}
