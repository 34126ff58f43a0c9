//! Kubernetes Events: what this controller tells the storage admin on the
//! Node and the PersistentVolumes (`kubectl describe`). Publishing is off
//! the hot path: [`EventPublisher::publish`] queues the Event and returns;
//! one task sends them in order, so a slow or failing Events API never
//! delays a create or a wipe. Best effort: a failure is logged and counted
//! (`api_errors_total{operation="create_event"}`), a full queue drops the
//! Event and counts it (`events_dropped_total`), never fatal.
//!
//! Each Event is its own `events.k8s.io/v1` object, named after the object
//! it regards and the time. Not kube's `Recorder`: it folds Events of the
//! same reason about the same object into one series that keeps the first
//! note, so a Node's `DeviceSkipped` for a second device, or a changed
//! `PVSpecInvalid`, would never be read. Repeats are limited where they
//! arise instead: [`crate::observe::report`] speaks once per change.

use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::runtime::events::{Event, EventType, Reporter};
use kube::{Api, Client};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::Operation;
use crate::observe::metrics::Metrics;

/// Name under which Events are reported.
pub const CONTROLLER_NAME: &str = "local-pv-provisioner";

/// Longest part of a regarded object's name an Event's name keeps
/// (`<name>.<16 hex digits>` must stay within 253 characters).
const MAX_REGARDED_NAME: usize = 253 - 17;

/// Events waiting to be sent; beyond this they are dropped and counted.
const QUEUE_LENGTH: usize = 1024;

/// Severity of an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Something worth knowing.
    Normal,
    /// Something needs attention.
    Warning,
}

/// Queues Events for one provisioner instance; cheap to clone.
#[derive(Clone)]
pub struct EventPublisher {
    queue: mpsc::Sender<(Event, ObjectReference)>,
    metrics: Metrics,
}

/// The task sending queued Events; it ends when every publisher is dropped.
pub struct EventSender {
    task: JoinHandle<()>,
}

impl EventSender {
    /// Waits up to `limit` for the queued Events to be sent.
    pub async fn finish(self, limit: Duration) {
        if tokio::time::timeout(limit, self.task).await.is_err() {
            tracing::warn!("shutting down with Events still queued");
        }
    }
}

impl EventPublisher {
    /// A publisher reporting as `instance` (the pod name), and its sending task.
    pub fn start(client: Client, instance: &str, metrics: Metrics) -> (Self, EventSender) {
        let reporter = Reporter {
            controller: CONTROLLER_NAME.to_string(),
            instance: Some(instance.to_string()),
        };
        let (queue, pending) = mpsc::channel(QUEUE_LENGTH);
        let sender = Sender {
            client,
            reporter,
            metrics: metrics.clone(),
        };
        let task = tokio::spawn(sender.run(pending));
        (EventPublisher { queue, metrics }, EventSender { task })
    }

    /// Queues one Event about `regarding`. `action` and `reason` are
    /// PascalCase words; `note` is shortened to the 1 kB the API allows.
    pub fn publish(
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
        if self.queue.try_send((event, regarding.clone())).is_err() {
            self.metrics.events_dropped.inc();
            tracing::warn!(reason, "the Event queue is full; Event dropped");
        }
    }
}

/// Sends queued Events, one at a time.
struct Sender {
    client: Client,
    reporter: Reporter,
    metrics: Metrics,
}

impl Sender {
    async fn run(self, mut pending: mpsc::Receiver<(Event, ObjectReference)>) {
        while let Some((event, regarding)) = pending.recv().await {
            if let Err(error) = self.create(&event, &regarding).await {
                self.metrics
                    .api_errors
                    .with_label_values(&[Operation::CreateEvent.label()])
                    .inc();
                tracing::warn!(%error, reason = %event.reason, "could not publish a Kubernetes Event");
            }
        }
    }
}

impl Sender {
    /// Creates one Event, named after (a cut of) the regarded object's name
    /// and the time; its `regarding` keeps the full name.
    async fn create(&self, event: &Event, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let name = regarding.name.as_deref().unwrap_or(CONTROLLER_NAME);
        let cut: String = name.chars().take(MAX_REGARDED_NAME).collect();
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
