"""Security review: requests without valid credentials reach nothing but the dashboard's UI shell.

With browser login on (as `raygate up` runs it), GET/HEAD of `/`, `/index.html`, `/favicon.ico`
and `/static/...` go to Ray without credentials. Ray's aiohttp resolves percent-encoded
characters before routing, so any request target that could mean an API route to Ray must be
refused here, whatever the spelling. Sent as raw bytes: HTTP clients clean paths themselves.
"""

from __future__ import annotations

import asyncio
import posixpath
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from .gateway_helpers import gateway_stack, raw_exchange

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


def _status(answer: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    return int(match.group(1)) if match else 0


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
            assert _status(answer) in (400, 401, 404)
            for seen in stack.upstream.requests:
                assert _means_ui_shell(unquote(seen.raw_path.partition("?")[0])), seen.raw_path

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
            assert _status(answer) == 401
            assert stack.upstream.requests == []

    asyncio.run(scenario())


def test_a_bearer_token_that_is_not_utf8_gets_401(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            request = (
                b"GET /api/jobs/ HTTP/1.1\r\nHost: ray\r\nAuthorization: Bearer \xff\xfe.\xc3(\r\n"
                b"Connection: close\r\n\r\n"
            )
            answer = await raw_exchange(stack.url, request)
            assert _status(answer) == 401
            assert stack.upstream.requests == []

    asyncio.run(scenario())
