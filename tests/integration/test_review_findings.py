"""Findings of the security review of the gateway, each one fixed and kept fixed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from aiohttp import web

from .gateway_helpers import bearer, gateway_stack, raw_exchange, serve

BIG_STATIC = b"x" * (7 * 1024 * 1024)  # Ray 2.60 ships static/js/main.*.js.map at 6.4 MiB


def test_callers_token_in_a_space_separated_cookie_never_reaches_the_upstream(
    tmp_path: Path,
) -> None:
    # aiohttp (and Ray's aiohttp) split cookies on whitespace too; strip_cookie only on ';'.
    async def scenario() -> None:
        async with gateway_stack(
            tmp_path / "state", accounts={"ray-user": ["*"]}, browser_login=True
        ) as stack:
            token = stack.token("ray-user")
            request = (
                "GET /api/version HTTP/1.1\r\nHost: ray\r\n"
                f"Cookie: theme=dark ray-authentication-token={token}\r\n"
                "Connection: close\r\n\r\n"
            )
            answer = await raw_exchange(stack.url, request.encode())
            assert answer.startswith(b"HTTP/1.1 200")  # authenticated by that very cookie
            [seen] = stack.upstream.requests
            for value in seen.headers.values():
                assert token not in value

    asyncio.run(scenario())


def test_identity_header_spelled_with_underscores_never_reaches_the_upstream(
    tmp_path: Path,
) -> None:
    # CGI/WSGI servers and nginx (underscores_in_headers) read X_Remote_User as X-Remote-User.
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            token = stack.token("ray-user")
            request = (
                f"GET /api/version HTTP/1.1\r\nHost: ray\r\nAuthorization: Bearer {token}\r\n"
                "X_Remote_User: system:admin\r\nX_Remote_Group: system:masters\r\n"
                "Connection: close\r\n\r\n"
            )
            await raw_exchange(stack.url, request.encode())
            [seen] = stack.upstream.requests
            forged = [
                n for n in seen.headers if n.lower().replace("_", "-").startswith("x-remote-")
            ]
            assert sorted(forged) == ["X-Remote-Group", "X-Remote-User"]

    asyncio.run(scenario())


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


def test_a_refused_websocket_handshake_opens_nothing_upstream(tmp_path: Path) -> None:
    # `Upgrade: websocket` without `Connection: Upgrade`: the gateway connects the upstream
    # WebSocket first and only then finds the client's handshake invalid (400).
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            token = stack.token("ray-user")
            request = (
                f"GET /ws/echo HTTP/1.1\r\nHost: ray\r\nAuthorization: Bearer {token}\r\n"
                "Upgrade: websocket\r\nConnection: close\r\n\r\n"
            )
            answer = await raw_exchange(stack.url, request.encode())
            assert answer.startswith(b"HTTP/1.1 400")
            assert stack.upstream.requests == []

    asyncio.run(scenario())


def test_a_login_cookie_sent_by_another_origin_of_the_same_site_is_not_honoured(
    tmp_path: Path,
) -> None:
    """SameSite=Strict ignores ports: a page on http://localhost:3000 (a notebook, a dev server)
    is same-site with the gateway on http://localhost:8265, so the browser attaches the login
    cookie to its requests. A WebSocket has no CORS: such a page can read `ray job logs`, and
    with plain GETs trigger Ray's side-effecting GET routes (/worker/cpu_profile,
    /memory_profile, /task/traceback), which Ray's browser middleware lets through."""

    async def scenario() -> None:
        async with gateway_stack(
            tmp_path / "state", accounts={"ray-user": ["*"]}, browser_login=True
        ) as stack:
            cookie = f"ray-authentication-token={stack.token('ray-user')}"
            cross_origin = {
                "Cookie": cookie,
                "Origin": "http://localhost:3000",
                "Sec-Fetch-Site": "same-site",
                "Sec-Fetch-Mode": "websocket",
            }
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
                try:
                    ws = await client.ws_connect(stack.url / "ws/echo", headers=cross_origin)
                except aiohttp.WSServerHandshakeError as err:
                    assert err.status == 403
                else:
                    await ws.close()
                    raise AssertionError("a same-site page opened a WebSocket with the cookie")
            assert stack.upstream.requests == []

    asyncio.run(scenario())


def test_trace_and_track_are_refused_without_reaching_ray(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            token = stack.token("ray-user")
            for method, status in (("TRACE", b"405"), ("TRACK", b"400")):
                request = (
                    f"{method} /api/version HTTP/1.1\r\nHost: ray\r\n"
                    f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
                )
                answer = await raw_exchange(stack.url, request.encode())
                assert answer.split(b" ")[1] == status, answer[:80]
            assert stack.upstream.requests == []

    asyncio.run(scenario())


def test_a_token_that_is_not_ascii_is_refused_before_any_backend(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            request = (
                b"GET /api/version HTTP/1.1\r\nHost: ray\r\n"
                + b"Authorization: Bearer \xff\xfe\xfdtoken\r\nConnection: close\r\n\r\n"
            )
            answer = await raw_exchange(stack.url, request)
            assert answer.startswith(b"HTTP/1.1 401"), answer[:80]
            assert stack.upstream.requests == []

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
