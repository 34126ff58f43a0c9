#!/usr/bin/env python3
"""Checks of the deployment artefacts: Helm chart, kustomize config, Dockerfile.

Run from the repository root after `pip install -r .ci/requirements-deploy.txt`
(kubectl, with its built-in kustomize, must be on PATH):

    python3 .ci/check_deploy.py [--dump-rbac PATH] [--dump-policy PATH] [--dump-rules PATH]

It lints the chart strictly and renders it with Helm's own engine
(helm-python-sdk, which binds Helm's Go SDK; no helm binary, no cluster),
validates values against values.schema.json, renders the kustomize
directories, compares the chart with the kustomize manifests (RBAC rules,
DaemonSet and node-cleanup Deployment pod specs, admission policies,
samples, alerting rules) and runs hadolint on the
Dockerfile. It exits 1, naming each failed check, if anything is wrong.

--dump-rbac PATH writes the RBAC rules (checked identical in both) as JSON:
[{"apiGroup": "", "resource": "nodes", "verbs": ["get", ...],
  "namespaced": false, "component": "provisioner"}, ...], where namespaced
means "granted by the Role in the release namespace" as opposed to the
ClusterRole, and component is "provisioner" (the DaemonSet's ServiceAccount)
or "node-cleanup" (the node-cleanup Deployment's); tests/rbac.rs proves the
node-cleanup rows equal the calls it makes.

node-cleanup's objects carry the label app.kubernetes.io/component:
node-cleanup; the checks of the provisioner's objects look at the others.

--dump-policy PATH (default: target/deploy-policy.json) writes the node
restriction as rendered by the chart and by kustomize (checked identical), as
JSON {"chart": {"policy": ..., "binding": ...}, "kustomize": {...}}, for
tests/admission_policy.rs, which evaluates its expressions.

--dump-rules PATH (default: target/prometheus-rules.yaml) writes the
alerting rules, spec.groups of the chart's PrometheusRule (default values,
prometheusRule.enabled) and of config/prometheus (checked identical), as a
Prometheus rules file for `promtool check rules` and `promtool test rules
tests/prometheus/*.yaml` (.ci/run); a failed check removes it.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import json
import re
import os
import shutil
import subprocess
import sys
import sysconfig
import traceback
from pathlib import Path
from typing import Any, Callable

import check_deploy_dashboard as dashboard_checks  # beside this file
import check_deploy_policy as policy_checks  # beside this file
import check_deploy_prometheus as rules_checks  # beside this file

try:
    import helm_python as helm
    import jsonschema
    import yaml
except ImportError as err:  # pragma: no cover - environment problem
    sys.exit(
        f"check_deploy: missing Python package ({err.name}); "
        "run: pip install -r .ci/requirements-deploy.txt"
    )

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "local-pv-provisioner"
RELEASE = "local-pv-provisioner"  # release name that makes chart names match kustomize
NAMESPACE = "local-pv-provisioner"  # namespace of config/default
CONTAINER = "local-pv-provisioner"
NODE_CLEANUP = policy_checks.NODE_CLEANUP  # the component label of node-cleanup's objects
NODE_CLEANUP_CONTAINER = "node-cleanup"
NODE_CLEANUP_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Deployment"}

# Values that switch every optional object of the chart on.
ALL_ON_VALUES: dict[str, Any] = {
    "pvSpecConfigMaps": {
        "pv-spec-cm-fs": {"enabled": True},
        "pv-spec-cm-block": {"enabled": True},
        "pv-spec-cm-nvme-hdd": {"enabled": True},
    },
    "storageClass": {"create": True},
    "metrics": {
        "service": {"enabled": True},
        "serviceMonitor": {"enabled": True},
        "podMonitor": {"enabled": True},
    },
    "grafanaDashboard": {"enabled": True},
    "prometheusRule": {"enabled": True},
}

# Values that move away from the defaults wherever a template computes something.
CUSTOM_VALUES: dict[str, Any] = {
    "fullnameOverride": "lpp",
    "image": {"repository": "registry.example/lpp", "tag": "v9.9.9", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "pull"}],
    "serviceAccount": {"name": "lpp-sa", "annotations": {"a": "b"}},
    "config": {
        "pollingInterval": "30s",
        "development": True,
        "defaultPvSpecConfigMap": "nvme",
    },
    "pvSpecConfigMaps": {
        "nvme": {
            "enabled": True,
            "deviceDir": "/dev/disk/by-id/",
            "deviceNameFilter": "^nvme-eui\\.[0-9a-f]+$",
            "volumeMode": "Filesystem",
            "fsType": "xfs",
            "storageClassName": "nvme",
            "wipeBytes": 1073741824,
        }
    },
    "storageClass": {"create": True, "name": "nvme", "isDefault": True, "reclaimPolicy": "Delete"},
    "metrics": {
        "port": 9102,
        "serviceMonitor": {
            "enabled": True,
            "labels": {"release": "prometheus"},
            "interval": "1m",
            "scrapeTimeout": "10s",
            "relabelings": [{"action": "labeldrop", "regex": "pod"}],
        },
        "podMonitor": {"enabled": True, "interval": ""},
    },
    "podAnnotations": {"x": "y"},
    "podLabels": {"team": "storage"},
    "priorityClassName": "",
    "tolerations": [{"operator": "Exists"}],
    "affinity": {"nodeAffinity": {}},
    "updateStrategy": {"type": "OnDelete"},
    "terminationGracePeriodSeconds": 60,
    "nodeCleanup": {
        "replicas": 3,
        "nodeGoneGrace": "1h",
        "serviceAccount": {"name": "lpp-cleanup", "annotations": {"c": "d"}},
        "metricsPort": 9103,
        "podLabels": {"team": "storage"},
        "priorityClassName": "cluster-services",
        "affinity": {"nodeAffinity": {}},
    },
    "prometheusRule": rules_checks.CUSTOM,
}

# The entry of values.yaml with deviceClasses, and one valid class to spoil.
CLASSES_ENTRY = "pv-spec-cm-nvme-hdd"
GOOD_CLASS: dict[str, Any] = {"name": "c", "deviceDir": "/dev/disk/by-id/", "deviceNameFilter": ".*", "volumeMode": "Block"}


def bad_class(**change: Any) -> dict[str, Any]:
    """Values whose classes entry lists GOOD_CLASS changed by `change` (None drops a key)."""
    cls = {k: v for k, v in (GOOD_CLASS | change).items() if v is not None}
    return {"pvSpecConfigMaps": {CLASSES_ENTRY: {"deviceClasses": [cls]}}}


# Values the schema must reject, each with why.
BAD_VALUES: list[tuple[str, dict[str, Any]]] = [
    ("unknown top-level key", {"replicaCount": 2}),
    ("unknown nested key", {"image": {"digest": "sha256:0"}}),
    ("bad volumeMode", {"pvSpecConfigMaps": {"pv-spec-cm-fs": {"volumeMode": "Raw"}}}),
    ("fsType with Block", {"pvSpecConfigMaps": {"pv-spec-cm-block": {"fsType": "ext4"}}}),
    ("unsupported fsType", {"pvSpecConfigMaps": {"pv-spec-cm-fs": {"fsType": "zfs"}}}),
    (
        "Filesystem without fsType",
        {"pvSpecConfigMaps": {"x": {"enabled": True, "deviceDir": "/dev/", "deviceNameFilter": ".*", "volumeMode": "Filesystem"}}},
    ),
    ("relative deviceDir", {"pvSpecConfigMaps": {"pv-spec-cm-fs": {"deviceDir": "dev/disk"}}}),
    ("ConfigMap name not a DNS name", {"pvSpecConfigMaps": {"Bad_Name": {"enabled": False, "deviceDir": "/dev/", "deviceNameFilter": ".*", "volumeMode": "Block"}}}),
    ("bad duration", {"config": {"pollingInterval": "5 minutes"}}),
    ("development not a bool", {"config": {"development": "yes"}}),
    ("port out of range", {"metrics": {"port": 70000}}),
    ("bad pullPolicy", {"image": {"pullPolicy": "Sometimes"}}),
    ("bad updateStrategy", {"updateStrategy": {"type": "Recreate"}}),
    ("negative wipeBytes", {"pvSpecConfigMaps": {"pv-spec-cm-fs": {"wipeBytes": -1}}}),
    ("admissionPolicy.enabled not a bool", {"admissionPolicy": {"enabled": "yes"}}),
    ("grafanaDashboard.enabled not a bool", {"grafanaDashboard": {"enabled": "yes"}}),
    ("dashboard namespace not a DNS label", {"grafanaDashboard": {"namespace": "Monitoring_NS"}}),
    ("dashboard label not a label key", {"grafanaDashboard": {"label": "grafana dashboard"}}),
    ("unknown grafanaDashboard key", {"grafanaDashboard": {"folder": "Storage"}}),
    ("flat keys beside deviceClasses", {"pvSpecConfigMaps": {CLASSES_ENTRY: {"deviceDir": "/dev/disk/by-id/"}}}),
    ("class without name", bad_class(name=None)),
    ("class name not a DNS label", bad_class(name="Fast_NVMe")),
    ("unknown class key", bad_class(minsize="1Ti")),
    ("unknown device type", bad_class(deviceTypes=["disk", "nvme"])),
    ("empty deviceTypes", bad_class(deviceTypes=[])),
    ("maxDevices 0", bad_class(maxDevices=0)),
    ("minSize not a quantity", bad_class(minSize="big")),
    ("label value over 63 characters", bad_class(labels={"tier": "f" * 64})),
    ("Filesystem class without fsType", bad_class(volumeMode="Filesystem")),
    ("empty deviceClasses", {"pvSpecConfigMaps": {CLASSES_ENTRY: {"deviceClasses": []}}}),
    ("nodeCleanup.enabled not a bool", {"nodeCleanup": {"enabled": "yes"}}),
    ("bad nodeGoneGrace", {"nodeCleanup": {"nodeGoneGrace": "ten minutes"}}),
    ("nodeCleanup.replicas 0", {"nodeCleanup": {"replicas": 0}}),
    ("unknown nodeCleanup key", {"nodeCleanup": {"image": {"tag": "x"}}}),
    ("prometheusRule.enabled not a bool", {"prometheusRule": {"enabled": "yes"}}),
    ("unknown prometheusRule key", {"prometheusRule": {"interval": "1m"}}),
    ("PrometheusRule namespace not a DNS label", {"prometheusRule": {"namespace": "Monitoring_NS"}}),
    ("PrometheusRule label not a string", {"prometheusRule": {"labels": {"release": 1}}}),
    ("severity among alertLabels", {"prometheusRule": {"alertLabels": {"severity": "critical"}}}),
    ("alertLabels key not a Prometheus label name", {"prometheusRule": {"alertLabels": {"team-name": "storage"}}}),
    ("runbookUrl with an anchor", {"prometheusRule": {"runbookUrl": "https://example.com/README.md#runbook"}}),
    ("runbookUrl not a URL", {"prometheusRule": {"runbookUrl": "README.md"}}),
    ("unknown alert", {"prometheusRule": {"alerts": {"diskFull": {"for": "5m", "severity": "warning"}}}}),
    ("unknown key of an alert", {"prometheusRule": {"alerts": {"wipeFailing": {"threshold": 3}}}}),
    ("alert for not a duration", {"prometheusRule": {"alerts": {"wipeFailing": {"for": "30 minutes"}}}}),
    ("alert for with a decimal (Go-only) duration", {"prometheusRule": {"alerts": {"deviceMissing": {"for": "1.5h"}}}}),
    ("alert lookback not a duration", {"prometheusRule": {"alerts": {"provisionerAbsent": {"lookback": 6}}}}),
    ("empty severity", {"prometheusRule": {"alerts": {"pvSpecError": {"severity": ""}}}}),
]


class CheckFailed(Exception):
    """A check found a problem; the message says which."""


# --------------------------------------------------------------------------
# helpers


def dump(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=True, default_flow_style=False)


def diff_text(a: Any, b: Any, a_name: str, b_name: str) -> str:
    lines = difflib.unified_diff(
        dump(a).splitlines(), dump(b).splitlines(), a_name, b_name, lineterm=""
    )
    return "\n".join(lines)


def expect_equal(a: Any, b: Any, a_name: str, b_name: str, what: str) -> None:
    if a != b:
        raise CheckFailed(f"{what} differ:\n{diff_text(a, b, a_name, b_name)}")


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_docs(text: str, source: str) -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise CheckFailed(f"{source}: not valid YAML: {err}") from err
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            raise CheckFailed(f"{source}: a document is not a Kubernetes object:\n{dump(doc)}")
    return docs


def objects_by_kind(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        out.setdefault(doc["kind"], []).append(doc)
    return out


def part(objs: dict[str, list[dict[str, Any]]], component: str | None) -> dict[str, list[dict[str, Any]]]:
    """The objects of one component: node-cleanup's (NODE_CLEANUP) or the
    provisioner's (None: without the component label)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for kind, docs in objs.items():
        mine = [d for d in docs if policy_checks.component(d) == component]
        if mine:
            out[kind] = mine
    return out


