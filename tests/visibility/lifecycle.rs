//! One device's whole life, as metrics and Events: offered (`Available`),
//! claimed (`Bound`, pods on the node mounting the claim and then gone),
//! released (held `Released` by a paused node, so the phase can be seen),
//! wiped, and offered again as a new PV. `volume_info` follows the phase
//! and the claim and its old series goes; `volume_consumer_info` names
//! exactly the pods on this node that mount the claim, only while they
//! exist, from a pod watch narrowed to the node; the capacity is exact;
//! both histograms get their samples; and `Provisioned`, `Claimed`,
//! `Released`, `WipeStarted`, `Wiped` and the spec error are each sent
//! once, still once after fresh reconcile passes.

use kube::ResourceExt;

use crate::clean_offer::{
    claim_and_wait, span, spans_zeroed, tenant_writes, wait_available, wait_pv, wait_recreated,
};
use crate::common::*;
use crate::page::{page, wait_page};
use crate::support::world::inspect::phase;
use crate::support::world::{QUICK_POLLING, polling};

/// The claim's name.
const CLAIM: &str = "data";

/// Asserts that every list and watch of pods the program made was narrowed
/// to its node by the field selector `spec.nodeName`.
fn assert_pods_watched_on_node_only(setup: &Node) {
    let narrowed = [
        format!("fieldSelector=spec.nodeName%3D{}", setup.node),
        format!("fieldSelector=spec.nodeName={}", setup.node),
    ];
    let requests: Vec<_> = ["list", "watch"]
        .iter()
        .flat_map(|verb| setup.world.requests(verb, "pods"))
        .collect();
    assert!(!requests.is_empty(), "the program watches pods");
    for request in requests {
        assert!(
            narrowed.iter().any(|n| request.query.contains(n.as_str())),
            "a pod request not narrowed to the node: {} ?{}",
            request.path,
            request.query
        );
    }
}

/// Pods: one on this node mounting the claim, one on another node mounting
/// it, one on this node mounting another claim. Only the first is a
/// consumer; it goes when its pod goes.
async fn pods_come_and_go(setup: &Node, name: &str) {
    let (world, ns) = (&setup.world, setup.world.namespace());
    create_pod(world, "web-0", &setup.node, CLAIM).await;
    create_pod(world, "remote-0", "another-node", CLAIM).await;
    create_pod(world, "idle-0", &setup.node, "another-claim").await;
    let consumer: &[&str] = &[name, ns, "web-0"];
    setup.wait_consumers(&[consumer]).await;
    let with = setup.on_node();
    // Still exactly that one after passes that saw every pod.
    setup.process.wait_for_fresh_passes(2).await;
    let now = page(&setup.process).await.expect("the metrics page");
    let consumers = crate::page::rows(&now, "volume_consumer_info", &with, &CONSUMER_KEYS);
    assert_eq!(
        consumers,
        [consumer],
        "only the pod on this node mounting the claim"
    );
    assert_eq!(
        now.value("volume_consumer_info", &[("pod", "web-0")]),
        Some(1.0)
    );
    assert_pods_watched_on_node_only(setup);
    delete_pod(world, "web-0").await;
    setup.wait_consumers(&[]).await;
}

/// While the node is paused by an invalid spec, the claim lets go: the PV
/// stays `Released` (nothing cleans it up), and `volume_info` shows it so,
/// still naming its claim; the spec error is said once.
async fn released_while_paused(setup: &Node, name: &str, uid: &str) {
    let world = &setup.world;
    let mut invalid = spec(world);
    invalid.insert("volumeMode".into(), "Raw".into());
    world.put_configmap("spec", invalid).await;
    world
        .wait_for_event_about("PVSpecInvalid", "Node", &setup.node)
        .await;
    world.delete_claim(CLAIM).await;
    wait_pv(world, name, "Released", |pv| phase(pv) == "Released").await;
    setup
        .wait_volume("disk0", "Released", (world.namespace(), CLAIM))
        .await;
    setup.process.wait_for_fresh_passes(3).await;
    let pv = world.pv(name).await.expect("the PV is kept while paused");
    assert_eq!(pv.uid().as_deref(), Some(uid));
    assert!(
        pv.metadata.deletion_timestamp.is_none(),
        "not cleaned while paused"
    );
    let invalid = node_notes(world, "PVSpecInvalid", &setup.node).await;
    assert_eq!(invalid.len(), 1, "the spec error once: {invalid:#?}");
}

