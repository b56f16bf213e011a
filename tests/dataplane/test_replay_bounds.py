"""What a connection keeps for replaying the same bytes (docs/design.md, "The same bytes again")
stays small: a poll's request and a poll's answer, never whatever one read happened to bring.
In-process: one HttpConnection and one UpstreamConnection with in-memory transports."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raygate.dataplane.http import REPLAY_MAX_BYTES, HttpConnection
from raygate.dataplane.server import Gateway
from raygate.dataplane.settings import GatewaySettings
from raygate.dataplane.upstream import UpstreamConnection
from raygate.embedded import EmbeddedAuthority
from raygate.pipeline import PipelineSettings, profile_for
from tests.dataplane.memory_transport import MemoryTransport
from tests.integration.gateway_helpers import UPSTREAM_TOKEN, guide_attributes, prepare_state


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    prepare_state(tmp_path)
    authority = EmbeddedAuthority(tmp_path)
    settings = PipelineSettings(
        authority=authority,
        profile=profile_for(guide_attributes()),
        upstream_token=UPSTREAM_TOKEN,
    )
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield Gateway(GatewaySettings(upstream="http://127.0.0.1:9", pipeline=settings))
    finally:
        authority.store.close()
        loop.close()
        asyncio.set_event_loop(None)


def _client(gateway: Gateway) -> tuple[HttpConnection, MemoryTransport]:
    conn = HttpConnection(gateway, "http")
    transport = MemoryTransport()
    conn.connection_made(transport)
    return conn, transport


REQUEST = b"GET /api/version HTTP/1.1\r\nHost: ray\r\n\r\n"  # no credential: a 401, at once


def test_a_whole_request_read_alone_is_kept_for_a_replay(gateway: Gateway) -> None:
    conn, transport = _client(gateway)
    for _ in range(3):
        conn.data_received(REQUEST)
        assert b"".join(transport.written).startswith(b"HTTP/1.1 401 ")
        transport.written.clear()
    assert conn._repeat is not None and conn._repeat[0] == REQUEST


@pytest.mark.parametrize(
    "read",
    [
        REQUEST + b"\r\n" * 100_000,  # blank lines after it: skipped by llhttp, not kept
        b"\r\n" * 1000 + REQUEST,  # blank lines before it
        b"GET /api/version?" + b"x" * REPLAY_MAX_BYTES + b" HTTP/1.1\r\nHost: ray\r\n\r\n",
    ],
    ids=["padded-after", "padded-before", "over-the-bound"],
)
def test_a_read_with_more_than_a_polls_request_is_not_kept(gateway: Gateway, read: bytes) -> None:
    conn, transport = _client(gateway)
    conn.data_received(read)
    assert b"".join(transport.written).startswith(b"HTTP/1.1 401 ")
    assert conn._repeat is None


class _Listener:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def response_head(self, status: int, reason: bytes, headers: Any) -> None:
        self.events.append(("head", status))

    def response_body(self, data: bytes) -> None:
        self.events.append(("body", bytes(data)))

    def response_complete(self) -> None:
        self.events.append(("complete",))

    def upstream_upgraded(self, rest: bytes) -> None:
        self.events.append(("upgraded",))

    def upstream_lost(self, exc: BaseException | None) -> None:
        self.events.append(("lost", str(exc)))

    def upstream_pause_writing(self) -> None:
        pass

    def upstream_resume_writing(self) -> None:
        pass


def _answer(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def _exchange(upstream: UpstreamConnection, response: bytes) -> list[Any]:
    listener = _Listener()
    upstream.start(listener, b"GET / HTTP/1.1\r\nHost: ray\r\n\r\n", head_only=False)
    upstream.data_received(response)
    return listener.events


@pytest.mark.parametrize("size", [26, REPLAY_MAX_BYTES + 1])
def test_an_upstream_answer_is_kept_for_a_replay_only_when_small(
    gateway: Gateway, size: int
) -> None:
    upstream = UpstreamConnection(gateway.pool)
    upstream.connection_made(MemoryTransport())
    body = b"x" * size
    for _ in range(3):  # relayed whole each time, replayed or not
        assert _exchange(upstream, _answer(body)) == [("head", 200), ("body", body), ("complete",)]
    assert (upstream._repeat is not None) == (size <= REPLAY_MAX_BYTES)


def test_a_response_beginning_in_the_read_that_ended_the_last_closes_the_connection(
    gateway: Gateway,
) -> None:
    """An upstream out of step (an extra, partial response after the one asked for): the
    connection is closed, not pooled, and nothing of the extra bytes answers a later request."""
    upstream = UpstreamConnection(gateway.pool)
    transport = MemoryTransport()
    upstream.connection_made(transport)
    events = _exchange(upstream, _answer(b"ok") + b"HTTP/1.1 200 OK\r\nX-Junk: ")
    assert events[:3] == [("head", 200), ("body", b"ok"), ("complete",)]
    assert transport.closed and upstream.closed
    assert gateway.pool.take_idle() is None


def test_extra_bytes_are_not_read_as_the_answer_to_a_request_sent_meanwhile(
    gateway: Gateway,
) -> None:
    """The next request (a pipelined one) takes the pooled connection while the read that ended
    the last response is still being parsed: the extra bytes after that response are refused,
    not parsed as the start of the next answer."""
    upstream = UpstreamConnection(gateway.pool)
    transport = MemoryTransport()
    upstream.connection_made(transport)
    following = _Listener()

    class _Pipelined(_Listener):
        def response_complete(self) -> None:
            super().response_complete()
            taken = gateway.pool.take_idle()
            assert taken is upstream
            taken.start(following, b"GET /next HTTP/1.1\r\nHost: ray\r\n\r\n", head_only=False)

    first = _Pipelined()
    upstream.start(first, b"GET / HTTP/1.1\r\nHost: ray\r\n\r\n", head_only=False)
    upstream.data_received(_answer(b"ok") + b"HTTP/1.1 200 OK\r\nX-Junk: ")
    assert first.events == [("head", 200), ("body", b"ok"), ("complete",)]
    assert [event[0] for event in following.events] == ["lost"]
    assert transport.closed
