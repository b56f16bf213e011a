"""The Kubernetes authority built from kube-rbac-proxy's command line, against the fake."""

from __future__ import annotations

import asyncio
from pathlib import Path

from raygate.config import parse_kube_rbac_proxy_args
from raygate.identity import Attributes
from raygate.kube.authority import connect_kube_authority

from .fakeapi import SUBJECT_ACCESS_REVIEWS, TOKEN_REVIEWS, running_fake
from .test_kube_client import GUIDE_RBAC

GUIDE_CONFIG_FILE = """\
authorization:
  resourceAttributes:
    namespace: default
    apiVersion: v1
    apiGroup: ray.io
    resource: rayclusters
    name: ray-cluster-with-auth
"""


def test_guide_sidecar_args_build_a_cached_kubernetes_authority(tmp_path: Path) -> None:
    config_file = tmp_path / "config-file.yaml"
    config_file.write_text(GUIDE_CONFIG_FILE)

    async def scenario() -> None:
        async with running_fake() as fake:
            fake.use_rbac(GUIDE_RBAC)
            kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
            config = parse_kube_rbac_proxy_args([
                "--insecure-listen-address=0.0.0.0:8265",
                "--upstream=http://127.0.0.1:8443/",
                f"--config-file={config_file}",
                "--logtostderr=true",
                f"--kubeconfig={kubeconfig}",
            ])
            events: list[tuple[str, str]] = []
            authority = await connect_kube_authority(
                config, on_cache_event=lambda cache, event: events.append((cache, event))
            )
            try:
                assert await authority.ping()
                token = await authority.client.create_token_request("default", "ray-user")
                for _ in range(3):
                    identity = await authority.authenticator.authenticate_token(token)
                    assert identity is not None
                    decision = await authority.authorizer.authorize(Attributes(
                        identity, "get", namespace="default", api_group="ray.io",
                        api_version="v1", resource="rayclusters", name="ray-cluster-with-auth",
                    ))
                    assert decision.allowed and decision.source == "kubernetes"
            finally:
                await authority.close()
            assert fake.calls[TOKEN_REVIEWS] == 1 and fake.calls[SUBJECT_ACCESS_REVIEWS] == 1
            assert events.count(("authn", "hit")) == 2 and events.count(("authz", "miss")) == 1

    asyncio.run(scenario())
