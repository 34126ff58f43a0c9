//! Inspection through the [`FakeApiServer`] handle: the request log, the
//! stored objects and the resourceVersion, and writes a test makes straight
//! to the store (as if POSTed or PUT, or as the PV controller would), with
//! no request recorded.

use super::faults::RecordedRequest;
use super::resources::{self, RESOURCES};
use super::store::By;
use super::{FakeApiServer, controller};

/// The manager of a test's writes straight to the store.
const TEST_MANAGER: &str = "fake-api-test";

impl FakeApiServer {
    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.faults.log()
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        self.shared.faults.clear_log();
    }

    /// The stored object, by resource (`persistentvolumes`, `configmaps`,
    /// `events`, `events.events.k8s.io`, ...), namespace (`None` for
    /// cluster-scoped resources) and name.
    pub fn object(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<serde_json::Value> {
        let res = resources::by_name(resource);
        self.store()
            .get(res, namespace.unwrap_or(""), name)
            .cloned()
    }

    /// Every stored object of a resource, ordered by namespace and name.
    pub fn objects(&self, resource: &str) -> Vec<serde_json::Value> {
        let res = resources::by_name(resource);
        self.store().list(res, None).cloned().collect()
    }

    /// Creates an object directly in the store, as if POSTed (same defaults
    /// and validation, a watch event, no request recorded); returns it as
    /// stored (its fields managed by `fake-api-test`). The namespace comes
    /// from `metadata.namespace`. Panics when the server would refuse it.
    pub fn create_object(&self, resource: &str, object: serde_json::Value) -> serde_json::Value {
        let res = resources::by_name(resource);
        let ns = resources::meta_str(&object, "namespace").to_string();
        let ns = RESOURCES[res].namespaced.then_some(ns.as_str());
        self.store()
            .create(res, ns, object, By::Manager(TEST_MANAGER))
            .unwrap_or_else(|e| panic!("fake API server refused the object: {}", e.message))
    }

    /// Replaces an object directly in the store, as if PUT (same checks, a
    /// watch event, no request recorded); returns it as stored. Panics when
    /// the server would refuse it.
    pub fn replace_object(&self, resource: &str, object: serde_json::Value) -> serde_json::Value {
        let res = resources::by_name(resource);
        let ns = resources::meta_str(&object, "namespace").to_string();
        let name = resources::meta_str(&object, "name").to_string();
        self.store()
            .update(res, &ns, &name, object, false, By::Manager(TEST_MANAGER))
            .unwrap_or_else(|e| panic!("fake API server refused the object: {}", e.message))
    }

    /// Writes the `status` of an object directly in the store, as if PUT to
    /// its status subresource (same checks, a watch event, no request
    /// recorded); returns it as stored. Panics when the server would refuse it.
    pub fn replace_status(&self, resource: &str, object: serde_json::Value) -> serde_json::Value {
        let res = resources::by_name(resource);
        let ns = resources::meta_str(&object, "namespace").to_string();
        let name = resources::meta_str(&object, "name").to_string();
        self.store()
            .update(res, &ns, &name, object, true, By::Manager(TEST_MANAGER))
            .unwrap_or_else(|e| panic!("fake API server refused the status: {}", e.message))
    }

    /// Sets `status.phase` of a PersistentVolume (as the PV controller would).
    /// Panics when the PV does not exist.
    pub fn set_pv_phase(&self, name: &str, phase: &str) {
        controller::set_pv_phase(&mut self.store(), name, phase)
            .unwrap_or_else(|e| panic!("set_pv_phase: {e}"));
    }

    /// Binds PersistentVolume `pv` to claim `namespace/claim` as the PV
    /// controller would: `spec.claimRef` + phase `Bound` on the PV and, when
    /// the claim exists, `spec.volumeName` + phase `Bound` on it. Panics when
    /// the PV does not exist.
    pub fn bind_pv(&self, pv: &str, namespace: &str, claim: &str) {
        controller::bind(&mut self.store(), pv, namespace, claim)
            .unwrap_or_else(|e| panic!("bind_pv: {e}"));
    }

    /// The current (latest) resourceVersion of the store.
    pub fn resource_version(&self) -> u64 {
        self.store().rv()
    }
}
