//! Kubernetes Events: what this controller tells the storage admin on the
//! Node and the PersistentVolumes (`kubectl describe`). Publishing is best
//! effort: a failure is logged and counted, never fatal.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::metrics::Metrics;

/// Name under which Events are reported.
pub const CONTROLLER_NAME: &str = "local-pv-provisioner";

/// Publishes Events for one provisioner instance.
#[derive(Clone)]
pub struct EventPublisher {
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
            recorder: Recorder::new(client, reporter),
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
        if let Err(error) = self.recorder.publish(&event, regarding).await {
            self.metrics
                .api_errors
                .with_label_values(&["create_event"])
                .inc();
            tracing::warn!(%error, reason, "could not publish a Kubernetes Event");
        }
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
