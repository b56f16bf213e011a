"""Requests without valid credentials reach nothing but the dashboard's UI shell.

With browser login on (as `raygate up` runs it), GET/HEAD of `/`, `/index.html`, `/favicon.ico`
and `/static/...` go to Ray without credentials. Ray's aiohttp resolves percent-encoded
characters before routing, so any request target that could mean an API route to Ray must be
refused here, whatever the spelling. Sent as raw bytes: HTTP clients clean paths themselves.
The public shell goes upstream as the anonymous request it is, and clients that never read it
cannot starve authorized users of upstream connections.
"""

from __future__ import annotations

import asyncio
import posixpath
from pathlib import Path
from urllib.parse import unquote

import aiohttp
import pytest
from aiohttp import web

from .gateway_helpers import bearer, gateway_stack, raw_exchange, serve, status_of

UI_SHELL = ("/", "/index.html", "/favicon.ico")
# Spellings of an API route behind a UI-shell prefix, or of an API route itself.
TRICK_TARGETS = [
    "/static/../api/jobs/",
    "/static/%2e%2e/api/jobs/",
    "/static/%2E%2E/api/jobs/",
    "/static/.%2e/api/jobs/",
    "/static/..%2fapi/jobs/",
    "/static/..%2Fapi%2Fjobs/",
    "/static/..%5capi/jobs/",
    "/static\\..\\api/jobs/",
    "/static//../api/jobs/",
    "/static/x/../../api/jobs/",
    "/index.html/../api/jobs/",
    "/./api/jobs/",
    "//api/jobs/",
    "/%2Fstatic/../api/jobs/",
    "/STATIC/../api/jobs/",
    "/api/authentication_mode/../jobs/",
    "/api/authentication_mode%2f..%2fjobs/",
    "/.well-known/openid-configuration/../../api/jobs/",
    "/openid/v1/jwks/../../../api/jobs/",
    "http://ray/api/jobs/",
    "http://ray/static/../api/jobs/",
    "http://ray/static/%2e%2e/api/jobs/",
]


def _means_ui_shell(decoded_path: str) -> bool:
    """What Ray could serve for this path after decoding and dot-segment resolution."""
    resolved = posixpath.normpath(decoded_path.replace("\\", "/"))
    return resolved in UI_SHELL or resolved.startswith("/static/")


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "OPTIONS"])
@pytest.mark.parametrize("target", TRICK_TARGETS)
def test_no_spelling_of_an_api_route_reaches_ray_without_a_token(
    tmp_path: Path, method: str, target: str
) -> None:
    async def scenario() -> None:
        async with gateway_stack(
            tmp_path / "state", accounts={"ray-user": ["*"]}, browser_login=True
        ) as stack:
            request = f"{method} {target} HTTP/1.1\r\nHost: ray\r\nConnection: close\r\n\r\n"
            answer = await raw_exchange(stack.url, request.encode())
            assert status_of(answer) in (400, 401, 404)
            for seen in stack.upstream.requests:
                assert _means_ui_shell(unquote(seen.raw_path.partition("?")[0])), seen.raw_path

    asyncio.run(scenario())


def test_unauthenticated_ui_shell_requests_carry_no_ray_token(tmp_path: Path) -> None:
    """The shell is public; it goes upstream as the anonymous request it is."""

    async def scenario() -> None:
        async with (
            gateway_stack(
                tmp_path / "state", accounts={"ray-user": ["*"]}, browser_login=True
            ) as stack,
            aiohttp.ClientSession() as client,
        ):
            async with client.get(stack.url / "static" / "js" / "main.js") as response:
                await response.read()
            [seen] = stack.upstream.requests
            assert "Authorization" not in seen.headers
            async with client.get(
                stack.url / "api/version", headers=bearer(stack.token("ray-user"))
            ) as response:
                assert response.status == 200
            assert "Authorization" in stack.upstream.requests[-1].headers

    asyncio.run(scenario())


BIG_STATIC = b"x" * (7 * 1024 * 1024)  # Ray 2.60 ships static/js/main.*.js.map at 6.4 MiB


def test_clients_that_never_read_the_ui_shell_cannot_lock_out_authorized_users(
    tmp_path: Path,
) -> None:
    """512 unauthenticated connections asking for a large static file and never reading it
    hold every pooled upstream connection (TCPConnector(limit=512)); an authorized request
    then waits for upstream_headers_timeout and gets 504."""

    async def big_static(_request: web.Request) -> web.Response:
        return web.Response(body=BIG_STATIC, content_type="application/json")

    async def version(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    upstream = web.Application()
    upstream.router.add_get("/static/js/main.js.map", big_static)
    upstream.router.add_get("/api/version", version)

    async def scenario() -> None:
        async with (
            serve(upstream) as upstream_url,
            gateway_stack(
                tmp_path / "state",
                accounts={"ray-user": ["get"]},
                upstream_url=upstream_url,
                browser_login=True,
                upstream_headers_timeout=10.0,
            ) as stack,
        ):
            assert stack.url.host is not None and stack.url.port is not None
            writers = []
            for _ in range(512):
                _reader, writer = await asyncio.open_connection(stack.url.host, stack.url.port)
                writer.write(b"GET /static/js/main.js.map HTTP/1.1\r\nHost: ray\r\n\r\n")
                writers.append(writer)
            await asyncio.gather(*(w.drain() for w in writers))
            try:
                async with (
                    aiohttp.ClientSession() as client,
                    client.get(
                        stack.url / "api/version", headers=bearer(stack.token("ray-user"))
                    ) as resp,
                ):
                    assert resp.status == 200
            finally:
                for writer in writers:
                    writer.transport.abort()

    asyncio.run(scenario())
