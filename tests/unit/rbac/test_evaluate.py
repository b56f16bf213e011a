"""Rule predicates: the tables Kubernetes' evaluation_helpers tests would hold."""

from __future__ import annotations

import pytest

from raygate.identity import Attributes, Identity
from raygate.objects import PolicyRule
from raygate.rbac.evaluate import (
    api_group_matches,
    describe_rule,
    non_resource_url_matches,
    resource_matches,
    resource_name_matches,
    rule_allows,
    verb_matches,
)


def resource_rule(
    verbs: list[str],
    resources: list[str],
    groups: list[str] | None = None,
    names: list[str] | None = None,
) -> PolicyRule:
    return PolicyRule.model_validate(
        {
            "verbs": verbs,
            "apiGroups": [""] if groups is None else groups,
            "resources": resources,
            "resourceNames": names or [],
        }
    )


def url_rule(verbs: list[str], urls: list[str]) -> PolicyRule:
    return PolicyRule.model_validate({"verbs": verbs, "nonResourceURLs": urls})


ALICE = Identity(user="alice")


@pytest.mark.parametrize(
    ("rule_verbs", "verb", "expected"),
    [
        (["get"], "get", True),
        (["get", "list"], "list", True),
        (["get"], "list", False),
        (["*"], "delete", True),
        (["*"], "ray:write", True),
        (["Get"], "get", False),  # verbs are case-sensitive
        (["get"], "", False),
    ],
)
def test_verb_matches(rule_verbs: list[str], verb: str, expected: bool) -> None:
    assert verb_matches(resource_rule(rule_verbs, ["pods"]), verb) is expected


@pytest.mark.parametrize(
    ("groups", "group", "expected"),
    [
        ([""], "", True),
        ([""], "ray.io", False),
        (["ray.io"], "ray.io", True),
        (["ray.io"], "", False),
        (["apps", "ray.io"], "ray.io", True),
        (["*"], "ray.io", True),
        (["*"], "", True),
        (["ray.*"], "ray.io", False),  # no wildcards inside a group name
    ],
)
def test_api_group_matches(groups: list[str], group: str, expected: bool) -> None:
    assert api_group_matches(resource_rule(["get"], ["pods"], groups), group) is expected


@pytest.mark.parametrize(
    ("resources", "resource", "subresource", "expected"),
    [
        (["rayclusters"], "rayclusters", "", True),
        (["rayclusters"], "rayjobs", "", False),
        # a bare resource does not cover its subresources
        (["rayclusters"], "rayclusters", "jobs", False),
        (["rayclusters/jobs"], "rayclusters", "jobs", True),
        (["rayclusters/jobs"], "rayclusters", "", False),
        (["rayclusters/jobs"], "rayclusters", "serve", False),
        (["rayclusters/jobs"], "rayjobs", "jobs", False),
        # `*` covers every resource and every subresource
        (["*"], "rayclusters", "", True),
        (["*"], "rayclusters", "jobs", True),
        # `*/sub` covers that subresource of any resource, and nothing else
        (["*/jobs"], "rayclusters", "jobs", True),
        (["*/jobs"], "rayservices", "jobs", True),
        (["*/jobs"], "rayclusters", "", False),
        (["*/jobs"], "rayclusters", "serve", False),
        (["*/jobs"], "rayclusters", "myjobs", False),
        (["*/status"], "pods", "status", True),
        (["pods", "rayclusters/jobs"], "rayclusters", "jobs", True),
        (["rayclusters/*"], "rayclusters", "jobs", False),  # no `res/*` form in Kubernetes
    ],
)
def test_resource_matches(
    resources: list[str], resource: str, subresource: str, expected: bool
) -> None:
    rule = resource_rule(["get"], resources)
    assert resource_matches(rule, resource, subresource) is expected


@pytest.mark.parametrize(
    ("names", "name", "expected"),
    [
        ([], "anything", True),
        ([], "", True),
        (["ray-cluster-with-auth"], "ray-cluster-with-auth", True),
        (["ray-cluster-with-auth"], "other", False),
        # a request without a name (list, create) is not covered by a name-restricted rule
        (["ray-cluster-with-auth"], "", False),
        (["a", "b"], "b", True),
    ],
)
def test_resource_name_matches(names: list[str], name: str, expected: bool) -> None:
    assert resource_name_matches(resource_rule(["get"], ["pods"], names=names), name) is expected


