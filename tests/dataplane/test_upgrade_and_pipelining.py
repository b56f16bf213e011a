"""After an upgrade the upstream refused, and after a GET with a body, the client's next bytes
are a new request the gateway authorizes on its own, or the connection ends: never raw bytes
piped to the upstream.

`raygate up --upstream` runs as a process in front of raw-socket upstreams that record every
byte they receive: one answers every request (an upgrade too) with a fixed non-101 status.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .blackbox import (
    RecorderThread,
    complete_answers,
    exchange,
    requests_with,
    start_gateway,
    statuses,
    stop_gateway,
)

ALLOWED = "ray-user"
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


class RefusingUpstream:
    """Answers each request head with `status` (and a tiny body), then records whatever else
    arrives on that connection, until it closes."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.received: list[bytearray] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(sock,), daemon=True).start()

    def _handle(self, sock: socket.socket) -> None:
        data = bytearray()
        self.received.append(data)
        answered = 0
        with sock:
            while chunk := sock.recv(65536):
                data += chunk
                while data.count(b"\r\n\r\n") > answered:
                    answered += 1
                    sock.sendall(b"HTTP/1.1 %d Nope\r\nContent-Length: 2\r\n\r\nno" % self.status)

    def everything(self) -> bytes:
        time.sleep(0.1)  # anything the gateway might still send
        return b"".join(bytes(d) for d in self.received)

    def stop(self) -> None:
        self._server.close()


def handshake(token: str, target: bytes = b"/api/logs/stream") -> bytes:
    return (
        b"GET " + target + b" HTTP/1.1\r\nHost: ray\r\nAuthorization: Bearer "
        + token.encode() + b"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + KEY + b"\r\n\r\n"
    )  # fmt: skip


# What a client might send next: a request without any credential.
UNAUTHORIZED = b"GET /api/jobs/?c=after HTTP/1.1\r\nHost: ray\r\n\r\n"


@pytest.fixture(params=[400, 200, 302])
def refused_upgrade(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple]:
    upstream = RefusingUpstream(request.param)
    gateway = start_gateway(tmp_path, upstream.url, {ALLOWED: ["*"]})
    try:
        yield gateway, upstream, request.param
    finally:
        stop_gateway(gateway)
        upstream.stop()


