//! The cluster `status` is shown: Nodes, PVs of this program's shape (and
//! one of the Go upstream's), Pods and the controller's Events on the
//! Nodes, written straight into the fake server's store without running
//! the controller.
//!
//! The fake stamps `creationTimestamp` with the real clock, so the clock
//! given to `status` is "now + 2d30m": every PV is then `2d` old. Event
//! and wipe times are set relative to that clock; [`Cluster::normalize`]
//! replaces every time in an output by a stable token (`<now-5m>`,
//! `<created>`, `<deleted>`) so the JSON golden file is stable too.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PersistentVolume;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::DeleteParams;
use serde_json::{Value, json};

use crate::support::fake_api::FakeApiServer;

/// The node label and annotations of this program's PVs.
const NODE_LABEL: &str = "local-pv-provisioner.cybozu.io/node";
const NODE_NAME: &str = "local-pv-provisioner.cybozu.io/node-name";
const PREFIX: &str = "local-pv-provisioner.cybozu.io/";
/// A node name too long for a label value: its PVs carry a hashed label.
pub const LONG_NODE: &str = "rack-a-row-07-chassis-12-blade-03-worker-with-a-very-long-hostname";
/// Where node1's devices are.
const BY_PATH: &str = "/dev/disk/by-path/pci-0000:3b:00.0-ata-";

/// The built cluster and its clock.
pub struct Cluster {
    /// The fake API server holding it.
    pub server: FakeApiServer,
    /// The clock `status` is given.
    pub now: Timestamp,
    /// Time strings in outputs and their tokens.
    tokens: BTreeMap<String, String>,
}

impl Cluster {
    /// `now` minus `minutes`, as RFC 3339; remembered for [`Self::normalize`].
    fn ago(&mut self, minutes: i64) -> String {
        let time = self.now - SignedDuration::from_mins(minutes);
        let text = time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let token = match minutes {
            m if m % 1440 == 0 => format!("<now-{}d>", m / 1440),
            m if m % 60 == 0 => format!("<now-{}h>", m / 60),
            m => format!("<now-{m}m>"),
        };
        self.tokens.insert(text.clone(), token);
        text
    }

    /// The `--now` flag's value.
    pub fn now_flag(&self) -> String {
        format!("--now={}", self.now.strftime("%Y-%m-%dT%H:%M:%SZ"))
    }

    /// `output` with every known time replaced by its token.
    pub fn normalize(&self, output: &str) -> String {
        let mut text = output.to_string();
        let pvs = self.server.objects("persistentvolumes");
        // A deletion time is replaced where its field names it first: a PV
        // deleted in the second it was created has both times equal.
        for pv in &pvs {
            if let Some(time) = pv["metadata"]["deletionTimestamp"].as_str() {
                text = text.replace(
                    &format!("\"deletionTimestamp\": \"{time}\""),
                    "\"deletionTimestamp\": \"<deleted>\"",
                );
            }
        }
        for pv in &pvs {
            if let Some(time) = pv["metadata"]["creationTimestamp"].as_str() {
                text = text.replace(time, "<created>");
            }
        }
        for (time, token) in &self.tokens {
            text = text.replace(time, token);
        }
        text
    }
}

fn node(name: &str, spec: Option<&str>) -> Value {
    let mut node = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}});
    if let Some(spec) = spec {
        node["metadata"]["annotations"] = json!({format!("{PREFIX}pv-spec-configmap"): spec});
    }
    node
}

/// A PV of this program on `node` for `path`, `bytes` long, with `extra` annotations.
fn pv(name: &str, node: &str, path: &str, bytes: u64, extra: &[(&str, String)]) -> Value {
    let mut annotations = serde_json::Map::new();
    annotations.insert(NODE_NAME.into(), json!(node));
    annotations.insert(format!("{PREFIX}volume-mode"), json!("Block"));
    for (key, value) in extra {
        annotations.insert(format!("{PREFIX}{key}"), json!(value));
    }
    let label = local_pv_provisioner::objects::naming::node_label_value(node);
    json!({
        "metadata": {"name": name, "labels": {NODE_LABEL: label}, "annotations": annotations,
                     "finalizers": [format!("{PREFIX}cleanup")]},
        "spec": {
            "capacity": {"storage": bytes.to_string()}, "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "local-storage",
            "volumeMode": "Block", "local": {"path": path},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
        },
    })
}

fn pod(name: &str, node: &str, claim: &str, phase: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "app"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}],
                 "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]},
        "status": {"phase": phase},
    })
}

