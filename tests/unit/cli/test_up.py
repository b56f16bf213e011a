"""`raygate up --profile`: the config it runs, per profile; the default is the guide's."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from yarl import URL

from raygate.authz.attributes import Profile, request_attributes
from raygate.cli.up import UpOptions, gateway_config, up
from raygate.config.model import AuditConfig
from raygate.identity import service_account_identity
from raygate.ray.launcher import RayHead

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
        audit=AuditConfig(log=str(tmp_path / "audit.log")),
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


def test_up_sends_rays_dashboard_no_header_it_does_not_read_and_serve_who_is_calling(
    tmp_path: Path,
) -> None:
    """Ray's dashboard reads neither X-Remote-* nor X-Forwarded-*, and each header costs it
    (docs/design.md, "What the gateway costs Ray"); Serve's applications may read both."""
    opts = options(tmp_path)
    opts.serve_port = 8000
    head = RayHead(
        process=None,  # type: ignore[arg-type]
        dashboard_url="http://127.0.0.1:8266",
        temp_dir=tmp_path,
        log_path=tmp_path / "ray.log",
        ports={"serve": 8001},
    )
    config = gateway_config(opts, URL(head.dashboard_url), None, head)
    assert not config.auth_header.fields_enabled
    assert not config.upstream.forwarded_headers
    assert config.serve is not None and config.serve.identity_headers is True


def test_up_in_front_of_another_upstream_sends_identity_and_forwarded_headers(
    tmp_path: Path,
) -> None:
    config = gateway_config(options(tmp_path), URL("http://127.0.0.1:9"), None)
    assert config.auth_header.fields_enabled
    assert config.upstream.forwarded_headers
