//! Removing everything a world made: its API objects (in reverse order of
//! creation, with UID preconditions, so a same-named object someone else
//! made is never touched), the PVs the provisioner made for its Nodes
//! (releasing the program's finalizer, which no stopped provisioner will),
//! its device links, and — always, also after a panic — its loop devices.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions,
};
use kube::{Api, Client, ResourceExt};
use local_pv_provisioner::objects::naming::node_label_value;

use super::backend::{Backend, client_for};
use super::{CLEANUP_FINALIZER, NODE_LABEL, NODE_NAME_ANNOTATION, World, lock};

/// One object a world created, as recorded right after the create.
pub(super) struct Created {
    /// Its resource.
    pub resource: ApiResource,
    /// Its namespace, `None` when cluster-scoped.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// Its UID.
    pub uid: String,
}

/// How long teardown waits for the garbage collector to take the PVs of
/// the world's Nodes before deleting them itself.
const GARBAGE_COLLECTION: Duration = Duration::from_secs(30);

/// Deletes `uid`'s object `name`; NotFound (gone) and Conflict (being
/// deleted, or replaced by someone else's object) count as done.
async fn delete_with_uid(
    api: Api<DynamicObject>,
    what: &str,
    name: &str,
    uid: Option<String>,
) -> Result<(), String> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(error) => Err(format!("deleting {what} {name}: {error}")),
    }
}

/// The PVs the provisioner made for `node`, also those being deleted.
async fn pvs_of(client: &Client, node: &str) -> Result<Vec<PersistentVolume>, String> {
    let selector = format!("{NODE_LABEL}={}", node_label_value(node));
    let list = Api::<PersistentVolume>::all(client.clone())
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|error| format!("listing the PVs of {node}: {error}"))?;
    Ok(list
        .items
        .into_iter()
        .filter(|pv| {
            pv.annotations()
                .get(NODE_NAME_ANNOTATION)
                .map(String::as_str)
                == Some(node)
        })
        .collect())
}

/// The PVs of `node` not yet being deleted.
async fn live_pvs_of(client: &Client, node: &str) -> Result<Vec<PersistentVolume>, String> {
    let pvs = pvs_of(client, node).await?;
    Ok(pvs
        .into_iter()
        .filter(|pv| pv.metadata.deletion_timestamp.is_none())
        .collect())
}

/// How often a release is tried again when the PV changed meanwhile.
const RELEASE_ATTEMPTS: usize = 20;

/// Removes the program's finalizer from every PV of `node` (its provisioner
/// is stopped, so nobody else will), as an admin releases a PV by hand:
/// the PVs being deleted then go.
async fn release_pvs_of(client: &Client, node: &str) -> Vec<String> {
    let pvs = match pvs_of(client, node).await {
        Ok(pvs) => pvs,
        Err(problem) => return vec![problem],
    };
    let mut problems = Vec::new();
    for pv in pvs {
        if let Err(problem) = release(client, &pv.name_any()).await {
            problems.push(problem);
        }
    }
    problems
}

/// Removes the program's finalizer from PV `name`, conditional on the
/// resourceVersion just read, reading again when the PV changed meanwhile
/// (the garbage collector and the PV protection controller are at work).
async fn release(client: &Client, name: &str) -> Result<(), String> {
    let api = Api::<PersistentVolume>::all(client.clone());
    for _ in 0..RELEASE_ATTEMPTS {
        let pv = match api.get_opt(name).await {
            Ok(Some(pv)) => pv,
            Ok(None) => return Ok(()),
            Err(error) => return Err(format!("reading PV {name}: {error}")),
        };
        let finalizers = pv.finalizers();
        if !finalizers.iter().any(|f| f == CLEANUP_FINALIZER) {
            return Ok(());
        }
        let kept: Vec<&String> = finalizers
            .iter()
            .filter(|f| *f != CLEANUP_FINALIZER)
            .collect();
        let patch = serde_json::json!({
            "metadata": {"finalizers": kept, "resourceVersion": pv.resource_version()},
        });
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => return Err(format!("releasing PV {name}: {error}")),
        }
    }
    Err(format!("releasing PV {name}: it kept changing"))
}

