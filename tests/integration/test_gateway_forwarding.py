"""What crosses the gateway, and how: headers, paths, bodies, streams, limits, a dead upstream.

The recording upstream shows what Ray would have received; the client shows what a user gets.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from .gateway_helpers import (
    GZIP_BODY,
    UPSTREAM_TOKEN,
    RecordingUpstream,
    bearer,
    client_session,
    free_port_url,
    gateway_stack,
    generated_body,
    generated_sha256,
    raw_exchange,
    serve,
)

MiB = 1024 * 1024
RAY_USER = "system:serviceaccount:default:ray-user"
RAY_USER_GROUPS = "system:serviceaccounts|system:serviceaccounts:default|system:authenticated"


# -- identity and credentials ---------------------------------------------------------------------


def test_client_identity_and_credentials_never_reach_the_upstream(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            token = stack.token("ray-user")
            forged = {
                "Authorization": f"Bearer {token}",
                "X-Remote-User": "system:admin",
                "X-Remote-Group": "system:masters",
                "X-Remote-Extra-Scopes": "cluster-admin",
                "x-remote-extra-acme.com%2Fproject": "other",
                "X-Ray-Authorization": "Bearer stolen-ray-token",
                "Cookie": "ray-authentication-token=stolen-ray-token; dashboard-theme=dark",
            }
            async with client_session() as client, client.get(
                stack.url / "api/jobs/", headers=forged
            ) as resp:
                assert resp.status == 200
            [seen] = stack.upstream.requests
            assert seen.headers.getall("Authorization") == [f"Bearer {UPSTREAM_TOKEN}"]
            assert seen.headers.getall("X-Remote-User") == [RAY_USER]
            assert seen.headers.getall("X-Remote-Group") == [RAY_USER_GROUPS]
            assert not [name for name in seen.headers if name.lower().startswith("x-remote-extra")]
            assert "X-Ray-Authorization" not in seen.headers
            assert seen.headers.getall("Cookie") == ["dashboard-theme=dark"]
            for name, value in seen.headers.items():
                assert token not in value, name
                assert "stolen-ray-token" not in value, name

    asyncio.run(scenario())


def test_upstream_ray_token_cookie_never_reaches_the_client(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            async with client_session() as client, client.post(
                stack.url / "cookies", headers=bearer(stack.token("ray-user"))
            ) as resp:
                assert resp.status == 200
                cookies = resp.headers.getall("Set-Cookie")
                raw = bytes(b"".join(k + b": " + v for k, v in resp.raw_headers))
            assert cookies == ["dashboard-theme=dark; Path=/"]
            assert UPSTREAM_TOKEN.encode() not in raw

    asyncio.run(scenario())


def test_hop_by_hop_headers_are_removed_and_forwarded_headers_set(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            headers = {
                **bearer(stack.token("ray-user")),
                "Connection": "keep-alive, X-Hop-Secret",
                "X-Hop-Secret": "only for the next hop",
                "Keep-Alive": "timeout=5",
                "TE": "trailers",
                "Proxy-Authorization": "Basic cHJveHk6cGFzcw==",
                "Proxy-Connection": "keep-alive",
                "X-Forwarded-For": "203.0.113.9",
                "X-Request-Id": "abc-123",
                "Accept-Encoding": "gzip",
                "User-Agent": "ray-job-cli",
            }
            async with client_session() as client, client.get(
                stack.url / "api/jobs/", headers=headers
            ) as resp:
                assert resp.status == 200
            [seen] = stack.upstream.requests
            for hop in ("X-Hop-Secret", "Keep-Alive", "TE", "Proxy-Authorization",
                        "Proxy-Connection"):
                assert hop not in seen.headers, hop
            assert "x-hop-secret" not in seen.headers.get("Connection", "").lower()
            # End-to-end headers pass unchanged.
            assert seen.headers["X-Request-Id"] == "abc-123"
            assert seen.headers["Accept-Encoding"] == "gzip"
            assert seen.headers["User-Agent"] == "ray-job-cli"
            assert seen.headers["X-Forwarded-For"] == "203.0.113.9, 127.0.0.1"
            assert seen.headers["X-Forwarded-Proto"] == "http"
            assert seen.headers["X-Forwarded-Host"] == f"{stack.url.host}:{stack.url.port}"

    asyncio.run(scenario())


def test_client_chunked_body_arrives_whole_without_client_transfer_encoding(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            async with client_session() as client, client.post(
                stack.url / "api/jobs/",
                headers=bearer(stack.token("ray-user")),
                data=generated_body(3 * MiB + 7, chunk_size=64 * 1024),
            ) as resp:
                assert resp.status == 200
            [seen] = stack.upstream.requests
            assert seen.complete and seen.size == 3 * MiB + 7
            assert seen.sha256 == generated_sha256(3 * MiB + 7, chunk_size=64 * 1024)
            # Re-framed by the gateway: one framing header, never both.
            assert not ("Content-Length" in seen.headers and "Transfer-Encoding" in seen.headers)

    asyncio.run(scenario())


# -- paths ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw_path",
    [
        "/api/jobs/?limit=10&status=RUNNING",
        "/api/jobs/?x=a%2Fb&y=%20&z=a+b&empty=&&flag",
        "/api/packages/gcs/_ray_pkg_0123abcd.zip",
        "/a%20b/c%7Ed/%E2%9C%93",
        "/api/jobs/raysubmit_1/../raysubmit_2",
        "/static/..%2F..%2Fsecret",
        "//double//slash/",
        "/p;param=1/q?bad=%zz",
    ],
)
def test_path_and_query_are_forwarded_exactly(tmp_path: Path, raw_path: str) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            url = URL(str(stack.url) + raw_path, encoded=True)
            async with client_session() as client, client.get(
                url, headers=bearer(stack.token("ray-user"))
            ) as resp:
                assert resp.status == 200
            assert [seen.raw_path for seen in stack.upstream.requests] == [raw_path]

    asyncio.run(scenario())


# -- bodies ---------------------------------------------------------------------------------------


def test_100_mib_upload_arrives_byte_identical(tmp_path: Path) -> None:
    # `ray job submit --working-dir` uploads its package as one PUT with Content-Length.
    size = 100 * MiB

    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            async with client_session() as client, client.put(
                stack.url / "api/packages/gcs/_ray_pkg_big.zip",
                headers={**bearer(stack.token("ray-user")), "Content-Length": str(size)},
                data=generated_body(size),
            ) as resp:
                answer = await resp.json()
            assert resp.status == 200
            [seen] = stack.upstream.requests
            assert seen.headers["Content-Length"] == str(size)
            assert seen.complete
            assert (answer["size"], answer["sha256"]) == (size, generated_sha256(size))

    asyncio.run(scenario())


def test_declared_body_over_the_limit_gets_413_and_nothing_forwarded(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway_stack(
            tmp_path / "state", accounts={"ray-user": ["*"]}, max_body_bytes=MiB
        ) as stack:
            async with client_session() as client, client.put(
                stack.url / "api/packages/gcs/_ray_pkg_big.zip",
                headers={**bearer(stack.token("ray-user")), "Content-Length": str(MiB + 1)},
                data=generated_body(MiB + 1),
            ) as resp:
                body = await resp.text()
            assert resp.status == 413
            assert f"exceeds {MiB} bytes" in body
            assert stack.upstream.requests == []

    asyncio.run(scenario())


def test_chunked_body_over_the_limit_gets_413_and_upstream_never_gets_it_whole(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with gateway_stack(
            tmp_path / "state", accounts={"ray-user": ["*"]}, max_body_bytes=MiB
        ) as stack:
            async with client_session() as client, client.put(
                stack.url / "api/packages/gcs/_ray_pkg_big.zip",
                headers=bearer(stack.token("ray-user")),
                data=generated_body(3 * MiB, chunk_size=64 * 1024),
            ) as resp:
                body = await resp.text()
            assert resp.status == 413
            assert f"exceeds {MiB} bytes" in body
            for seen in stack.upstream.requests:
                assert not seen.complete
                assert seen.size <= MiB

    asyncio.run(scenario())


def test_chunked_response_reaches_the_client_chunk_by_chunk(tmp_path: Path) -> None:
    # `ray logs --follow`: the first line must arrive while the upstream still holds the second.
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            async with client_session() as client, client.get(
                stack.url / "stream/chunks", headers=bearer(stack.token("ray-user"))
            ) as resp:
                assert resp.status == 200
                first = await resp.content.readline()
                stack.upstream.first_chunk_read.set()
                rest = await resp.content.read()
            assert first == b"first line\n"
            assert rest == b"second line\n"
            assert not stack.upstream.second_chunk_sent_early

    asyncio.run(scenario())


def test_gzip_body_passes_through_unchanged(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            async with client_session() as client, client.get(
                stack.url / "stream/gzip",
                headers={**bearer(stack.token("ray-user")), "Accept-Encoding": "gzip"},
            ) as resp:
                body = await resp.read()
            assert resp.status == 200
            assert resp.headers["Content-Encoding"] == "gzip"
            assert body == GZIP_BODY
            assert resp.headers["Content-Length"] == str(len(GZIP_BODY))

    asyncio.run(scenario())


def test_head_is_forwarded_and_answers_without_body(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            async with client_session() as client:
                async with client.head(
                    stack.url / "stream/gzip", headers=bearer(stack.token("ray-user"))
                ) as resp:
                    assert resp.status == 200
                    assert resp.headers["Content-Encoding"] == "gzip"
                    assert await resp.read() == b""
                # The connection is still usable: nothing of a body was left on it.
                async with client.get(
                    stack.url / "api/version", headers=bearer(stack.token("ray-user"))
                ) as resp:
                    assert resp.status == 200
            assert [seen.method for seen in stack.upstream.requests] == ["HEAD", "GET"]

    asyncio.run(scenario())


# -- limits and failures --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra_headers",
    [
        pytest.param({"X-Big": "x" * 20 * 1024}, id="20KiB-header"),
        pytest.param({"X-Big": "x" * 128 * 1024}, id="128KiB-header"),
        pytest.param({f"X-Many-{i}": "x" for i in range(300)}, id="300-headers"),
    ],
)
def test_oversized_request_headers_get_4xx_and_the_gateway_keeps_serving(
    tmp_path: Path, extra_headers: dict[str, str]
) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            token = bearer(stack.token("ray-user"))
            async with client_session() as client:
                async with client.get(
                    stack.url / "api/jobs/", headers={**token, **extra_headers}
                ) as resp:
                    assert 400 <= resp.status < 500
                async with client.get(stack.url / "api/jobs/", headers=token) as resp:
                    assert resp.status == 200

    asyncio.run(scenario())


def test_upstream_down_gets_502_and_the_gateway_serves_once_it_is_back(tmp_path: Path) -> None:
    async def scenario() -> None:
        down = free_port_url()
        async with gateway_stack(
            tmp_path / "state", accounts={"ray-user": ["*"]}, upstream_url=down
        ) as stack:
            token = bearer(stack.token("ray-user"))
            async with client_session() as client:
                async with client.get(stack.url / "api/jobs/", headers=token) as resp:
                    body = await resp.text()
                assert resp.status == 502
                assert "Ray dashboard is unreachable" in body
                assert str(down) not in body  # its private address stays private
                back = RecordingUpstream()
                async with serve(back.app(), port=down.port or 0):
                    async with client.get(stack.url / "api/jobs/", headers=token) as resp:
                        assert resp.status == 200
                assert [seen.method for seen in back.requests] == ["GET"]

    asyncio.run(scenario())


def test_stream_the_upstream_breaks_off_is_not_passed_off_as_complete(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            token = bearer(stack.token("ray-user"))
            async with client_session() as client:
                async with client.get(stack.url / "stream/broken", headers=token) as resp:
                    assert await resp.content.readline() == b"first line\n"
                    with pytest.raises(aiohttp.ClientPayloadError):
                        await resp.content.read()
                async with client.get(stack.url / "api/version", headers=token) as resp:
                    assert resp.status == 200
            broken = stack.audit_lines()[0]
            assert (broken["path"], broken["status"]) == ("/stream/broken", 200)
            assert "upstream broke off the response" in broken["reason"]

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
