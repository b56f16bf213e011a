"""Kubernetes objects: those kube-apiserver refuses are refused on apply (its ValidateRole,
ValidateClusterRole, ValidatePolicyRule, ValidateRoleBinding, label selector and label checks),
and ServiceAccount `secrets` and `imagePullSecrets` are typed as Kubernetes' ObjectReference and
LocalObjectReference, not arbitrary nested data."""

from __future__ import annotations

import io
from typing import Any

import pytest

from raygate.errors import ManifestError
from raygate.objects import ClusterRole, Role, ServiceAccount, parse_object, to_manifest
from raygate.store.manifests import load_manifests

RBAC = "rbac.authorization.k8s.io/v1"
REF = {"apiGroup": "rbac.authorization.k8s.io"}
URL_RULE = {"verbs": ["get"], "nonResourceURLs": ["/healthz"]}
POD_RULE = {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}


def role(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": RBAC, "kind": "Role", "metadata": {"name": "r", "namespace": "default"},
            "rules": list(rules)}


def cluster_role(*rules: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"apiVersion": RBAC, "kind": "ClusterRole", "metadata": {"name": "c"},
            "rules": list(rules), **extra}


def aggregated(*selectors: dict[str, Any]) -> dict[str, Any]:
    return cluster_role(aggregationRule={"clusterRoleSelectors": list(selectors)})


def role_binding(kind: str, ref_kind: str, ref_name: str, *subjects: dict[str, Any]) -> dict:
    meta: dict[str, Any] = {"name": "b"}
    if kind == "RoleBinding":
        meta["namespace"] = "default"
    return {"apiVersion": RBAC, "kind": kind, "metadata": meta,
            "roleRef": {**REF, "kind": ref_kind, "name": ref_name},
            "subjects": list(subjects) or [{**REF, "kind": "User", "name": "alice"}]}


@pytest.mark.parametrize(
    ("doc", "field", "message"),
    [
        (role(URL_RULE), "rules[0].nonResourceURLs",
         "namespaced rules cannot apply to non-resource URLs"),
        (role(POD_RULE, URL_RULE), "rules[1].nonResourceURLs",
         "namespaced rules cannot apply to non-resource URLs"),
        (cluster_role({**URL_RULE, "resourceNames": ["x"]}), "rules[0].nonResourceURLs",
         "rules cannot apply to both regular resources and non-resource URLs"),
        (cluster_role(aggregationRule={"clusterRoleSelectors": []}),
         "aggregationRule.clusterRoleSelectors", "at least one clusterRoleSelector required"),
        (cluster_role(aggregationRule={}),
         "aggregationRule.clusterRoleSelectors", "at least one clusterRoleSelector required"),
        (aggregated({"matchExpressions": [{"key": "k", "operator": "In"}]}),
         "aggregationRule.clusterRoleSelectors[0].matchExpressions[0].values",
         "must be specified when `operator` is 'In' or 'NotIn'"),
        (aggregated({"matchExpressions": [{"key": "k", "operator": "Exists", "values": ["v"]}]}),
         "aggregationRule.clusterRoleSelectors[0].matchExpressions[0].values",
         "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"),
        (aggregated({"matchLabels": {"bad key!": "v"}}),
         "aggregationRule.clusterRoleSelectors[0].matchLabels", "label key 'bad key!'"),
        (aggregated({"matchLabels": {"k": "-bad"}}),
         "aggregationRule.clusterRoleSelectors[0].matchLabels", "label value '-bad'"),
        (aggregated({"matchExpressions": [{"key": "Not_A/dns/k", "operator": "Exists"}]}),
         "aggregationRule.clusterRoleSelectors[0].matchExpressions[0].key", "label key"),
        ({**cluster_role(POD_RULE), "metadata": {"name": "c", "labels": {"a/b/c": "v"}}},
         "metadata.labels", "label key 'a/b/c'"),
        (role_binding("ClusterRoleBinding", "Role", "r"), "roleRef.kind",
         'a ClusterRoleBinding can only refer to a ClusterRole, not "Role"'),
        (role_binding("RoleBinding", "Role", "a/b"), "roleRef.name", "is not a valid name"),
        (role_binding("RoleBinding", "ClusterRole", ".."), "roleRef.name", "is not a valid name"),
        (role_binding("RoleBinding", "Role", "r", {"kind": "ServiceAccount", "name": "Bad_SA"}),
         "subjects[0].name", "ServiceAccount name 'Bad_SA' is not a valid name"),
    ],
    ids=["role-url", "role-second-rule-url", "url-with-resource-names", "empty-selectors",
         "no-selectors", "in-without-values", "exists-with-values", "bad-match-label-key",
         "bad-match-label-value", "bad-expression-key", "bad-metadata-label",
         "cluster-binding-to-role", "role-ref-slash", "role-ref-dotdot", "bad-sa-subject"],
)
def test_refused_like_kube_apiserver(doc: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_object(doc, 0, "m.yaml")
    text = str(caught.value)
    assert text.startswith("m.yaml document 1 (")
    assert f": field {field}: " in text
    assert message in text
    assert "\n" not in text


@pytest.mark.parametrize(
    "doc",
    [
        role(POD_RULE, {**POD_RULE, "resourceNames": ["one", "two"]}),
        role({"verbs": ["get"], "apiGroups": [""], "resources": ["pods", "services"],
              "resourceNames": ["x"]}),  # Kubernetes dropped that restriction long ago
        cluster_role(URL_RULE, POD_RULE),
        aggregated({}),  # an empty selector selects every labelled ClusterRole
        aggregated({"matchLabels": {"rbac.example.com/aggregate-to-ray": "true"}},
                   {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x"]},
                                         {"key": "app", "operator": "DoesNotExist"}]}),
        {**cluster_role(POD_RULE), "metadata": {"name": "system:c", "labels": {"k": ""}}},
        role_binding("RoleBinding", "Role", "r", {"kind": "ServiceAccount", "name": "ray-user"}),
        role_binding("RoleBinding", "ClusterRole", "system:auth-delegator"),
        role_binding("ClusterRoleBinding", "ClusterRole", "view",
                     {"kind": "ServiceAccount", "name": "sa", "namespace": "team-a"}),
    ],
    ids=["resource-names", "names-with-several-resources", "cluster-role-urls",
         "empty-selector", "selectors", "colon-name-empty-label-value", "sa-subject",
         "colon-role-ref", "cluster-binding-sa"],
)
def test_valid_objects_still_pass(doc: dict[str, Any]) -> None:
    assert parse_object(doc).kind == doc["kind"]


