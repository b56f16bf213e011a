"""A plain evaluator of Kubernetes RBAC over raw manifests, the reference the tests hold raygate to.

Written from Kubernetes' documentation and its authorizer's behaviour (plugin/pkg/auth/authorizer/
rbac): ClusterRoleBindings apply everywhere, RoleBindings only to resource requests in their own
namespace, and a PolicyRule matches field by field. It shares nothing with raygate but the
manifests and the Attributes type that carries a request.
"""

from __future__ import annotations

from typing import Any

from raygate.identity import Attributes, Identity


def _key(doc: dict[str, Any]) -> tuple[str, str, str]:
    return doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"]


def latest(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One object per kind/namespace/name, the last one applied (as a store keeps them)."""
    return list({_key(d): d for d in docs}.values())


def subject_is(subject: dict[str, Any], identity: Identity) -> bool:
    if subject["kind"] == "User":
        return subject["name"] == identity.user
    if subject["kind"] == "Group":
        return subject["name"] in identity.groups
    return identity.user == f"system:serviceaccount:{subject['namespace']}:{subject['name']}"


def rule_grants(rule: dict[str, Any], request: Attributes) -> bool:
    if "*" not in rule["verbs"] and request.verb not in rule["verbs"]:
        return False
    if not request.resource_request:
        for url in rule.get("nonResourceURLs", []):
            if url == "*" or url == request.path:
                return True
            if url.endswith("*") and request.path.startswith(url.rstrip("*")):
                return True
        return False
    groups = rule.get("apiGroups", [])
    if "*" not in groups and request.api_group not in groups:
        return False
    wanted = request.resource + ("/" + request.subresource if request.subresource else "")
    resources = rule.get("resources", [])
    if not (
        "*" in resources
        or wanted in resources
        or (request.subresource and "*/" + request.subresource in resources)
    ):
        return False
    names = rule.get("resourceNames", [])
    return not names or request.name in names


def reference_allows(docs: list[dict[str, Any]], request: Attributes) -> bool:
    namespace = request.namespace if request.resource_request else ""
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]): d["rules"]
             for d in docs if d["kind"] == "Role"}  # fmt: skip
    cluster_roles = {d["metadata"]["name"]: d["rules"] for d in docs if d["kind"] == "ClusterRole"}
    for doc in docs:
        if doc["kind"] == "ClusterRoleBinding":
            binding_namespace = ""
        elif (
            doc["kind"] == "RoleBinding" and namespace and doc["metadata"]["namespace"] == namespace
        ):
            binding_namespace = namespace
        else:
            continue
        if not any(subject_is(s, request.identity) for s in doc["subjects"]):
            continue
        ref = doc["roleRef"]
        if ref["kind"] == "Role":
            rules = roles.get((binding_namespace, ref["name"]), [])
        else:
            rules = cluster_roles.get(ref["name"], [])
        if any(rule_grants(rule, request) for rule in rules):
            return True
    return False