async def _handshake_then(host: str, port: int, first: bytes, then: bytes) -> tuple[bytes, bytes]:
    """Send `first`, read its answer, then send `then`; what came back before and after."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(first)
        await writer.drain()
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        answer += await asyncio.wait_for(reader.readexactly(2), 10)
        after = b""
        try:
            writer.write(then)
            await writer.drain()
            while chunk := await asyncio.wait_for(reader.read(65536), 2):
                after += chunk
                if b"\r\n\r\n" in after:
                    break
        except (ConnectionError, TimeoutError):
            pass
        return answer, after
    finally:
        writer.close()


def test_bytes_after_a_refused_upgrade_never_reach_the_upstream(refused_upgrade: tuple) -> None:
    gateway, upstream, status = refused_upgrade
    token = gateway.token(ALLOWED)
    answer, after = asyncio.run(
        _handshake_then(gateway.host, gateway.port, handshake(token), UNAUTHORIZED)
    )
    assert statuses(answer) == [status], answer
    # Closed, or answered as a request of its own (no credential: 401); never piped.
    assert after == b"" or statuses(after) == [401], after
    seen = upstream.everything()
    assert seen.count(b"GET ") == 1 and b"c=after" not in seen, seen


def test_bytes_sent_with_a_handshake_the_upstream_refuses_never_reach_it(
    refused_upgrade: tuple,
) -> None:
    gateway, upstream, status = refused_upgrade
    token = gateway.token(ALLOWED)
    answer = asyncio.run(
        exchange(gateway.host, gateway.port, handshake(token) + UNAUTHORIZED, want=2)
    )
    assert statuses(answer)[:1] == [status], answer
    assert 101 not in statuses(answer) and 200 not in statuses(answer)[1:], answer
    seen = upstream.everything()
    assert seen.count(b"GET ") == 1 and b"c=after" not in seen, seen


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    upstream = RecorderThread()
    gateway = start_gateway(tmp_path_factory.mktemp("pipelined"), upstream.url, {ALLOWED: ["*"]})
    try:
        yield gateway, upstream
    finally:
        stop_gateway(gateway)
        upstream.stop()


def _get_with_body(marker: bytes, auth: bytes, body: bytes) -> bytes:
    return (
        b"GET /api/jobs/?c=" + marker + b" HTTP/1.1\r\nHost: ray\r\n" + auth
        + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )  # fmt: skip


@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_a_request_after_a_get_body_is_authorized_on_its_own(
    recorded: tuple, method: bytes
) -> None:
    gateway, upstream = recorded
    auth = b"Authorization: Bearer " + gateway.token(ALLOWED).encode() + b"\r\n"
    name = method.lower()
    first = _get_with_body(name + b"-first", auth, b"hello").replace(b"GET", method, 1)
    # The body looks like the start of a request; the request after it carries no token.
    second = _get_with_body(name + b"-second", b"", b"")
    answer = asyncio.run(exchange(gateway.host, gateway.port, first + second, want=2))
    assert complete_answers(answer, head=method == b"HEAD")[0] == [200, 401], answer
    time.sleep(0.05)
    connections = upstream.connection_bytes()
    count, requests, error = requests_with(name + b"-first", connections)
    assert not error and len(requests) == 1 and requests[0].body == b"hello"
    assert requests_with(name + b"-second", connections)[0] == 0


def test_a_refused_get_body_is_skipped_and_the_next_request_decided_alone(recorded: tuple) -> None:
    gateway, upstream = recorded
    auth = b"Authorization: Bearer " + gateway.token(ALLOWED).encode() + b"\r\n"
    smuggled = b"GET /api/jobs/?c=inner HTTP/1.1\r\nHost: ray\r\n" + auth + b"\r\n"
    first = _get_with_body(b"refused-first", b"", smuggled)
    second = _get_with_body(b"allowed-second", auth, b"")
    answer = asyncio.run(exchange(gateway.host, gateway.port, first + second, want=2))
    assert complete_answers(answer)[0] == [401, 200], answer
    time.sleep(0.05)
    connections = upstream.connection_bytes()
    assert requests_with(b"refused-first", connections)[0] == 0
    assert requests_with(b"c=inner", connections)[0] == 0
    assert len(requests_with(b"allowed-second", connections)[1]) == 1


def test_an_upgrade_the_gateway_answers_itself_ends_the_connection(tmp_path: Path) -> None:
    """A handshake to a route the gateway answers itself (here its public OIDC discovery): the
    answer says the connection closes, and it does, at once: the bytes after a handshake are
    not HTTP llhttp will read, so waiting for another request would hang until the idle
    timeout."""
    upstream = RecorderThread()
    gateway = start_gateway(tmp_path, upstream.url, {ALLOWED: ["*"]})

    async def run() -> tuple[bytes, float]:
        reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
        try:
            writer.write(handshake("", b"/.well-known/openid-configuration"))
            await writer.drain()
            began = time.monotonic()
            answer = b""
            try:
                while chunk := await asyncio.wait_for(reader.read(65536), 10):
                    answer += chunk
            except TimeoutError:
                pass
            return answer, time.monotonic() - began
        finally:
            writer.close()

    try:
        answer, waited = asyncio.run(run())
    finally:
        stop_gateway(gateway)
        upstream.stop()
    assert statuses(answer) == [200], answer
    assert b"Connection: close" in answer.split(b"\r\n\r\n", 1)[0]
    assert waited < 5, f"the connection stayed open {waited:.1f}s after the answer"


def test_a_request_pipelined_before_a_handshake_is_answered_and_kept_apart(
    recorded: tuple,
) -> None:
    """An allowed request, then in the same write a handshake with no credential and bytes
    after it: the first is forwarded and answered as any other, the handshake is refused, and
    neither it nor the bytes after it reach the upstream. (The handshake is the request llhttp
    read last; the request before it is not one, and is not closed as one.)"""
    gateway, upstream = recorded
    auth = b"Authorization: Bearer " + gateway.token(ALLOWED).encode() + b"\r\n"
    first = b"GET /api/jobs/?c=before-handshake HTTP/1.1\r\nHost: ray\r\n" + auth + b"\r\n"
    refused = handshake("", b"/api/logs/stream?c=refused-handshake").replace(
        b"Authorization: Bearer \r\n", b""
    )
    answer = asyncio.run(
        exchange(gateway.host, gateway.port, first + refused + b"after-handshake", want=2)
    )
    assert complete_answers(answer)[0] == [200, 401], answer
    time.sleep(0.05)
    connections = upstream.connection_bytes()
    assert len(requests_with(b"before-handshake", connections)[1]) == 1
    assert requests_with(b"refused-handshake", connections)[0] == 0
    assert not any(b"after-handshake" in c for c in connections)


def test_a_handshake_llhttp_does_not_read_as_one_is_refused_not_opened(recorded: tuple) -> None:
    """`Connection: Upgrade` followed by a no-break space: Python's str.strip() would see the
    upgrade token, llhttp does not, and goes on reading the next bytes as a request. The two
    readings must not both be acted on: the handshake is refused and nothing reaches the
    upstream."""
    gateway, upstream = recorded
    token = gateway.token(ALLOWED)
    odd = handshake(token, b"/api/logs/stream?c=odd-handshake").replace(
        b"Connection: Upgrade\r\n", b"Connection: Upgrade\xa0\r\n"
    )
    after = b"GET /api/jobs/?c=after-odd-handshake HTTP/1.1\r\nHost: ray\r\n\r\n"
    answer = asyncio.run(exchange(gateway.host, gateway.port, odd + after, want=1))
    assert complete_answers(answer)[0][:1] == [400], answer
    assert b"101" not in answer.split(b"\r\n", 1)[0]
    time.sleep(0.05)
    connections = upstream.connection_bytes()
    assert requests_with(b"odd-handshake", connections)[0] == 0
    assert requests_with(b"after-odd-handshake", connections)[0] == 0