/// Deletes `created` in reverse order, then the PVs of the Nodes among them
/// that the garbage collector has not taken after a while. Returns what
/// could not be removed.
async fn delete_objects(client: &Client, created: &[Created]) -> Vec<String> {
    let mut problems = Vec::new();
    for object in created.iter().rev() {
        let api = match &object.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &object.resource),
            None => Api::all_with(client.clone(), &object.resource),
        };
        let what = object.resource.kind.as_str();
        let uid = Some(object.uid.clone());
        if let Err(problem) = delete_with_uid(api, what, &object.name, uid).await {
            problems.push(problem);
        }
    }
    let nodes = created
        .iter()
        .filter(|object| object.resource.kind == "Node");
    let deadline = Instant::now() + GARBAGE_COLLECTION;
    for node in nodes {
        wait_or_delete_pvs_of(client, &node.name, deadline, &mut problems).await;
        problems.extend(release_pvs_of(client, &node.name).await);
    }
    problems
}

/// Waits until the garbage collector has taken the PVs of `node`, and
/// deletes those left after `deadline`.
async fn wait_or_delete_pvs_of(
    client: &Client,
    node: &str,
    deadline: Instant,
    problems: &mut Vec<String>,
) {
    loop {
        match live_pvs_of(client, node).await {
            Ok(pvs) if pvs.is_empty() => break,
            Ok(pvs) if Instant::now() > deadline => {
                let resource = ApiResource::erase::<PersistentVolume>(&());
                for pv in pvs {
                    let api = Api::all_with(client.clone(), &resource);
                    if let Err(problem) = delete_with_uid(api, "PV", &pv.name_any(), pv.uid()).await
                    {
                        problems.push(problem);
                    }
                }
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(problem) => {
                problems.push(problem);
                break;
            }
        }
    }
}

impl World {
    /// Removes everything the world made; returns what could not be
    /// removed. Provisioners must be stopped first (dropped).
    pub async fn teardown(mut self) -> Vec<String> {
        self.progress("cleanup: cluster objects, PVs, device links, loop devices");
        let created: Vec<Created> = lock(&self.created).drain(..).collect();
        let problems = delete_objects(&self.client, &created).await;
        self.release_devices();
        self.cleaned = true;
        self.progress(if problems.is_empty() {
            "done: everything the run made is removed"
        } else {
            "done, but cleanup left things behind"
        });
        problems
    }

    /// Removes the device links, then detaches the loop devices.
    fn release_devices(&self) {
        drop(lock(&self.device_dirs).drain(..).collect::<Vec<_>>());
        drop(lock(&self.devices).drain(..).collect::<Vec<_>>());
    }
}

impl Drop for World {
    /// The cleanup of a world that did not get to [`World::teardown`]: on a
    /// cluster, the same deletions from a thread of its own (a destructor
    /// cannot wait for async work) through a fresh client; on the fake API
    /// server nothing to delete, as the server goes with the world. The loop
    /// devices are detached either way.
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let created: Vec<Created> = lock(&self.created).drain(..).collect();
        if let Backend::Cluster(kubeconfig) = &self.backend {
            self.progress("cleanup after a failure: cluster objects, PVs, loop devices");
            let kubeconfig = kubeconfig.clone();
            let problems = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("cleanup runtime");
                runtime.block_on(async {
                    let client = client_for(&kubeconfig).await;
                    delete_objects(&client, &created).await
                })
            })
            .join()
            .unwrap_or_else(|_| vec!["the cleanup thread panicked".to_string()]);
            for problem in &problems {
                self.progress(&format!("cleanup problem: {problem}"));
            }
        }
        self.release_devices();
        self.cleaned = true;
    }
}
