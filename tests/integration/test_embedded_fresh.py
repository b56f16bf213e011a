"""Read your writes: what the CLI just stored counts at once, without waiting for a reload."""

from __future__ import annotations

import asyncio
from pathlib import Path

from raygate.embedded import EmbeddedAuthority
from raygate.identity import Attributes
from raygate.store.sqlite import ObjectStore
from tests.integration.gateway_helpers import grant, prepare_state, service_account, token_for

GET_CLUSTER = dict(
    verb="get",
    namespace="default",
    api_group="ray.io",
    resource="rayclusters",
    name="ray-cluster-with-auth",
)


def test_new_account_and_binding_count_before_the_next_poll(tmp_path: Path) -> None:
    prepare_state(tmp_path)
    # A poll interval far longer than the test: only read-your-writes can make it pass.
    authority = EmbeddedAuthority(tmp_path, poll_interval=3600)
    try:
        with ObjectStore.open(tmp_path) as cli:  # another connection, as the CLI has
            cli.apply([service_account("fresh")])
            token = token_for(tmp_path, "fresh")
            identity = asyncio.run(authority.authenticator.authenticate_token(token))
            assert identity is not None and identity.user == "system:serviceaccount:default:fresh"
            attributes = Attributes(identity=identity, **GET_CLUSTER)
            assert not asyncio.run(authority.authorizer.authorize(attributes)).allowed
            grant(cli, "fresh", ("get",))
            decision = asyncio.run(authority.authorizer.authorize(attributes))
            assert decision.allowed, decision.reason
    finally:
        authority.store.close()