def test_role_stored_before_the_rules_still_loads() -> None:
    # Validation is for apply; an object already stored must not make the store unreadable.
    assert Role.model_validate(role(URL_RULE)).rules[0].non_resource_urls == ["/healthz"]
    empty = ClusterRole.model_validate(cluster_role(aggregationRule={"clusterRoleSelectors": []}))
    assert empty.aggregation_rule is not None


SA = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa, namespace: default}\n"



def test_service_account_references_are_typed() -> None:
    text = SA + (
        "secrets:\n- {name: token, namespace: default, kind: Secret, apiVersion: v1,"
        " uid: u, resourceVersion: '1', fieldPath: x}\n"
        "imagePullSecrets:\n- {name: registry}\n"
    )
    (obj,) = load_manifests(["-"], stdin=io.StringIO(text))
    assert isinstance(obj, ServiceAccount)
    assert obj.secrets[0].name == "token" and obj.secrets[0].kind == "Secret"
    assert obj.image_pull_secrets[0].name == "registry"
    printed = to_manifest(obj)  # as `get -o yaml` shows it: camelCase, nothing added
    assert printed["secrets"] == [{"name": "token", "namespace": "default", "kind": "Secret",
                                   "apiVersion": "v1", "uid": "u", "resourceVersion": "1",
                                   "fieldPath": "x"}]
    assert printed["imagePullSecrets"] == [{"name": "registry"}]



@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("secrets:\n- {name: t, nested: {deep: [1, 2, 3]}}\n", "secrets[0].nested"),
        ("secrets:\n- {name: [not, a, string]}\n", "secrets[0].name"),
        ("imagePullSecrets:\n- {name: r, namespace: other}\n", "imagePullSecrets[0].namespace"),
        ("imagePullSecrets:\n- just-a-name\n", "imagePullSecrets[0]"),
    ],
)
def test_service_account_references_refuse_anything_else(extra: str, field: str) -> None:
    with pytest.raises(ManifestError) as caught:
        load_manifests(["-"], stdin=io.StringIO(SA + extra))
    assert f"field {field}" in str(caught.value)

