"""Request -> authorization attributes, by table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, MultiDict
from pydantic import ValidationError

from raygate.authz.attributes import (
    AttributesConfig,
    Profile,
    request_attributes,
    verb_for_method,
)
from raygate.identity import Attributes, service_account_identity

ALICE = service_account_identity("default", "ray-user")

GUIDE = AttributesConfig.model_validate(
    {
        "resourceAttributes": {
            "namespace": "default",
            "apiVersion": "v1",
            "apiGroup": "ray.io",
            "resource": "rayclusters",
            "name": "ray-cluster-with-auth",
        }
    }
)
NON_RESOURCE = AttributesConfig()
RAY_K8S = AttributesConfig.model_validate(
    {"profile": "ray-k8s", "rayCluster": {"name": "ray-cluster-with-k8s-auth", "namespace": "ml"}}
)


def attrs(config: AttributesConfig, method: str = "GET", path: str = "/", query=None, headers=None):
    return request_attributes(ALICE, method, path, query or {}, headers or {}, config)


@pytest.mark.parametrize(
    ("method", "verb"),
    [
        ("GET", "get"),
        ("HEAD", "get"),
        ("OPTIONS", "get"),
        ("POST", "create"),
        ("PUT", "update"),
        ("PATCH", "patch"),
        ("DELETE", "delete"),
        ("TRACE", "trace"),
        ("CONNECT", "connect"),
        ("PROPFIND", "propfind"),
    ],
)
def test_every_method_has_a_verb(method: str, verb: str) -> None:
    assert verb_for_method(method) == verb
    [resource] = attrs(GUIDE, method)
    [non_resource] = attrs(NON_RESOURCE, method)
    assert resource.verb == non_resource.verb == verb


def test_guide_config_gives_one_resource_request_on_the_cluster() -> None:
    assert attrs(GUIDE, "POST", "/api/jobs/") == [
        Attributes(
            identity=ALICE,
            verb="create",
            resource_request=True,
            namespace="default",
            api_group="ray.io",
            api_version="v1",
            resource="rayclusters",
            name="ray-cluster-with-auth",
        )
    ]


@pytest.mark.parametrize(
    "path", ["/logs/a%2Fb", "/api/jobs/../../x", "/a/./b", "//x", "/a%2e%2e/b"]
)
def test_ambiguous_paths_are_refused_as_non_resource_urls(path: str) -> None:
    """A rule `/api/jobs/*` must not allow `/api/jobs/../../x` to an upstream that normalises."""
    with pytest.raises(ValueError, match="ambiguous path"):
        attrs(NON_RESOURCE, "GET", path)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/jobs/", "/api/jobs/"),
        ("/api/jobs/raysubmit_1?limit=5", "/api/jobs/raysubmit_1"),
        ("/logs/a%20b", "/logs/a%20b"),  # raw: what is forwarded is what is checked
        ("", "/"),
    ],
)
def test_without_resource_attributes_the_raw_path_is_a_non_resource_url(
    path: str, expected: str
) -> None:
    [result] = attrs(NON_RESOURCE, "GET", path)
    assert not result.resource_request
    assert result.path == expected
    assert (result.namespace, result.resource, result.name) == ("", "", "")


NAMESPACE_BY_QUERY = AttributesConfig.model_validate(
    {
        "resourceAttributes": {
            "apiVersion": "v1",
            "resource": "namespace",
            "subresource": "metrics",
            "namespace": "{{ .Value }}",
        },
        "rewrites": {"byQueryParameter": {"name": "namespace"}},
    }
)
NAME_BY_HEADER = AttributesConfig.model_validate(
    {
        "resourceAttributes": {
            "namespace": "default",
            "apiGroup": "ray.io",
            "resource": "rayclusters",
            "name": "{{.Value}}",
        },
        "rewrites": {"byHttpHeader": {"name": "X-Ray-Cluster"}},
    }
)
BOTH = AttributesConfig.model_validate(
    {
        "resourceAttributes": {"resource": "rayclusters", "name": "pre-{{.Value}}-post"},
        "rewrites": {"byQueryParameter": {"name": "c"}, "byHttpHeader": {"name": "x-c"}},
    }
)


@pytest.mark.parametrize(
    ("config", "query", "headers", "field", "values"),
    [
        (NAMESPACE_BY_QUERY, {"namespace": ["team-a"]}, {}, "namespace", ["team-a"]),
        (NAMESPACE_BY_QUERY, {"namespace": ["a", "b"]}, {}, "namespace", ["a", "b"]),
        (NAMESPACE_BY_QUERY, {"namespace": [""]}, {}, "namespace", [""]),
        (NAMESPACE_BY_QUERY, {"other": ["x"]}, {}, "namespace", []),
        (
            NAMESPACE_BY_QUERY,
            MultiDict([("namespace", "a"), ("namespace", "bc")]),
            {},
            "namespace",
            ["a", "bc"],
        ),
        (NAMESPACE_BY_QUERY, {"namespace": "abc"}, {}, "namespace", ["abc"]),
        (NAME_BY_HEADER, {}, {"x-ray-cluster": "c1"}, "name", ["c1"]),
        (
            NAME_BY_HEADER,
            {},
            CIMultiDict([("X-Ray-Cluster", "c1"), ("x-ray-cluster", "c2")]),
            "name",
            ["c1", "c2"],
        ),
        (NAME_BY_HEADER, {}, {"X-Other": "c1"}, "name", []),
        # a value is used as is, never as a regex replacement template
        (NAME_BY_HEADER, {}, {"X-Ray-Cluster": r"a\1\g<0>"}, "name", [r"a\1\g<0>"]),
        (BOTH, {"c": ["q"]}, {"X-C": "h"}, "name", ["pre-q-post", "pre-h-post"]),
    ],
)
def test_rewrites_give_one_request_per_value(config, query, headers, field, values) -> None:
    results = attrs(config, "GET", "/", query, headers)
    assert [getattr(a, field) for a in results] == values
    assert all(a.resource_request for a in results)


def test_rewrite_fills_only_templated_fields() -> None:
    [result] = attrs(NAMESPACE_BY_QUERY, "DELETE", "/", {"namespace": ["team-a"]})
    assert (result.verb, result.resource, result.subresource, result.api_version) == (
        "delete",
        "namespace",
        "metrics",
        "v1",
    )


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "PUT", "OPTIONS", "BREW"])
@pytest.mark.parametrize("path", ["/", "/api/jobs/", "/api/version?x=1"])
def test_ray_k8s_profile_is_ray_write_on_the_cluster_for_everything(method: str, path: str) -> None:
    assert attrs(RAY_K8S, method, path) == [
        Attributes(
            identity=ALICE,
            verb="ray:write",
            resource_request=True,
            namespace="ml",
            api_group="ray.io",
            resource="rayclusters",
            name="ray-cluster-with-k8s-auth",
        )
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"profile": "ray-k8s"}, "rayCluster"),
        (
            {
                "profile": "ray-k8s",
                "rayCluster": {"name": "c", "namespace": "n"},
                "resourceAttributes": {"name": "c"},
            },
            "remove resourceAttributes",
        ),
        ({"rewrites": {"byQueryParameter": {"name": "n"}}}, "set resourceAttributes"),
        ({"resourceAttributes": {"name": "{{.Values}}"}}, "unsupported template"),
        ({"resourceAttributes": {"name": "{{ printf .Value }}"}}, "unsupported template"),
        ({"resourceAttributes": {"nmae": "x"}}, "Extra inputs"),
        ({"profile": "rbac"}, "kube-rbac-proxy"),
    ],
)
def test_inconsistent_configs_are_refused(data: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AttributesConfig.model_validate(data)


def test_default_profile_is_kube_rbac_proxy() -> None:
    assert AttributesConfig().profile is Profile.KUBE_RBAC_PROXY


@given(
    method=st.text(max_size=10),
    path=st.text(max_size=30),
    header_value=st.text(max_size=10),
)
def test_mapping_never_fails_unexpectedly_and_never_keeps_the_query(
    method: str, path: str, header_value: str
) -> None:
    headers = {"X-Ray-Cluster": header_value}
    try:
        [non_resource] = attrs(NON_RESOURCE, method, path, headers=headers)
    except ValueError as err:  # the one refusal: a path that could mean another one upstream
        assert "ambiguous path" in str(err)
    else:
        assert "?" not in non_resource.path
        assert non_resource.verb == verb_for_method(method)
    [by_header] = attrs(NAME_BY_HEADER, method, path, headers=headers)
    assert by_header.name == header_value
