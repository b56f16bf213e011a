"""`raygate manifests --profile ray` and examples/ray-profile-roles.yaml: the objects validate
against the Kubernetes schemas, and the roles grant exactly what the gateway asks of each kind of
user (checked with raygate's RBAC engine, Kubernetes' semantics)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from raygate.authz.attributes import request_attributes
from raygate.cli.manifests import manifests
from raygate.config import config_from_mapping
from raygate.identity import Attributes, service_account_identity
from raygate.objects import parse_object
from raygate.rbac.index import PolicyIndex

KUBERNETES_VERSION = "1.37.0"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ray-profile-roles.yaml"
RAY_ROLES = ("raygate-viewer", "raygate-submitter", "raygate-admin")


def run_cli(*args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(manifests, ["--profile", "ray", *args])
    assert result.exit_code == 0, result.output
    return [doc for doc in yaml.safe_load_all(result.output) if doc is not None]


def ray_roles(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"]: d
        for d in docs
        if d["kind"] == "ClusterRole" and d["metadata"]["name"] in RAY_ROLES
    }


def example_docs() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(EXAMPLE.read_text()) if doc is not None]


def test_every_builtin_object_validates_strictly() -> None:
    builtin = [d for d in run_cli() if d["kind"] != "RayCluster"]
    assert {d["kind"] for d in builtin} == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "NetworkPolicy",
    }
    assert sorted(ray_roles(builtin)) == sorted(RAY_ROLES)
    for doc in builtin:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_example_file_validates_and_holds_the_same_cluster_roles() -> None:
    docs = example_docs()
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    assert ray_roles(docs) == ray_roles(run_cli())
    [binding] = [d for d in docs if d["kind"] == "RoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "raygate-submitter",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "ray-user", "namespace": "default"}
    ]


def test_sidecar_config_uses_the_ray_profile_on_the_cluster() -> None:
    docs = run_cli("--cluster-name", "c1", "--namespace", "ml")
    [config_map] = [d for d in docs if d["kind"] == "ConfigMap"]
    config = config_from_mapping(yaml.safe_load(config_map["data"]["config.yaml"]), "ConfigMap")
    user = service_account_identity("ml", "ray-user")
    [attributes] = request_attributes(user, "POST", "/api/jobs/", {}, {}, config.authorization)
    assert (attributes.verb, attributes.namespace, attributes.api_group) == ("create", "ml", "ray.io")
    assert (attributes.resource, attributes.subresource, attributes.name) == (
        "rayclusters",
        "jobs",
        "c1",
    )


def _bound(role: str) -> PolicyIndex:
    """The example's ClusterRoles, `role` bound to ml/ray-user in namespace ml."""
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "b", "namespace": "ml"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": "ray-user", "namespace": "ml"}],
    }
    roles = [d for d in example_docs() if d["kind"] == "ClusterRole"]
    return PolicyIndex.build([parse_object(d) for d in [*roles, binding]])


# (method, path) -> who may: v(iewer), s(ubmitter), a(dmin). Own jobs only; someone else's job
# adds rayclusters/alljobs, checked below.
REQUESTS = [
    ("GET", "/api/version", "vsa"),
    ("GET", "/api/jobs/", "vsa"),
    ("GET", "/api/jobs/raysubmit_1", "vsa"),
    ("GET", "/api/jobs/raysubmit_1/logs/tail", "vsa"),
    ("GET", "/", "vsa"),
    ("GET", "/api/v0/logs/stream", "vsa"),
    ("POST", "/api/jobs/", "sa"),
    ("PUT", "/api/packages/gcs/_ray_pkg_1.zip", "sa"),
    ("POST", "/api/jobs/raysubmit_1/stop", "sa"),
    ("DELETE", "/api/jobs/raysubmit_1", "sa"),
    ("PUT", "/api/serve/applications/", "a"),
    ("GET", "/api/serve/applications/", "a"),
    ("POST", "/api/task_events/query", "a"),
    ("GET", "/worker/traceback", "a"),
    ("POST", "/api/jobs/a%2Fb/stop", "a"),
]


@pytest.mark.parametrize(("method", "path", "who"), REQUESTS)
@pytest.mark.parametrize("role", RAY_ROLES)
def test_roles_grant_what_the_gateway_asks(role: str, method: str, path: str, who: str) -> None:
    index = _bound(role)
    user = service_account_identity("ml", "ray-user")
    config = config_from_mapping(
        {
            "upstream": {"url": "http://127.0.0.1:8443/"},
            "authorization": {
                "profile": "ray",
                "resourceAttributes": {"namespace": "ml", "name": "c1"},
            },
        },
        "test",
    )
    attributes = request_attributes(user, method, path, {}, {}, config.authorization)
    allowed = all(index.authorize(a).allowed for a in attributes)
    assert allowed is (role.removeprefix("raygate-")[0] in who)


@pytest.mark.parametrize(
    ("role", "verbs"),
    [
        ("raygate-viewer", set()),
        ("raygate-submitter", set()),
        ("raygate-admin", {"get", "list", "stop", "delete"}),
    ],
)
def test_only_the_admin_acts_on_everyones_jobs(role: str, verbs: set[str]) -> None:
    index = _bound(role)
    user = service_account_identity("ml", "ray-user")
    granted = {
        verb
        for verb in ("get", "list", "stop", "delete")
        if index.authorize(
            Attributes(
                identity=user,
                verb=verb,
                namespace="ml",
                api_group="ray.io",
                resource="rayclusters",
                subresource="alljobs",
                name="c1",
            )
        ).allowed
    }
    assert granted == verbs
