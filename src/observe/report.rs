//! The reporter every flow tells what happened: [`Reporter`] carries the
//! Event publisher, the metrics and this node's name, and remembers, per
//! PV, the standing condition it last reported, so a condition that lasts
//! is said once per change and never floods the API server. The flows'
//! own messages live with them: `provision::report` (PVs created, devices
//! lost, the node's standing conditions) and `cleanup::report` (releases,
//! wipes, refusals).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;

use crate::observe::events::EventPublisher;
use crate::observe::metrics::Metrics;

/// Reports single happenings; cheap to clone.
#[derive(Clone)]
pub struct Reporter {
    /// Where Events go.
    pub events: EventPublisher,
    /// Where numbers go.
    pub metrics: Metrics,
    /// This node's name.
    pub node_name: String,
    /// Per PV UID, the standing condition last reported (a wait, a refusal).
    said: Arc<Mutex<HashMap<(String, Topic), String>>>,
}

/// What a remembered condition of a PV is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Why the PV waits or is left alone.
    Standing,
    /// Why its wipe did not complete.
    Wipe,
    /// That its wipe started.
    Started,
}

impl Reporter {
    /// A reporter for `node_name`.
    pub fn new(events: EventPublisher, metrics: Metrics, node_name: &str) -> Self {
        Reporter {
            events,
            metrics,
            node_name: node_name.to_string(),
            said: Arc::default(),
        }
    }

    /// Whether `condition` is new for the PV `uid` on `topic` (and remembers it).
    pub fn first_time(&self, uid: &str, topic: Topic, condition: &str) -> bool {
        let mut said = self.said.lock().expect("report lock");
        let key = (uid.to_string(), topic);
        if said.get(&key).map(String::as_str) == Some(condition) {
            return false;
        }
        said.insert(key, condition.to_string());
        true
    }

    /// A reference to this node's Node, for Events about the node as a whole.
    pub fn node_reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(self.node_name.clone()),
            ..ObjectReference::default()
        }
    }

    /// Forgets what was said about the PV `uid` (its conditions ended).
    pub fn forget(&self, uid: &str) {
        self.said
            .lock()
            .expect("report lock")
            .retain(|(said_of, _), _| said_of != uid);
    }
}
