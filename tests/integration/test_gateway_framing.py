"""Request framing on the wire: what a smuggling attempt gets, and that nothing slips upstream.

Sent as raw bytes, since an HTTP client library will not produce these requests.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from .gateway_helpers import gateway_stack, raw_exchange

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: ray\r\n\r\n"


def _statuses(answer: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.[01] (\d{3}) ", answer)]


@pytest.mark.parametrize(
    "framing",
    [
        pytest.param(
            b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", id="length-and-chunked"
        ),
        pytest.param(b"Content-Length: 4\r\nContent-Length: 40\r\n", id="two-lengths"),
        pytest.param(b"Content-Length: -4\r\n", id="negative-length"),
    ],
)
def test_ambiguous_body_framing_gets_400_and_nothing_reaches_the_upstream(
    tmp_path: Path, framing: bytes
) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            token = stack.token("ray-user").encode()
            request = (
                b"POST /api/jobs/ HTTP/1.1\r\nHost: ray\r\nAuthorization: Bearer "
                + token
                + b"\r\n"
                + framing
                + b"\r\n0\r\n\r\n"
                + SMUGGLED
            )
            answer = await raw_exchange(stack.url, request)
            assert _statuses(answer)[:1] == [400]
            assert stack.upstream.requests == []

    asyncio.run(scenario())


def test_body_of_a_refused_request_is_never_taken_for_a_request(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            token = stack.token("ray-user").encode()
            refused = b"POST /api/jobs/ HTTP/1.1\r\nHost: ray\r\nContent-Length: %d\r\n\r\n" % len(
                SMUGGLED
            )
            allowed = (
                b"GET /api/version HTTP/1.1\r\nHost: ray\r\nAuthorization: Bearer "
                + token
                + b"\r\nConnection: close\r\n\r\n"
            )
            answer = await raw_exchange(stack.url, refused + SMUGGLED + allowed)
            assert _statuses(answer) == [401, 200]
            assert [seen.raw_path for seen in stack.upstream.requests] == ["/api/version"]

    asyncio.run(scenario())


def test_expect_100_continue_upload_goes_through(tmp_path: Path) -> None:
    # curl sends `Expect: 100-continue` before any body over 1 MiB.
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            token = stack.token("ray-user").encode()
            body = b"z" * 4096
            assert stack.url.host is not None and stack.url.port is not None
            reader, writer = await asyncio.open_connection(stack.url.host, stack.url.port)
            try:
                writer.write(
                    b"PUT /api/packages/gcs/_ray_pkg_x.zip HTTP/1.1\r\nHost: ray\r\n"
                    b"Authorization: Bearer " + token + b"\r\nExpect: 100-continue\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
                )
                await writer.drain()
                interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                assert _statuses(interim) == [100]
                writer.write(body)
                await writer.drain()
                final = await asyncio.wait_for(reader.read(), 10)
            finally:
                writer.close()
            assert _statuses(final) == [200]
            [seen] = stack.upstream.requests
            assert (seen.size, seen.body) == (len(body), body)

    asyncio.run(scenario())


def test_expect_100_continue_is_not_sent_to_a_refused_client(tmp_path: Path) -> None:
    """The 401 comes before any `100 Continue`: a client without a token never uploads."""

    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            assert stack.url.host is not None and stack.url.port is not None
            reader, writer = await asyncio.open_connection(stack.url.host, stack.url.port)
            try:
                writer.write(
                    b"PUT /api/packages/gcs/_ray_pkg_x.zip HTTP/1.1\r\nHost: ray\r\n"
                    b"Expect: 100-continue\r\nContent-Length: 104857600\r\n"
                    b"Connection: close\r\n\r\n"
                )
                await writer.drain()
                # The first thing back is the final answer, not an invitation to upload.
                first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            finally:
                writer.close()
            assert _statuses(first) == [401]
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
