//! Who uses which disk, as metrics kept in step with the watches, one PV
//! (or the node's pods) at a time: one
//! `local_pv_provisioner_volume_info` series per PV of this node (device,
//! storage class, volume mode, phase, claim), its capacity in bytes, and one
//! `local_pv_provisioner_volume_consumer_info` series per pod on this node
//! that mounts the PV's claim. A series whose PV, phase, claim or pod went
//! away is removed, not left at a stale value. The pods come from a watch of
//! this node's pods only (field selector `spec.nodeName`), stripped to what
//! is needed here.
//!
//! These families are kept as plain label values ([`VolumeSeries`]) and
//! turned into samples only when `/metrics` is read: the prometheus
//! crate's vectors keep a metric object with its own copy of every label
//! name and value per series, about 1.3 KB per PV, for good.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::api::core::v1::{Pod, PodSpec, Volume};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

use crate::objects::pv::{LeanPv, local_path};
use crate::objects::quantity;
use crate::observe::metrics::{Metrics, VOLUME_CONSUMER_LABELS, VOLUME_INFO_LABELS};

type Labels = Vec<String>;

/// A claim by `(namespace, name)`.
type ClaimKey = (String, String);

/// The series `/metrics` shows for this node's PVs: `volume_info`,
/// `volume_capacity_bytes` and `volume_consumer_info`, kept as label values
/// and turned into samples when scraped. Clones share the series.
#[derive(Clone)]
pub struct VolumeSeries {
    shown: Arc<Mutex<Shown>>,
    /// The three families' descriptions, in the order above.
    descs: Arc<[Desc; 3]>,
}

/// The label values of every series shown, per PV.
#[derive(Debug, Default)]
struct Shown {
    /// Each PV's `volume_info` labels.
    info: HashMap<String, Labels>,
    /// Each PV's capacity in bytes.
    capacity: HashMap<String, i64>,
    /// Each PV's `volume_consumer_info` labels, one set per pod.
    consumers: HashMap<String, BTreeSet<Labels>>,
}

impl VolumeSeries {
    /// The families named `<prefix>_volume_...`, labelled with `node`.
    pub fn new(prefix: &str, node: &str) -> Self {
        let desc = |name: &str, help: &str, labels: &[&str]| {
            Desc::new(
                format!("{prefix}_{name}"),
                help.to_string(),
                labels.iter().map(|label| label.to_string()).collect(),
                HashMap::from([("node".to_string(), node.to_string())]),
            )
            .expect("valid metric description")
        };
        VolumeSeries {
            shown: Arc::default(),
            descs: Arc::new([
                desc(
                    "volume_info",
                    "One series per PersistentVolume of this node: its device, class, mode, phase and claim.",
                    &VOLUME_INFO_LABELS,
                ),
                desc(
                    "volume_capacity_bytes",
                    "Capacity of each PersistentVolume of this node, in bytes.",
                    &["persistentvolume"],
                ),
                desc(
                    "volume_consumer_info",
                    "One series per pod on this node that mounts a PersistentVolume's claim.",
                    &VOLUME_CONSUMER_LABELS,
                ),
            ]),
        }
    }

    fn shown(&self) -> MutexGuard<'_, Shown> {
        self.shown
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Collector for VolumeSeries {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let shown = self.shown();
        let [info, capacity, consumers] = &*self.descs;
        vec![
            family(
                info,
                shown.info.values().map(|labels| (labels.as_slice(), 1)),
            ),
            family(
                capacity,
                shown
                    .capacity
                    .iter()
                    .map(|(name, bytes)| (std::slice::from_ref(name), *bytes)),
            ),
            family(
                consumers,
                shown
                    .consumers
                    .values()
                    .flatten()
                    .map(|labels| (labels.as_slice(), 1)),
            ),
        ]
    }
}

