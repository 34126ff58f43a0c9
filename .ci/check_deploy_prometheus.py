"""Checks of the alerts (the PrometheusRule) for .ci/check_deploy.py, which
imports this module and turns a RulesProblem into a failed check.

The chart renders the PrometheusRule only with prometheusRule.enabled (off
by default), as exactly one object in the release namespace or the one
set, with the extra labels, and the node-cleanup group only with
nodeCleanup.enabled. config/prometheus (kustomize) holds the same rule
groups as the chart with default values; they are written, as a plain
Prometheus rules file, to target/prometheus-rules.yaml, where `promtool
check rules` (here when promtool is on PATH, and in .ci/run) and `promtool
test rules tests/prometheus/*.yaml` read them. Every alert must have a
severity, a summary, a description that names a command to run, and a
runbook_url into the README's runbook (`#runbook-<alert in lowercase>`);
every alert must have a test case that fires it and one that does not,
every recording rule a test of its own; every metric family the rules read
must be one the README documents (or kube-state-metrics' kube_node_info).
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import yaml

KIND = "PrometheusRule"
RUNBOOK = "https://github.com/cybozu-go/local-pv-provisioner/blob/main/README.md"
SEVERITIES = {"critical", "warning", "info"}
ANNOTATIONS = {"summary", "description", "runbook_url"}
PREFIX = "LPP"
NODE_CLEANUP_GROUP = "local-pv-provisioner-node-cleanup"
# Families the rules may read that the program does not export.
EXTERNAL_FAMILIES = {"kube_node_info"}  # kube-state-metrics, optional (LPPProvisionerAbsent)
TESTS = Path("tests") / "prometheus"
RULES_FROM_TESTS = "../../target/prometheus-rules.yaml"

# Every alert's key under prometheusRule.alerts, its alert name, and the
# values besides `for` and severity that the rendering must show.
ALERTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "wipeFailing": ("LPPWipeFailing", ()),
    "releasedPvNotCleaned": ("LPPReleasedPVNotCleaned", ()),
    "pvSpecError": ("LPPPVSpecError", ()),
    "deviceHasData": ("LPPDeviceHasData", ()),
    "deviceMissing": ("LPPDeviceMissing", ()),
    "writesDenied": ("LPPWritesDenied", ()),
    "provisionerAbsent": ("LPPProvisionerAbsent", ("lookback",)),
    "fullWipeStalled": ("LPPFullWipeStalled", ("unchangedFor",)),
    "nodeCleanupNoLeader": ("LPPNodeCleanupNoLeader", ("lookback",)),
    "nodeGonePvsWaiting": ("LPPNodeGonePVsWaiting", ()),
    "nodeCleanupApiErrors": ("LPPNodeCleanupAPIErrors", ()),
}

# Alerts whose description does not state their `for` (it says the window
# of its condition instead).
FOR_NOT_SAID = {"writesDenied", "fullWipeStalled"}

# Values that move every knob of prometheusRule (also used by check_deploy's
# CUSTOM_VALUES, whose nodeGoneGrace is 1h: nodeGonePvsWaiting.for is longer).
CUSTOM: dict[str, Any] = {
    "enabled": True,
    "namespace": "monitoring",
    "labels": {"release": "prometheus"},
    "alertLabels": {"team": "storage"},
    "runbookUrl": "https://docs.example/storage/lpp.md",
    "alerts": {
        key: {"for": f"{11 + index}m", "severity": "critical"}
        | {extra: f"{2 + index}h" for extra in extras}
        for index, (key, (_, extras)) in enumerate(ALERTS.items())
    },
}
CUSTOM["alerts"]["nodeGonePvsWaiting"]["for"] = "90m"

Render = Callable[..., list[dict[str, Any]]]
Kustomize = Callable[[str], list[dict[str, Any]]]


class RulesProblem(Exception):
    """The alerts are wrong; the message says how."""


def rules_of(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The PrometheusRules of a rendering."""
    return [d for d in docs if d["kind"] == KIND]


