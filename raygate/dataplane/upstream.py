"""Connections to the upstream: one llhttp response parser each, kept alive in a pool.

A connection delivers the response it parses to its `listener` (the client request being
forwarded, or a buffered exchange the pipeline asked for). Idle connections wait in the pool a
short while; one the upstream closed is dropped, never used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Protocol

import httptools

from raygate.dataplane import framing
from raygate.dataplane.settings import GatewaySettings, UpstreamAddress
from raygate.errors import UpstreamError
from raygate.pipeline import BufferedResponse, HeaderList

log = logging.getLogger("raygate.dataplane")

# Flow control: above this much unsent data a transport pauses its peer's reading.
WRITE_HIGH_WATER = 256 * 1024
WRITE_LOW_WATER = 64 * 1024
# The pipeline's own calls (ownership lookups) wait this long for a whole answer.
FETCH_TIMEOUT = 60.0


# Response header lines as the parser gives them (latin-1 bytes); `decoded` makes a HeaderList.
RawHeaders = list[tuple[bytes, bytes]]


def decoded(headers: RawHeaders) -> HeaderList:
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]


# A request, or an upstream response, is kept for a replay of the same bytes only up to this
# size: what a poller sends and gets, not whatever one read brought (held per connection).
REPLAY_MAX_BYTES = 16 * 1024

# A response head larger than this (without its end) is refused: the upstream is not speaking
# HTTP as raygate reads it.
MAX_RESPONSE_HEAD = 1024 * 1024


class _HeadFields:
    """What a response head holds: its reason phrase, header lines and framing."""

    __slots__ = ("chunked", "headers", "length", "reason")

    def __init__(self) -> None:
        self.reason = b""
        self.headers: RawHeaders = []
        self.length: str | None = None  # Content-Length
        self.chunked = False

    # httptools callbacks
    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        if len(name) == 14 or len(name) == 17:
            lname = name.lower()
            if lname == b"content-length":
                self.length = value.decode("latin-1")
            elif lname == b"transfer-encoding":
                self.chunked = True


def _read_head(raw: bytes) -> _HeadFields:
    """The fields of a response head the connection's parser already accepted, read by llhttp
    from its bytes alone."""
    fields = _HeadFields()
    with contextlib.suppress(httptools.HttpParserUpgrade):
        httptools.HttpResponseParser(fields).feed_data(raw)
    return fields


class ResponseListener(Protocol):
    """What receives an upstream response, event by event."""

    def response_head(self, status: int, reason: bytes, headers: RawHeaders) -> None: ...

    def response_body(self, data: bytes) -> None: ...

    def response_complete(self) -> None: ...

    def upstream_upgraded(self, rest: bytes) -> None: ...

    def upstream_lost(self, exc: BaseException | None) -> None: ...

    def upstream_pause_writing(self) -> None: ...

    def upstream_resume_writing(self) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.listener: ResponseListener | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.reused = False
        self.response_started = False
        self.idle_since = 0.0
        self.closed = False
        self.upgraded = False
        self._status = 0
        # The bytes of the response head being read (from its first byte on), and the last
        # head read with what llhttp found in it: a response head like the last one (a client
        # polling) is not read again.
        self._in_head = True
        self._head_bytes = b""
        self._last_raw = b""
        self._last_fields: _HeadFields | None = None
        self._malformed = False
        # Responses to HEAD have no body, whatever their Content-Length says; llhttp cannot be
        # told so, so such a connection ends with the head and is not reused.
        self.expect_head_only = False
        self._until_close = False
        self.response_length: str | None = None  # Content-Length of the response being read
        self.response_chunked = False
        # The last response that came whole in one read (head and Content-Length body) from a
        # message boundary and kept the connection: (its bytes, status, head fields, head length).
        # The same bytes again (an upstream answering a poll as before) need no parsing.
        self._repeat: tuple[bytes, int, _HeadFields, int] | None = None
        self._begun = 0  # responses begun within the current read
        self._in_message = False  # llhttp is inside a response (its first bytes came)
        self._ended = False  # a response ended within the current read
        self._kept = False  # the last response read ended with the connection kept
        self._last_status = 0

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TLS transport too
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)

    def data_received(self, data: bytes) -> None:
        if self.upgraded:
            if self.listener is not None:
                self.listener.response_body(data)
            return
        listener = self.listener
        if listener is None:
            self.close()  # bytes from an idle upstream connection: it is not in sync anymore
            return
        # A client the listener writes to: its writes gather until this read is parsed, then
        # go in one write (one system call per upstream read).
        corked = getattr(listener, "corks", None)
        if corked is not None:
            corked.cork()
        fresh = False
        if self._in_head:
            head = self._head_bytes
            if not head and not self._in_message:
                fresh = True  # the first bytes of a response: llhttp between messages
                repeat = self._repeat
                if repeat is not None and data == repeat[0] and not self.expect_head_only:
                    try:
                        self._replay(repeat)
                    except Exception as err:  # as a failing parser callback: 502, not a retry
                        log.exception("relaying an upstream response failed")
                        listener = self.listener or listener
                        self.close()
                        listener.upstream_lost(
                            UpstreamError(f"relaying the response failed: {err}")
                        )
                    finally:
                        if corked is not None:
                            corked.uncork()
                    return
                self._begun = 0
            self._head_bytes = head + data if head else data
            if len(self._head_bytes) > MAX_RESPONSE_HEAD and b"\r\n\r\n" not in self._head_bytes:
                self._malformed = True
        self._ended = False
        try:
            if not self._malformed:
                self.parser.feed_data(data)
            if self._malformed:
                raise httptools.HttpParserError(
                    "the response head is not CRLF-delimited or too large"
                )
        except httptools.HttpParserUpgrade as upgrade:
            self.upgraded = True
            offset = upgrade.args[0] if upgrade.args else len(data)
            listener = self.listener
            if listener is not None:
                listener.upstream_upgraded(data[offset:])
        except httptools.HttpParserError as err:
            listener = self.listener or listener
            self.close()
            if listener is not None:
                listener.upstream_lost(UpstreamError(f"invalid response from the upstream: {err}"))
        else:
            if fresh and self._begun == 1 and self._kept:
                self._remember(data)
        finally:
            if corked is not None:
                corked.uncork()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        listener = self.listener
        self.listener = None
        if listener is not None:
            if self.upgraded:
                listener.upstream_lost(exc)
                return
            # A close-delimited body ends with the connection: that is its complete end.
            if self.response_started and self._until_close:
                listener.response_complete()
            else:
                listener.upstream_lost(exc)

    def pause_writing(self) -> None:
        if self.listener is not None:
            self.listener.upstream_pause_writing()

    def resume_writing(self) -> None:
        if self.listener is not None:
            self.listener.upstream_resume_writing()

    # -- httptools callbacks -----------------------------------------------------------------
    # Only the head's end, the body and the message's end: the head's own lines are read from
    # its bytes (`_read_head`), and only when they differ from the last head's.
    def on_message_begin(self) -> None:
        if self._ended or self.listener is None:
            # A response beginning in the read that ended the one before, or nobody asked for:
            # the upstream is not in step with the requests. Refused (the connection closes),
            # never read as the answer to a request sent on it meanwhile.
            self._malformed = True
        self._in_message = True
        self._begun += 1
        self._kept = False

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        buffered = self._head_bytes
        end = buffered.find(b"\r\n\r\n")
        if end < 0:
            self._malformed = True  # llhttp took a head that is not CRLF-delimited: refused
            return
        raw = buffered[: end + 4]
        if status < 200 and status != 101:
            self._head_bytes = buffered[end + 4 :]  # the real answer's head follows
            return  # an interim answer (100 Continue, 103)
        self._head_bytes = b""
        self._in_head = False
        fields = self._last_fields
        if fields is None or raw != self._last_raw:
            fields = _read_head(raw)
            self._last_raw, self._last_fields = raw, fields
        self._head_read(status, fields)

    def _head_read(self, status: int, fields: _HeadFields) -> None:
        self._last_status = status
        self.response_length = fields.length
        self.response_chunked = fields.chunked
        self._status = status
        self.response_started = True
        self._until_close = False
        if fields.length is None and not fields.chunked:
            self._until_close = framing.has_body("GET", status)
        listener = self.listener
        if listener is not None:
            listener.response_head(status, fields.reason, fields.headers)
        if self.expect_head_only and status != 101:
            self._finish_without_body()

    def on_body(self, body: bytes) -> None:
        if self._status and self.listener is not None:
            self.listener.response_body(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        if not self._status or self._status == 101 or self.upgraded:
            return  # the end of an interim response, or of the head of a protocol switch
        self._message_read(self.parser.should_keep_alive() and not self.expect_head_only)

    def _message_read(self, keep: bool) -> None:
        listener = self.listener
        self._kept = keep
        self._ended = True
        self.listener = None
        self._status = 0
        self.response_started = False
        if keep:
            self.pool.release(self)
        else:
            self.close()
        if listener is not None:
            listener.response_complete()

    # -- a response like the last ---------------------------------------------------------------
    def _remember(self, data: bytes) -> None:
        """Keep `data`, one whole response just read, if it has a Content-Length body."""
        fields = self._last_fields
        status = self._last_status
        if (
            fields is None
            or fields.chunked
            or fields.length is None
            or status < 200
            or status in (204, 304)
            or not fields.length.isdigit()
        ):
            return
        head = len(self._last_raw)
        if (
            len(data) > REPLAY_MAX_BYTES
            or len(data) != head + int(fields.length)
            or not data.startswith(self._last_raw)
        ):
            return
        self._repeat = (data, status, fields, head)

    def _replay(self, repeat: tuple[bytes, int, _HeadFields, int]) -> None:
        """The events of the response `repeat` holds, again, without parsing its bytes: from
        the same parser state the same bytes make the same events."""
        self._head_read(repeat[1], repeat[2])
        listener = self.listener
        data, head = repeat[0], repeat[3]
        if listener is not None and len(data) > head:
            listener.response_body(data[head:])
        self._message_read(True)

    # -- helpers -------------------------------------------------------------------------------
    def _finish_without_body(self) -> None:
        listener = self.listener
        self.listener = None
        self.response_started = False
        self.close()
        if listener is not None:
            listener.response_complete()

    def start(self, listener: ResponseListener, request: bytes, head_only: bool) -> None:
        self.listener = listener
        self.expect_head_only = head_only
        self._until_close = False
        self._in_head = True
        self._head_bytes = b""
        assert self.transport is not None
        self.transport.write(request)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def writelines(self, parts: list[bytes]) -> None:
        if self.transport is not None and not self.closed:
            self.transport.writelines(parts)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def detach(self) -> None:
        """The listener is gone (its client left): this connection is in no known state."""
        self.listener = None
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.transport is not None:
            self.transport.abort()


class UpstreamPool:
    """Idle keep-alive connections to one upstream, newest first."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.address = UpstreamAddress.parse(settings.upstream)
        self.settings = settings
        self._idle: deque[UpstreamConnection] = deque()
        self._all: set[UpstreamConnection] = set()
        self._ssl = (settings.upstream_ssl or True) if self.address.scheme == "https" else None
        self._sweeper: asyncio.TimerHandle | None = None
        self.opened = 0  # connections opened so far (tests check keep-alive reuse)

    def take_idle(self) -> UpstreamConnection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                conn.reused = True
                return conn
        return None

    async def connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        address = self.address
        # wait_for, not asyncio.timeout: this may run before a decision's first wait, outside
        # any task (see raygate.dataplane.http.HttpConnection._start).
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: UpstreamConnection(self),
                    address.host,
                    address.port,
                    ssl=self._ssl,
                    server_hostname=address.host if self._ssl else None,
                ),
                self.settings.upstream_connect_timeout,
            )
        except TimeoutError:
            raise TimeoutError(
                f"connecting to the upstream timed out ({address.host}:{address.port})"
            ) from None
        self.opened += 1
        self._all.add(conn)
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        if conn.closed or len(self._idle) >= self.settings.upstream_pool_size:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        conn.reused = False
        self._idle.append(conn)
        if self._sweeper is None:
            loop = asyncio.get_event_loop()
            self._sweeper = loop.call_later(self.settings.upstream_idle_seconds, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        deadline = time.monotonic() - self.settings.upstream_idle_seconds
        idle = self._idle
        while idle and idle[0].idle_since <= deadline:
            idle.popleft().close()
        if idle:
            loop = asyncio.get_event_loop()
            self._sweeper = loop.call_later(self.settings.upstream_idle_seconds, self._sweep)

    def forget(self, conn: UpstreamConnection) -> None:
        self._all.discard(conn)
        try:
            self._idle.remove(conn)
        except ValueError:
            pass

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._all):
            conn.close()
        self._idle.clear()

    def request_bytes(
        self, method: str, target: str, headers: HeaderList, framing_header: bytes
    ) -> bytes:
        """Request line and header block for the upstream (Host and framing the gateway's)."""
        address = self.address
        return b"".join(
            (
                f"{method} {address.base_path}{target} HTTP/1.1\r\nHost: {address.host_header}\r\n".encode(
                    "latin-1", "replace"
                ),
                framing.header_block(headers),
                framing_header,
                framing.CRLF,
            )
        )

    # -- the pipeline's own calls (raygate.pipeline.UpstreamCalls) -----------------------------
    async def fetch(
        self,
        method: str,
        target: str,
        headers: HeaderList,
        limit: int,
        body: bytes = b"",
        timeout: float = FETCH_TIMEOUT,
    ) -> BufferedResponse:
        """One request with a whole body; its answer read up to `limit` bytes (body None
        beyond). Raises OSError, TimeoutError or UpstreamError when the upstream fails."""
        attempts = 2  # a pooled connection the upstream just closed gets one fresh retry
        while True:
            attempts -= 1
            conn = self.take_idle() or await self.connect()
            exchange = BufferedExchange(conn, limit)
            length = (
                b"Content-Length: %d\r\n" % len(body)
                if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS")
                else b""
            )
            conn.start(
                exchange,
                self.request_bytes(method, target, headers, length) + body,
                head_only=method == "HEAD",
            )
            try:
                return await asyncio.wait_for(exchange.done, timeout)
            except TimeoutError:
                conn.abort()
                raise
            except (OSError, UpstreamError):
                if attempts and conn.reused and not exchange.started:
                    continue
                raise


