"""What the Ray Client and Serve doors ask RBAC, per authorization profile."""

from __future__ import annotations

import pytest

from raygate.authz.attributes import AttributesConfig, cluster_authorization
from raygate.authz.attributes import Profile as ProfileName
from raygate.authz.doors import client_attributes, serve_attributes
from raygate.identity import service_account_identity

ALICE = service_account_identity("team", "alice")


def config(profile: ProfileName) -> AttributesConfig:
    return AttributesConfig.model_validate(cluster_authorization(profile, "raycluster", "team"))


@pytest.mark.parametrize(
    ("profile", "verb", "subresource"),
    [
        (ProfileName.KUBE_RBAC_PROXY, "create", ""),
        (ProfileName.RAY_K8S, "ray:write", ""),
        (ProfileName.RAY, "create", "client"),
    ],
)
def test_a_ray_client_call_is_one_permission_on_the_raycluster(
    profile: ProfileName, verb: str, subresource: str
) -> None:
    (attrs,) = client_attributes(ALICE, "/ray.rpc.RayletDriver/KVGet", config(profile))
    assert (attrs.verb, attrs.api_group, attrs.resource, attrs.subresource, attrs.name) == (
        verb,
        "ray.io",
        "rayclusters",
        subresource,
        "raycluster",
    )
    assert attrs.namespace == "team"


def test_without_resource_attributes_a_client_call_is_its_grpc_path() -> None:
    (attrs,) = client_attributes(ALICE, "/ray.rpc.RayletDriver/KVGet", AttributesConfig())
    assert not attrs.resource_request
    assert (attrs.verb, attrs.path) == ("create", "/ray.rpc.RayletDriver/KVGet")


@pytest.mark.parametrize(
    ("profile", "method", "verb"),
    [
        (ProfileName.KUBE_RBAC_PROXY, "POST", "create"),
        (ProfileName.KUBE_RBAC_PROXY, "GET", "get"),
        (ProfileName.RAY, "POST", "create"),
        (ProfileName.RAY_K8S, "GET", "ray:write"),
    ],
)
def test_a_serve_call_is_authorized_on_its_application(
    profile: ProfileName, method: str, verb: str
) -> None:
    (attrs,) = serve_attributes(ALICE, method, "/chat/v1/models", "chat", config(profile))
    assert (attrs.verb, attrs.api_group, attrs.resource, attrs.name, attrs.namespace) == (
        verb,
        "serve.ray.io",
        "applications",
        "chat",
        "team",
    )
    assert attrs.describe() == (
        f'User "system:serviceaccount:team:alice" cannot {verb} resource "applications" in '
        'API group "serve.ray.io" in the namespace "team"'
    )


def test_a_path_no_application_serves_needs_every_application() -> None:
    (attrs,) = serve_attributes(ALICE, "GET", "/nowhere", "", config(ProfileName.RAY))
    assert attrs.name == ""  # only a rule without resourceNames matches


def test_without_a_namespace_serve_calls_are_authorized_on_their_path() -> None:
    (attrs,) = serve_attributes(ALICE, "POST", "/chat/v1/x?y=1", "chat", AttributesConfig())
    assert not attrs.resource_request
    assert attrs.path == "/chat/v1/x"