def alerts(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every alerting rule by name (names are checked unique elsewhere)."""
    return {r["alert"]: r for g in groups for r in g.get("rules", []) if "alert" in r}


def records(groups: list[dict[str, Any]]) -> list[str]:
    return [r["record"] for g in groups for r in g.get("rules", []) if "record" in r]


def anchor(alert: str) -> str:
    return f"runbook-{alert.lower()}"


# --------------------------------------------------------------------------
# PromQL: the metric names an expression reads


LABEL_LISTS = ("by", "without", "on", "ignoring", "group_left", "group_right")
KEYWORDS = {"and", "or", "unless", "offset", "bool", *LABEL_LISTS}


def metric_names(expr: str) -> set[str]:
    """The series names one PromQL expression selects (functions, label
    lists, matchers, ranges, strings and numbers stripped)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', " ", expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(rf"\b({'|'.join(LABEL_LISTS)})\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[0-9][0-9A-Za-z_.]*|([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if name and not call and name not in KEYWORDS:
            names.add(name)
    return names


def families(groups: list[dict[str, Any]]) -> set[str]:
    """The metric families the rules read (recorded series aside)."""
    recorded = set(records(groups))
    used = set()
    for group in groups:
        for rule in group["rules"]:
            used |= metric_names(rule["expr"])
    return used - recorded


# --------------------------------------------------------------------------
# the rule groups on their own


def check_groups(groups: list[dict[str, Any]], runbook: str, source: str) -> None:
    problems: list[str] = []
    names = [r.get("alert") or r.get("record") for g in groups for r in g.get("rules", [])]
    if len(names) != len(set(names)):
        problems.append(f"rule names repeat: {sorted(names)}")
    for name in records(groups):
        if name.count(":") != 2:
            problems.append(f"recording rule {name}: not named level:metric:operations")
    found = alerts(groups)
    wanted = {name for name, _ in ALERTS.values()}
    if set(found) != wanted:
        problems.append(f"alerts {sorted(found)}, expected {sorted(wanted)}")
    for name, rule in found.items():
        where = f"alert {name}"
        if not name.startswith(PREFIX):
            problems.append(f"{where}: not prefixed {PREFIX}")
        if not rule.get("for"):
            problems.append(f"{where}: no `for`")
        if not (rule.get("labels") or {}).get("severity"):
            problems.append(f"{where}: no severity label")
        notes = rule.get("annotations") or {}
        if set(notes) != ANNOTATIONS:
            problems.append(f"{where}: annotations {sorted(notes)}, expected {sorted(ANNOTATIONS)}")
            continue
        if notes["runbook_url"] != f"{runbook}#{anchor(name)}":
            problems.append(f"{where}: runbook_url {notes['runbook_url']}, expected {runbook}#{anchor(name)}")
        if "kubectl " not in notes["description"] and "local-pv-provisioner status" not in notes["description"]:
            problems.append(f"{where}: the description names no command to run")
        if "\n" in notes["summary"] or len(notes["summary"]) > 120:
            problems.append(f"{where}: the summary is not one short line")
    if problems:
        raise RulesProblem(f"{source}:\n  - " + "\n  - ".join(problems))


def check_defaults(groups: list[dict[str, Any]], defaults: dict[str, Any]) -> None:
    """The default rendering follows values.yaml's alerts and uses the
    usual severities."""
    problems: list[str] = []
    found = alerts(groups)
    for key, (name, extras) in ALERTS.items():
        values, rule = defaults["alerts"][key], found[name]
        if rule["for"] != values["for"] or rule["labels"]["severity"] != values["severity"]:
            problems.append(f"{name}: for/severity {rule['for']}/{rule['labels']['severity']}, values say {values['for']}/{values['severity']}")
        if values["severity"] not in SEVERITIES:
            problems.append(f"{name}: default severity {values['severity']} is not one of {sorted(SEVERITIES)}")
        for extra in extras:
            if f"[{values[extra]}]" not in rule["expr"] and f"offset {values[extra]}" not in rule["expr"]:
                problems.append(f"{name}: {extra} {values[extra]} is not in its expression")
    if problems:
        raise RulesProblem("chart (default values):\n  - " + "\n  - ".join(problems))


# --------------------------------------------------------------------------
# the chart and kustomize


def the_rule(docs: list[dict[str, Any]], source: str) -> dict[str, Any]:
    found = rules_of(docs)
    if len(found) != 1:
        raise RulesProblem(f"{source}: renders {len(found)} {KIND}s, expected 1")
    rule = found[0]
    if rule.get("apiVersion") != "monitoring.coreos.com/v1":
        raise RulesProblem(f"{source}: apiVersion {rule.get('apiVersion')}, expected monitoring.coreos.com/v1")
    return rule


def check_chart(render: Render, release: str, namespace: str, defaults: dict[str, Any]) -> list[dict[str, Any]]:
    """The chart's PrometheusRule off, on, with custom values and without
    node-cleanup; returns the default rule groups."""
    if rules_of(render(None)):
        raise RulesProblem(f"the default render has a {KIND}; it must be opt-in")
    if rules_of(render({"prometheusRule": {"enabled": False}})):
        raise RulesProblem(f"prometheusRule.enabled=false still renders the {KIND}")
    on = the_rule(render({"prometheusRule": {"enabled": True}}), "prometheusRule.enabled=true")
    meta = on["metadata"]
    labels = meta.get("labels") or {}
    if (meta["name"], meta.get("namespace")) != (release, namespace) or labels.get("app.kubernetes.io/instance") != release:
        raise RulesProblem(f"enabled: {meta.get('namespace')}/{meta['name']} labelled {labels}, expected {namespace}/{release} of the release")
    groups = on["spec"]["groups"]
    check_groups(groups, RUNBOOK, "chart (default values)")
    check_defaults(groups, defaults["prometheusRule"])
    if NODE_CLEANUP_GROUP not in [g["name"] for g in groups]:
        raise RulesProblem(f"enabled: no group {NODE_CLEANUP_GROUP} although nodeCleanup.enabled is true")

    custom = the_rule(render({"prometheusRule": CUSTOM}, name="custom", namespace="storage"), "custom values")
    problems: list[str] = []
    meta = custom["metadata"]
    if meta.get("namespace") != "monitoring" or (meta.get("labels") or {}).get("release") != "prometheus":
        problems.append(f"namespace {meta.get('namespace')} or labels {meta.get('labels')} not applied")
    check_groups(custom["spec"]["groups"], CUSTOM["runbookUrl"], "chart (custom values)")
    found = alerts(custom["spec"]["groups"])
    for key, (name, extras) in ALERTS.items():
        values, rule = CUSTOM["alerts"][key], found[name]
        want = {"severity": "critical", "team": "storage"}
        if rule["for"] != values["for"] or rule["labels"] != want:
            problems.append(f"{name}: for {rule['for']} labels {rule['labels']}, expected {values['for']} {want}")
        for extra in extras:
            if values[extra] not in rule["expr"]:
                problems.append(f"{name}: {extra} {values[extra]} not in its expression")
        text = rule["annotations"]["description"] + rule["annotations"]["summary"]
        for said in [k for k in ("for",) if key not in FOR_NOT_SAID] + list(extras):
            if values[said] not in text:
                problems.append(f"{name}: its description does not say {said} ({values[said]})")
    if "storage" not in found["LPPProvisionerAbsent"]["annotations"]["description"]:
        problems.append("LPPProvisionerAbsent: the description does not name the release namespace")
    if problems:
        raise RulesProblem("custom values:\n  - " + "\n  - ".join(problems))

    without = the_rule(render({"prometheusRule": {"enabled": True}, "nodeCleanup": {"enabled": False}}), "without node-cleanup")
    if NODE_CLEANUP_GROUP in [g["name"] for g in without["spec"]["groups"]]:
        raise RulesProblem(f"nodeCleanup.enabled=false still renders the group {NODE_CLEANUP_GROUP}")

    # nodeGonePvsWaiting.for must outlast the grace (decimal Go durations too).
    for grace, wait, ok in (("1h", "30m", False), ("30m", "30m", False), ("1.5h", "2h", True), ("1h30m", "91m", True), ("1h30m", "90m", False)):
        values = {"prometheusRule": {"enabled": True, "alerts": {"nodeGonePvsWaiting": {"for": wait}}},
                  "nodeCleanup": {"nodeGoneGrace": grace}}
        try:
            render(values)
        except Exception as err:  # noqa: BLE001 - the render's own error type
            if ok or "must be longer than nodeCleanup.nodeGoneGrace" not in str(err):
                raise RulesProblem(f"nodeGoneGrace {grace}, nodeGonePvsWaiting.for {wait}: {err}") from err
        else:
            if not ok:
                raise RulesProblem(f"nodeGoneGrace {grace} with nodeGonePvsWaiting.for {wait} was rendered; it must be refused")
    return groups


def check_kustomize(kustomize: Kustomize, chart_groups: list[dict[str, Any]], namespace: str) -> None:
    rule = the_rule(kustomize("config/prometheus"), "config/prometheus")
    if rule["metadata"].get("namespace") != namespace:
        raise RulesProblem(f"config/prometheus: {KIND} in namespace {rule['metadata'].get('namespace')}, expected {namespace}")
    if rule["spec"]["groups"] != chart_groups:
        raise RulesProblem("config/prometheus and the chart (default values) differ in spec.groups:\n"
                           + diff(chart_groups, rule["spec"]["groups"], "chart", "config/prometheus"))


def diff(a: Any, b: Any, a_name: str, b_name: str) -> str:
    import difflib

    dump = lambda x: yaml.safe_dump(x, sort_keys=True, width=1000).splitlines()  # noqa: E731
    return "\n".join(difflib.unified_diff(dump(a), dump(b), a_name, b_name, lineterm=""))


# --------------------------------------------------------------------------
# the tests and the documentation


def check_tests(root: Path, groups: list[dict[str, Any]]) -> str:
    """Each alert has a test case that fires it and one that does not, each
    recording rule an expression test; every test file reads the rules file."""
    files = sorted((root / TESTS).glob("*.yaml"))
    if not files:
        raise RulesProblem(f"no promtool tests in {TESTS}")
    firing: set[str] = set()
    silent: set[str] = set()
    exprs: list[str] = []
    problems: list[str] = []
    known = set(alerts(groups))
    for path in files:
        doc = yaml.safe_load(path.read_text()) or {}
        if doc.get("rule_files") != [RULES_FROM_TESTS]:
            problems.append(f"{path.name}: rule_files {doc.get('rule_files')}, expected [{RULES_FROM_TESTS}]")
        for case in doc.get("tests") or []:
            for test in case.get("alert_rule_test") or []:
                name = test.get("alertname")
                if name not in known:
                    problems.append(f"{path.name}: a test of an unknown alert {name}")
                (firing if test.get("exp_alerts") else silent).add(name)
            exprs += [t.get("expr", "") for t in case.get("promql_expr_test") or []]
    for name in sorted(known):
        if name not in firing:
            problems.append(f"{name}: no test case fires it")
        if name not in silent:
            problems.append(f"{name}: no test case where it does not fire")
    for name in records(groups):
        if not any(name in expr for expr in exprs):
            problems.append(f"recording rule {name}: no promql_expr_test reads it")
    if problems:
        raise RulesProblem(f"{TESTS}:\n  - " + "\n  - ".join(problems))
    return f"{len(files)} test files cover {len(known)} alerts both ways"


def headings(markdown: str) -> set[str]:
    """GitHub's anchors of a Markdown text's headings."""
    out = set()
    for title in re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower().replace("`", ""))
        out.add(slug.replace(" ", "-"))
    return out


