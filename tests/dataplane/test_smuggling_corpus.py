"""Every malformed or smuggling request of the corpus is refused before one byte reaches Ray.

`raygate up --upstream` runs as a process in front of a raw-socket upstream that records every
byte it receives. Each case is replayed with a token that is allowed, with no token, with the
token of an account without rights and with a garbage token (as fits the case), and the test
checks what a client and the upstream see:

- the client gets the expected refusal, or for a well-formed allowed request the upstream's 200;
- a refused request leaves no byte at the upstream (each replay carries a unique marker, looked
  for in everything the upstream ever received);
- a forwarded request arrives as exactly one well-formed HTTP/1.1 request (read by a strict
  parser written here), with its target and body intact, the gateway's identity headers and
  Ray's token, and none of the identity headers or credentials the client sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from .blackbox import (
    SPOOF_VALUES_FORBIDDEN,
    UPSTREAM_TOKEN,
    Gateway,
    RecorderThread,
    Request,
    exchange,
    parse_requests,
    requests_with,
    start_gateway,
    statuses,
    stop_gateway,
)
from .corpus import CASES, SMUGGLED, Case, Kind

ALLOWED = "ray-user"
NO_RIGHTS = "no-rights"
IDENTITY = b"system:serviceaccount:default:" + ALLOWED.encode()
# Time for anything the gateway might still send upstream after answering the client.
SETTLE = 0.05


@dataclass
class Rig:
    gateway: Gateway
    upstream: RecorderThread
    auth: dict[str, bytes]
    tokens: dict[str, bytes]
    forwarded: set[bytes]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    upstream = RecorderThread()
    gateway = start_gateway(
        tmp_path_factory.mktemp("corpus"), upstream.url, {ALLOWED: ["*"], NO_RIGHTS: None}
    )
    try:
        allowed = gateway.token(ALLOWED).encode()
        denied = gateway.token(NO_RIGHTS).encode()
        auth = {
            "allowed": b"Authorization: Bearer " + allowed + b"\r\n",
            "no-token": b"",
            "no-rights": b"Authorization: Bearer " + denied + b"\r\n",
            "bad-token": b"Authorization: Bearer not-a-token\r\n",
        }
        yield Rig(gateway, upstream, auth, {"allowed": allowed}, set())
    finally:
        stop_gateway(gateway)
        upstream.stop()


def variants(case: Case) -> dict[str, frozenset[int] | None]:
    """Each replay of a case and what it must get: the refusal statuses, or None to forward."""
    if b"{auth}" not in case.raw:
        return {"as-is": case.statuses}
    if case.kind is Kind.FORWARD:
        return {
            "allowed": None,
            "no-token": frozenset({401}),
            "no-rights": frozenset({403}),
            "bad-token": frozenset({401}),
        }
    return {"allowed": case.statuses, "no-token": case.statuses | {401}}


def fill(template: bytes, auth: bytes, marker: bytes, token: bytes) -> bytes:
    smuggled = SMUGGLED.replace(b"{auth}", auth).replace(b"{m}", marker)
    return (
        template.replace(b"{slen}", b"%d" % len(smuggled))
        .replace(b"{shex}", b"%x" % len(smuggled))
        .replace(b"{auth}", auth)
        .replace(b"{m}", marker)
        .replace(b"{tok}", token)
    )


def check_forwarded(case: Case, sent: bytes, marker: bytes, request: Request, auth: bytes) -> None:
    assert request.method == sent.split(b" ", 1)[0]
    if case.target is not None:
        assert request.target == case.target.replace(b"{m}", marker)
    if case.body is not None:
        assert request.body == case.body
    elif case.name.startswith("post-") and "is-a-request" in case.name:
        assert request.body == fill(SMUGGLED, auth, marker, b"")
    check_identity_headers(request)
    # A name that reads as a framing header once `_` is taken for `-` (as CGI servers do).
    lookalikes = {n.replace(b"_", b"-") for n in request.names() if b"_" in n}
    assert not lookalikes & {b"transfer-encoding", b"content-length", b"host"}


def check_identity_headers(request: Request) -> None:
    """The upstream sees who the gateway says, with Ray's token, and nothing the client forged."""
    assert request.values("x-remote-user") == [IDENTITY]
    for name, value in request.headers:
        key = name.lower().replace(b"_", b"-")
        if key.startswith(b"x-remote-"):
            assert key in (b"x-remote-user", b"x-remote-group") and name.lower() == key, name
        for forged in SPOOF_VALUES_FORBIDDEN:
            assert forged not in value, (name, value)
    assert request.values("authorization") == [b"Bearer " + UPSTREAM_TOKEN.encode()]
    assert b"x-ray-authorization" not in request.names()
    assert b"proxy-authorization" not in request.names()
    assert not any(b"ray-authentication-token" in v for v in request.values("cookie"))


