"""A keep-alive client repeating itself: the gateway reuses what it worked out for the request
before (its decoded headers, its decision, the upstream head), and only for the very same
request. Anything that differs is checked again, on the same connection."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from .blackbox import RecorderThread, complete_answers, exchange, start_gateway, stop_gateway

ALLOWED = "ray-user"
READER = "reader"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    upstream = RecorderThread()
    gate = start_gateway(
        tmp_path_factory.mktemp("repeated"), upstream.url, {ALLOWED: ["*"], READER: ["get"]}
    )
    try:
        yield gate, upstream
    finally:
        stop_gateway(gate)
        upstream.stop()


def _get(target: bytes, *lines: bytes, method: bytes = b"GET") -> bytes:
    return (
        method
        + b" "
        + target
        + b" HTTP/1.1\r\n"
        + b"".join(line + b"\r\n" for line in lines)
        + b"\r\n"
    )


async def _next_status(reader: asyncio.StreamReader, timeout: float) -> int:
    """The status of the next answer on the connection, its body read too."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    length = [
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    ]
    await reader.readexactly(length[0] if length else 0)
    return int(head.split(b" ", 2)[1])


def test_a_repeated_request_is_forwarded_each_time_and_anything_new_is_checked(
    gateway: tuple,
) -> None:
    gate, upstream = gateway
    auth = b"Authorization: Bearer " + gate.token(READER).encode()
    other = b"Authorization: Bearer " + gate.token(ALLOWED).encode()
    same = _get(b"/api/version?m=repeat", b"Host: ray", auth)
    requests = [
        (same, 200),
        (same, 200),
        (same, 200),
        # The reader may get, not post: the same headers with another method are decided again.
        (_get(b"/api/version?m=repeat", b"Host: ray", auth, method=b"POST"), 403),
        (same, 200),
        # A Host the upstream could read as another authority, with the same token.
        (_get(b"/api/version?m=repeat", b"Host: evil@ray", auth), 400),
    ]
    data = b"".join(request for request, _ in requests)
    answer = asyncio.run(exchange(gate.host, gate.port, data, want=len(requests)))
    assert complete_answers(answer)[0] == [status for _, status in requests], answer
    # A forged identity header after allowed repeats is stripped as on any first request, and
    # a second token on the connection is its own caller.
    forged = _get(b"/api/version?m=forged", b"Host: ray", auth, b"X-Remote-User: admin")
    switched = _get(b"/api/version?m=switched", b"Host: ray", other)
    data = same + same + forged + same + switched
    answer = asyncio.run(exchange(gate.host, gate.port, data, want=5))
    assert complete_answers(answer)[0] == [200] * 5, answer
    time.sleep(0.1)
    seen = b"".join(upstream.connection_bytes())
    assert seen.count(b"m=repeat") == 4 + 3  # the allowed repeats, each forwarded once
    forged_at = seen.index(b"m=forged")
    forged_head = seen[forged_at : seen.index(b"\r\n\r\n", forged_at)]
    assert b"X-Remote-User: system:serviceaccount:default:reader" in forged_head
    assert b"admin" not in forged_head
    switched_at = seen.index(b"m=switched")
    switched_head = seen[switched_at : seen.index(b"\r\n\r\n", switched_at)]
    assert b"X-Remote-User: system:serviceaccount:default:ray-user" in switched_head
    # Every request, repeated or not, has its own audit line.
    deadline = time.monotonic() + 5
    while gate.audit_path.read_text().count("m=repeat") < 9 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gate.audit_path.read_text().count("m=repeat") == 9  # 4 + 3 allowed, 2 refused


def test_a_revoked_binding_refuses_the_next_repeat_on_the_same_connection(
    gateway: tuple,
) -> None:
    gate, _ = gateway
    gate.add_accounts({"revoked": ["get"]})
    request = _get(
        b"/api/version?m=revoke",
        b"Host: ray",
        b"Authorization: Bearer " + gate.token("revoked").encode(),
    )

    async def run() -> list[int]:
        reader, writer = await asyncio.open_connection(gate.host, gate.port)
        statuses = []
        try:
            for step in range(3):
                if step == 2:
                    from raygate.store.sqlite import ObjectStore

                    with ObjectStore.open(gate.state) as store:
                        store.delete("RoleBinding", "revoked", "default")
                    await asyncio.sleep(1.5)  # the store's change reaches the gateway
                writer.write(request)
                await writer.drain()
                statuses.append(await _next_status(reader, 10))
        finally:
            writer.close()
        return statuses

    assert asyncio.run(run()) == [200, 200, 403]