@pytest.mark.parametrize(
    ("urls", "path", "expected"),
    [
        (["/healthz"], "/healthz", True),
        (["/healthz"], "/healthz/ready", False),
        (["/healthz"], "/health", False),
        (["*"], "/anything/at/all", True),
        (["/api/*"], "/api/jobs/", True),
        (["/api/*"], "/api/", True),
        (["/api/*"], "/api", False),
        (["/api*"], "/api", True),
        (["/api*"], "/apis/x", True),
        (["/api**"], "/api", True),  # every trailing star is stripped
        (["/logs", "/api/*"], "/api/version", True),
        (["/api/*/logs"], "/api/jobs/logs", False),  # a star matters only at the end
    ],
)
def test_non_resource_url_matches(urls: list[str], path: str, expected: bool) -> None:
    assert non_resource_url_matches(url_rule(["get"], urls), path) is expected


GUIDE_RULE = resource_rule(["*"], ["rayclusters"], ["ray.io"], ["ray-cluster-with-auth"])


@pytest.mark.parametrize(
    ("rule", "attributes", "expected"),
    [
        (
            GUIDE_RULE,
            Attributes(ALICE, "get", api_group="ray.io", resource="rayclusters",
                       name="ray-cluster-with-auth", namespace="default"),
            True,
        ),
        (
            GUIDE_RULE,
            Attributes(ALICE, "get", api_group="", resource="rayclusters",
                       name="ray-cluster-with-auth"),
            False,
        ),
        (
            GUIDE_RULE,
            Attributes(ALICE, "get", api_group="ray.io", resource="rayclusters", name="other"),
            False,
        ),
        (
            GUIDE_RULE,
            Attributes(ALICE, "create", api_group="ray.io", resource="rayclusters",
                       subresource="jobs", name="ray-cluster-with-auth"),
            False,
        ),
        (
            resource_rule(["create"], ["rayclusters/jobs"], ["ray.io"]),
            Attributes(ALICE, "create", api_group="ray.io", resource="rayclusters",
                       subresource="jobs", name="c"),
            True,
        ),
        (
            resource_rule(["get"], ["*"], ["*"]),
            Attributes(ALICE, "delete", api_group="ray.io", resource="rayclusters"),
            False,
        ),
        # a resource rule never allows a non-resource request, and the other way round
        (
            resource_rule(["*"], ["*"], ["*"]),
            Attributes(ALICE, "get", resource_request=False, path="/healthz"),
            False,
        ),
        (
            url_rule(["*"], ["*"]),
            Attributes(ALICE, "get", api_group="", resource="pods", namespace="default"),
            False,
        ),
        (
            url_rule(["get"], ["/healthz"]),
            Attributes(ALICE, "get", resource_request=False, path="/healthz"),
            True,
        ),
        (
            url_rule(["get"], ["/healthz"]),
            Attributes(ALICE, "post", resource_request=False, path="/healthz"),
            False,
        ),
    ],
)
def test_rule_allows(rule: PolicyRule, attributes: Attributes, expected: bool) -> None:
    assert rule_allows(rule, attributes) is expected


@pytest.mark.parametrize(
    ("rule", "text"),
    [
        (
            resource_rule(["*"], ["rayclusters"], ["ray.io"]),
            'apiGroups=["ray.io"] resources=["rayclusters"] verbs=["*"]',
        ),
        (
            GUIDE_RULE,
            'apiGroups=["ray.io"] resources=["rayclusters"] '
            'resourceNames=["ray-cluster-with-auth"] verbs=["*"]',
        ),
        (
            url_rule(["get", "head"], ["/healthz"]),
            'nonResourceURLs=["/healthz"] verbs=["get", "head"]',
        ),
    ],
)
def test_describe_rule_names_fields_in_manifest_spelling(rule: PolicyRule, text: str) -> None:
    assert describe_rule(rule) == text
