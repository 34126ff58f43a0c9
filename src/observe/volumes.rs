//! Who uses which disk, as metrics kept in step with the watches: one
//! `local_pv_provisioner_volume_info` series per PV of this node (device,
//! storage class, volume mode, phase, claim), its capacity in bytes, and one
//! `local_pv_provisioner_volume_consumer_info` series per pod on this node
//! that mounts the PV's claim. A series whose PV, phase, claim or pod went
//! away is removed, not left at a stale value. The pods come from a watch of
//! this node's pods only (field selector `spec.nodeName`), stripped to what
//! is needed here.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, Pod, PodSpec, Volume};
use prometheus::IntGaugeVec;

use crate::objects::pv::local_path;
use crate::objects::quantity;
use crate::observe::metrics::Metrics;

type Labels = Vec<String>;

/// The series currently shown.
#[derive(Debug, Default)]
pub struct VolumeMetrics {
    info: BTreeSet<Labels>,
    capacity: BTreeSet<String>,
    consumers: BTreeSet<Labels>,
}

/// Keeps of a pod only what the consumer metric needs: its name,
/// namespace and the claims its volumes name (saves memory on busy nodes).
pub fn strip_pod(pod: &mut Pod) {
    let claims: Vec<Volume> = pod
        .spec
        .as_ref()
        .map(|spec| {
            spec.volumes
                .iter()
                .flatten()
                .filter(|volume| volume.persistent_volume_claim.is_some())
                .map(|volume| Volume {
                    name: volume.name.clone(),
                    persistent_volume_claim: volume.persistent_volume_claim.clone(),
                    ..Volume::default()
                })
                .collect()
        })
        .unwrap_or_default();
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    pod.metadata.labels = None;
    pod.metadata.owner_references = None;
    pod.status = None;
    pod.spec = Some(PodSpec {
        volumes: Some(claims),
        ..PodSpec::default()
    });
}

/// The `(namespace, name)` of each claim the pods mount, with the pod.
fn mounts(pods: &[Arc<Pod>]) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    for pod in pods {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let volumes = pod.spec.as_ref().and_then(|spec| spec.volumes.as_ref());
        for claim in volumes
            .into_iter()
            .flatten()
            .filter_map(|v| v.persistent_volume_claim.as_ref())
        {
            found.push((namespace.clone(), claim.claim_name.clone(), name.clone()));
        }
    }
    found
}

/// The `volume_info` labels of a PV, in [`crate::observe::metrics::VOLUME_INFO_LABELS`] order.
fn info_labels(pv: &PersistentVolume) -> Labels {
    let spec = pv.spec.as_ref();
    let claim = spec.and_then(|spec| spec.claim_ref.as_ref());
    vec![
        pv.metadata.name.clone().unwrap_or_default(),
        local_path(pv).unwrap_or_default().to_string(),
        spec.and_then(|s| s.storage_class_name.clone())
            .unwrap_or_default(),
        spec.and_then(|s| s.volume_mode.clone()).unwrap_or_default(),
        pv.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default(),
        claim.and_then(|c| c.namespace.clone()).unwrap_or_default(),
        claim.and_then(|c| c.name.clone()).unwrap_or_default(),
    ]
}

fn capacity(pv: &PersistentVolume) -> Option<i64> {
    let quantity = pv.spec.as_ref()?.capacity.as_ref()?.get("storage")?;
    quantity::bytes(&quantity.0).and_then(|bytes| i64::try_from(bytes).ok())
}

impl VolumeMetrics {
    /// Shows the series for `pvs` and `pods`, removing those that went away.
    pub fn update(&mut self, metrics: &Metrics, pvs: &[Arc<PersistentVolume>], pods: &[Arc<Pod>]) {
        let info: BTreeSet<Labels> = pvs.iter().map(|pv| info_labels(pv)).collect();
        show_ones(&metrics.volume_info, &mut self.info, info);
        let mut capacity_now = BTreeSet::new();
        for pv in pvs {
            let name = pv.metadata.name.clone().unwrap_or_default();
            if let Some(bytes) = capacity(pv) {
                metrics
                    .volume_capacity
                    .with_label_values(&[&name])
                    .set(bytes);
                capacity_now.insert(name);
            }
        }
        replace(&mut self.capacity, capacity_now, |name, on| {
            if !on {
                let _ = metrics.volume_capacity.remove_label_values(&[name]);
            }
        });
        let mounted = mounts(pods);
        let consumers: BTreeSet<Labels> = pvs
            .iter()
            .filter_map(|pv| {
                let claim = pv.spec.as_ref()?.claim_ref.as_ref()?;
                let (namespace, name) = (claim.namespace.clone()?, claim.name.clone()?);
                let pv_name = pv.metadata.name.clone()?;
                Some(
                    mounted
                        .iter()
                        .filter(move |(ns, c, _)| *ns == namespace && *c == name)
                        .map(move |(ns, _, pod)| vec![pv_name.clone(), ns.clone(), pod.clone()]),
                )
            })
            .flatten()
            .collect();
        show_ones(
            &metrics.volume_consumer_info,
            &mut self.consumers,
            consumers,
        );
    }
}

