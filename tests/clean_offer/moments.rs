//! What a device held at the moments that matter, read by the fake API
//! server's request observer as each request arrives (before it is served):
//! the DELETE of a PV, the removal of the cleanup finalizer from it, and the
//! create of a PV of the same name. No test has to catch a moment by
//! polling: "the device was zeroed before the finalizer went and before a
//! new PV existed" is read off the requests themselves.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::common::{CLEANUP_FINALIZER, Span, spans_zeroed};
use crate::support::fake_api::RecordedRequest;
use crate::support::loop_device::LoopDevice;
use crate::support::world::World;

/// A request that matters for a watched PV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A DELETE of the PV.
    Deleted,
    /// A write that takes the cleanup finalizer off the PV.
    FinalizerRemoved,
    /// A create of a PV of that name.
    Created,
}

/// One such request, and whether the watched spans read zero then.
#[derive(Debug, Clone)]
pub struct Moment {
    pub step: Step,
    pub pv: String,
    pub zeroed: bool,
}

/// A device to read at the moments of PV `pv`: the spans a tenant wrote
/// inside the regions a wipe must zero.
pub struct Watch {
    pub pv: String,
    pub device: Arc<LoopDevice>,
    pub spans: Vec<Span>,
}

/// The moments seen so far, oldest first.
#[derive(Default)]
pub struct Moments {
    seen: Mutex<Vec<Moment>>,
}

impl Moments {
    /// Installs the observer on the world's fake server (replacing any
    /// other) for the PVs of `watches`.
    pub fn install(world: &World, watches: Vec<Watch>) -> Arc<Moments> {
        let moments = Arc::new(Moments::default());
        let by_pv: BTreeMap<String, Watch> = watches
            .into_iter()
            .map(|watch| (watch.pv.clone(), watch))
            .collect();
        let records = moments.clone();
        world
            .server()
            .observe_requests(move |request| records.look(request, &by_pv));
        moments
    }

    fn look(&self, request: &RecordedRequest, watches: &BTreeMap<String, Watch>) {
        if request.resource != "persistentvolumes" || request.subresource.is_some() {
            return;
        }
        let Some(watch) = request.object_name().and_then(|name| watches.get(name)) else {
            return;
        };
        let step = match request.verb.as_str() {
            "delete" => Step::Deleted,
            "create" => Step::Created,
            "patch" | "update" if removes_cleanup_finalizer(request.body.as_ref()) => {
                Step::FinalizerRemoved
            }
            _ => return,
        };
        let zeroed = spans_zeroed(&watch.device, &watch.spans);
        let moment = Moment {
            step,
            pv: watch.pv.clone(),
            zeroed,
        };
        self.seen.lock().expect("moments").push(moment);
    }

    /// The moments of PV `pv`, oldest first.
    pub fn of(&self, pv: &str) -> Vec<Moment> {
        let seen = self.seen.lock().expect("moments");
        seen.iter().filter(|m| m.pv == pv).cloned().collect()
    }

    /// Whether PV `pv` had its finalizer removed yet.
    pub fn finalizer_removed(&self, pv: &str) -> bool {
        self.of(pv).iter().any(|m| m.step == Step::FinalizerRemoved)
    }

    /// Asserts the order of a clean release of PV `pv`: the finalizer was
    /// removed before a PV of that name was created again, and the device's
    /// spans read zero at every attempt of either.
    pub fn assert_wiped_before_release_and_offer(&self, pv: &str) {
        let seen = self.of(pv);
        let first = |step| seen.iter().position(|m| m.step == step);
        let removed = first(Step::FinalizerRemoved)
            .unwrap_or_else(|| panic!("no removal of the finalizer of {pv}: {seen:?}"));
        let created =
            first(Step::Created).unwrap_or_else(|| panic!("{pv} not created again: {seen:?}"));
        assert!(
            removed < created,
            "{pv} made again before its release: {seen:?}"
        );
        for moment in seen.iter().filter(|m| m.step != Step::Deleted) {
            assert!(
                moment.zeroed,
                "{pv}: device not zeroed at {moment:?}; all: {seen:?}"
            );
        }
    }
}

/// Whether a PATCH or PUT body takes [`CLEANUP_FINALIZER`] off: a JSON
/// patch removing the entry it tests for (kube-runtime's way), or a merge
/// patch or full object whose finalizer list lacks it.
fn removes_cleanup_finalizer(body: Option<&Value>) -> bool {
    match body {
        Some(Value::Array(operations)) => {
            let paths = |op: &str, value: Option<&str>| -> Vec<String> {
                operations
                    .iter()
                    .filter(|o| o["op"] == op && value.is_none_or(|v| o["value"] == v))
                    .filter_map(|o| o["path"].as_str().map(String::from))
                    .collect()
            };
            let tested = paths("test", Some(CLEANUP_FINALIZER));
            paths("remove", None)
                .iter()
                .any(|path| tested.contains(path))
        }
        Some(object) => object
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|list| !list.iter().any(|f| f == CLEANUP_FINALIZER)),
        None => false,
    }
}