def one(objs: dict[str, list[dict[str, Any]]], kind: str, source: str) -> dict[str, Any]:
    found = objs.get(kind, [])
    if len(found) != 1:
        raise CheckFailed(f"{source}: expected exactly one {kind}, found {len(found)}")
    return found[0]


def render_chart(values: dict[str, Any] | None, name: str = RELEASE, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    with helm.Chart.load(str(CHART)) as chart:
        try:
            rendered = chart.render(values or {}, name=name, namespace=namespace)
        except helm.HelmError as err:
            raise CheckFailed(f"helm render failed: {err}") from err
    docs: list[dict[str, Any]] = []
    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(parse_docs(rendered[path], path))
    return docs


def kustomize(directory: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise CheckFailed("kubectl (with built-in kustomize) is not on PATH")
    proc = subprocess.run(
        [kubectl, "kustomize", str(ROOT / directory)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise CheckFailed(f"kubectl kustomize {directory} failed:\n{proc.stderr.strip()}")
    return parse_docs(proc.stdout, f"kustomize {directory}")


# --------------------------------------------------------------------------
# RBAC


def canonical_rules(role: dict[str, Any], source: str) -> list[dict[str, Any]]:
    """The rules of a (Cluster)Role as sorted (apiGroup, resource, verbs) rows.

    Also insists that the manifest is already written in that canonical form:
    one API group and one resource per rule, sorted verbs, rules sorted by
    group then resource, nothing but apiGroups/resources/verbs.
    """
    rows: list[dict[str, Any]] = []
    name = f"{source} {role['kind']} {role['metadata']['name']}"
    for index, rule in enumerate(role.get("rules") or []):
        extra = set(rule) - {"apiGroups", "resources", "verbs"}
        if extra:
            raise CheckFailed(f"{name}: rule {index} has {sorted(extra)}; only apiGroups/resources/verbs are expected")
        groups, resources, verbs = rule.get("apiGroups", []), rule.get("resources", []), rule.get("verbs", [])
        if len(groups) != 1 or len(resources) != 1:
            raise CheckFailed(f"{name}: rule {index} is not canonical: one apiGroup and one resource per rule")
        if verbs != sorted(set(verbs)) or not verbs or "*" in verbs:
            raise CheckFailed(f"{name}: rule {index} verbs {verbs} are not sorted, unique and explicit")
        rows.append({"apiGroup": groups[0], "resource": resources[0], "verbs": list(verbs)})
    keys = [(r["apiGroup"], r["resource"]) for r in rows]
    if keys != sorted(keys) or len(set(keys)) != len(keys):
        raise CheckFailed(f"{name}: rules are not sorted by (apiGroup, resource) without repeats: {keys}")
    return rows


def rbac_rows(objs: dict[str, list[dict[str, Any]]], source: str, component: str = "provisioner") -> list[dict[str, Any]]:
    """The rules of one component's objects (ClusterRole and Role) as rows."""
    cluster = canonical_rules(one(objs, "ClusterRole", source), source)
    local = canonical_rules(one(objs, "Role", source), source)
    rows = [dict(r, namespaced=False) for r in cluster] + [dict(r, namespaced=True) for r in local]
    rows = [dict(r, component=component) for r in rows]
    return sorted(rows, key=lambda r: (r["namespaced"], r["apiGroup"], r["resource"]))


def check_bindings(objs: dict[str, list[dict[str, Any]]], source: str, workload: str = "DaemonSet") -> None:
    """Each role is bound to the ServiceAccount of the workload (the
    DaemonSet, or node-cleanup's Deployment)."""
    sa = one(objs, "ServiceAccount", source)
    ds = one(objs, workload, source)
    sa_name, sa_ns = sa["metadata"]["name"], sa["metadata"].get("namespace")
    if ds["spec"]["template"]["spec"].get("serviceAccountName") != sa_name:
        raise CheckFailed(f"{source}: the {workload} does not run as ServiceAccount {sa_name}")
    for binding_kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding = one(objs, binding_kind, source)
        role = one(objs, role_kind, source)
        ref = binding["roleRef"]
        if (ref.get("kind"), ref.get("name")) != (role_kind, role["metadata"]["name"]):
            raise CheckFailed(f"{source}: {binding_kind} does not refer to {role_kind} {role['metadata']['name']}")
        subjects = binding.get("subjects") or []
        if {"kind": "ServiceAccount", "name": sa_name, "namespace": sa_ns} not in subjects:
            raise CheckFailed(f"{source}: {binding_kind} does not bind ServiceAccount {sa_ns}/{sa_name}")
    role = one(objs, "Role", source)
    if role["metadata"].get("namespace") != ds["metadata"].get("namespace"):
        raise CheckFailed(f"{source}: the Role is not in the {workload}'s namespace")


# --------------------------------------------------------------------------
# DaemonSet


def normalise_container(container: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(container)
    out.pop("image", None)
    for key, sort_key in (("env", "name"), ("ports", "name"), ("volumeMounts", "mountPath")):
        if key in out:
            out[key] = sorted(out[key], key=lambda item: item[sort_key])
    return out


def pod_spec_view(ds: dict[str, Any]) -> dict[str, Any]:
    """The parts of a DaemonSet that must not differ between chart and kustomize."""
    spec = copy.deepcopy(ds["spec"]["template"]["spec"])
    containers = spec.pop("containers")
    spec["volumes"] = sorted(spec.get("volumes", []), key=lambda v: v["name"])
    return {
        "updateStrategy": ds["spec"].get("updateStrategy"),
        "podSpec": spec,
        "containers": {c["name"]: normalise_container(c) for c in containers},
    }


def check_daemonset_invariants(ds: dict[str, Any], source: str) -> None:
    """Properties that each rendering must have on its own."""
    problems: list[str] = []
    spec = ds["spec"]
    tmpl_labels = spec["template"]["metadata"].get("labels", {})
    for key, value in spec["selector"]["matchLabels"].items():
        if tmpl_labels.get(key) != value:
            problems.append(f"selector label {key}={value} is not on the pod template")
    pod = spec["template"]["spec"]
    containers = [c for c in pod["containers"] if c["name"] == CONTAINER]
    if len(containers) != 1:
        raise CheckFailed(f"{source}: no container named {CONTAINER}")
    c = containers[0]
    env = {e["name"]: e for e in c.get("env", [])}
    for name, path in (("LP_NODE_NAME", "spec.nodeName"), ("LP_NAMESPACE_NAME", "metadata.namespace"), ("LP_POD_NAME", "metadata.name")):
        got = env.get(name, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        if got != path:
            problems.append(f"{name} must come from fieldRef {path}, got {got}")
    for name in env:
        if not name.startswith("LP_"):
            problems.append(f"unexpected environment variable {name}")
    ports = {p["name"]: p for p in c.get("ports", [])}
    if "metrics" not in ports:
        problems.append("no container port named metrics")
    else:
        addr = env.get("LP_METRICS_ADDR", {}).get("value", "")
        if not re.fullmatch(r".*:(\d+)", addr) or int(addr.rsplit(":", 1)[1]) != ports["metrics"]["containerPort"]:
            problems.append(f"LP_METRICS_ADDR {addr!r} does not listen on the metrics port {ports['metrics'].get('containerPort')}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        got = c.get(probe, {}).get("httpGet", {})
        if got.get("path") != path or got.get("port") != "metrics":
            problems.append(f"{probe} must be GET {path} on port metrics, got {got}")
    sc = c.get("securityContext", {})
    if sc.get("privileged") is not True or sc.get("runAsUser") != 0:
        problems.append("the container must be privileged and run as uid 0 to open raw devices")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append("the root filesystem must be read-only")
    dev_volumes = [v["name"] for v in pod.get("volumes", []) if v.get("hostPath", {}).get("path") == "/dev"]
    mounts = [m for m in c.get("volumeMounts", []) if m["name"] in dev_volumes and m["mountPath"] == "/dev"]
    if len(mounts) != 1 or mounts[0].get("mountPropagation") != "HostToContainer" or mounts[0].get("readOnly"):
        problems.append("the host's /dev must be mounted read-write at /dev with mountPropagation HostToContainer")
    if c.get("terminationMessagePath", "/dev/termination-log").startswith("/dev/"):
        problems.append("terminationMessagePath must not be under /dev (the host's /dev is mounted there)")
    if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
        problems.append("no host network, PID or IPC namespace is needed")
    if problems:
        raise CheckFailed(f"{source}: DaemonSet {ds['metadata']['name']}:\n  - " + "\n  - ".join(problems))


# --------------------------------------------------------------------------
# node-cleanup


def deployment_view(deploy: dict[str, Any]) -> dict[str, Any]:
    """The parts of the node-cleanup Deployment that must not differ between chart and kustomize."""
    spec = copy.deepcopy(deploy["spec"]["template"]["spec"])
    containers = spec.pop("containers")
    return {
        "replicas": deploy["spec"].get("replicas"),
        "strategy": deploy["spec"].get("strategy"),
        "podSpec": spec,
        "containers": {c["name"]: normalise_container(c) for c in containers},
    }


def check_node_cleanup(objs: dict[str, list[dict[str, Any]]], source: str) -> dict[str, str]:
    """node-cleanup's objects of one rendering: exactly its kinds, its roles
    bound to its ServiceAccount, an unprivileged Deployment running the
    node-cleanup subcommand with its pod's namespace and name, a Lease name,
    a grace, probes on its metrics port. Returns its LP_* values."""
    # Monitoring objects come with metrics.podMonitor; the rest is fixed.
    if set(objs) - policy_checks.KINDS - {"PodMonitor"} != NODE_CLEANUP_KINDS:
        raise CheckFailed(f"{source}: node-cleanup has kinds {sorted(objs)}, expected {sorted(NODE_CLEANUP_KINDS)}")
    check_bindings(objs, source, "Deployment")
    deploy = one(objs, "Deployment", source)
    problems: list[str] = []
    spec = deploy["spec"]
    tmpl_labels = spec["template"]["metadata"].get("labels", {})
    for key, value in spec["selector"]["matchLabels"].items():
        if tmpl_labels.get(key) != value:
            problems.append(f"selector label {key}={value} is not on the pod template")
    if spec["selector"]["matchLabels"].get(policy_checks.COMPONENT) != NODE_CLEANUP:
        problems.append("the selector must include app.kubernetes.io/component: node-cleanup (not the DaemonSet's pods)")
    pod = spec["template"]["spec"]
    containers = [c for c in pod["containers"] if c["name"] == NODE_CLEANUP_CONTAINER]
    if len(containers) != 1 or len(pod["containers"]) != 1:
        raise CheckFailed(f"{source}: the node-cleanup Deployment must have one container named {NODE_CLEANUP_CONTAINER}")
    c = containers[0]
    if c.get("args") != ["node-cleanup"] or "command" in c:
        problems.append(f"the container must run the image's entrypoint with args [node-cleanup], got {c.get('args')}")
    env = {e["name"]: e for e in c.get("env", [])}
    for name, path in (("LP_NAMESPACE_NAME", "metadata.namespace"), ("LP_POD_NAME", "metadata.name")):
        got = env.get(name, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        if got != path:
            problems.append(f"{name} must come from fieldRef {path}, got {got}")
    for name in ("LP_NODE_GONE_GRACE", "LP_LEASE_NAME", "LP_METRICS_ADDR", "LP_DEVELOPMENT"):
        if not env.get(name, {}).get("value"):
            problems.append(f"{name} must be set")
    for name in env:
        if not name.startswith("LP_") or name == "LP_NODE_NAME":
            problems.append(f"unexpected environment variable {name}")
    ports = {p["name"]: p for p in c.get("ports", [])}
    addr = env.get("LP_METRICS_ADDR", {}).get("value", "")
    if "metrics" not in ports or not re.fullmatch(r".*:(\d+)", addr) or int(addr.rsplit(":", 1)[1]) != ports["metrics"]["containerPort"]:
        problems.append(f"LP_METRICS_ADDR {addr!r} does not listen on a container port named metrics")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        got = c.get(probe, {}).get("httpGet", {})
        if got.get("path") != path or got.get("port") != "metrics":
            problems.append(f"{probe} must be GET {path} on port metrics, got {got}")
    sc, pod_sc = c.get("securityContext", {}), pod.get("securityContext", {})
    if sc.get("privileged") or sc.get("allowPrivilegeEscalation") is not False or sc.get("readOnlyRootFilesystem") is not True:
        problems.append("the container must not be privileged, must not escalate and must have a read-only root filesystem")
    if sc.get("capabilities", {}).get("drop") != ["ALL"]:
        problems.append("the container must drop every capability")
    if pod_sc.get("runAsNonRoot") is not True or not pod_sc.get("runAsUser"):
        problems.append("the pod must run as a non-root user (it opens no device)")
    if pod.get("volumes") or c.get("volumeMounts"):
        problems.append("node-cleanup mounts nothing")
    if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
        problems.append("no host network, PID or IPC namespace is needed")
    if (spec.get("replicas") or 1) < 2:
        problems.append("node-cleanup runs two replicas or more (one leads, one stands by)")
    if problems:
        raise CheckFailed(f"{source}: Deployment {deploy['metadata']['name']}:\n  - " + "\n  - ".join(problems))
    return {name: e.get("value") for name, e in env.items() if "value" in e}


# --------------------------------------------------------------------------
# the checks


class Context:
    def __init__(self) -> None:
        self.chart_default: list[dict[str, Any]] | None = None
        self.chart_all_on: list[dict[str, Any]] | None = None
        self.kustomize_default: list[dict[str, Any]] | None = None
        self.kustomize_samples: list[dict[str, Any]] | None = None
        self.rbac: list[dict[str, Any]] | None = None
        self.policy: dict[str, Any] | None = None
        self.rules_file: Path = ROOT / "target" / "prometheus-rules.yaml"


def lint_findings(values: dict[str, Any] | None) -> list[str]:
    report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
    bad = [f"{m['path']}: {m['error']}" for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    bad += list(report.get("errors") or [])
    return bad


def check_lint(ctx: Context) -> str:
    problems: list[str] = []
    for label, values in (("default values", None), ("all optional objects on", ALL_ON_VALUES), ("custom values", CUSTOM_VALUES)):
        problems += [f"[{label}] {p}" for p in lint_findings(values)]
    if problems:
        raise CheckFailed("helm lint --strict:\n  " + "\n  ".join(problems))
    report = helm.lint(str(CHART), None, strict=True)
    infos = [f"{m['path']}: {m['error']}" for m in report.get("messages", []) if m.get("severity", 0) < 2]
    return "clean" + (f" (info: {'; '.join(infos)})" if infos else "")


def check_render(ctx: Context) -> str:
    rendered = objects_by_kind(render_chart(None))
    default = part(rendered, None)
    expected_default = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "DaemonSet"}
    expected_default |= policy_checks.KINDS
    if set(default) != expected_default:
        raise CheckFailed(f"default render has kinds {sorted(default)}, expected {sorted(expected_default)}")
    check_daemonset_invariants(one(default, "DaemonSet", "chart"), "chart (default values)")
    check_bindings(default, "chart (default values)")
    check_policy(rendered, "chart (default values)")
    cleanup_env = check_node_cleanup(part(rendered, NODE_CLEANUP), "chart (default values)")
    want = {"LP_NODE_GONE_GRACE": "10m", "LP_LEASE_NAME": "local-pv-provisioner-node-cleanup", "LP_METRICS_ADDR": ":8081"}
    expect_equal({k: cleanup_env.get(k) for k in want}, want, "rendered", "expected", "node-cleanup environment (default values)")
    no_policy = {doc["kind"] for doc in render_chart({"admissionPolicy": {"enabled": False}})}
    if no_policy & policy_checks.KINDS:
        raise CheckFailed("admissionPolicy.enabled=false still renders the node restriction policy")
    no_cleanup = [f"{d['kind']} {d['metadata']['name']}" for d in render_chart({"nodeCleanup": {"enabled": False}})
                  if policy_checks.component(d) == NODE_CLEANUP]
    if no_cleanup:
        raise CheckFailed(f"nodeCleanup.enabled=false still renders {no_cleanup}")

    all_on = part(objects_by_kind(render_chart(ALL_ON_VALUES)), None)
    expected_all = expected_default | {"ConfigMap", "StorageClass", "Service", "ServiceMonitor", "PodMonitor", "PrometheusRule"}
    if set(all_on) != expected_all:
        raise CheckFailed(f"all-on render has kinds {sorted(all_on)}, expected {sorted(expected_all)}")
    names = sorted(cm["metadata"]["name"] for cm in all_on["ConfigMap"])
    if names != ["local-pv-provisioner-dashboard", "pv-spec-cm-block", "pv-spec-cm-fs", CLASSES_ENTRY]:
        raise CheckFailed(f"all-on render has ConfigMaps {names}")
    check_device_classes(all_on)
    check_daemonset_invariants(one(all_on, "DaemonSet", "chart"), "chart (all on)")

    custom_all = objects_by_kind(render_chart(CUSTOM_VALUES, name="custom", namespace="storage"))
    custom = part(custom_all, None)
    ds = one(custom, "DaemonSet", "chart (custom)")
    check_daemonset_invariants(ds, "chart (custom values)")
    check_bindings(custom, "chart (custom values)")
    check_policy(custom_all, "chart (custom values)")
    cleanup = part(custom_all, NODE_CLEANUP)
    cleanup_env = check_node_cleanup(cleanup, "chart (custom values)")
    want = {"LP_NODE_GONE_GRACE": "1h", "LP_LEASE_NAME": "lpp-node-cleanup", "LP_METRICS_ADDR": ":9103", "LP_DEVELOPMENT": "true"}
    expect_equal({k: cleanup_env.get(k) for k in want}, want, "rendered", "expected", "custom values: node-cleanup environment")
    deploy = one(cleanup, "Deployment", "chart (custom)")
    cleanup_pod = deploy["spec"]["template"]["spec"]
    if (deploy["spec"]["replicas"], cleanup_pod["serviceAccountName"], cleanup_pod.get("priorityClassName"),
            cleanup_pod.get("affinity")) != (3, "lpp-cleanup", "cluster-services", {"nodeAffinity": {}}):
        raise CheckFailed("custom values: node-cleanup replicas, ServiceAccount, priority class or affinity not applied")
    pod = ds["spec"]["template"]["spec"]
    c = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    want = {
        "LP_METRICS_ADDR": ":9102", "LP_POLLING_INTERVAL": "30s",
        "LP_DEVELOPMENT": "true", "LP_DEFAULT_PV_SPEC_CONFIGMAP": "nvme",
    }
    got = {k: env.get(k) for k in want}
    expect_equal(got, want, "rendered", "expected", "custom values: environment")
    if c["image"] != "registry.example/lpp:v9.9.9" or "priorityClassName" in pod:
        raise CheckFailed("custom values: image or priorityClassName not applied")
    cm = one(custom, "ConfigMap", "chart (custom)")
    expect_equal(cm["data"], {
        "deviceDir": "/dev/disk/by-id/", "deviceNameFilter": "^nvme-eui\\.[0-9a-f]+$",
        "volumeMode": "Filesystem", "fsType": "xfs", "storageClassName": "nvme", "wipeBytes": "1073741824",
    }, "rendered", "expected", "custom values: ConfigMap data")
    svc = one(custom, "Service", "chart (custom)")
    if svc["spec"]["ports"][0]["port"] != 9102:
        raise CheckFailed("custom values: Service port does not follow metrics.port")

    # serviceAccount.create=false needs a name (also node-cleanup's)
    for account in ({"serviceAccount": {"create": False}}, {"nodeCleanup": {"serviceAccount": {"create": False}}}):
        try:
            render_chart(account)
        except CheckFailed:
            pass
        else:
            raise CheckFailed(f"{account} without a name was rendered")

    ctx.chart_default = [d for docs in rendered.values() for d in docs]
    ctx.chart_all_on = [d for docs in all_on.values() for d in docs]
    return f"default: {len(ctx.chart_default)} objects; all optional on: {len(ctx.chart_all_on)}; custom values ok"


def check_device_classes(all_on: dict[str, list[dict[str, Any]]]) -> None:
    """The all-on render of the deviceClasses entry: its ConfigMap holds the
    list of values.yaml as YAML text, and one StorageClass per class name."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    want = defaults["pvSpecConfigMaps"][CLASSES_ENTRY]["deviceClasses"]
    cm = next(cm for cm in all_on["ConfigMap"] if cm["metadata"]["name"] == CLASSES_ENTRY)
    if set(cm.get("data") or {}) != {"deviceClasses"}:
        raise CheckFailed(f"ConfigMap {CLASSES_ENTRY} has data keys {sorted(cm.get('data') or {})}, expected only deviceClasses")
    try:
        got = yaml.safe_load(cm["data"]["deviceClasses"])
    except yaml.YAMLError as err:
        raise CheckFailed(f"ConfigMap {CLASSES_ENTRY}: deviceClasses is not valid YAML: {err}") from err
    expect_equal(got, want, "rendered", "values.yaml", f"ConfigMap {CLASSES_ENTRY}: deviceClasses")
    scs = {sc["metadata"]["name"]: sc for sc in all_on.get("StorageClass", [])}
    if len(scs) != len(all_on.get("StorageClass", [])):
        raise CheckFailed("all-on render has a StorageClass twice")
    if set(scs) != {"local-storage", "local-nvme", "local-hdd"}:
        raise CheckFailed(f"all-on render has StorageClasses {sorted(scs)}, expected local-hdd, local-nvme, local-storage")
    for name, sc in scs.items():
        if sc.get("volumeBindingMode") != "WaitForFirstConsumer" or sc.get("provisioner") != "kubernetes.io/no-provisioner":
            raise CheckFailed(f"StorageClass {name} is not a kubernetes.io/no-provisioner class with WaitForFirstConsumer")

    # A class without storageClassName gets local-storage, which
    # storageClass.create already renders; two classes share one class.
    shared = {"deviceClasses": [GOOD_CLASS | {"name": "a"}, GOOD_CLASS | {"name": "b", "storageClassName": "local-nvme"},
                                GOOD_CLASS | {"name": "c", "storageClassName": "local-nvme"}]}
    objs = objects_by_kind(render_chart(deep_merge(ALL_ON_VALUES, {"pvSpecConfigMaps": {CLASSES_ENTRY: shared}})))
    names = sorted(sc["metadata"]["name"] for sc in objs.get("StorageClass", []))
    if names != ["local-nvme", "local-storage"]:
        raise CheckFailed(f"classes sharing StorageClasses render StorageClasses {names}, expected local-nvme, local-storage")
    off = {CLASSES_ENTRY: {"enabled": True, "createStorageClasses": False}}
    if any(d["kind"] == "StorageClass" for d in render_chart({"pvSpecConfigMaps": off})):
        raise CheckFailed("createStorageClasses=false still renders StorageClasses")
    # Unique names are beyond the schema; the template refuses repeats.
    twice = {"enabled": True, "deviceClasses": [GOOD_CLASS, GOOD_CLASS | {"deviceDir": "/dev/disk/by-path/"}]}
    try:
        render_chart({"pvSpecConfigMaps": {CLASSES_ENTRY: twice}})
    except CheckFailed as err:
        if "class names must be unique" not in str(err):
            raise
    else:
        raise CheckFailed("two classes of one name were rendered")


def values_leaf_paths(values: Any, prefix: str = "") -> list[str]:
    if isinstance(values, dict) and values:
        out: list[str] = []
        for key, value in values.items():
            out += values_leaf_paths(value, f"{prefix}.{key}" if prefix else key)
        return out
    return [prefix]


def check_schema(ctx: Context) -> str:
    schema = json.loads((CHART / "values.schema.json").read_text())
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())

    def errors(values: dict[str, Any]) -> list[str]:
        return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(values)]

    problems = [f"values.yaml: {e}" for e in errors(defaults)]
    for label, over in (("all-on", ALL_ON_VALUES), ("custom", CUSTOM_VALUES)):
        problems += [f"{label} values: {e}" for e in errors(deep_merge(defaults, over))]
    if problems:
        raise CheckFailed("values rejected by values.schema.json:\n  " + "\n  ".join(problems))

    with helm.Chart.load(str(CHART)) as chart:
        try:
            chart.validate_schema(chart.merge_values(None))
        except helm.HelmValuesError as err:
            raise CheckFailed(f"Helm rejects the default values: {err}") from err
        # The class the bad rows spoil is itself valid, so each row fails for its own reason.
        good = deep_merge(defaults, bad_class())
        problems = [f"bad_class(): {e}" for e in errors(good)]
        try:
            chart.validate_schema(chart.merge_values(bad_class()))
        except helm.HelmValuesError as err:
            problems.append(f"bad_class(): Helm: {err}")
        if problems:
            raise CheckFailed("the valid class the bad value sets start from is rejected:\n  " + "\n  ".join(problems))
        for label, bad in BAD_VALUES:
            if not errors(deep_merge(defaults, bad)):
                raise CheckFailed(f"jsonschema accepts bad values ({label}): {bad}")
            try:
                chart.validate_schema(chart.merge_values(bad))
            except helm.HelmValuesError:
                pass
            else:
                raise CheckFailed(f"Helm accepts bad values ({label}): {bad}")

    # The schema covers every value (additionalProperties: false everywhere
    # makes values.yaml fail otherwise); the README documents every value.
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.M))
    leaves = values_leaf_paths(defaults)
    undocumented = [p for p in leaves if not any(p == d or p.startswith(d + ".") for d in documented)]
    stale = sorted(d for d in documented if not any(p == d or p.startswith(d + ".") for p in leaves))
    if undocumented or stale:
        raise CheckFailed(
            "chart README.md values table out of step with values.yaml:"
            + (f"\n  undocumented: {undocumented}" if undocumented else "")
            + (f"\n  documented but absent: {stale}" if stale else "")
        )
    return f"values.yaml valid; {len(BAD_VALUES)} bad value sets rejected by jsonschema and Helm; {len(leaves)} values documented"


CRD_FILE = "localdisks.local-pv-provisioner.cybozu.io.yaml"


def check_crd(crd: dict[str, Any]) -> None:
    """The LocalDisk CRD: the chart ships the very file config/crd has, and
    it is the inventory the README promises (cluster-scoped, short name ld,
    a status subresource, the printer columns of `kubectl get localdisks -o
    wide`, the ten states)."""
    chart_file = (CHART / "crds" / CRD_FILE).read_text()
    kustomize_file = (ROOT / "config" / "crd" / CRD_FILE).read_text()
    if chart_file != kustomize_file:
        raise CheckFailed(f"charts/local-pv-provisioner/crds/{CRD_FILE} and config/crd/{CRD_FILE} differ")
    spec = crd["spec"]
    problems = []
    if spec["scope"] != "Cluster" or spec["names"].get("shortNames") != ["ld"]:
        problems.append("scope Cluster and short name ld")
    [version] = spec["versions"]
    if version["name"] != "v1alpha1" or version.get("subresources") != {"status": {}}:
        problems.append("version v1alpha1 with a status subresource")
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    if columns != ["Node", "Class", "Device", "Size", "State", "PV", "Claim", "Reason", "Age"]:
        problems.append(f"printer columns {columns}")
    states = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["state"]["enum"]
    if states != ["Available", "Bound", "Released", "Kept", "Wiping", "HasData", "InUse", "Excluded", "Missing", "Error"]:
        problems.append(f"states {states}")
    if problems:
        raise CheckFailed("the LocalDisk CRD: " + "; ".join(problems))


def check_kustomize(ctx: Context) -> str:
    default = kustomize("config/default")
    samples = kustomize("config/samples")
    every = objects_by_kind(default)
    objs = part(every, None)
    expected = {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "DaemonSet",
                "CustomResourceDefinition"}
    expected |= policy_checks.KINDS
    if set(objs) != expected:
        raise CheckFailed(f"config/default has kinds {sorted(objs)}, expected {sorted(expected)}")
    check_crd(one(objs, "CustomResourceDefinition", "config/default"))
    check_node_cleanup(part(every, NODE_CLEANUP), "config/default (node-cleanup)")
    ns = one(objs, "Namespace", "config/default")["metadata"]["name"]
    for doc in default:
        # kustomize also puts the policy kinds into the namespace (its schema
        # predates them); the API server drops that for cluster-scoped objects.
        cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
        if doc["kind"] not in cluster_scoped and doc["metadata"].get("namespace") != ns:
            raise CheckFailed(f"config/default: {doc['kind']} {doc['metadata']['name']} is not in namespace {ns}")
    check_daemonset_invariants(one(objs, "DaemonSet", "config/default"), "config/default")
    check_bindings(objs, "config/default")
    check_policy(every, "config/default")
    try:
        policy_checks.check_edited_namespace(ROOT, kustomize, objects_by_kind)
    except policy_checks.PolicyProblem as err:
        raise CheckFailed(str(err)) from err
    sample_kinds = sorted(d["kind"] for d in samples)
    if sample_kinds != ["ConfigMap"] * 3 + ["StorageClass"] * 3:
        raise CheckFailed(f"config/samples has {sample_kinds}")
    for doc in samples:
        if doc["kind"] == "ConfigMap" and doc["metadata"].get("namespace") != ns:
            raise CheckFailed(f"config/samples: ConfigMap {doc['metadata']['name']} is not in namespace {ns}")
    rendered = ["config/default", "config/samples"]
    e2e = ROOT / "e2etest" / "manifests"
    if (e2e / "kustomization.yaml").exists():
        objs_e2e = objects_by_kind(kustomize("e2etest/manifests"))
        check_daemonset_invariants(one(objs_e2e, "DaemonSet", "e2etest/manifests"), "e2etest/manifests")
        rendered.append("e2etest/manifests")
    ctx.kustomize_default, ctx.kustomize_samples = default, samples
    return "rendered " + ", ".join(rendered)


def check_drift(ctx: Context) -> str:
    if ctx.chart_default is None or ctx.chart_all_on is None or ctx.kustomize_default is None or ctx.kustomize_samples is None:
        raise CheckFailed("skipped: an earlier render failed")
    chart_every = objects_by_kind(ctx.chart_default)
    kust_every = objects_by_kind(ctx.kustomize_default)
    chart, kust = part(chart_every, None), part(kust_every, None)
    chart_cleanup, kust_cleanup = part(chart_every, NODE_CLEANUP), part(kust_every, NODE_CLEANUP)
    failures: list[str] = []

    def compare(a: Any, b: Any, what: str) -> None:
        try:
            expect_equal(a, b, "chart", "kustomize", what)
        except CheckFailed as err:
            failures.append(str(err))

    try:
        chart_rbac = rbac_rows(chart, "chart")
        kust_rbac = rbac_rows(kust, "config/rbac")
    except CheckFailed as err:
        failures.append(str(err))
        chart_rbac = None
    else:
        compare(chart_rbac, kust_rbac, "RBAC rules (ClusterRole and Role)")
    try:
        cleanup_rbac = rbac_rows(chart_cleanup, "chart (node-cleanup)", NODE_CLEANUP)
        compare(cleanup_rbac, rbac_rows(kust_cleanup, "config/node-cleanup", NODE_CLEANUP),
                "node-cleanup RBAC rules (ClusterRole and Role)")
    except CheckFailed as err:
        failures.append(str(err))
        chart_rbac = None
    else:
        if chart_rbac is not None:
            chart_rbac = chart_rbac + cleanup_rbac
    compare(pod_spec_view(one(chart, "DaemonSet", "chart")), pod_spec_view(one(kust, "DaemonSet", "kustomize")),
            "DaemonSet pod specs (image aside)")
    compare(deployment_view(one(chart_cleanup, "Deployment", "chart")),
            deployment_view(one(kust_cleanup, "Deployment", "kustomize")),
            "node-cleanup Deployment pod specs (image aside)")
    try:
        compare(policy_checks.view(chart_every, "chart"), policy_checks.view(kust_every, "kustomize"),
                "admission policies and bindings (labels aside)")
        policy = policy_checks.dump(chart_every, kust_every)
    except policy_checks.PolicyProblem as err:
        failures.append(str(err))
        policy = None

    chart_image = one(chart, "DaemonSet", "chart")["spec"]["template"]["spec"]["containers"][0]["image"]
    kust_image = one(kust, "DaemonSet", "kustomize")["spec"]["template"]["spec"]["containers"][0]["image"]
    if chart_image.rsplit(":", 1)[-1] != kust_image.rsplit(":", 1)[-1]:
        failures.append(f"image tags differ: chart {chart_image}, kustomize {kust_image}")

    all_on = objects_by_kind(ctx.chart_all_on)
    samples = objects_by_kind(ctx.kustomize_samples)
    chart_cms = {cm["metadata"]["name"]: cm["data"] for cm in all_on["ConfigMap"] if not dashboard_checks.is_dashboard(cm)}
    sample_cms = {cm["metadata"]["name"]: cm["data"] for cm in samples["ConfigMap"]}
    compare(chart_cms, sample_cms, "PV spec ConfigMaps (chart values vs config/samples)")

    def sc_view(sc: dict[str, Any]) -> dict[str, Any]:
        return {k: sc.get(k) for k in ("provisioner", "volumeBindingMode", "reclaimPolicy", "allowVolumeExpansion")} | {
            "name": sc["metadata"]["name"]}

    compare({sc["metadata"]["name"]: sc_view(sc) for sc in all_on.get("StorageClass", [])},
            {sc["metadata"]["name"]: sc_view(sc) for sc in samples.get("StorageClass", [])},
            "StorageClasses (chart vs config/samples)")
    if failures:
        raise CheckFailed("chart and kustomize drifted apart:\n" + "\n".join(failures))
    ctx.rbac, ctx.policy = chart_rbac, policy
    return (f"RBAC ({len(chart_rbac or [])} rules of the provisioner and node-cleanup), DaemonSet and "
            "node-cleanup Deployment pod specs, admission policies, samples identical")


def check_policy(objs: dict[str, list[dict[str, Any]]], source: str) -> None:
    """The node restriction policy of one rendering (see check_deploy_policy)."""
    try:
        policy_checks.check_invariants(objs, source)
    except policy_checks.PolicyProblem as err:
        raise CheckFailed(str(err)) from err


def check_dashboard(ctx: Context) -> str:
    try:
        return dashboard_checks.check_chart(CHART, render_chart, RELEASE, NAMESPACE)
    except dashboard_checks.DashboardProblem as err:
        raise CheckFailed(str(err)) from err


def check_prometheus_rules(ctx: Context) -> str:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    try:
        return rules_checks.check_all(ROOT, render_chart, kustomize, RELEASE, NAMESPACE, defaults, ctx.rules_file)
    except rules_checks.RulesProblem as err:
        raise CheckFailed(str(err)) from err


def check_app_version(ctx: Context) -> str:
    chart_yaml = yaml.safe_load((CHART / "Chart.yaml").read_text())
    app_version = str(chart_yaml.get("appVersion"))
    note = ""
    cargo = ROOT / "Cargo.toml"
    if cargo.exists():
        match = re.search(r'(?ms)^\[package\].*?^version\s*=\s*"([^"]+)"', cargo.read_text())
        if match and match.group(1) != app_version:
            note = f" (note: Cargo.toml version is {match.group(1)})"
    return f"appVersion {app_version}{note}"


def find_tool(name: str) -> str | None:
    """A console tool installed by pip for this interpreter, else on PATH.

    Looks in the interpreter's scripts directory first, so that the check
    works from a virtualenv that is not activated.
    """
    schemes = [None, f"{os.name}_user"]
    for scheme in schemes:
        try:
            scripts = sysconfig.get_path("scripts", scheme) if scheme else sysconfig.get_path("scripts")
        except KeyError:
            continue
        candidate = Path(scripts) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


def check_hadolint(ctx: Context) -> str:
    hadolint = find_tool("hadolint")
    if hadolint is None:
        raise CheckFailed("hadolint is not on PATH; run: pip install -r .ci/requirements-deploy.txt")
    proc = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CheckFailed(f"hadolint Dockerfile:\n{(proc.stdout + proc.stderr).strip()}")
    dockerignore = (ROOT / ".dockerignore").read_text().split()
    if "target/" not in dockerignore:
        raise CheckFailed(".dockerignore must exclude target/")
    return "clean"


CHECKS: list[tuple[str, Callable[[Context], str]]] = [
    ("helm lint (strict)", check_lint),
    ("helm render", check_render),
    ("values schema", check_schema),
    ("kustomize render", check_kustomize),
    ("chart/kustomize drift", check_drift),
    ("grafana dashboard", check_dashboard),
    ("prometheus rules", check_prometheus_rules),
    ("versions", check_app_version),
    ("hadolint", check_hadolint),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dump-rbac", metavar="PATH", help="write the RBAC rules as JSON to PATH")
    parser.add_argument("--dump-policy", metavar="PATH", default=str(ROOT / "target" / "deploy-policy.json"),
                        help="write the rendered node restriction policies as JSON to PATH (default: %(default)s)")
    parser.add_argument("--dump-rules", metavar="PATH", default=str(ROOT / "target" / "prometheus-rules.yaml"),
                        help="write the alerting rules (spec.groups of the chart's and kustomize's PrometheusRule, "
                             "checked equal) as a Prometheus rules file to PATH (default: %(default)s)")
    args = parser.parse_args()

    ctx = Context()
    ctx.rules_file = Path(args.dump_rules).resolve()
    failed: list[str] = []
    for name, check in CHECKS:
        try:
            detail = check(ctx)
        except CheckFailed as err:
            failed.append(name)
            print(f"FAIL  {name}: {err}", flush=True)
        except Exception:  # a bug or an environment problem: show it all
            failed.append(name)
            print(f"FAIL  {name}: unexpected error\n{traceback.format_exc()}", flush=True)
        else:
            print(f"ok    {name}: {detail}", flush=True)

    if args.dump_rbac:
        if ctx.rbac is None:
            print(f"FAIL  --dump-rbac: no consistent RBAC rules to write to {args.dump_rbac}")
            failed.append("dump-rbac")
        else:
            Path(args.dump_rbac).write_text(json.dumps(ctx.rbac, indent=2) + "\n")
            print(f"ok    wrote {len(ctx.rbac)} RBAC rules to {args.dump_rbac}")

    if ctx.policy is None:
        Path(args.dump_policy).unlink(missing_ok=True)  # no stale policy for the tests
        print(f"FAIL  --dump-policy: no consistent node restriction policy to write to {args.dump_policy}")
        failed.append("dump-policy")
    else:
        Path(args.dump_policy).parent.mkdir(parents=True, exist_ok=True)
        Path(args.dump_policy).write_text(json.dumps(ctx.policy, indent=2) + "\n")
        print(f"ok    wrote the chart's and kustomize's node restriction policy to {args.dump_policy}")

    if failed:
        total = len(CHECKS) + (1 if args.dump_rbac else 0) + 1
        print(f"check_deploy: FAILED {len(failed)} of {total} checks: {', '.join(failed)}")
        return 1
    print(f"check_deploy: all {len(CHECKS)} checks are clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