impl Cluster {
    /// Builds the whole cluster on a fresh fake API server, with the
    /// nodes' LocalDisks.
    pub async fn build() -> Cluster {
        let cluster = Cluster::build_without_crd().await;
        cluster.server.set_crd_installed(true);
        cluster.disks();
        cluster
    }

    /// Builds the whole cluster on a fresh fake API server that does not
    /// serve the LocalDisk CRD (`status` then falls back to Events).
    pub async fn build_without_crd() -> Cluster {
        let server = FakeApiServer::start().await;
        server.set_crd_installed(false);
        server.set_controller_emulation(false);
        let now = Timestamp::now() + SignedDuration::from_mins(2 * 1440 + 30);
        let now = Timestamp::from_second(now.as_second()).expect("a time");
        let mut cluster = Cluster {
            server,
            now,
            tokens: BTreeMap::new(),
        };
        cluster.nodes_and_pods();
        cluster.node1_volumes();
        cluster.other_volumes();
        cluster.events();
        let client = cluster.server.client().await;
        Api::<PersistentVolume>::all(client)
            .delete(
                "local-node1-pci-0000-3b-00.0-ata-3",
                &DeleteParams::default(),
            )
            .await
            .expect("delete the Terminating PV");
        cluster
    }

    fn nodes_and_pods(&mut self) {
        let s = &self.server;
        s.create_object("namespaces", json!({"metadata": {"name": "app"}}));
        s.create_object("nodes", node("node1", Some("pv-spec-cm-block")));
        s.create_object("nodes", node("node2", Some("pv-spec-cm-fs")));
        s.create_object("nodes", node("node3", Some("pv-spec-missing")));
        s.create_object("nodes", node(LONG_NODE, Some("pv-spec-cm-block")));
        s.create_object("nodes", node("node-idle", None));
        for (name, node, claim, phase) in [
            ("db-0", "node1", "data-db-0", "Running"),
            ("db-debug", "node2", "data-db-0", "Running"),
            ("db-backup-1", "node1", "data-db-0", "Succeeded"),
            ("logs-0", "node1", "old-logs", "Running"),
            ("cache-0", "node2", "cache-0", "Running"),
            ("cache-sidecar", "node2", "cache-0", "Pending"),
        ] {
            s.create_object("pods", pod(name, node, claim, phase));
        }
    }

    fn node1_volumes(&mut self) {
        let history = json!({
            "wipes": 2,
            "lastWipe": {"at": self.ago(180), "regions": "0-104857600,107269324800-107374182400", "durationSeconds": 1.5},
            "claims": [
                {"claim": "app/data-db-old", "boundAt": self.ago(20 * 1440), "releasedAt": self.ago(10 * 1440)},
                {"claim": "app/scratch", "boundAt": self.ago(9 * 1440), "releasedAt": self.ago(6 * 1440)},
            ],
        });
        let bound = pv(
            "local-node1-pci-0000-3b-00.0-ata-1",
            "node1",
            &format!("{BY_PATH}1"),
            100 << 30,
            &[
                ("device-number", "8:16".into()),
                ("device-stable-id", "wwid:naa.5000c500a1b2c3d4".into()),
                ("claimed-by", "app/data-db-0".into()),
                ("claimed-at", self.ago(1440)),
                ("history", history.to_string()),
            ],
        );
        let mut available = pv(
            "local-node1-pci-0000-3b-00.0-ata-2",
            "node1",
            &format!("{BY_PATH}2"),
            1_000_204_886_016,
            &[("device-number", "8:32".into())],
        );
        available["metadata"]["labels"][format!("{PREFIX}device-class")] = json!("hdd");
        let one_wipe = json!({"wipes": 1, "lastWipe": {"at": self.ago(2 * 1440 + 300), "regions": "0-1048576", "durationSeconds": 0.2}, "claims": []});
        let leaving = pv(
            "local-node1-pci-0000-3b-00.0-ata-3",
            "node1",
            &format!("{BY_PATH}3"),
            50 << 30,
            &[
                ("device-number", "8:48".into()),
                ("history", one_wipe.to_string()),
                ("wipe-mode", "Full".into()),
                ("wipe-progress", format!("{}/{}", 25u64 << 30, 50u64 << 30)),
            ],
        );
        let s = &self.server;
        for object in [bound, available, leaving] {
            s.create_object("persistentvolumes", object);
        }
        s.bind_pv("local-node1-pci-0000-3b-00.0-ata-1", "app", "data-db-0");
        s.set_pv_phase("local-node1-pci-0000-3b-00.0-ata-2", "Available");
        s.bind_pv("local-node1-pci-0000-3b-00.0-ata-3", "app", "old-logs");
    }