/// Makes the series of `gauges` valued 1 exactly those of `wanted` (label
/// values), `shown` being those shown so far.
fn show_ones(gauges: &IntGaugeVec, shown: &mut BTreeSet<Labels>, wanted: BTreeSet<Labels>) {
    replace(shown, wanted, |labels, on| {
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        if on {
            gauges.with_label_values(&labels).set(1);
        } else {
            let _ = gauges.remove_label_values(&labels);
        }
    });
}

/// Makes `shown` equal `wanted`, calling `apply(item, false)` for each item
/// that goes and `apply(item, true)` for each that comes.
fn replace<T: Ord + Clone>(
    shown: &mut BTreeSet<T>,
    wanted: BTreeSet<T>,
    mut apply: impl FnMut(&T, bool),
) {
    for gone in shown.difference(&wanted) {
        apply(gone, false);
    }
    for new in wanted.difference(shown) {
        apply(new, true);
    }
    *shown = wanted;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(name: &str, phase: &str, claim: Option<(&str, &str)>) -> Arc<PersistentVolume> {
        let mut value = serde_json::json!({
            "metadata": {"name": name},
            "spec": {"capacity": {"storage": "1Gi"}, "local": {"path": format!("/dev/disks/{name}")},
                     "storageClassName": "local-storage", "volumeMode": "Block"},
            "status": {"phase": phase},
        });
        if let Some((ns, claim)) = claim {
            value["spec"]["claimRef"] = serde_json::json!({"namespace": ns, "name": claim});
        }
        Arc::new(serde_json::from_value(value).unwrap())
    }

    fn pod(ns: &str, name: &str, claim: &str) -> Arc<Pod> {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns, "labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "i"}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}},
                                 {"name": "tmp", "emptyDir": {}}]},
        }))
        .unwrap();
        strip_pod(&mut pod);
        Arc::new(pod)
    }

    #[test]
    fn series_follow_the_volumes_and_their_pods_and_go_with_them() {
        let metrics = Metrics::new("n1");
        let mut shown = VolumeMetrics::default();
        let pvs = vec![
            pv("a", "Bound", Some(("ns", "data"))),
            pv("b", "Available", None),
        ];
        let pods = vec![pod("ns", "web-0", "data"), pod("other", "x", "data")];
        shown.update(&metrics, &pvs, &pods);
        let text = metrics.render();
        assert!(text.contains(r#"volume_info{claim_name="data",claim_namespace="ns",device="/dev/disks/a",node="n1",persistentvolume="a",phase="Bound",storage_class="local-storage",volume_mode="Block"} 1"#), "{text}");
        assert!(
            text.contains(r#"volume_capacity_bytes{node="n1",persistentvolume="b"} 1073741824"#),
            "{text}"
        );
        assert!(text.contains(r#"volume_consumer_info{node="n1",persistentvolume="a",pod="web-0",pod_namespace="ns"} 1"#), "{text}");
        assert!(
            !text.contains(r#"pod="x""#),
            "a pod in another namespace mounts another claim"
        );
        let released = vec![pv("a", "Released", Some(("ns", "data")))];
        shown.update(&metrics, &released, &[]);
        let text = metrics.render();
        assert!(
            !text.contains(r#"phase="Bound""#),
            "the old phase's series is gone: {text}"
        );
        assert!(
            !text.contains(r#"persistentvolume="b""#),
            "the deleted PV's series are gone"
        );
        assert!(!text.contains("volume_consumer_info{"), "the pod is gone");
    }

    #[test]
    fn a_stripped_pod_keeps_only_its_claims() {
        let pod = pod("ns", "web-0", "data");
        let volumes = pod.spec.as_ref().unwrap().volumes.as_ref().unwrap();
        assert_eq!(volumes.len(), 1);
        assert!(pod.metadata.labels.is_none());
        assert!(pod.spec.as_ref().unwrap().containers.is_empty());
    }
}
