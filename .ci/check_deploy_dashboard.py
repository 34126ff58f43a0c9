"""Checks of the Grafana dashboard and its ConfigMap for .ci/check_deploy.py,
which imports this module and turns a DashboardProblem into a failed check.

The dashboard (charts/local-pv-provisioner/dashboards/local-pv-provisioner.json)
must be a Grafana dashboard whose every panel queries the data source
variable, with unique panel ids inside Grafana's 24-column grid, and the
panels item 5 of the issue asks for. The chart ships it only with
grafanaDashboard.enabled: then as exactly one ConfigMap, byte for byte the
file, labelled for Grafana's sidecar (label and value configurable, extra
labels and annotations added), in the release namespace or the one set.
Which metrics its PromQL names is checked by tests/dashboard.rs against the
program's own list.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

DASHBOARD_FILE = Path("dashboards") / "local-pv-provisioner.json"
DATA_KEY = "local-pv-provisioner.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# The Grafana sidecar's default label, and what the chart sets by default.
SIDECAR_LABEL = ("grafana_dashboard", "1")
# kubectl's client-side apply keeps the whole object in an annotation of at
# most 256 KiB; stay well inside it (and inside a ConfigMap's 1 MiB).
MAX_BYTES = 200 * 1024
# Panel titles the item 5 asks for (devices per node, volumes by
# phase and claim, wipe durations, create latency, refusals by guard).
REQUIRED_PANELS = [
    "Devices per node",
    "Volumes by phase",
    "Volumes and their claims",
    "Wipe duration",
    "PV create latency",
    "Wipe refusals and failures by guard",
]

Render = Callable[..., list[dict[str, Any]]]


class DashboardProblem(Exception):
    """The dashboard or its ConfigMap is wrong; the message says how."""


def is_dashboard(configmap: dict[str, Any]) -> bool:
    """Whether a rendered ConfigMap is the dashboard's (not a PV spec)."""
    return DATA_KEY in (configmap.get("data") or {})


def dashboards(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The dashboard ConfigMaps of a rendering."""
    return [d for d in docs if d["kind"] == "ConfigMap" and is_dashboard(d)]


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, also those inside collapsed rows."""
    found: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def check_file(chart: Path) -> dict[str, Any]:
    """The dashboard file on its own; returns it parsed."""
    path = chart / DASHBOARD_FILE
    text = path.read_text()
    if len(text.encode()) > MAX_BYTES:
        raise DashboardProblem(f"{path} is {len(text.encode())} bytes, more than {MAX_BYTES}")
    try:
        dashboard = json.loads(text)
    except json.JSONDecodeError as err:
        raise DashboardProblem(f"{path} is not JSON: {err}") from err
    problems: list[str] = []
    for key in ("title", "uid", "schemaVersion", "panels", "templating"):
        if key not in dashboard:
            problems.append(f"no {key}")
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    if variables.get("datasource", {}).get("type") != "datasource":
        problems.append("no data source variable named datasource")
    if "node" not in variables:
        problems.append("no node variable")
    ids: list[int] = []
    for panel in panels(dashboard):
        ids.append(panel.get("id"))
        grid = panel.get("gridPos", {})
        if grid.get("x", 0) + grid.get("w", 0) > 24:
            problems.append(f"panel {panel.get('title')!r} is wider than the 24-column grid")
        if panel.get("type") == "row":
            continue
        targets = panel.get("targets") or []
        if not targets or panel.get("datasource") != DATASOURCE:
            problems.append(f"panel {panel.get('title')!r} has no targets or does not use the datasource variable")
        for target in targets:
            if target.get("datasource") != DATASOURCE or not target.get("expr"):
                problems.append(f"panel {panel.get('title')!r}: target {target.get('refId')} lacks an expr or the datasource variable")
    if len(ids) != len(set(ids)):
        problems.append(f"panel ids repeat: {sorted(ids)}")
    titles = {p.get("title") for p in panels(dashboard)}
    problems += [f"no panel {title!r}" for title in REQUIRED_PANELS if title not in titles]
    if problems:
        raise DashboardProblem(f"{path}:\n  - " + "\n  - ".join(problems))
    return dashboard


def check_configmap(cm: dict[str, Any], file_text: str, name: str, namespace: str,
                    labels: dict[str, str], annotations: dict[str, str], source: str) -> None:
    """One rendered dashboard ConfigMap."""
    problems: list[str] = []
    meta = cm["metadata"]
    if (meta.get("name"), meta.get("namespace")) != (name, namespace):
        problems.append(f"is {meta.get('namespace')}/{meta.get('name')}, expected {namespace}/{name}")
    for key, value in labels.items():
        if (meta.get("labels") or {}).get(key) != value:
            problems.append(f"label {key}={value!r} missing (labels: {meta.get('labels')})")
    if (meta.get("annotations") or {}) != annotations:
        problems.append(f"annotations {meta.get('annotations')}, expected {annotations}")
    data = cm.get("data") or {}
    if list(data) != [DATA_KEY]:
        problems.append(f"data keys {list(data)}, expected [{DATA_KEY}]")
    elif data[DATA_KEY] != file_text.rstrip("\n"):
        problems.append(f"data.{DATA_KEY} is not the dashboard file")
    if problems:
        raise DashboardProblem(f"{source}: dashboard ConfigMap:\n  - " + "\n  - ".join(problems))


def check_chart(chart: Path, render: Render, release: str, namespace: str) -> str:
    """The ConfigMap rendered off (default), on, and on with custom values."""
    dashboard = check_file(chart)
    file_text = (chart / DASHBOARD_FILE).read_text()
    if dashboards(render(None)):
        raise DashboardProblem("the default render ships the dashboard ConfigMap; it must be opt-in")
    if dashboards(render({"grafanaDashboard": {"enabled": False}})):
        raise DashboardProblem("grafanaDashboard.enabled=false still renders the dashboard ConfigMap")
    on = dashboards(render({"grafanaDashboard": {"enabled": True}}))
    if len(on) != 1:
        raise DashboardProblem(f"grafanaDashboard.enabled=true renders {len(on)} dashboard ConfigMaps, expected 1")
    default_labels = {SIDECAR_LABEL[0]: SIDECAR_LABEL[1], "app.kubernetes.io/instance": release}
    check_configmap(on[0], file_text, f"{release}-dashboard", namespace, default_labels, {}, "enabled")
    custom_values = {"grafanaDashboard": {
        "enabled": True, "namespace": "monitoring", "label": "example.com/dashboard", "labelValue": "yes",
        "labels": {"team": "storage"}, "annotations": {"grafana_folder": "Storage"},
    }}
    custom = dashboards(render(custom_values, name="custom", namespace="storage"))
    if len(custom) != 1:
        raise DashboardProblem(f"custom values render {len(custom)} dashboard ConfigMaps, expected 1")
    custom_labels = {"example.com/dashboard": "yes", "team": "storage"}
    check_configmap(custom[0], file_text, "custom-local-pv-provisioner-dashboard", "monitoring",
                    custom_labels, {"grafana_folder": "Storage"}, "custom values")
    if SIDECAR_LABEL[0] in custom[0]["metadata"]["labels"]:
        raise DashboardProblem("custom values: the default sidecar label stays although another was set")
    return f"{len(panels(dashboard))} panels; off by default; on: one ConfigMap, sidecar label, custom namespace and labels"
