//! Controller-manager emulation: the few controllers whose effects a storage
//! provisioner observes (PV phases, PV/PVC protection finalizers, garbage
//! collection of objects owned by Nodes, namespace cleanup and, when switched
//! on, PVC binding), plus the by-hand helpers tests use to play those
//! controllers themselves. Their writes are `kube-controller-manager`'s in
//! managedFields. The first phase of a PV (`Pending` → `Available`) is
//! `phases`, paced like the real controller-manager; the rest polls the
//! store every 50 ms.

mod phases;

pub use phases::PvPhases;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use super::Shared;
use super::fields::CONTROLLER_MANAGER;
use super::resources::{
    NAMESPACES, NODES, PVCS, PVS, RESOURCES, finalizers, meta_str, parse_quantity, str_at,
};
use super::store::{By, PV_PROTECTION, PVC_PROTECTION, Preconditions, Store};

/// How often the emulated controllers look at the store.
const POLL: Duration = Duration::from_millis(50);

/// The background tasks (the polling loop and the paced PV phases); run
/// until aborted.
pub(super) async fn run(shared: Arc<Shared>) {
    tokio::join!(poll(shared.clone()), phases::paced(shared));
}

/// The polling loop.
async fn poll(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(POLL);
    loop {
        tick.tick().await;
        if !shared.controller_on.load(Ordering::SeqCst) {
            continue;
        }
        let bind = shared.pvc_binding.load(Ordering::SeqCst);
        let batch = *shared.pv_phases.lock().expect("PV phases") == PvPhases::Batch;
        let mut store = shared.store.lock().expect("store");
        reconcile(&mut store, bind, batch);
    }
}

/// One pass of every emulated controller (of the PV phases only when they
/// go in batches).
fn reconcile(store: &mut Store, bind: bool, batch_phases: bool) {
    if batch_phases {
        phases::batch(store);
    }
    if bind {
        bind_claims(store);
        release_volumes(store);
    }
    protection(store);
    garbage_collect(store);
    namespaces(store);
}

/// Applies `f` to a copy of an object and writes it back (to `/status` when
/// `status_only`) as kube-controller-manager; `None` when the object is
/// missing or the write failed.
fn modify(
    store: &mut Store,
    res: usize,
    ns: &str,
    name: &str,
    status_only: bool,
    f: impl FnOnce(&mut Value),
) -> Option<Value> {
    let mut obj = store.get(res, ns, name)?.clone();
    f(&mut obj);
    let by = By::Manager(CONTROLLER_MANAGER);
    store.update(res, ns, name, obj, status_only, by).ok()
}

fn deleting(obj: &Value) -> bool {
    !meta_str(obj, "deletionTimestamp").is_empty()
}

fn storage(obj: &Value, pointer: &str) -> f64 {
    parse_quantity(str_at(obj, pointer)).unwrap_or(0.0)
}

