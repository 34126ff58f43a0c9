//! Kubernetes Events: what this controller tells the storage admin on the
//! Node and the PersistentVolumes (`kubectl describe`). Publishing is best
//! effort: a failure is logged and counted, never fatal.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client};

use crate::metrics::Metrics;

/// Name under which Events are reported.
pub const CONTROLLER_NAME: &str = "local-pv-provisioner";

/// Longest name of a regarded object for which kube's [`Recorder`] can name
/// its Event (`<name>.<16 hex digits>` must stay within 253 characters).
const MAX_RECORDER_NAME: usize = 253 - 17;

/// Publishes Events for one provisioner instance.
#[derive(Clone)]
pub struct EventPublisher {
    client: Client,
    reporter: Reporter,
    recorder: Recorder,
    metrics: Metrics,
}

/// Severity of an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Something worth knowing.
    Normal,
    /// Something needs attention.
    Warning,
}

impl EventPublisher {
    /// A publisher reporting as `instance` (the pod name).
    pub fn new(client: Client, instance: &str, metrics: Metrics) -> Self {
        let reporter = Reporter {
            controller: CONTROLLER_NAME.to_string(),
            instance: Some(instance.to_string()),
        };
        EventPublisher {
            recorder: Recorder::new(client.clone(), reporter.clone()),
            client,
            reporter,
            metrics,
        }
    }

    /// Publishes one Event about `regarding`. `action` and `reason` are
    /// PascalCase words; `note` is shortened to the 1 kB the API allows.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        severity: Severity,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        let event = Event {
            type_: match severity {
                Severity::Normal => EventType::Normal,
                Severity::Warning => EventType::Warning,
            },
            reason: reason.to_string(),
            note: Some(shorten(note, 1000)),
            action: action.to_string(),
            secondary: None,
        };
        let long_name = regarding
            .name
            .as_ref()
            .is_some_and(|name| name.len() > MAX_RECORDER_NAME);
        let published = if long_name {
            self.create_directly(&event, regarding).await
        } else {
            self.recorder.publish(&event, regarding).await
        };
        if let Err(error) = published {
            self.metrics
                .api_errors
                .with_label_values(&["create_event"])
                .inc();
            tracing::warn!(%error, reason, "could not publish a Kubernetes Event");
        }
    }
}

impl EventPublisher {
    /// Creates an Event for an object whose name is too long for the
    /// Recorder's naming scheme: named after a cut of the object's name (the
    /// Event's `regarding` keeps the full name), without series aggregation.
    async fn create_directly(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let name = regarding.name.as_deref().unwrap_or(CONTROLLER_NAME);
        let cut: String = name.chars().take(MAX_RECORDER_NAME).collect();
        let prefix = cut.trim_end_matches(['.', '-']);
        let k8s_event = K8sEvent {
            metadata: ObjectMeta {
                name: Some(format!("{prefix}.{:x}", now.as_nanosecond())),
                namespace: Some(
                    regarding
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".into()),
                ),
                ..ObjectMeta::default()
            },
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            note: event.note.clone(),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: self.reporter.instance.clone(),
            type_: Some(match event.type_ {
                EventType::Normal => "Normal".into(),
                EventType::Warning => "Warning".into(),
            }),
            ..K8sEvent::default()
        };
        let namespace = k8s_event.metadata.namespace.clone().unwrap_or_default();
        Api::<K8sEvent>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &k8s_event)
            .await
            .map(|_| ())
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::shorten;

    #[test]
    fn notes_are_cut_on_character_boundaries() {
        assert_eq!(shorten("abc", 10), "abc");
        let cut = shorten(&"é".repeat(600), 1000);
        assert!(cut.len() <= 1000);
        assert!(cut.ends_with("..."));
    }
}