class BufferedExchange:
    """A ResponseListener that collects the whole response (up to `limit` bytes)."""

    def __init__(self, conn: UpstreamConnection, limit: int) -> None:
        self.conn = conn
        self.limit = limit
        self.done: asyncio.Future[BufferedResponse] = asyncio.get_event_loop().create_future()
        self.started = False
        self._status = 0
        self._reason = b""
        self._headers: HeaderList = []
        self._body: bytearray | None = bytearray()

    def response_head(self, status: int, reason: bytes, headers: RawHeaders) -> None:
        self.started = True
        self._status, self._reason, self._headers = status, reason, decoded(headers)

    def response_body(self, data: bytes) -> None:
        body = self._body
        if body is None:
            return
        body += data
        if len(body) > self.limit:
            self._body = None  # over the limit: the caller learns so, the rest is dropped

    def response_complete(self) -> None:
        if not self.done.done():
            body = bytes(self._body) if self._body is not None else None
            reason = self._reason.decode("latin-1")
            self.done.set_result(BufferedResponse(self._status, reason, self._headers, body))

    def upstream_upgraded(self, rest: bytes) -> None:
        self.conn.abort()
        self.upstream_lost(UpstreamError("the upstream switched protocols unasked"))

    def upstream_lost(self, exc: BaseException | None) -> None:
        if not self.done.done():
            if isinstance(exc, OSError | UpstreamError):
                self.done.set_exception(exc)
            else:
                self.done.set_exception(ConnectionError("the upstream closed the connection"))

    def upstream_pause_writing(self) -> None:
        pass

    def upstream_resume_writing(self) -> None:
        pass
