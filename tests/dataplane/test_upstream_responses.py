"""The upstream's response heads as they come on the wire: split over many reads, after an
interim answer, changing from one response to the next on a kept-alive connection, or not
HTTP as raygate reads it. The client gets each response's own head (hop-by-hop headers
dropped), or a 502."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from tests.integration.gateway_helpers import bearer, client_session, gateway_stack

Answer = Callable[[int], list[bytes]]  # the n-th request on a connection -> the pieces sent


@contextlib.asynccontextmanager
async def raw_upstream(answer: Answer) -> AsyncIterator[str]:
    """An upstream that answers each request head with `answer(n)`, piece by piece."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = 0
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                for piece in answer(n):
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.002)  # separate reads at the gateway
                n += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


def _get_all(tmp_path: Path, answer: Answer, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    async def scenario() -> list[tuple[int, dict[str, str], bytes]]:
        got = []
        async with (
            raw_upstream(answer) as upstream,
            gateway_stack(tmp_path, accounts={"user": ["get"]}, upstream_url=upstream) as stack,
            client_session() as client,
        ):
            for _ in range(count):
                async with client.get(
                    stack.url / "api/version", headers=bearer(stack.token("user"))
                ) as resp:
                    got.append((resp.status, dict(resp.headers), await resp.read()))
        return got

    return asyncio.run(scenario())


def test_a_response_head_split_over_many_reads_arrives_whole(tmp_path: Path) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Served-By: ray\r\nContent-Length: 2\r\n\r\n"
    pieces = [head[i : i + 7] for i in range(0, len(head), 7)] + [b"{}"]
    got = _get_all(tmp_path, lambda n: pieces, 3)
    for status, headers, body in got:
        assert (status, body) == (200, b"{}")
        assert headers["X-Served-By"] == "ray"


def test_an_interim_answer_before_the_response_is_not_the_response(tmp_path: Path) -> None:
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    final = b"HTTP/1.1 200 OK\r\nX-Final: yes\r\nContent-Length: 5\r\n\r\nhello"
    got = _get_all(tmp_path, lambda n: [early + final] if n % 2 else [early, final], 4)
    for status, headers, body in got:
        assert (status, body) == (200, b"hello")
        assert headers["X-Final"] == "yes" and "Link" not in headers


def test_each_response_on_a_kept_alive_connection_gets_its_own_head(tmp_path: Path) -> None:
    """Heads that repeat are reused; one that changes (a clock, a length) is read again."""

    def answer(n: int) -> list[bytes]:
        body = b"x" * (1 + n // 2)
        return [
            b"HTTP/1.1 200 OK\r\nDate: second-%d\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (n // 2, len(body), body)
        ]

    got = _get_all(tmp_path, answer, 8)
    for n, (status, headers, body) in enumerate(got):
        assert status == 200
        assert headers["Date"] == f"second-{n // 2}"
        assert body == b"x" * (1 + n // 2)
        assert "Keep-Alive" not in headers  # hop-by-hop: never relayed


def test_a_response_head_without_crlf_line_ends_is_a_502(tmp_path: Path) -> None:
    got = _get_all(tmp_path, lambda n: [b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"], 1)
    assert got[0][0] == 502


def test_a_response_like_the_last_but_for_its_body_relays_its_own_body(tmp_path: Path) -> None:
    """The same bytes as the response before are relayed as they were; a body that differs
    under the same head (and length) is the new body."""

    def answer(n: int) -> list[bytes]:
        body = b"first" if n < 3 else b"other"
        return [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + body]

    got = _get_all(tmp_path, answer, 6)
    assert [body for _, _, body in got] == [b"first"] * 3 + [b"other"] * 3
    assert all(status == 200 and headers["Content-Length"] == "5" for status, headers, _ in got)


def test_an_answer_to_head_is_relayed_without_a_body_even_when_it_repeats_a_get(
    tmp_path: Path,
) -> None:
    """An upstream answering HEAD with the bytes it gave GET (body included): the client gets
    the head alone, and the GET after it its whole answer."""
    whole = [b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"]

    async def scenario() -> list[tuple[str, int, bytes]]:
        got = []
        async with (
            raw_upstream(lambda n: whole) as upstream,
            gateway_stack(tmp_path, accounts={"user": ["get"]}, upstream_url=upstream) as stack,
            client_session() as client,
        ):
            for method in ("GET", "GET", "HEAD", "GET", "GET"):
                async with client.request(
                    method, stack.url / "api/version", headers=bearer(stack.token("user"))
                ) as resp:
                    got.append((method, resp.status, await resp.read()))
        return got

    for method, status, body in asyncio.run(scenario()):
        assert status == 200
        assert body == (b"" if method == "HEAD" else b"hello")