def replay(rig: Rig, case: Case) -> list[tuple[str, bytes, bytes, bytes]]:
    """Every variant on its own connection, concurrently: (variant, marker, sent, answer)."""
    token = rig.tokens["allowed"]
    sends = []
    for variant in variants(case):
        marker = f"{case.name}.{variant}".encode()
        auth = rig.auth.get(variant, b"")
        sends.append((variant, marker, fill(case.raw, auth, marker, token)))

    async def run() -> list[bytes]:
        host, port = rig.gateway.host, rig.gateway.port
        return await asyncio.gather(*(exchange(host, port, data) for _, _, data in sends))

    answers = asyncio.run(run())
    time.sleep(SETTLE)
    return [(v, m, d, a) for (v, m, d), a in zip(sends, answers, strict=True)]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_case(rig: Rig, case: Case) -> None:
    expected = variants(case)
    for variant, marker, sent, answer in replay(rig, case):
        connections = rig.upstream.connection_bytes()
        occurrences, requests, error = requests_with(marker, connections)
        got = statuses(answer)
        where = f"{case.name} ({variant}): answer {answer[:300]!r}"
        refusal = expected[variant]
        may_forward = refusal is None or (case.kind is Kind.EITHER and variant == "allowed")
        if occurrences == 0 and refusal is not None:
            assert got and got[0] in refusal, where
            assert not any(200 <= s < 300 or s == 101 for s in got), where
            continue
        assert may_forward, f"{where}: refused request reached the upstream ({occurrences}x)"
        assert not error, f"{where}: the upstream received a malformed request: {error}"
        assert len(requests) == 1, f"{where}: {len(requests)} requests reached the upstream"
        assert got[:1] in ([200], [101]), where
        check_forwarded(case, sent, marker, requests[0], rig.auth[variant])
        rig.forwarded.add(marker)


def test_corpus_is_large_enough() -> None:
    names = [c.name for c in CASES]
    assert len(set(names)) == len(names) >= 100


async def _interim_then_final(rig: Rig, head: bytes, body: bytes | None) -> tuple[bytes, bytes]:
    """Send `head`; read the first answer head; then send `body` (if any) and read the rest."""
    reader, writer = await asyncio.open_connection(rig.gateway.host, rig.gateway.port)
    try:
        writer.write(head)
        await writer.drain()
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        rest = b""
        if body is not None:
            writer.write(body)
            await writer.drain()
            rest = await asyncio.wait_for(reader.readuntil(b"upstream"), 10)
        return first, rest
    finally:
        writer.close()


@pytest.mark.parametrize("variant", ["no-token", "no-rights", "bad-token"])
def test_expect_100_continue_is_refused_before_any_invitation(rig: Rig, variant: str) -> None:
    """A refused client is never invited to send its 100 MiB, and none of it goes upstream."""
    marker = f"expect-interactive.{variant}".encode()
    head = (
        b"PUT /api/jobs/?c=" + marker + b" HTTP/1.1\r\nHost: ray\r\n" + rig.auth[variant]
        + b"Expect: 100-continue\r\nContent-Length: 104857600\r\n\r\n"
    )  # fmt: skip
    first, _ = asyncio.run(_interim_then_final(rig, head, None))
    time.sleep(SETTLE)
    assert statuses(first) == [403 if variant == "no-rights" else 401], first
    assert b"100 Continue" not in first
    assert requests_with(marker, rig.upstream.connection_bytes())[0] == 0


def test_expect_100_continue_is_answered_once_authorized(rig: Rig) -> None:
    marker = b"expect-interactive.allowed"
    head = (
        b"PUT /api/jobs/?c=" + marker + b" HTTP/1.1\r\nHost: ray\r\n" + rig.auth["allowed"]
        + b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    )  # fmt: skip
    first, rest = asyncio.run(_interim_then_final(rig, head, b"hello"))
    assert first.startswith(b"HTTP/1.1 100 "), first
    assert statuses(rest) == [200], rest
    _, requests, error = requests_with(marker, rig.upstream.connection_bytes())
    assert not error and len(requests) == 1 and requests[0].body == b"hello"
    assert b"expect" not in requests[0].names()  # the gateway answered it; Ray must not again
    rig.forwarded.add(marker)


def test_upstream_received_only_whole_requests_of_forwarded_cases(rig: Rig) -> None:
    """Last in this module. After the corpus: every byte the upstream got parses as whole requests of replays that
    were meant to be forwarded, each once."""
    seen: list[bytes] = []
    for data in rig.upstream.connection_bytes():
        for request in parse_requests(data):
            marker = request.target.partition(b"c=")[2].split(b"&")[0]
            seen.append(marker)
    assert sorted(seen) == sorted(rig.forwarded)