async def _one_at_a_time(gate: object, pieces: list[bytes]) -> list[int]:
    """Each piece in its own write on one connection; the statuses answered, in order. A piece
    that is not a whole request gets no answer of its own (its status comes with a later one)."""
    reader, writer = await asyncio.open_connection(gate.host, gate.port)  # type: ignore[attr-defined]
    statuses = []
    try:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            try:
                statuses.append(await _next_status(reader, 0.5))
            except TimeoutError:
                continue  # a part of a request: nothing to answer yet
            except (asyncio.IncompleteReadError, ConnectionError):
                break
    finally:
        writer.close()
    return statuses


def _audited(gate: object, marker: str, count: int) -> int:
    path = gate.audit_path  # type: ignore[attr-defined]
    deadline = time.monotonic() + 5
    while path.read_text().count(marker) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return path.read_text().count(marker)


def test_the_same_bytes_read_after_read_are_each_forwarded_and_audited(gateway: tuple) -> None:
    """A poller's request arrives whole, one read each: every one reaches the upstream once, with
    the caller's identity, and has its own audit line."""
    gate, upstream = gateway
    same = _get(
        b"/api/version?m=reads",
        b"Host: ray",
        b"Authorization: Bearer " + gate.token(READER).encode(),
        b"X-Remote-User: admin",
    )
    before = upstream.lengths()
    assert asyncio.run(_one_at_a_time(gate, [same] * 6)) == [200] * 6
    time.sleep(0.1)
    seen = b"".join(upstream.new_bytes(before))
    assert seen.count(b"m=reads") == 6
    assert seen.count(b"X-Remote-User: system:serviceaccount:default:reader") == 6
    assert b"admin" not in seen
    assert _audited(gate, "m=reads", 6) == 6


def test_the_same_bytes_after_a_partial_request_are_not_taken_as_that_request(
    gateway: tuple,
) -> None:
    """Bytes equal to the last request, read while another request is half-parsed, continue
    that request: here into a malformed one (400), and nothing of it reaches the upstream."""
    gate, upstream = gateway
    same = _get(
        b"/api/version?m=partial",
        b"Host: ray",
        b"Authorization: Bearer " + gate.token(READER).encode(),
    )
    before = upstream.lengths()
    statuses = asyncio.run(_one_at_a_time(gate, [same, same, same[:12], same]))
    assert statuses == [200, 200, 400]
    time.sleep(0.1)
    assert b"".join(upstream.new_bytes(before)).count(b"m=partial") == 2


def test_a_request_split_over_reads_after_whole_ones_is_read_whole(gateway: tuple) -> None:
    gate, upstream = gateway
    same = _get(
        b"/api/version?m=split",
        b"Host: ray",
        b"Authorization: Bearer " + gate.token(READER).encode(),
    )
    before = upstream.lengths()
    pieces = [same, same, same[:20], same[20:], same]
    assert asyncio.run(_one_at_a_time(gate, pieces)) == [200] * 4
    time.sleep(0.1)
    assert b"".join(upstream.new_bytes(before)).count(b"m=split") == 4


def test_the_same_request_with_a_body_sends_its_body_each_time(gateway: tuple) -> None:
    gate, upstream = gateway
    body = b'{"n": "same body"}'
    same = (
        _get(
            b"/api/echo?m=body",
            b"Host: ray",
            b"Authorization: Bearer " + gate.token(ALLOWED).encode(),
            b"Content-Length: %d" % len(body),
            method=b"POST",
        )
        + body
    )
    before = upstream.lengths()
    assert asyncio.run(_one_at_a_time(gate, [same] * 3)) == [200] * 3
    time.sleep(0.1)
    seen = b"".join(upstream.new_bytes(before))
    assert seen.count(b"m=body") == 3
    assert seen.count(body) == 3
