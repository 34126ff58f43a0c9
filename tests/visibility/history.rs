//! A device's history outlives its PVs: two tenants have one device in a
//! row, and the PV made after the second wipe carries, in the annotation
//! `local-pv-provisioner.cybozu.io/history`, both claims (oldest first,
//! each bound time the one recorded on its PV, released at the PV's
//! deletion, in order), two wipes, and the last wipe's regions, time and
//! duration. Read as the JSON a user reads, not through the product's type.

use k8s_openapi::api::core::v1::PersistentVolume;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde_json::Value;

use crate::clean_offer::{annotation, claim_and_wait, span, tenant_writes, wait_recreated};
use crate::common::*;

/// Where a PV carries its device's history.
const HISTORY: &str = "local-pv-provisioner.cybozu.io/history";
/// When the program saw the PV's claim bound.
const CLAIMED_AT: &str = "local-pv-provisioner.cybozu.io/claimed-at";
/// Which claim the program saw bound.
const CLAIMED_BY: &str = "local-pv-provisioner.cybozu.io/claimed-by";

/// The history `pv` carries, as JSON.
fn history(pv: &PersistentVolume) -> Value {
    let text = annotation(pv, HISTORY).unwrap_or_else(|| panic!("no history on {pv:?}"));
    serde_json::from_str(text).expect("the history is JSON")
}

/// A time of the history.
fn time(value: &Value) -> Timestamp {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"));
    text.parse()
        .unwrap_or_else(|_| panic!("not RFC 3339: {text}"))
}

/// One tenant: claims `pv` as `claim`, writes, lets go; returns the bound
/// time recorded on the PV and the device's next PV.
async fn tenant(setup: &Node, pv: &PersistentVolume, claim: &str) -> (String, PersistentVolume) {
    let world = &setup.world;
    claim_and_wait(world, claim, pv).await;
    let claimed = world.pv(&pv.name_any()).await.expect("the claimed PV");
    let bound_at = annotation(&claimed, CLAIMED_AT)
        .expect("claimed-at")
        .to_string();
    tenant_writes(&setup.disks[0], &[span(0, 4096)]);
    world.delete_claim(claim).await;
    let uid = pv.uid().expect("a UID");
    let next = wait_recreated(world, &pv.name_any(), &uid).await;
    (bound_at, next)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_third_pv_of_a_device_names_both_earlier_tenants_and_two_wipes() {
    let setup = node_with("vis-hist", &["disk0"], vec![], |_| {}).await;
    let name = setup.pv_name("disk0");
    let first = crate::clean_offer::wait_available(&setup.world, &name).await;
    assert!(
        annotation(&first, HISTORY).is_none(),
        "a new device has no history"
    );
    let ns = setup.world.namespace().to_string();

    let (bound_a, second) = tenant(&setup, &first, "tenant-a").await;
    let after_one = history(&second);
    assert_eq!(after_one["wipes"], 1, "{after_one}");
    assert_eq!(after_one["claims"].as_array().map(Vec::len), Some(1));
    assert_eq!(after_one["claims"][0]["claim"], format!("{ns}/tenant-a"));
    assert!(
        annotation(&second, CLAIMED_BY).is_none(),
        "a fresh PV has no claim yet"
    );

    let (bound_b, third) = tenant(&setup, &second, "tenant-b").await;
    let carried = history(&third);
    assert_eq!(carried["wipes"], 2, "{carried}");
    let claims = carried["claims"].as_array().expect("claims");
    let names: Vec<&str> = claims.iter().filter_map(|c| c["claim"].as_str()).collect();
    assert_eq!(names, [format!("{ns}/tenant-a"), format!("{ns}/tenant-b")]);
    assert_eq!(claims[0]["boundAt"], bound_a.as_str());
    assert_eq!(claims[1]["boundAt"], bound_b.as_str());
    let times: Vec<Timestamp> = claims
        .iter()
        .flat_map(|c| [time(&c["boundAt"]), time(&c["releasedAt"])])
        .collect();
    // Released times come from deletionTimestamp, whole seconds: compare so.
    let seconds: Vec<i64> = times.into_iter().map(Timestamp::as_second).collect();
    assert!(
        seconds.is_sorted(),
        "bound, released, bound, released: {claims:#?}"
    );

    let last = &carried["lastWipe"];
    assert_eq!(last["regions"], REGIONS, "{last}");
    assert!(last["durationSeconds"].as_f64() > Some(0.0), "{last}");
    assert!(
        time(&last["at"]).as_second() >= seconds[3],
        "after the release: {carried}"
    );
    assert!(annotation(&third, HISTORY).unwrap().len() < 4096, "bounded");
}
