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
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                statuses.append(int(head.split(b" ", 2)[1]))
                length = [
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                await reader.readexactly(length[0] if length else 0)
        finally:
            writer.close()
        return statuses

    assert asyncio.run(run()) == [200, 200, 403]