    fn other_volumes(&mut self) {
        let mut fs = pv(
            "local-node2-nvme-eui.0001",
            "node2",
            "/dev/disk/by-id/nvme-eui.0001",
            1 << 40,
            &[
                ("device-number", "259:0".into()),
                ("device-stable-id", "eui.0001".into()),
                ("fs-type", "xfs".into()),
            ],
        );
        fs["spec"]["volumeMode"] = json!("Filesystem");
        fs["spec"]["storageClassName"] = json!("local-fast");
        fs["spec"]["local"]["fsType"] = json!("xfs");
        // The Go upstream's: the same label, no node-name annotation.
        let mut upstream = pv(
            "local-node2-nvme-eui.0002",
            "node2",
            "/dev/disk/by-id/nvme-eui.0002",
            1 << 40,
            &[],
        );
        upstream["metadata"]["annotations"] = json!({});
        upstream["metadata"]["finalizers"] = json!([]);
        let long = pv(
            "local-rack-a-row-07-sdb",
            LONG_NODE,
            "/dev/sdb",
            20 << 30,
            &[("device-number", "8:16".into())],
        );
        let gone = pv(
            "local-node-gone-sdb",
            "node-gone",
            "/dev/sdb",
            100 << 30,
            &[
                ("device-number", "8:16".into()),
                ("release-policy", "Keep".into()),
            ],
        );
        let mut foreign = pv("someone-elses", "node1", "/dev/sdz", 1 << 30, &[]);
        foreign["metadata"]["labels"] = json!({});
        let s = &self.server;
        for object in [fs, upstream, long, gone, foreign] {
            s.create_object("persistentvolumes", object);
        }
        s.set_pv_phase("local-node2-nvme-eui.0001", "Available");
        s.bind_pv("local-node2-nvme-eui.0002", "app", "cache-0");
        s.set_pv_phase("local-rack-a-row-07-sdb", "Available");
        s.set_pv_phase("local-node-gone-sdb", "Released");
    }

    /// The LocalDisks the nodes' provisioners keep: one per disk, those
    /// with a PV and those without (each with its state and reason), among
    /// them one refused long ago that no Event would still show.
    fn disks(&self) {
        let disk = |node: &str, path: &str, state: &str, reason: &str, pv: Option<&str>| {
            let name = format!("{node}-{}", path.rsplit('/').next().unwrap_or(path))
                .replace([':', '_'], "-")
                .to_ascii_lowercase();
            let mut status = json!({
                "node": node, "path": path, "state": state, "reason": reason,
                "class": "default", "deviceType": "disk", "rotational": true,
            });
            if let Some(pv) = pv {
                status["persistentVolume"] = json!(pv);
            }
            (name, status)
        };
        let node1 = |n: u32| format!("{BY_PATH}{n}");
        let pv1 = |n: u32| format!("local-node1-pci-0000-3b-00.0-ata-{n}");
        let mut disks = vec![
            disk(
                "node1",
                &node1(1),
                "Bound",
                "used through PersistentVolume local-node1-pci-0000-3b-00.0-ata-1 by claim app/data-db-0",
                Some(&pv1(1)),
            ),
            disk(
                "node1",
                &node1(2),
                "Available",
                "offered as PersistentVolume local-node1-pci-0000-3b-00.0-ata-2",
                Some(&pv1(2)),
            ),
            disk(
                "node1",
                &node1(3),
                "Wiping",
                "being wiped before PersistentVolume local-node1-pci-0000-3b-00.0-ata-3 goes (50% done)",
                Some(&pv1(3)),
            ),
            disk(
                "node1",
                &node1(4),
                "InUse",
                "in use: held by dm-0; it is offered once nothing uses it (unmount it, or stop what holds it)",
                None,
            ),
            disk(
                "node1",
                &node1(5),
                "HasData",
                "holds data (ext4 filesystem); wipe it or set wipeDevicesWithData",
                None,
            ),
            disk(
                "node1",
                &node1(6),
                "Error",
                "the API server refused the PersistentVolume (HTTP 403): admission webhook \"pv-policy.example.com\" denied the request",
                None,
            ),
            disk(
                "node1",
                &node1(7),
                "Excluded",
                "read-only (sysfs ro is 1): never offered in any class",
                None,
            ),
            disk(
                "node2",
                "/dev/disk/by-id/nvme-eui.0001",
                "Available",
                "offered as PersistentVolume local-node2-nvme-eui.0001",
                Some("local-node2-nvme-eui.0001"),
            ),
            disk(
                "node2",
                "/dev/disk/by-id/nvme-eui.0003",
                "Excluded",
                "selected by the classes fast and bulk: a device belongs to one class, so neither offers it (narrow their selectors)",
                None,
            ),
        ];
        disks[0].1["claim"] = json!("app/data-db-0");
        disks[1].1["class"] = json!("hdd");
        disks[2].1["wipeProgress"] = json!(format!("{}/{}", 25u64 << 30, 50u64 << 30));
        let resource = "localdisks.local-pv-provisioner.cybozu.io";
        for (name, status) in disks {
            let node = status["node"].as_str().unwrap_or_default().to_string();
            let object = json!({
                "apiVersion": "local-pv-provisioner.cybozu.io/v1alpha1",
                "kind": "LocalDisk",
                "metadata": {"name": name, "labels": {NODE_LABEL: node}, "annotations": {NODE_NAME: node}},
            });
            let mut stored = self.server.create_object(resource, object);
            stored["status"] = status;
            self.server.replace_status(resource, stored);
        }
    }

