"""WebSocket upgrades: checked, authorized like any request, then raw bytes both ways.

The handshake goes to the upstream as the client sent it (its key, version, protocols and
extensions), so the upstream's 101 answers the client itself; from then on the gateway pipes
bytes and never looks inside a frame. No heartbeats and no read timeouts: Ray's log tail may
be silent for minutes. Flow control holds both ways: a full write buffer pauses the other side.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import TYPE_CHECKING

from raygate.dataplane import framing
from raygate.dataplane.upstream import RawHeaders, decoded
from raygate.errors import UpstreamError
from raygate.pipeline import Forward, RequestHead, responses
from raygate.pipeline.headers import HOP_BY_HOP

if TYPE_CHECKING:
    from raygate.dataplane.http import Cycle, HttpConnection
    from raygate.dataplane.upstream import UpstreamConnection


def _tokens(value: str | None) -> set[str]:
    # HTTP's optional whitespace is space and tab only (llhttp's reading): str.strip() would
    # also take \xa0 or \x85, and see an upgrade where llhttp sees none.
    return {t.strip(" \t").lower() for t in (value or "").split(",") if t.strip(" \t")}


def is_websocket(head: RequestHead) -> bool:
    upgrade = head.headers.get("Upgrade")
    return upgrade is not None and "websocket" in _tokens(upgrade)


def valid_handshake(head: RequestHead, version: str) -> bool:
    """RFC 6455 §4.2.1: what a server must see before it may answer 101."""
    headers = head.headers
    if head.method != "GET" or version != "1.1":
        return False
    if "upgrade" not in {t for v in headers.getall("Connection") for t in _tokens(v)}:
        return False
    if headers.get("Sec-WebSocket-Version", "").strip() != "13":
        return False
    key = headers.get("Sec-WebSocket-Key", "").strip()
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def start(conn: HttpConnection, cycle: Cycle, forward: Forward) -> None:
    """Open the upstream side of an authorized upgrade; a bad handshake opens nothing."""
    cycle.close_after = True  # after a WebSocket (or a refused one) the connection is done
    # llhttp must have read it as an upgrade too: otherwise it went on parsing what follows as
    # requests, which a 101 would leave unanswered.
    if not cycle.handshake or not valid_handshake(cycle.head, cycle.version):
        conn.answer(cycle, responses.bad_request("not a valid WebSocket handshake"))
        return
    cycle.websocket = True
    headers = [*forward.upstream_headers, ("Connection", "Upgrade"), ("Upgrade", "websocket")]
    request = conn.gateway.pool.request_bytes(cycle.head.method, cycle.head.target, headers, b"")
    asyncio.ensure_future(_open(conn, cycle, request))


async def _open(conn: HttpConnection, cycle: Cycle, request: bytes) -> None:
    upstream = await conn.connect_upstream(cycle)
    if upstream is None:
        return
    cycle.upstream = upstream
    upstream.start(_Upgrade(conn, cycle, upstream), request, head_only=False)


class _Upgrade:
    """The upstream's answer to a handshake: a 101 starts the piping, anything else is relayed
    as an ordinary response."""

    def __init__(self, conn: HttpConnection, cycle: Cycle, upstream: UpstreamConnection) -> None:
        self.conn = conn
        self.cycle = cycle
        self.upstream = upstream
        self.piping = False

    def response_head(self, status: int, reason: bytes, headers: RawHeaders) -> None:
        if status != 101:
            self.cycle.response_head(status, reason, headers)
            return
        # The 101 goes to the client with its upgrade headers (hop-by-hop ones otherwise).
        kept = [
            (n, v)
            for n, v in decoded(headers)
            if n.lower() not in HOP_BY_HOP or n.lower() in ("connection", "upgrade")
        ]
        conn = self.conn
        cycle = self.cycle
        cycle.started = True
        cycle.response_status = 101
        conn._write(framing.status_line(101, reason) + framing.header_block(kept) + framing.CRLF)

    def upstream_upgraded(self, rest: bytes) -> None:
        conn = self.conn
        cycle = self.cycle
        if cycle.response_status != 101:
            self.upstream_lost(UpstreamError("unexpected protocol switch"))
            return
        self.piping = True
        record = cycle.record
        if record is not None:
            record.status = 101
            conn.pipeline.finished(record)
            cycle.record = None
        conn.upgraded_to = self.upstream
        cycle.upstream = None
        if rest:
            conn._write(rest)
        early = conn.upgrade_rest
        conn.upgrade_rest = b""
        if early:
            self.upstream.write(early)
        conn.resume("upgrade")
        conn.resume("pipeline")

    def response_body(self, data: bytes) -> None:
        if self.piping:
            self.conn._write(data)
        elif self.cycle.upstream is not None:
            self.cycle.response_body(data)

    def response_complete(self) -> None:
        if not self.piping and self.cycle.upstream is not None:
            self.cycle.response_complete()

    def upstream_lost(self, exc: BaseException | None) -> None:
        if self.piping:
            self.conn.close_now()  # the upstream closed: so does the client, after its bytes
        elif self.cycle.upstream is not None:
            self.conn._upstream_failed(self.cycle, exc)

    def upstream_pause_writing(self) -> None:
        self.conn.pause("upload")

    def upstream_resume_writing(self) -> None:
        self.conn.resume("upload")
