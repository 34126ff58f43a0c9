"""Checks of the node restriction (ValidatingAdmissionPolicy and binding) for
.ci/check_deploy.py, which imports this module and turns a PolicyProblem into
a failed check.

Each rendering (chart with default and with custom values, config/default,
and config/default with its namespace edited) must hold exactly one policy
and one binding that binds it with [Deny], fail closed, match only
PersistentVolume writes of the DaemonSet's ServiceAccount, and give every
validation the reason Forbidden and a message. The chart and kustomize
policies must be identical apart from their labels. tests/admission_policy.rs
evaluates the expressions; it reads the renderings from the file this module
writes (policy_dump).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

POLICY = "ValidatingAdmissionPolicy"
BINDING = "ValidatingAdmissionPolicyBinding"
KINDS = {POLICY, BINDING}
MATCH_CONDITION = "provisioner-service-account"


class PolicyProblem(Exception):
    """A rendering's policy is wrong; the message says how."""


def pair(objs: dict[str, list[dict[str, Any]]], source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The one policy and the one binding of a rendering."""
    found = {kind: objs.get(kind, []) for kind in KINDS}
    if any(len(docs) != 1 for docs in found.values()):
        counts = {kind: len(docs) for kind, docs in found.items()}
        raise PolicyProblem(f"{source}: expected one {POLICY} and one {BINDING}, found {counts}")
    return found[POLICY][0], found[BINDING][0]


def username_expression(namespace: str, service_account: str) -> str:
    """The match condition naming the ServiceAccount, as both renderings write it."""
    return (
        "request.userInfo.username == 'system:serviceaccount:' + "
        f"'{namespace}' + ':' + '{service_account}'"
    )


def check_invariants(objs: dict[str, list[dict[str, Any]]], source: str) -> None:
    """Properties each rendering must have on its own."""
    policy, binding = pair(objs, source)
    problems: list[str] = []
    name = policy["metadata"]["name"]
    spec = policy["spec"]
    if binding["spec"] != {"policyName": name, "validationActions": ["Deny"]}:
        problems.append(f"the binding must bind {name} with validationActions [Deny] and nothing else")
    if spec.get("failurePolicy") != "Fail" or "paramKind" in spec:
        problems.append("the policy must have failurePolicy Fail and no paramKind")
    rules = spec.get("matchConstraints", {}).get("resourceRules")
    want_rules = [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE", "DELETE"],
                   "resources": ["persistentvolumes"]}]
    if rules != want_rules:
        problems.append(f"the policy must match exactly {want_rules}, not {rules}")
    for index, validation in enumerate(spec.get("validations") or []):
        if validation.get("reason") != "Forbidden" or not validation.get("message"):
            problems.append(f"validation {index} needs reason Forbidden (a 403) and a message")
    ds = objs["DaemonSet"][0]
    sa = ds["spec"]["template"]["spec"]["serviceAccountName"]
    ns = ds["metadata"]["namespace"]
    want = [{"name": MATCH_CONDITION, "expression": username_expression(ns, sa)}]
    if spec.get("matchConditions") != want:
        problems.append(f"matchConditions must be exactly {want} (the DaemonSet's ServiceAccount {ns}/{sa})")
    if problems:
        raise PolicyProblem(f"{source}:\n  " + "\n  ".join(problems))


def view(objs: dict[str, list[dict[str, Any]]], source: str) -> dict[str, Any]:
    """What must not differ between chart and kustomize: names and specs."""
    policy, binding = pair(objs, source)
    return {
        "policy": {"name": policy["metadata"]["name"], "spec": policy["spec"]},
        "binding": {"name": binding["metadata"]["name"], "spec": binding["spec"]},
    }


def dump(chart: dict[str, list[dict[str, Any]]], kust: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The renderings tests/admission_policy.rs evaluates."""
    out: dict[str, Any] = {}
    for label, objs in (("chart", chart), ("kustomize", kust)):
        policy, binding = pair(objs, label)
        out[label] = {"policy": policy, "binding": binding}
    return out


def check_edited_namespace(root: Path, render: Callable[[str], list[dict[str, Any]]],
                           by_kind: Callable[[list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]) -> None:
    """config/default with another namespace (as `kustomize edit set
    namespace` leaves it): the replacements keep the policy's user in step."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "config"
        shutil.copytree(root / "config", copy)
        kustomization = copy / "default" / "kustomization.yaml"
        text = kustomization.read_text()
        edited = text.replace("namespace: local-pv-provisioner\n", "namespace: storage-system\n", 1)
        if edited == text:
            raise PolicyProblem("config/default/kustomization.yaml has no `namespace: local-pv-provisioner` line")
        kustomization.write_text(edited)
        objs = by_kind(render(str(copy / "default")))
    check_invariants(objs, "config/default in namespace storage-system")
    if objs["DaemonSet"][0]["metadata"]["namespace"] != "storage-system":
        raise PolicyProblem("the namespace edit of config/default was not applied")

