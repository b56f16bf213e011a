"""The Kubernetes API server slow, flapping or answering garbage, behind the gateway `raygate
serve` assembles: bounded waits, 503 with nothing forwarded, recovery without a restart, and a
bounded number of reviews in flight however many requests wait."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from raygate.authz.attributes import Profile, cluster_authorization
from raygate.config import config_from_mapping
from raygate.identity import Attributes, Decision
from raygate.kube.client import MAX_CONCURRENT_CALLS
from raygate.observe.audit import AuditLog
from raygate.runtime import serve as run_gateway
from tests.integration.gateway_helpers import RecordingUpstream, bearer, serve
from tests.kube.fakeapi import TOKEN_REVIEWS, FakeKubeAPI, running_fake
from tests.store.running_gateway import free_port

USER = "ray-user"


def allow_ray_user(attributes: Attributes) -> Decision:
    allowed = attributes.identity.user == f"system:serviceaccount:default:{USER}"
    return Decision(allowed=allowed, reason="fake RBAC")


@contextlib.asynccontextmanager
async def sidecar(
    fake: FakeKubeAPI, tmp_path: Path
) -> AsyncIterator[tuple[str, RecordingUpstream]]:
    upstream = RecordingUpstream()
    async with serve(upstream.app()) as upstream_url:
        port = free_port()
        config = config_from_mapping(
            {
                "listen": {"address": f"127.0.0.1:{port}"},
                "upstream": {"url": str(upstream_url)},
                "authentication": {"mode": "kubernetes"},
                "authorization": {
                    "mode": "kubernetes",
                    **cluster_authorization(
                        Profile.KUBE_RBAC_PROXY, "ray-cluster-with-auth", "default"
                    ),
                },
                "kubeconfig": str(fake.write_kubeconfig(tmp_path / "kubeconfig")),
                "limits": {"backendTimeout": "1s"},
            }
        )
        audit = AuditLog(tmp_path / "audit.log")
        ready, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(run_gateway(config, audit=audit, on_ready=ready.set, stop=stop))
        await asyncio.wait(
            [asyncio.ensure_future(ready.wait()), task], return_when=asyncio.FIRST_COMPLETED
        )
        if task.done():
            task.result()
        try:
            yield f"http://127.0.0.1:{port}", upstream
        finally:
            stop.set()
            await task
            audit.close()


async def get(client: aiohttp.ClientSession, url: str, token: str) -> tuple[int, float]:
    start = time.monotonic()
    async with client.get(url + "/api/jobs/", headers=bearer(token)) as resp:
        await resp.read()
        return resp.status, time.monotonic() - start


def fresh_token(fake: FakeKubeAPI) -> str:
    # A new token each time: an earlier answer for it cannot come from the caches.
    return fake.add_service_account_token("default", USER)


def test_api_server_answering_garbage_is_503_then_recovers(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with (
            running_fake(authorize=allow_ray_user) as fake,
            sidecar(fake, tmp_path) as (url, upstream),
            aiohttp.ClientSession() as client,
        ):
            for garbage in (b"<html>502 Bad Gateway</html>", b'{"kind": "Status"}', b"[1, 2]"):
                fake.garbage = garbage
                status, elapsed = await get(client, url, fresh_token(fake))
                assert status == 503 and elapsed < 2, (garbage, status, elapsed)
            assert upstream.requests == []
            fake.garbage = None
            assert (await get(client, url, fresh_token(fake)))[0] == 200
            assert len(upstream.requests) == 1

    asyncio.run(scenario())


def test_flapping_api_server_fails_closed_while_down_and_serves_while_up(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with (
            running_fake(authorize=allow_ray_user) as fake,
            sidecar(fake, tmp_path) as (url, upstream),
            aiohttp.ClientSession() as client,
        ):
            answered = 0
            for _ in range(4):
                await fake.stop()
                status, elapsed = await get(client, url, fresh_token(fake))
                assert status == 503 and elapsed < 2, (status, elapsed)
                await fake.restart()
                status, elapsed = await get(client, url, fresh_token(fake))
                assert status == 200 and elapsed < 2, (status, elapsed)
                answered += 1
            assert len(upstream.requests) == answered, "forwarded while the API server was down"

    asyncio.run(scenario())


def test_slow_api_server_bounds_waits_and_reviews_in_flight(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with (
            running_fake(authorize=allow_ray_user) as fake,
            sidecar(fake, tmp_path) as (url, upstream),
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client,
        ):
            fake.delay = 3.0  # seconds; the gateway waits 1 s (limits.backendTimeout)
            start = time.monotonic()
            results = await asyncio.gather(
                *(get(client, url, fresh_token(fake)) for _ in range(150))
            )
            assert {status for status, _ in results} == {503}
            assert max(elapsed for _, elapsed in results) < 3.0
            assert time.monotonic() - start < 4.0
            # At most MAX_CONCURRENT_CALLS reviews are held at once; the fake notices an
            # abandoned one a moment after the gateway gave up on it, when the next callers
            # may already have taken the freed slots: hence up to twice that, never 150.
            assert 0 < fake.max_in_flight <= 2 * MAX_CONCURRENT_CALLS, fake.max_in_flight
            assert fake.calls[TOKEN_REVIEWS] <= 2 * MAX_CONCURRENT_CALLS, fake.calls
            assert upstream.requests == []
            fake.delay = 0
            deadline = time.monotonic() + 5
            status = 0
            while status != 200 and time.monotonic() < deadline:
                status, _ = await get(client, url, fresh_token(fake))
            assert status == 200

    asyncio.run(scenario())