def check_docs(root: Path, groups: list[dict[str, Any]]) -> str:
    readme = (root / "README.md").read_text()
    documented = set(re.findall(r"\b(local_pv_provisioner_[a-z0-9_]+)", readme))
    used = families(groups)
    unknown = sorted(used - documented - EXTERNAL_FAMILIES)
    if unknown:
        raise RulesProblem(f"the rules read families README.md does not document: {unknown}")
    anchors = headings(readme)
    if not any(a == "runbook" or a.startswith("runbook-") for a in anchors):
        return f"{len(used)} families, all documented; README.md has no runbook section yet: anchors not checked"
    missing = sorted(anchor(name) for name in alerts(groups) if anchor(name) not in anchors)
    if missing:
        raise RulesProblem(f"README.md has no heading for the runbook anchors {missing}")
    return f"{len(used)} families, all documented; every runbook anchor is a README heading"


# --------------------------------------------------------------------------
# the rules file


def write_rules(groups: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ("# Generated by .ci/check_deploy.py from the chart's PrometheusRule (default\n"
              "# values), equal to config/prometheus: do not edit. Read by promtool and tests/prometheus.\n")
    path.write_text(header + yaml.safe_dump({"groups": copy.deepcopy(groups)}, sort_keys=False, width=1000))


def promtool_check(path: Path) -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        return "promtool not on PATH: `promtool check rules` not run here (.ci/run runs it)"
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RulesProblem(f"promtool check rules {path}:\n{(proc.stdout + proc.stderr).strip()}")
    return "promtool check rules: clean"


def check_all(root: Path, render: Render, kustomize: Kustomize, release: str, namespace: str,
              defaults: dict[str, Any], out: Path) -> str:
    """Every check above; writes the rules file (removes a stale one first,
    so that no test reads rules that did not pass)."""
    out.unlink(missing_ok=True)
    groups = check_chart(render, release, namespace, defaults)
    check_kustomize(kustomize, groups, namespace)
    tests = check_tests(root, groups)
    docs = check_docs(root, groups)
    write_rules(groups, out)
    try:
        tool = promtool_check(out)
    except RulesProblem:
        out.unlink(missing_ok=True)
        raise
    rules = sum(len(g["rules"]) for g in groups)
    return (f"off by default; on: {rules} rules in {len(groups)} groups, equal in config/prometheus, "
            f"written to {out.relative_to(root) if out.is_relative_to(root) else out}; {tests}; {docs}; {tool}")