    /// One Event on Node `node` `minutes` before now.
    fn event(&mut self, node: &str, minutes: i64, reason: &str, note: &str) {
        let time = self.ago(minutes);
        let name = format!("{node}.{minutes:016x}{}", reason.len());
        self.server.create_object("events.events.k8s.io", json!({
            "metadata": {"name": name, "namespace": "default"},
            "eventTime": time, "reason": reason, "note": note, "action": "Discover", "type": "Warning",
            "regarding": {"kind": "Node", "apiVersion": "v1", "name": node},
            "reportingController": "local-pv-provisioner", "reportingInstance": format!("local-pv-provisioner-{node}"),
        }));
    }

    fn events(&mut self) {
        let skipped = |n: u32, why: &str| format!("{BY_PATH}{n} gets no PersistentVolume: {why}");
        self.event(
            "node1",
            60,
            "PVSpecApplied",
            "using PV spec ConfigMap \"pv-spec-cm-block\": …",
        );
        self.event(
            "node1",
            50,
            "DeviceSkipped",
            &skipped(4, "in use: mounted at /var/lib/docker"),
        );
        self.event(
            "node1",
            20,
            "DeviceSkipped",
            &skipped(4, "in use: held by dm-0"),
        );
        self.event(
            "node1",
            15,
            "DeviceHasData",
            &skipped(
                5,
                "holds data (ext4 filesystem); wipe it or set wipeDevicesWithData",
            ),
        );
        self.event("node1", 12, "InvalidVolume", &format!(
            "the API server refused the PersistentVolume (HTTP 403): admission webhook \"pv-policy.example.com\" denied the request (device {BY_PATH}6)"));
        // Reported before its PV was created: resolved since.
        self.event(
            "node1",
            3 * 1440,
            "DeviceHasData",
            &skipped(2, "holds data (GPT partition table)"),
        );
        self.event(
            "node1",
            10,
            "DevicesDiscovered",
            "5 device(s) usable (with or getting a PersistentVolume), 4 without one",
        );
        // Another reporter's Event on the Node is not the controller's.
        let time = self.ago(5);
        self.server.create_object("events.events.k8s.io", json!({
            "metadata": {"name": "node1.kubelet", "namespace": "default"},
            "eventTime": time, "reason": "NodeNotReady", "note": "/dev/x gets no PersistentVolume: no", "action": "Watch",
            "type": "Normal", "regarding": {"kind": "Node", "apiVersion": "v1", "name": "node1"}, "reportingController": "kubelet",
            "reportingInstance": "node1",
        }));
        // Cleared by a later count of none without a PV.
        self.event(
            "node2",
            40,
            "DeviceSkipped",
            "/dev/disk/by-id/nvme-eui.0003 gets no PersistentVolume: not a block device",
        );
        self.event(
            "node2",
            30,
            "DevicesDiscovered",
            "2 device(s) usable (with or getting a PersistentVolume), 0 without one",
        );
        self.event(
            "node3",
            5,
            "PVSpecNotFound",
            "PV spec ConfigMap \"pv-spec-missing\" is not found; no PV is created or deleted",
        );
    }
}
