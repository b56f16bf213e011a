"""The client-side deadline (limits.idleTimeout): idle keep-alive connections and clients still
sending their headers are closed; a request being answered is not."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiohttp import web

from tests.integration.gateway_helpers import gateway_stack, serve

IDLE = 1.0


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    return await asyncio.wait_for(reader.read(), seconds)


def test_an_idle_keep_alive_connection_is_closed(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path, accounts={"user": ["get"]}, idle_timeout=IDLE) as stack:
            assert stack.url.port is not None
            reader, writer = await asyncio.open_connection("127.0.0.1", stack.url.port)
            token = stack.token("user")
            writer.write(
                f"GET /api/version HTTP/1.1\r\nHost: ray\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 ")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            started = time.monotonic()
            assert await _closed_within(reader, IDLE + 5) == b""
            assert time.monotonic() - started >= IDLE * 0.9
            writer.close()

    asyncio.run(scenario())


def test_a_client_trickling_its_headers_is_closed_at_the_deadline(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path, accounts={"user": ["get"]}, idle_timeout=IDLE) as stack:
            assert stack.url.port is not None
            reader, writer = await asyncio.open_connection("127.0.0.1", stack.url.port)
            started = time.monotonic()
            writer.write(b"GET /api/version HTTP/1.1\r\nHost: ray\r\n")
            closed = False
            for _ in range(int(IDLE * 60)):  # a header line every 100 ms, never the end
                await asyncio.sleep(0.1)
                if reader.at_eof() or writer.is_closing():
                    closed = True
                    break
                try:
                    writer.write(b"X-Slow: 1\r\n")
                    await writer.drain()
                except ConnectionError:
                    closed = True
                    break
                try:
                    data = await asyncio.wait_for(reader.read(1), 0.01)
                except TimeoutError:
                    continue
                if data == b"":
                    closed = True
                    break
            elapsed = time.monotonic() - started
            assert closed, "the connection stayed open past the deadline"
            # Closed at the deadline although bytes kept coming (a busy machine may add a little).
            assert IDLE * 0.9 <= elapsed < IDLE * 4
            assert stack.upstream.requests == []
            writer.close()

    asyncio.run(scenario())


def test_a_request_being_answered_outlives_the_idle_deadline(tmp_path: Path) -> None:
    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(IDLE * 2)
        return web.Response(text="late but whole")

    async def scenario() -> None:
        app = web.Application()
        app.router.add_get("/api/version", slow)
        async with (
            serve(app) as upstream,
            gateway_stack(
                tmp_path, accounts={"user": ["get"]}, idle_timeout=IDLE, upstream_url=upstream
            ) as stack,
        ):
            assert stack.url.port is not None
            reader, writer = await asyncio.open_connection("127.0.0.1", stack.url.port)
            token = stack.token("user")
            writer.write(
                f"GET /api/version HTTP/1.1\r\nHost: ray\r\nAuthorization: Bearer {token}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            answer = await asyncio.wait_for(reader.read(), IDLE * 2 + 5)
            assert answer.startswith(b"HTTP/1.1 200 ")
            assert answer.endswith(b"late but whole")
            writer.close()

    asyncio.run(scenario())
