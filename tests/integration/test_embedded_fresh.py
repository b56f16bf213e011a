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


def test_new_account_counts_when_the_watcher_reloads_while_the_request_waits(
    tmp_path: Path,
) -> None:
    """The watcher thread reloads the new revision while a request waits for the reload lock:
    the request's answer came from the old revision and is asked again, not refused (the
    gateway property test found fresh tokens getting 401 this way)."""
    import threading

    prepare_state(tmp_path)
    authority = EmbeddedAuthority(tmp_path, poll_interval=3600)
    results: list[object] = []
    try:
        with ObjectStore.open(tmp_path) as cli:
            cli.apply([service_account("fresh")])
            token = token_for(tmp_path, "fresh")

            def request() -> None:
                results.append(asyncio.run(authority.authenticator.authenticate_token(token)))

            with authority._reload_lock:  # the watcher holds it while it reloads
                waiting = threading.Thread(target=request)
                waiting.start()
                waiting.join(0.3)  # the request now waits for the lock
                authority._snapshot = authority.store.snapshot()  # the watcher's reload
            waiting.join(10)
        [identity] = results
        assert identity is not None and identity.user == "system:serviceaccount:default:fresh"
    finally:
        authority.store.close()
