"""Checks of the node restriction (ValidatingAdmissionPolicy and binding) for
.ci/check_deploy.py, which imports this module and turns a PolicyProblem into
a failed check.

Each rendering (chart with default and with custom values, config/default,
and config/default with its namespace edited) must hold exactly one policy
and one binding that binds it with [Deny], fail closed, match only
PersistentVolume writes of the DaemonSet's ServiceAccount, and give every
validation the reason Forbidden and a message. Where node-cleanup is
rendered (its objects carry the label app.kubernetes.io/component:
node-cleanup), the same holds for its restriction: one more policy and
binding, labelled so, matching only the node-cleanup Deployment's
ServiceAccount. The chart and kustomize policies must be identical apart
from their labels. tests/admission_policy.rs evaluates the expressions; it
reads the renderings from the file this module writes (policy_dump).
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
NODE_CLEANUP_MATCH_CONDITION = "node-cleanup-service-account"
COMPONENT = "app.kubernetes.io/component"
NODE_CLEANUP = "node-cleanup"


class PolicyProblem(Exception):
    """A rendering's policy is wrong; the message says how."""


def component(doc: dict[str, Any]) -> str | None:
    """The app.kubernetes.io/component label of an object (None: the provisioner's)."""
    return (doc.get("metadata", {}).get("labels") or {}).get(COMPONENT)


def pair(objs: dict[str, list[dict[str, Any]]], source: str,
         part: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The one policy and the one binding of a rendering (of node-cleanup
    with part=NODE_CLEANUP)."""
    found = {kind: [d for d in objs.get(kind, []) if component(d) == part] for kind in KINDS}
    if any(len(docs) != 1 for docs in found.values()):
        counts = {kind: len(docs) for kind, docs in found.items()}
        what = f" of {part}" if part else ""
        raise PolicyProblem(f"{source}: expected one {POLICY} and one {BINDING}{what}, found {counts}")
    return found[POLICY][0], found[BINDING][0]


def has_node_cleanup(objs: dict[str, list[dict[str, Any]]]) -> bool:
    """Whether a rendering holds the node-cleanup Deployment."""
    return any(component(d) == NODE_CLEANUP for d in objs.get("Deployment", []))


def username_expression(namespace: str, service_account: str) -> str:
    """The match condition naming the ServiceAccount, as both renderings write it."""
    return (
        "request.userInfo.username == 'system:serviceaccount:' + "
        f"'{namespace}' + ':' + '{service_account}'"
    )


def check_invariants(objs: dict[str, list[dict[str, Any]]], source: str) -> None:
    """Properties each rendering must have on its own."""
    check_policy_of(objs, source, None)
    if has_node_cleanup(objs):
        check_policy_of(objs, source, NODE_CLEANUP)
    elif any(component(d) == NODE_CLEANUP for kind in KINDS for d in objs.get(kind, [])):
        raise PolicyProblem(f"{source}: a node-cleanup policy without the node-cleanup Deployment")


def check_policy_of(objs: dict[str, list[dict[str, Any]]], source: str, part: str | None) -> None:
    """The policy of the provisioner (part None) or of node-cleanup."""
    policy, binding = pair(objs, source, part)
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
    if part is None:
        # The provisioner's policy covers its node's LocalDisks too.
        want_rules.append({"apiGroups": ["local-pv-provisioner.cybozu.io"], "apiVersions": ["v1alpha1"],
                           "operations": ["CREATE", "UPDATE", "DELETE"],
                           "resources": ["localdisks", "localdisks/status"]})
    if rules != want_rules:
        problems.append(f"the policy must match exactly {want_rules}, not {rules}")
    for index, validation in enumerate(spec.get("validations") or []):
        if validation.get("reason") != "Forbidden" or not validation.get("message"):
            problems.append(f"validation {index} needs reason Forbidden (a 403) and a message")
    if part is None:
        workload, condition = objs["DaemonSet"][0], MATCH_CONDITION
    else:
        workload = next(d for d in objs["Deployment"] if component(d) == part)
        condition = NODE_CLEANUP_MATCH_CONDITION
    sa = workload["spec"]["template"]["spec"]["serviceAccountName"]
    ns = workload["metadata"]["namespace"]
    want = [{"name": condition, "expression": username_expression(ns, sa)}]
    if spec.get("matchConditions") != want:
        problems.append(f"matchConditions must be exactly {want} (the {workload['kind']}'s ServiceAccount {ns}/{sa})")
    if problems:
        raise PolicyProblem(f"{source}:\n  " + "\n  ".join(problems))


def view(objs: dict[str, list[dict[str, Any]]], source: str) -> dict[str, Any]:
    """What must not differ between chart and kustomize: names and specs."""
    out: dict[str, Any] = {}
    parts = [(None, out)]
    if has_node_cleanup(objs):
        out["nodeCleanup"] = {}
        parts.append((NODE_CLEANUP, out["nodeCleanup"]))
    for part, into in parts:
        policy, binding = pair(objs, source, part)
        into["policy"] = {"name": policy["metadata"]["name"], "spec": policy["spec"]}
        into["binding"] = {"name": binding["metadata"]["name"], "spec": binding["spec"]}
    return out


def dump(chart: dict[str, list[dict[str, Any]]], kust: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The renderings tests/admission_policy.rs evaluates: per source the
    provisioner's policy and binding, and node-cleanup's under nodeCleanup."""
    out: dict[str, Any] = {}
    for label, objs in (("chart", chart), ("kustomize", kust)):
        policy, binding = pair(objs, label)
        out[label] = {"policy": policy, "binding": binding}
        if has_node_cleanup(objs):
            policy, binding = pair(objs, label, NODE_CLEANUP)
            out[label]["nodeCleanup"] = {"policy": policy, "binding": binding}
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
    if not has_node_cleanup(objs):
        raise PolicyProblem("config/default in namespace storage-system has no node-cleanup Deployment")

