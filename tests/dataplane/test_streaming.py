"""Bodies stream through the data plane: never held whole, each chunk passed on at once, and
upstream connections kept alive between requests."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.integration.gateway_helpers import (
    bearer,
    client_session,
    gateway_stack,
    generated_body,
    generated_sha256,
    serve,
)

from .blackbox import start_gateway, stop_gateway

MiB = 1024 * 1024
RECEIVE_TIMEOUT = 10.0


def test_a_chunked_upload_reaches_the_upstream_while_the_client_still_sends(
    tmp_path: Path,
) -> None:
    """The first chunk arrives upstream before the client sends the second: streamed, not
    collected first."""
    first_arrived = asyncio.Event()
    seen: dict[str, object] = {}

    async def upload(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        size = 0
        seen["transfer-encoding"] = request.headers.get("Transfer-Encoding")
        async for chunk in request.content.iter_any():
            if size == 0:
                first_arrived.set()
            digest.update(chunk)
            size += len(chunk)
        return web.json_response({"size": size, "sha256": digest.hexdigest()})

    async def scenario() -> None:
        app = web.Application()
        app.router.add_put("/api/packages/gcs/{name}", upload)
        async with (
            serve(app) as upstream,
            gateway_stack(tmp_path, accounts={"user": ["*"]}, upstream_url=upstream) as stack,
        ):
            assert stack.url.port is not None
            reader, writer = await asyncio.open_connection("127.0.0.1", stack.url.port)
            writer.write(
                b"PUT /api/packages/gcs/_ray_pkg_x.zip HTTP/1.1\r\nHost: ray\r\n"
                + f"Authorization: Bearer {stack.token('user')}\r\n".encode()
                + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                + b"5\r\nfirst\r\n"
            )
            await writer.drain()
            await asyncio.wait_for(first_arrived.wait(), RECEIVE_TIMEOUT)
            writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), RECEIVE_TIMEOUT)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 200 ")
            expected = hashlib.sha256(b"firstsecond").hexdigest()
            assert f'"size": 11, "sha256": "{expected}"'.encode() in answer
            assert seen["transfer-encoding"] == "chunked"

    asyncio.run(scenario())


def test_server_sent_events_reach_the_client_one_by_one(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: one\n\n")
        await asyncio.wait_for(release.wait(), RECEIVE_TIMEOUT)  # held until the client has it
        await response.write(b"data: two\n\n")
        await response.write_eof()
        return response

    async def scenario() -> None:
        app = web.Application()
        app.router.add_get("/api/events", events)
        async with (
            serve(app) as upstream,
            gateway_stack(tmp_path, accounts={"user": ["get"]}, upstream_url=upstream) as stack,
            client_session() as client,
            client.get(stack.url / "api/events", headers=bearer(stack.token("user"))) as resp,
        ):
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/event-stream"
            first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), RECEIVE_TIMEOUT)
            assert first == b"data: one\n\n"
            release.set()
            assert await asyncio.wait_for(resp.content.read(), RECEIVE_TIMEOUT) == (
                b"data: two\n\n"
            )

    asyncio.run(scenario())


def test_upstream_connections_are_kept_alive_between_requests(tmp_path: Path) -> None:
    peers: list[object] = []

    async def version(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername"))
        return web.json_response({"ray_version": "2.52.0"})

    async def scenario() -> None:
        app = web.Application()
        app.router.add_get("/api/version", version)
        async with (
            serve(app) as upstream,
            gateway_stack(tmp_path, accounts={"user": ["get"]}, upstream_url=upstream) as stack,
        ):
            headers = bearer(stack.token("user"))
            for _ in range(20):  # a new client connection each time: the upstream one stays
                async with (
                    client_session() as client,
                    client.get(stack.url / "api/version", headers=headers) as resp,
                ):
                    assert resp.status == 200
            assert len(peers) == 20
            assert len(set(peers)) == 1
            assert stack.gateway.pool.opened == 1

    asyncio.run(scenario())


def test_a_pooled_connection_the_upstream_closed_is_not_a_failed_request(tmp_path: Path) -> None:
    """aiohttp closes idle keep-alive connections after a while; the next request must not get
    a 502 for it."""

    async def version(request: web.Request) -> web.Response:
        return web.json_response({"ray_version": "2.52.0"}, headers={"Connection": "close"})

    async def scenario() -> None:
        app = web.Application()
        app.router.add_get("/api/version", version)
        async with (
            serve(app) as upstream,
            gateway_stack(tmp_path, accounts={"user": ["get"]}, upstream_url=upstream) as stack,
            client_session() as client,
        ):
            for _ in range(5):
                async with client.get(
                    stack.url / "api/version", headers=bearer(stack.token("user"))
                ) as resp:
                    assert resp.status == 200

    asyncio.run(scenario())


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_100_mib_upload_streams_through_with_bounded_memory(tmp_path: Path) -> None:
    """`raygate up` forwards a 100 MiB job package to an upstream that reads slowly: the
    gateway's memory grows by a few MiB, not by the package."""
    size = 100 * MiB
    received: dict[str, object] = {}

    async def upload(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        total = 0
        async for chunk in request.content.iter_chunked(256 * 1024):
            digest.update(chunk)
            total += len(chunk)
            await asyncio.sleep(0.001)  # a slow reader: back-pressure reaches the client
        received.update(size=total, sha256=digest.hexdigest())
        return web.json_response({"size": total})

    async def scenario() -> None:
        app = web.Application(client_max_size=2 * size)
        app.router.add_put("/api/packages/gcs/{name}", upload)
        async with serve(app) as upstream:
            gateway = await asyncio.to_thread(
                start_gateway, tmp_path, str(upstream), {"user": ["*"]}
            )
            try:
                peak = baseline = _rss_bytes(gateway.process.pid)
                done = asyncio.Event()

                async def watch() -> None:
                    nonlocal peak
                    while not done.is_set():
                        peak = max(peak, _rss_bytes(gateway.process.pid))
                        await asyncio.sleep(0.02)

                watcher = asyncio.create_task(watch())
                started = time.monotonic()
                async with (
                    aiohttp.ClientSession() as client,
                    client.put(
                        f"{gateway.url}/api/packages/gcs/_ray_pkg_big.zip",
                        headers={"Authorization": f"Bearer {gateway.token('user')}"},
                        data=generated_body(size, chunk_size=MiB),
                        timeout=aiohttp.ClientTimeout(total=300),
                    ) as resp,
                ):
                    assert resp.status == 200, await resp.text()
                done.set()
                await watcher
                elapsed = time.monotonic() - started
            finally:
                await asyncio.to_thread(stop_gateway, gateway)
        assert received == {"size": size, "sha256": generated_sha256(size, chunk_size=MiB)}
        growth = peak - baseline
        print(f"100 MiB upload in {elapsed:.1f}s, gateway RSS growth {growth / MiB:.1f} MiB")
        assert growth < 8 * MiB, f"RSS grew by {growth / MiB:.1f} MiB"

    asyncio.run(scenario())