fn strings(obj: &Value, pointer: &str) -> Vec<String> {
    obj.pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn volume_mode(obj: &Value) -> &str {
    match str_at(obj, "/spec/volumeMode") {
        "" => "Filesystem",
        mode => mode,
    }
}

/// PV controller: binds each pending claim to the smallest fitting
/// `Available` volume (same storage class and volume mode, enough capacity,
/// all requested access modes), or to the volume named in `spec.volumeName`.
fn bind_claims(store: &mut Store) {
    let claims: Vec<Value> = store
        .list(PVCS, None)
        .filter(|c| !deleting(c) && matches!(str_at(c, "/status/phase"), "" | "Pending"))
        .cloned()
        .collect();
    for claim in claims {
        let (ns, name) = (meta_str(&claim, "namespace"), meta_str(&claim, "name"));
        let wanted = str_at(&claim, "/spec/volumeName");
        let request = storage(&claim, "/spec/resources/requests/storage");
        let modes = strings(&claim, "/spec/accessModes");
        let best = store
            .list(PVS, None)
            .filter(|pv| {
                let claim_ref_ok = match pv.pointer("/spec/claimRef") {
                    None | Some(Value::Null) => true,
                    Some(r) => str_at(r, "/namespace") == ns && str_at(r, "/name") == name,
                };
                let pv_modes = strings(pv, "/spec/accessModes");
                !deleting(pv)
                    && str_at(pv, "/status/phase") == "Available"
                    && claim_ref_ok
                    && (wanted.is_empty() || wanted == meta_str(pv, "name"))
                    && str_at(pv, "/spec/storageClassName")
                        == str_at(&claim, "/spec/storageClassName")
                    && volume_mode(pv) == volume_mode(&claim)
                    && storage(pv, "/spec/capacity/storage") >= request
                    && modes.iter().all(|m| pv_modes.contains(m))
            })
            .min_by(|a, b| {
                storage(a, "/spec/capacity/storage")
                    .total_cmp(&storage(b, "/spec/capacity/storage"))
            })
            .map(|pv| meta_str(pv, "name").to_string());
        if let Some(pv) = best {
            let _ = bind(store, &pv, ns, name);
        }
    }
}

/// PV controller: a bound volume whose claim is gone becomes `Released`
/// (its `claimRef` stays); a bound claim whose volume is gone becomes `Lost`.
fn release_volumes(store: &mut Store) {
    let mut released = Vec::new();
    for pv in store.list(PVS, None) {
        if str_at(pv, "/status/phase") != "Bound" {
            continue;
        }
        let Some(claim_ref) = pv.pointer("/spec/claimRef") else {
            continue;
        };
        let uid = str_at(claim_ref, "/uid");
        let claim = store.get(
            PVCS,
            str_at(claim_ref, "/namespace"),
            str_at(claim_ref, "/name"),
        );
        if claim.is_none_or(|c| !uid.is_empty() && meta_str(c, "uid") != uid) {
            released.push(meta_str(pv, "name").to_string());
        }
    }
    for name in released {
        modify(store, PVS, "", &name, true, |pv| {
            pv["status"]["phase"] = json!("Released")
        });
    }
    let lost: Vec<(String, String)> = store
        .list(PVCS, None)
        .filter(|c| str_at(c, "/status/phase") == "Bound")
        .filter(|c| store.get(PVS, "", str_at(c, "/spec/volumeName")).is_none())
        .map(|c| {
            (
                meta_str(c, "namespace").to_string(),
                meta_str(c, "name").to_string(),
            )
        })
        .collect();
    for (ns, name) in lost {
        modify(store, PVCS, &ns, &name, true, |c| {
            c["status"]["phase"] = json!("Lost")
        });
    }
}

fn drop_finalizer(obj: &mut Value, finalizer: &str) {
    let kept: Vec<String> = finalizers(obj)
        .into_iter()
        .filter(|f| f != finalizer)
        .collect();
    obj["metadata"]["finalizers"] = json!(kept);
}

/// PV/PVC protection controllers: a deleted PV that is not bound, and a
/// deleted PVC (no pods exist here to use it), lose their protection
/// finalizer, so they disappear once nothing else holds them.
fn protection(store: &mut Store) {
    let pvs: Vec<String> = store
        .list(PVS, None)
        .filter(|pv| deleting(pv) && finalizers(pv).iter().any(|f| f == PV_PROTECTION))
        .filter(|pv| {
            let bound = str_at(pv, "/status/phase") == "Bound"
                && !matches!(pv.pointer("/spec/claimRef"), None | Some(Value::Null));
            !bound
        })
        .map(|pv| meta_str(pv, "name").to_string())
        .collect();
    for name in pvs {
        modify(store, PVS, "", &name, false, |pv| {
            drop_finalizer(pv, PV_PROTECTION)
        });
    }
    let claims: Vec<(String, String)> = store
        .list(PVCS, None)
        .filter(|c| deleting(c) && finalizers(c).iter().any(|f| f == PVC_PROTECTION))
        .map(|c| {
            (
                meta_str(c, "namespace").to_string(),
                meta_str(c, "name").to_string(),
            )
        })
        .collect();
    for (ns, name) in claims {
        modify(store, PVCS, &ns, &name, false, |c| {
            drop_finalizer(c, PVC_PROTECTION)
        });
    }
}

/// Garbage collector, for owners of kind Node only: an object all of whose
/// owners are Nodes that no longer exist (or exist with another UID) is
/// deleted (with a UID precondition, finalizers respected); when only some
/// owner references dangle, those references are removed. Owners of other
/// kinds are assumed to exist.
fn garbage_collect(store: &mut Store) {
    let mut delete = Vec::new();
    let mut prune = Vec::new();
    for res in 0..RESOURCES.len() {
        for obj in store.list(res, None) {
            let Some(refs) = obj
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
            else {
                continue;
            };
            let dangling = |r: &Value| {
                str_at(r, "/kind") == "Node"
                    && str_at(r, "/apiVersion") == "v1"
                    && store
                        .get(NODES, "", str_at(r, "/name"))
                        .is_none_or(|node| meta_str(node, "uid") != str_at(r, "/uid"))
            };
            let gone = refs.iter().filter(|r| dangling(r)).count();
            let key = (
                res,
                meta_str(obj, "namespace").to_string(),
                meta_str(obj, "name").to_string(),
            );
            if gone == 0 || deleting(obj) {
                continue;
            } else if gone == refs.len() {
                delete.push((key, meta_str(obj, "uid").to_string()));
            } else {
                let kept: Vec<Value> = refs.iter().filter(|r| !dangling(r)).cloned().collect();
                prune.push((key, kept));
            }
        }
    }
    for ((res, ns, name), uid) in delete {
        let pre = Preconditions {
            uid: Some(uid),
            resource_version: None,
        };
        let _ = store.delete(res, &ns, &name, &pre);
    }
    for ((res, ns, name), kept) in prune {
        modify(store, res, &ns, &name, false, |o| {
            o["metadata"]["ownerReferences"] = json!(kept)
        });
    }
}

/// Namespace controller: deletes everything in a terminating namespace, then
/// removes the namespace once it is empty.
fn namespaces(store: &mut Store) {
    let terminating: Vec<String> = store
        .list(NAMESPACES, None)
        .filter(|n| deleting(n))
        .map(|n| meta_str(n, "name").to_string())
        .collect();
    for ns in terminating {
        let mut left = 0;
        for res in (0..RESOURCES.len()).filter(|r| RESOURCES[*r].namespaced) {
            let content: Vec<(String, bool)> = store
                .list(res, Some(&ns))
                .map(|o| (meta_str(o, "name").to_string(), deleting(o)))
                .collect();
            left += content.len();
            for (name, already) in content {
                if !already {
                    let _ = store.delete(res, &ns, &name, &Preconditions::default());
                }
            }
        }
        if left == 0 {
            store.finalize_namespace(&ns);
        }
    }
}

/// Sets `status.phase` of a PersistentVolume.
pub(super) fn set_pv_phase(store: &mut Store, name: &str, phase: &str) -> Result<(), String> {
    modify(store, PVS, "", name, true, |pv| {
        pv["status"]["phase"] = json!(phase)
    })
    .map(drop)
    .ok_or_else(|| format!("persistentvolume {name:?} not found"))
}

/// Binds a PV to a claim the way the PV controller does: the PV gets
/// `spec.claimRef` (with the claim's UID when the claim exists) and phase
/// `Bound`; an existing claim gets `spec.volumeName`, phase `Bound` and the
/// volume's capacity and access modes.
pub(super) fn bind(store: &mut Store, pv: &str, ns: &str, claim: &str) -> Result<(), String> {
    let claim_obj = store.get(PVCS, ns, claim).cloned();
    let mut claim_ref = json!({"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": ns, "name": claim});
    if let Some(c) = &claim_obj {
        claim_ref["uid"] = json!(meta_str(c, "uid"));
        claim_ref["resourceVersion"] = json!(meta_str(c, "resourceVersion"));
    }
    let bound_pv = modify(store, PVS, "", pv, false, |v| {
        v["spec"]["claimRef"] = claim_ref;
        v["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"] = json!("yes");
    })
    .ok_or_else(|| format!("persistentvolume {pv:?} not found or not writable"))?;
    modify(store, PVS, "", pv, true, |v| {
        v["status"]["phase"] = json!("Bound")
    });
    if claim_obj.is_some() {
        modify(store, PVCS, ns, claim, false, |c| {
            c["spec"]["volumeName"] = json!(pv);
            let annotations = &mut c["metadata"]["annotations"];
            annotations["pv.kubernetes.io/bind-completed"] = json!("yes");
            annotations["pv.kubernetes.io/bound-by-controller"] = json!("yes");
        });
        modify(store, PVCS, ns, claim, true, |c| {
            c["status"] = json!({
                "phase": "Bound",
                "accessModes": bound_pv["spec"]["accessModes"],
                "capacity": bound_pv["spec"]["capacity"],
            });
        });
    }
    Ok(())
}
