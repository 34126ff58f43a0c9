//! What the inventory writes, and what it leaves alone: a restart rewrites
//! no LocalDisk when nothing changed, a deleted Node's LocalDisks are
//! collected with it, a cluster without the CRD still gets its PVs (the
//! CRD asked for once), and the fake refuses what a real server refuses.

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use local_pv_provisioner::objects::localdisk::{DiskState, LocalDisk};
use serde_json::json;

use crate::common::{MIB, one_disk};
use crate::disks;
use crate::support::fake_api::RecordedRequest;
use crate::support::world::waits::{WAIT, eventually};
use crate::support::world::{QUICK_POLLING, World, polling};

/// The requests that wrote LocalDisks (create, update, patch, delete).
fn disk_writes(world: &World) -> Vec<RecordedRequest> {
    world
        .server()
        .requests()
        .into_iter()
        .filter(|r| r.resource == "localdisks")
        .filter(|r| ["create", "update", "patch", "delete"].contains(&r.verb.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_rewrites_no_disk_that_did_not_change() {
    let world = World::fake().await;
    world.attach_linked("disk0", 16 * MIB);
    let with_data = world.attach_linked("data", 32 * MIB);
    let status = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&with_data.path)
        .status()
        .expect("mkfs.ext4 (e2fsprogs) is needed by this test");
    assert!(status.success(), "mkfs.ext4 failed");
    world.put_configmap("spec", world.block_spec(".*")).await;
    world.add_node("node-a", Some("spec")).await;
    let mut process = world.start("node-a", vec![polling(QUICK_POLLING)]);
    disks::wait(&world, "disk0", "Available", |s| {
        s.state == DiskState::Available && s.persistent_volume.is_some()
    })
    .await;
    disks::wait(&world, "data", "HasData", |s| s.state == DiskState::HasData).await;
    assert!(
        process
            .stop_with(nix::sys::signal::Signal::SIGTERM)
            .success(),
        "a clean stop"
    );

    world.server().clear_requests();
    let process = world.start("node-a", vec![polling(QUICK_POLLING)]);
    process.wait_for_fresh_passes(3).await;
    // The sign that the writer compared every disk after the restart: a
    // disk plugged in now gets its object, written from a wanted state
    // that holds the other two as well.
    world.attach_linked("late", 16 * MIB);
    let late = disks::wait(&world, "late", "Available", |s| {
        s.state == DiskState::Available && s.persistent_volume.is_some()
    })
    .await;
    process.wait_for_fresh_passes(3).await;
    let late_name = late.name_any();
    let others: Vec<(String, String)> = disk_writes(&world)
        .iter()
        .filter(|r| r.object_name() != Some(late_name.as_str()))
        .map(|r| (r.verb.clone(), r.path.clone()))
        .collect();
    assert!(
        others.is_empty(),
        "after a restart nothing is rewritten for the disks that did not change: {others:?}"
    );
    assert!(
        disk_writes(&world).iter().any(|r| r.verb == "create"),
        "the plugged-in disk's object was created (what shows the writer ran)"
    );
    drop(process);
    world.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_node_takes_its_disks_with_it() {
    let setup = one_disk("node-a", 16 * MIB, "1Mi", vec![]).await;
    let (process, world, _disk, _name, _uid) = setup.parts();
    let disk = disks::wait(&world, "disk0", "Available", |s| {
        s.state == DiskState::Available
    })
    .await;
    let node: Node = world.get(None, "node-a").await.expect("the Node");
    let owner = &disk.owner_references()[0];
    assert_eq!(
        owner.uid,
        node.uid().expect("a UID"),
        "owned by the live Node"
    );
    assert_eq!(
        owner.block_owner_deletion, None,
        "no nodes/finalizers permission needed"
    );
    drop(process);

    world.delete_node(&node).await;
    eventually("the Node's LocalDisks collected", WAIT, || async {
        disks::all(&world).await.is_empty().then_some(())
    })
    .await;
    world.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_crd_pvs_are_made_and_the_crd_is_asked_for_once() {
    let world = World::fake().await;
    world.server().set_crd_installed(false);
    world.attach_linked("disk0", 16 * MIB);
    world.put_configmap("spec", world.block_spec(".*")).await;
    world.add_node("node-a", Some("spec")).await;
    let process = world.start("node-a", vec![polling(QUICK_POLLING)]);
    world.wait_for_pv("local-node-a-disk0").await;
    eventually("the log says the CRD is missing", WAIT, || async {
        process
            .log()
            .contains("LocalDisk CRD (localdisks.local-pv-provisioner.cybozu.io) is not installed")
            .then_some(())
    })
    .await;
    process.wait_for_fresh_passes(3).await;
    let asked: Vec<(String, u16)> = world
        .server()
        .requests()
        .into_iter()
        .filter(|r| r.resource == "localdisks")
        .map(|r| (r.verb, r.status))
        .collect();
    assert_eq!(
        asked,
        vec![("list".to_string(), 404)],
        "one look for the CRD (the next in 5 minutes), nothing written"
    );
    assert_eq!(
        process.log().matches("is not installed").count(),
        1,
        "said once"
    );
    drop(process);
    world.teardown().await;
}

/// The fake treats LocalDisks as a real server treats a CRD with a status
/// subresource and a schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_prunes_and_validates_local_disks_like_a_real_server() {
    let world = World::fake().await;
    let api: Api<LocalDisk> = Api::all(world.client().clone());
    let object: LocalDisk = serde_json::from_value(json!({
        "apiVersion": "local-pv-provisioner.cybozu.io/v1alpha1",
        "kind": "LocalDisk",
        "metadata": {"name": "node-a-disk0"},
        "status": {"node": "node-a", "path": "/dev/x", "state": "Available", "reason": "offered"},
    }))
    .unwrap();
    let created = api
        .create(&PostParams::default(), &object)
        .await
        .expect("created");
    assert!(
        created.status.is_none(),
        "a create drops .status: {created:?}"
    );

    let status = |state: &str, extra: serde_json::Value| {
        let mut status = json!({"node": "node-a", "path": "/dev/x", "state": state, "reason": "r"});
        status
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        Patch::Merge(json!({"status": status}))
    };
    let params = PatchParams::default();
    let patched = api
        .patch_status(
            "node-a-disk0",
            &params,
            &status("HasData", json!({"colour": "red"})),
        )
        .await
        .expect("a valid status");
    let value = serde_json::to_value(&patched).unwrap();
    assert_eq!(value["status"]["state"], "HasData");
    assert!(
        value["status"].get("colour").is_none(),
        "unknown fields pruned: {value}"
    );

    for (bad, says) in [
        (status("Bogus", json!({})), "Unsupported value: \"Bogus\""),
        (
            status("Bound", json!({"sizeBytes": -1})),
            "greater than or equal to 0",
        ),
        (
            status("Bound", json!({"rotational": "yes"})),
            "must be of type boolean",
        ),
        (
            status(
                "Bound",
                json!({"lastWipe": {"time": "yesterday", "durationSeconds": 1}}),
            ),
            "date-time",
        ),
    ] {
        let error = api
            .patch_status("node-a-disk0", &params, &bad)
            .await
            .expect_err("refused");
        match error {
            kube::Error::Api(status) => {
                assert_eq!(status.code, 422, "{status:?}");
                assert!(status.message.contains(says), "{}", status.message);
            }
            other => panic!("not an API error: {other}"),
        }
    }
    world.teardown().await;
}
