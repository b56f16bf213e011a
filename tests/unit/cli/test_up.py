"""`raygate up --profile`: the config it runs, per profile; the default is the guide's."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from yarl import URL

from raygate.authz.attributes import Profile, request_attributes
from raygate.cli.up import UpOptions, gateway_config, up
from raygate.identity import service_account_identity

USER = service_account_identity("ml", "ray-user")


def options(tmp_path: Path, profile: Profile | None = None) -> UpOptions:
    chosen = {} if profile is None else {"profile": profile}
    return UpOptions(
        state_dir=tmp_path,
        host="127.0.0.1",
        port=8265,
        cluster_name="c1",
        namespace="ml",
        num_cpus=None,
        object_store_memory=None,
        upstream=None,
        upstream_token_file=None,
        audit_path=tmp_path / "audit.log",
        **chosen,
    )


@pytest.mark.parametrize(
    ("profile", "verb", "subresource"),
    [
        (None, "create", ""),  # the guide's: verb from the method on the RayCluster
        (Profile.KUBE_RBAC_PROXY, "create", ""),
        (Profile.RAY_K8S, "ray:write", ""),
        (Profile.RAY, "create", "jobs"),
    ],
)
def test_up_authorizes_a_submission_as_the_profile_says(
    tmp_path: Path, profile: Profile | None, verb: str, subresource: str
) -> None:
    config = gateway_config(options(tmp_path, profile), URL("http://127.0.0.1:9"), None)
    [attributes] = request_attributes(USER, "POST", "/api/jobs/", {}, {}, config.authorization)
    assert (attributes.verb, attributes.subresource) == (verb, subresource)
    assert (attributes.namespace, attributes.api_group, attributes.resource, attributes.name) == (
        "ml",
        "ray.io",
        "rayclusters",
        "c1",
    )


def test_up_refuses_an_unknown_profile() -> None:
    result = CliRunner().invoke(up, ["--profile", "rbac"])
    assert result.exit_code == 2
    assert "'kube-rbac-proxy', 'ray-k8s', 'ray'" in result.output
