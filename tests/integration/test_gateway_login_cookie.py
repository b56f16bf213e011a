"""The browser's login cookie: honoured only from the gateway's own origin, never a rescue for a
bad bearer token, and never passed on to Ray in any spelling of the Cookie header."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from .gateway_helpers import gateway_stack, raw_exchange, status_of


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


def test_a_bad_bearer_token_is_refused_even_with_a_valid_login_cookie(tmp_path: Path) -> None:
    # The header is what the caller chose to present; a cookie must not rescue a bad one.
    async def scenario() -> None:
        async with gateway_stack(
            tmp_path / "state", accounts={"ray-user": ["*"]}, browser_login=True
        ) as stack:
            token = stack.token("ray-user")
            request = (
                "GET /api/jobs/ HTTP/1.1\r\nHost: ray\r\nAuthorization: Bearer not-a-token\r\n"
                f"Cookie: ray-authentication-token={token}\r\nConnection: close\r\n\r\n"
            )
            answer = await raw_exchange(stack.url, request.encode())
            assert status_of(answer) == 401
            assert stack.upstream.requests == []

    asyncio.run(scenario())