/// The wipe after the spec is fixed, in metrics and in the old PV's Events.
async fn wiped_and_offered_again(setup: &Node, name: &str, old_uid: &str) -> String {
    let world = &setup.world;
    world.put_configmap("spec", spec(world)).await;
    let fresh = wait_recreated(world, name, old_uid).await;
    let new_uid = fresh.uid().expect("a UID");
    setup.wait_volume("disk0", "Available", ("", "")).await;
    let with = setup.on_node();
    let page = wait_page(&setup.process, "one wipe counted", |p| {
        p.value("wipes_total", &with) == Some(1.0)
    })
    .await;
    assert_eq!(page.value("wipe_duration_seconds_count", &with), Some(1.0));
    assert!(page.value("wipe_duration_seconds_sum", &with) > Some(0.0));
    assert_eq!(
        page.value("pv_create_duration_seconds_count", &with),
        Some(2.0)
    );
    let capacity = page.series("volume_capacity_bytes", &with);
    assert_eq!(capacity.len(), 1, "{capacity:#?}");
    assert_eq!(capacity[0].value, SIZE as f64);
    let wiped = wait_event_of(world, "Wiped", old_uid).await;
    for part in ["0..4194304", "66060288..67108864", " s "] {
        assert!(
            wiped.contains(part),
            "Wiped names regions and duration: {wiped}"
        );
    }
    new_uid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_lifecycle_with_pods_shows_in_metrics_and_events_once() {
    let setup = node_with("vis-life", &["disk0"], vec![polling(QUICK_POLLING)], |_| {}).await;
    let (world, name) = (&setup.world, setup.pv_name("disk0"));
    let pv = wait_available(world, &name).await;
    let uid = pv.uid().expect("a UID");
    setup.wait_volume("disk0", "Available", ("", "")).await;
    let with = setup.on_node();
    let first = page(&setup.process).await.expect("the metrics page");
    let capacity = first.value("volume_capacity_bytes", &[("persistentvolume", &name)]);
    assert_eq!(capacity, Some(SIZE as f64));
    assert_eq!(
        first.value("pv_create_duration_seconds_count", &with),
        Some(1.0)
    );
    assert!(first.value("pv_create_duration_seconds_sum", &with) >= Some(0.0));

    claim_and_wait(world, CLAIM, &pv).await;
    setup
        .wait_volume("disk0", "Bound", (world.namespace(), CLAIM))
        .await;
    pods_come_and_go(&setup, &name).await;
    let tenant = [span(0, 64 * 1024), span(SIZE - 4096, 4096)];
    tenant_writes(&setup.disks[0], &tenant);

    released_while_paused(&setup, &name, &uid).await;
    let new_uid = wiped_and_offered_again(&setup, &name, &uid).await;
    assert!(
        spans_zeroed(&setup.disks[0], &tenant),
        "the tenant's data is gone"
    );

    // Each happening once, still once after passes that began afterwards.
    setup.process.wait_for_fresh_passes(3).await;
    let story = ["Provisioned", "Claimed", "Released", "WipeStarted", "Wiped"];
    assert_once(world, &story, &uid).await;
    assert_never(world, &["WipeRefused", "WipeFailed", "WipeSkipped"], &uid).await;
    assert_once(world, &["Provisioned"], &new_uid).await;
    let claim = format!("{}/{CLAIM}", world.namespace());
    for reason in ["Claimed", "Released"] {
        let note = wait_event_of(world, reason, &uid).await;
        assert!(note.contains(&claim), "{reason} names the claim: {note}");
    }
    let discovered = node_notes(world, "DevicesDiscovered", &setup.node).await;
    assert!(
        discovered[0].starts_with("1 device(s) usable"),
        "{discovered:#?}"
    );
    assert_changes_only(&discovered, "DevicesDiscovered");
}