/// A gauge family of `desc` with one sample per `(label values, value)`,
/// its label pairs sorted by name as the prometheus crate's own are.
fn family<'a>(desc: &Desc, series: impl Iterator<Item = (&'a [String], i64)>) -> MetricFamily {
    let samples = series
        .map(|(values, value)| {
            let mut labels: Vec<proto::LabelPair> = desc
                .variable_labels
                .iter()
                .zip(values)
                .map(|(name, value)| {
                    let mut pair = proto::LabelPair::default();
                    pair.set_name(name.clone());
                    pair.set_value(value.clone());
                    pair
                })
                .chain(desc.const_label_pairs.iter().cloned())
                .collect();
            labels.sort_by(|a, b| a.name().cmp(b.name()));
            let mut gauge = proto::Gauge::default();
            gauge.set_value(value as f64);
            let mut sample = proto::Metric::from_label(labels);
            sample.set_gauge(gauge);
            sample
        })
        .collect();
    let mut family = MetricFamily::default();
    family.set_name(desc.fq_name.clone());
    family.set_help(desc.help.clone());
    family.set_field_type(MetricType::GAUGE);
    family.set_metric(samples);
    family
}

/// What the reconciler knows besides the series: each PV's claim and the
/// pods that mount each claim, so that a change of one PV costs work for
/// that PV only.
#[derive(Debug, Default)]
pub struct VolumeMetrics {
    /// Each PV's claim, when it has one.
    claims: HashMap<String, ClaimKey>,
    /// The pods of this node by the claim they mount.
    mounts: HashMap<ClaimKey, BTreeSet<String>>,
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

/// The pods (by name) that mount each claim.
fn mounts(pods: &[Arc<Pod>]) -> HashMap<ClaimKey, BTreeSet<String>> {
    let mut found: HashMap<ClaimKey, BTreeSet<String>> = HashMap::new();
    for pod in pods {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let volumes = pod.spec.as_ref().and_then(|spec| spec.volumes.as_ref());
        for claim in volumes
            .into_iter()
            .flatten()
            .filter_map(|v| v.persistent_volume_claim.as_ref())
        {
            found
                .entry((namespace.clone(), claim.claim_name.clone()))
                .or_default()
                .insert(name.clone());
        }
    }
    found
}

/// The `volume_info` labels of a PV, in [`crate::observe::metrics::VOLUME_INFO_LABELS`] order.
fn info_labels(pv: &LeanPv) -> Labels {
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

fn capacity(pv: &LeanPv) -> Option<i64> {
    let quantity = pv.spec.as_ref()?.capacity.as_ref()?.get("storage")?;
    quantity::bytes(&quantity.0).and_then(|bytes| i64::try_from(bytes).ok())
}

fn claim_key(pv: &LeanPv) -> Option<ClaimKey> {
    let claim = pv.spec.as_ref()?.claim_ref.as_ref()?;
    Some((claim.namespace.clone()?, claim.name.clone()?))
}

impl VolumeMetrics {
    /// Shows the series for `pvs` and `pods`, removing those that went away.
    pub fn update(&mut self, metrics: &Metrics, pvs: &[Arc<LeanPv>], pods: &[Arc<Pod>]) {
        self.mounts = mounts(pods);
        let live: HashSet<&str> = pvs
            .iter()
            .filter_map(|pv| pv.metadata.name.as_deref())
            .collect();
        let gone: BTreeSet<String> = {
            let shown = metrics.volumes.shown();
            shown
                .info
                .keys()
                .chain(shown.capacity.keys())
                .chain(shown.consumers.keys())
                .chain(self.claims.keys())
                .filter(|name| !live.contains(name.as_str()))
                .cloned()
                .collect()
        };
        for name in &gone {
            self.show(metrics, name, None);
        }
        for pv in pvs {
            self.show(
                metrics,
                pv.metadata.name.as_deref().unwrap_or_default(),
                Some(pv),
            );
        }
    }

    /// Shows the series of the PVs `changed` (by name, with the PV unless
    /// it went): work for those PVs only.
    pub fn update_pvs(&mut self, metrics: &Metrics, changed: &[(String, Option<Arc<LeanPv>>)]) {
        for (name, pv) in changed {
            self.show(metrics, name, pv.as_deref());
        }
    }

    /// After a change of this node's pods: the consumers of every PV that
    /// has a claim.
    pub fn update_pods(&mut self, metrics: &Metrics, pods: &[Arc<Pod>]) {
        self.mounts = mounts(pods);
        let claimed: BTreeSet<String> = self
            .claims
            .keys()
            .chain(metrics.volumes.shown().consumers.keys())
            .cloned()
            .collect();
        for name in &claimed {
            self.show_consumers(metrics, name);
        }
    }

    /// Makes the series of PV `name` what `pv` says (none when it went).
    fn show(&mut self, metrics: &Metrics, name: &str, pv: Option<&LeanPv>) {
        match pv.and_then(claim_key) {
            Some(claim) => self.claims.insert(name.to_string(), claim),
            None => self.claims.remove(name),
        };
        let mut shown = metrics.volumes.shown();
        match pv.map(info_labels) {
            Some(info) => shown.info.insert(name.to_string(), info),
            None => shown.info.remove(name),
        };
        match pv.and_then(capacity) {
            Some(bytes) => shown.capacity.insert(name.to_string(), bytes),
            None => shown.capacity.remove(name),
        };
        drop(shown);
        self.show_consumers(metrics, name);
    }

    /// Makes the consumer series of PV `name` the pods that mount its claim.
    fn show_consumers(&self, metrics: &Metrics, name: &str) {
        let wanted: BTreeSet<Labels> = self
            .claims
            .get(name)
            .and_then(|claim| Some((claim, self.mounts.get(claim)?)))
            .map(|((namespace, _), pods)| {
                pods.iter()
                    .map(|pod| vec![name.to_string(), namespace.clone(), pod.clone()])
                    .collect()
            })
            .unwrap_or_default();
        let mut shown = metrics.volumes.shown();
        if wanted.is_empty() {
            shown.consumers.remove(name);
        } else {
            shown.consumers.insert(name.to_string(), wanted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(name: &str, phase: &str, claim: Option<(&str, &str)>) -> Arc<LeanPv> {
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

    /// Changes applied one PV (or the pods) at a time show what a full
    /// update of the same objects shows.
    #[test]
    fn changes_one_at_a_time_show_what_a_full_update_shows() {
        let metrics = Metrics::new("n1");
        let mut shown = VolumeMetrics::default();
        let pods = vec![pod("ns", "web-0", "data")];
        shown.update(
            &metrics,
            &[pv("a", "Available", None), pv("b", "Available", None)],
            &pods,
        );
        let bound = pv("a", "Bound", Some(("ns", "data")));
        shown.update_pvs(
            &metrics,
            &[
                ("a".to_string(), Some(bound.clone())),
                ("b".to_string(), None),
            ],
        );
        let more_pods = vec![pod("ns", "web-0", "data"), pod("ns", "web-1", "data")];
        shown.update_pods(&metrics, &more_pods);
        let fresh = Metrics::new("n1");
        VolumeMetrics::default().update(&fresh, &[bound], &more_pods);
        let volume_lines = |text: String| -> Vec<String> {
            text.lines()
                .filter(|line| line.contains("volume_") && !line.starts_with('#'))
                .map(str::to_string)
                .collect()
        };
        let partial = volume_lines(metrics.render());
        assert!(
            partial.iter().any(|l| l.contains(r#"pod="web-1""#)),
            "{partial:#?}"
        );
        assert!(
            !partial
                .iter()
                .any(|l| l.contains(r#"persistentvolume="b""#)),
            "{partial:#?}"
        );
        assert_eq!(partial, volume_lines(fresh.render()));
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
