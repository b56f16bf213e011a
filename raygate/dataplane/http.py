"""The client side of the data plane: one llhttp-parsed HTTP/1.1 connection per protocol.

A request's head goes to the pipeline as soon as it is parsed; its body is held (a little, with
reading paused) until the decision, then streamed to the upstream as it arrives. The upstream's
response streams back the same way, chunk by chunk. Each direction pauses the other's reading
when its own write buffer fills, so neither body is ever held whole.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import httptools

from raygate.dataplane import framing, websocket
from raygate.dataplane.upstream import (
    REPLAY_MAX_BYTES,
    WRITE_HIGH_WATER,
    WRITE_LOW_WATER,
    RawHeaders,
    UpstreamConnection,
    decoded,
)
from raygate.errors import RequestRefused, UpstreamError
from raygate.observe.audit import AuditDecision, AuditRecord, new_request_id
from raygate.pipeline import (
    Answer,
    BufferedResponse,
    DecisionMemo,
    Door,
    Forward,
    Headers,
    RequestHead,
    responses,
)
from raygate.pipeline.head import name_index
from raygate.pipeline.headers import downstream_response_headers

if TYPE_CHECKING:
    from raygate.dataplane.server import Gateway

log = logging.getLogger("raygate.dataplane")

# Body bytes held per request while its decision is pending (reading paused beyond).
HOLD_BYTES = 256 * 1024
# A refused request's unread body is read and dropped up to this size to keep the
# connection; beyond, the connection is closed after the answer.
DISCARD_BYTES = 64 * 1024


async def _carry_on(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    """Carry on, in a task, a coroutine that was run inline until it first waited (`yielded`:
    what it waited on)."""
    while True:
        if yielded is None:
            await asyncio.sleep(0)
        else:
            # The first wait happened outside any task: its "blocking" mark was never taken
            # by a task, and must be cleared for this one to take it.
            yielded._asyncio_future_blocking = False
            try:
                await yielded
            except asyncio.CancelledError:
                if not yielded.cancelled():
                    coro.close()
                    raise
            except BaseException:  # noqa: BLE001, S110 - the coroutine reads it from the future
                pass
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            return stop.value


class Cycle:
    """One request: its head, its body's state, and the response under way."""

    __slots__ = (
        "body_done",
        "body_hold",
        "body_received",
        "chunked",
        "close_after",
        "conn",
        "continue_expected",
        "corks",
        "deadline",
        "declared_length",
        "discarding",
        "head",
        "handshake",
        "head_only",
        "held",
        "hold_limit",
        "keep_alive",
        "record",
        "request_bytes",
        "response_chunked",
        "response_status",
        "retry",
        "sink",
        "start_time",
        "started",
        "upgrade",
        "upload_framing",
        "upstream",
        "upstream_started",
        "version",
        "waiting_body",
        "websocket",
    )

    def __init__(self, conn: HttpConnection, head: RequestHead, version: str) -> None:
        self.conn = conn
        self.corks = conn  # writes to the client gather while an upstream read is parsed
        self.head = head
        self.version = version
        self.keep_alive = True
        self.close_after = False
        self.chunked = False
        self.declared_length: int | None = None
        self.continue_expected = False
        self.upgrade = False  # the request has an Upgrade header
        self.handshake = False  # llhttp read it as an upgrade: what follows is not HTTP
        self.body_hold: list[bytes] = []
        self.held = 0
        self.hold_limit = 0
        self.body_received = 0
        self.body_done = False
        self.discarding = False
        self.sink: Any = None  # where body bytes go once forwarding (None: held)
        self.waiting_body: asyncio.Future[bytes] | None = None
        self.record: AuditRecord | None = None
        self.started = False  # response head sent to the client
        self.response_status = 0
        self.response_chunked = False
        self.head_only = head.method == "HEAD"
        self.upstream: UpstreamConnection | None = None
        self.upstream_started = False
        self.websocket = False
        self.upload_framing = ""
        self.deadline = 0.0  # when the upstream's response headers are due (0: not waiting)
        self.retry = False
        self.request_bytes = b""
        self.start_time = 0.0

    # -- the upstream's response (a raygate.dataplane.upstream.ResponseListener), streamed ----
    # Events for a request no longer forwarded (answered meanwhile, or abandoned) are dropped.
    def response_head(self, status: int, reason: bytes, headers: RawHeaders) -> None:
        if self.upstream is None:
            return
        conn = self.conn
        self.upstream_started = True
        self.deadline = 0.0
        metrics = conn.pipeline.settings.metrics
        if metrics is not None:
            metrics.upstream_answered(time.monotonic() - self.start_time)
        relayed = conn._relayed
        keep = self.keep_alive and not self.close_after and not conn.gateway.draining
        if relayed and relayed[0] == status and relayed[1] == reason and relayed[2] == headers:
            # The same head as the response before on this connection (a client polling).
            if keep and relayed[4] is not None and relayed[5] is self.head_only:
                self.started = True
                self.response_status = status
                self.response_chunked = relayed[6]
                conn._write(relayed[4])  # with its framing, as it went then
                return
            head = relayed[3]
        else:
            head = framing.status_line(status, reason) + framing.header_block(
                downstream_response_headers(decoded(headers))
            )
            relayed = conn._relayed = [status, reason, headers, head, None, self.head_only, False]
        framing_header = b""
        if self.head_only or status < 200 or status == 204 or status == 304:  # no body
            for name, value in headers:
                if name.lower() == b"content-length":
                    framing_header = b"Content-Length: %s\r\n" % value
                    break
            self.response_chunked = False
        else:
            upstream = self.upstream
            length, chunked = upstream.response_length, upstream.response_chunked
            if length is not None and not chunked:
                framing_header = b"Content-Length: %s\r\n" % length.encode("latin-1")
            elif self.version == "1.1":
                framing_header = b"Transfer-Encoding: chunked\r\n"
                self.response_chunked = True
            else:
                self.close_after = True  # HTTP/1.0: the body ends with the connection
        whole = conn._write_head(self, status, head, framing_header)
        if keep and not self.close_after and self.version == "1.1":
            relayed[4], relayed[5], relayed[6] = whole, self.head_only, self.response_chunked

    def response_body(self, data: bytes) -> None:
        if self.upstream is None or not data or self.head_only:
            return
        conn = self.conn
        if self.response_chunked:
            conn._write(framing.chunk_size_line(len(data)))
            conn._write(data)
            conn._write(framing.CRLF)
        else:
            conn._write(data)

    def response_complete(self) -> None:
        upstream = self.upstream
        if upstream is None:
            return
        conn = self.conn
        self.upstream = None
        if self.sink is not None or not self.body_done:
            # The upstream answered before the whole body was sent: that connection is done
            # for, and so is the rest of this request's body.
            self.sink = None
            self.close_after = True
            upstream.close()
        if self.response_chunked:
            conn._write(framing.LAST_CHUNK)
        # The response's last bytes go to the client now, before the bookkeeping (its audit
        # line, metrics): at one connection that work would otherwise add to every latency.
        conn.uncork()
        conn._finish(self)

    def upstream_upgraded(self, rest: bytes) -> None:
        self.conn._upstream_failed(self, UpstreamError("unexpected protocol switch"))

    def upstream_lost(self, exc: BaseException | None) -> None:
        if self.upstream is not None:
            self.conn._upstream_failed(self, exc)

    def upstream_pause_writing(self) -> None:
        self.conn.pause("upload")

    def upstream_resume_writing(self) -> None:
        self.conn.resume("upload")

    # -- the request body --------------------------------------------------------------------
    def body_data(self, data: bytes) -> None:
        self.body_received += len(data)
        limit = self.conn.gateway.settings.max_body_bytes
        if self.body_received > limit:
            self.conn.body_too_large(self)
            return
        sink = self.sink
        if sink is not None:
            sink(data)
        elif self.discarding:
            if self.body_received > DISCARD_BYTES:
                self.conn.close_now()
        else:
            self.held += len(data)
            waiting = self.waiting_body
            if waiting is not None:
                # Read whole for a hook: past its limit the rest is dropped, the size counted.
                if self.held <= self.hold_limit:
                    self.body_hold.append(data)
            else:
                self.body_hold.append(data)
                if self.held > HOLD_BYTES:
                    self.conn.pause("hold")

    def body_complete(self) -> None:
        self.body_done = True
        if self.sink is not None:
            if self.upload_framing == "chunked" and self.upstream is not None:
                self.upstream.write(framing.LAST_CHUNK)
            self.sink = None
        waiting = self.waiting_body
        if waiting is not None and not waiting.done():
            waiting.set_result(b"".join(self.body_hold) if self.held <= self.hold_limit else b"")
            self.body_hold = []


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests, hands heads to the pipeline, moves bytes."""

    def __init__(self, gateway: Gateway, scheme: str) -> None:
        self.gateway = gateway
        self.settings = gateway.settings
        self.pipeline = gateway.pipeline
        self.scheme = scheme
        self.loop = gateway.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer: str | None = None
        self.peer_certificate: bytes | None = None
        self.cycle: Cycle | None = None  # the request being answered
        self.parsing: Cycle | None = None  # the request whose body is arriving
        self.queue: deque[Cycle] = deque()
        self.paused: set[str] = set()
        self.write_paused = False
        self.closing = False
        self.upgraded_to: UpstreamConnection | None = None
        self.upgrade_rest = b""
        self._url = b""
        self._raw: list[tuple[bytes, bytes]] = []  # the header lines being parsed
        # The last request's header lines, and the Headers made of them (and its name index).
        self._last_head: tuple[list[tuple[bytes, bytes]], Headers, dict[str, list[str]]] | None = (
            None
        )
        self._header_bytes = 0
        settings = self.settings
        self._max_line = settings.max_header_bytes
        self._max_total = 4 * settings.max_header_bytes
        self._max_count = settings.max_headers
        self._idle_timer: asyncio.TimerHandle | None = None
        self._headers_timer: asyncio.TimerHandle | None = None
        self._to_start: Cycle | None = None
        self._idle_since = 0.0
        self._waiting_for_request = True
        # Bytes for the client collected while the upstream's bytes are parsed, sent in one write.
        self._out: list[bytes] | None = None
        self._refusal: Answer | None = None  # a malformed request after one still in flight
        # A keep-alive client mostly repeats itself: its last decision (the pipeline's
        # DecisionMemo), the upstream head that went with it, and the last response head
        # relayed, each reused while the same comes again.
        self.memo = DecisionMemo()
        self._sent: tuple[Any, ...] = ()  # (headers list, method, target, framing, bytes)
        # [status, reason, upstream headers, head bytes, the head as written with its framing
        # (kept-alive responses only), head_only, response_chunked]
        self._relayed: list[Any] = []
        # The last request that came whole in one read, from a message boundary, with nothing
        # to follow (no body, no upgrade, no Expect), and what llhttp and the checks made of it:
        # (its bytes, RequestHead, version, declared length). The same bytes again from the
        # same parser state parse the same (see data_received).
        self._repeat: tuple[bytes, RequestHead, str, int | None] | None = None
        self._in_message = False  # llhttp is inside a request (its first bytes came)
        self._begun = 0  # requests begun within the current read

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TLS transport too
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer = str(peer[0])
        elif peer:
            self.peer = str(peer)
        if self.scheme == "https" and self.gateway.pipeline.settings.client_certificates:
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                self.peer_certificate = ssl_object.getpeercert(binary_form=True) or None
        self.gateway.connections.add(self)
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self.upgraded_to is not None:
            self.upgraded_to.write(data)
            return
        if self.closing:
            return
        fresh = not self._in_message
        if fresh:
            repeat = self._repeat
            if (
                repeat is not None
                and data == repeat[0]
                and self.cycle is None
                and self._refusal is None
            ):
                # Byte for byte the last whole request, and llhttp between requests as it was
                # then: it would make the same of it, and so would the checks that passed.
                self._replay(repeat)
                return
        self._begun = 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0] if upgrade.args else len(data)
            self.upgrade_rest = data[offset:]
            handshake = self.queue[-1] if self.queue else self.cycle  # the last one parsed
            if handshake is not None:
                handshake.handshake = True
            self.pause("upgrade")  # bytes after the handshake wait for the decision
            self._start_pending()  # (which may come at once: it sees the pause)
        except httptools.HttpParserCallbackError as err:
            refused = err.__context__
            if isinstance(refused, RequestRefused):
                self.refuse(refused.answer)
            else:
                log.exception("parsing a request failed", exc_info=refused)
                self.refuse(responses.internal_error())
            self._start_pending()  # a whole request before the refused one is still answered
        except httptools.HttpParserError as err:
            self.refuse(responses.bad_request(f"malformed request ({_parser_reason(err)})"))
            self._start_pending()
        else:
            cycle = self._to_start
            if (
                fresh
                and self._begun == 1
                and not self._in_message
                and len(data) <= REPLAY_MAX_BYTES
                and data.endswith(b"\r\n\r\n")  # the head ends the read: nothing after it
                and not data.startswith(b"\r\n")  # nor blank lines before it
                and cycle is not None
                and cycle.body_done
                and cycle.keep_alive
                and not cycle.upgrade
                and not cycle.chunked
                and not cycle.continue_expected
                and not cycle.declared_length
            ):
                self._repeat = (data, cycle.head, cycle.version, cycle.declared_length)
            self._start_pending()

    def _replay(self, repeat: tuple[bytes, RequestHead, str, int | None]) -> None:
        """Start the request `repeat` holds, again: as on_headers_complete and
        on_message_complete made it, without parsing its bytes."""
        self._waiting_for_request = False
        cycle = Cycle(self, repeat[1], repeat[2])
        cycle.declared_length = repeat[3]
        cycle.body_done = True
        self.cycle = cycle
        self._start(cycle)

    def _start_pending(self) -> None:
        # Started only once the parser accepted everything it was given: llhttp refuses some
        # framings (an unknown Transfer-Encoding) only after the head, and nothing of a refused
        # request may reach the upstream.
        cycle = self._to_start
        if cycle is not None:
            self._to_start = None
            if not self.closing and cycle is self.cycle:
                self._start(cycle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.gateway.connections.discard(self)
        for timer in (self._idle_timer, self._headers_timer):
            if timer is not None:
                timer.cancel()
        upstream = self.upgraded_to
        if upstream is not None:
            upstream.close()
        for cycle in [self.cycle, *self.queue]:
            if cycle is not None:
                self._abandon(cycle)
        self.queue.clear()
        self.cycle = None

    def pause_writing(self) -> None:
        self.write_paused = True
        cycle = self.cycle
        if cycle is not None and cycle.upstream is not None:
            cycle.upstream.pause_reading()
        elif self.upgraded_to is not None:
            self.upgraded_to.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        cycle = self.cycle
        if cycle is not None and cycle.upstream is not None:
            cycle.upstream.resume_reading()
        elif self.upgraded_to is not None:
            self.upgraded_to.resume_reading()

    # -- reading control ---------------------------------------------------------------------
    def pause(self, reason: str) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused.add(reason)

    def resume(self, reason: str) -> None:
        if reason in self.paused:
            self.paused.discard(reason)
            if not self.paused and self.transport is not None and not self.closing:
                self.transport.resume_reading()

    def _arm_idle(self) -> None:
        # One timer per connection, re-armed only when it fires: a request costs a clock read,
        # not a timer.
        self._idle_since = self.loop.time()
        if self._idle_timer is None:
            self._idle_timer = self.loop.call_at(
                self._idle_since + self.settings.idle_timeout, self._idle_expired
            )

    def _idle_expired(self) -> None:
        self._idle_timer = None
        if self.closing:
            return
        if not self._waiting_for_request or self.cycle is not None or self.queue:
            return  # busy: the deadline counts again from the end of this request (_finish)
        deadline = self._idle_since + self.settings.idle_timeout
        if self.loop.time() >= deadline - 0.001:
            # Idle between requests, or a client still trickling its headers: disconnect.
            self.close_now()
        else:
            self._idle_timer = self.loop.call_at(deadline, self._idle_expired)

    # -- httptools callbacks -----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._in_message = True
        self._begun += 1
        self._url = b""
        self._raw = []
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.settings.max_header_bytes:
            raise RequestRefused(
                responses.text(
                    414,
                    "URI Too Long: the request target is over "
                    f"{self.settings.max_header_bytes} bytes.\n",
                )
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        # Called once per header line: kept as the parser gave it, decoded when the head is
        # whole (on_headers_complete). Only the limits are checked here, so nothing unbounded
        # is ever held.
        raw = self._raw
        raw.append((name, value))
        size = len(name) + len(value)
        self._header_bytes += size
        if (
            size > self._max_line
            or self._header_bytes > self._max_total
            or len(raw) > self._max_count
        ):
            settings = self.settings
            raise RequestRefused(
                responses.headers_too_large(
                    f"a header line is over {settings.max_header_bytes} bytes"
                    if size > self._max_line
                    else f"more than {settings.max_headers} header lines"
                    if len(raw) > self._max_count
                    else f"the headers are over {self._max_total} bytes"
                )
            )

    def on_headers_complete(self) -> None:
        self._waiting_for_request = False
        parser = self.parser
        raw = self._raw
        last = self._last_head
        reused = last is not None and last[0] == raw
        if reused:
            # The same header lines as this connection's request before (a client polling):
            # the same Headers, decoded and checked once. Nobody changes a Headers.
            headers, index = last[1], last[2]  # type: ignore[index]
        else:
            # Header lines as latin-1 strings (what HTTP/1.1 carries), with their name index.
            pairs = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]
            index = name_index(pairs)
            headers = Headers(pairs, index)
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method) or raw_method.decode("latin-1")
        hosts = index.get("host")
        head = RequestHead(
            method,
            self._url.decode("latin-1"),
            headers,
            self.peer,
            self.peer_certificate,
            self.scheme,
            hosts[0] if hosts else "",
            Door.DASHBOARD,
        )
        version = parser.get_http_version()
        if (hosts is not None and len(hosts) > 1) or (not hosts and version != "1.0"):
            # RFC 9112 §3.2: exactly one Host; two could name two different hosts to two parsers.
            raise RequestRefused(responses.bad_request("a request needs exactly one Host header"))
        if hosts and not reused and not _HOST.fullmatch(hosts[0]):
            # Userinfo, a path or spaces in Host: the upstream (or a log) could read another
            # authority than the one the gateway checked.
            raise RequestRefused(responses.bad_request("the Host header is not a host[:port]"))
        if not reused:
            self._last_head = (raw, headers, index)  # these lines passed the checks above
        target = head.target
        if "#" in target:
            # RFC 9112 §3.2: no fragment in a request target; parsers disagree where it ends.
            raise RequestRefused(responses.bad_request("the request target holds a '#'"))
        if not target.startswith("/") and not (target == "*" and method == "OPTIONS"):
            # Only origin-form is forwarded: an absolute or authority form would be read as
            # another path (or host) by the upstream than the one authorized here.
            raise RequestRefused(
                responses.bad_request("the request target must be a path starting with /")
            )
        cycle = Cycle(self, head, version)
        cycle.keep_alive = parser.should_keep_alive()
        length = index.get("content-length")
        if length is not None:
            cycle.declared_length = int(length[0])  # llhttp checked it: digits, one value
        transfer_values = index.get("transfer-encoding")
        if transfer_values is not None:
            transfer = transfer_values[0]
            # Only plain chunked is relayed (re-chunked): another coding would be dropped
            # silently, and HTTP/1.0 has no chunked framing to trust.
            if transfer.strip().lower() != "chunked" or cycle.version != "1.1":
                raise RequestRefused(
                    responses.bad_request(f"unsupported Transfer-Encoding {transfer.strip()!r}")
                )
            cycle.chunked = True
        if "upgrade" in index or "connection" in index:
            cycle.upgrade = "upgrade" in index
            _check_upgrade(index, cycle)
        if cycle.version == "1.1":
            expect = index.get("expect")
            if expect is not None and expect[0].lower() == "100-continue":
                cycle.continue_expected = True
        if not cycle.chunked and not cycle.declared_length:
            cycle.body_done = True  # nothing more to come for this request
        self.parsing = cycle
        if self.cycle is None:
            self.cycle = cycle
            self._to_start = cycle
        else:
            self.queue.append(cycle)
            self.pause("pipeline")  # one request at a time; the next waits in the socket

    def on_body(self, body: bytes) -> None:
        cycle = self.parsing
        if cycle is not None:
            cycle.body_data(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        cycle = self.parsing
        self.parsing = None
        if cycle is not None and (not cycle.body_done or cycle.waiting_body is not None):
            cycle.body_complete()

    # -- a request -----------------------------------------------------------------------------
    def _start(self, cycle: Cycle) -> None:
        cycle.start_time = time.monotonic()
        repeated = self.pipeline.repeated(cycle.head, self.memo)
        if repeated is not None:
            self._decided(cycle, repeated)  # the request before, again (DecisionMemo)
            return
        # The decision runs inline until it first waits: a cached one never does, and costs
        # no task (see _carry_on).
        decision = self.pipeline.decide(cycle.head, self.memo)
        try:
            yielded = decision.send(None)
        except StopIteration as done:
            self._decided(cycle, done.value)
            return
        task = asyncio.ensure_future(_carry_on(decision, yielded))
        task.add_done_callback(lambda task: self._decided_task(cycle, task))

    def _decided_task(self, cycle: Cycle, task: asyncio.Future[Any]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("deciding failed", exc_info=error)
            record = AuditRecord(new_request_id(), cycle.head.method, cycle.head.target, self.peer)
            record.decision = AuditDecision.ERROR
            self._decided(cycle, Answer(500, [], b"", record))
            return
        self._decided(cycle, task.result())

    def _decided(self, cycle: Cycle, outcome: Forward | Answer) -> None:
        if self.closing or cycle is not self.cycle:
            return
        if isinstance(outcome, Answer):
            cycle.record = outcome.record
            self.answer(cycle, outcome)
            return
        cycle.record = outcome.record
        if cycle.upgrade and websocket.is_websocket(cycle.head):
            websocket.start(self, cycle, outcome)
            return
        if cycle.handshake:
            cycle.close_after = True  # any other upgrade: answered as a plain request, then closed
        settings = self.settings
        if cycle.declared_length is not None and cycle.declared_length > settings.max_body_bytes:
            cycle.close_after = True
            self.answer(
                cycle, responses.too_large(f"request body exceeds {settings.max_body_bytes} bytes")
            )
            return
        if outcome.request_body_hook is not None or outcome.response_hook is not None:
            asyncio.ensure_future(self._forward_buffered(cycle, outcome))
            return
        self._forward(cycle, outcome)

    # -- forwarding, streamed ------------------------------------------------------------------
    def _forward(self, cycle: Cycle, forward: Forward) -> None:
        head = cycle.head
        if cycle.chunked:
            cycle.upload_framing = "chunked"
            length = b"Transfer-Encoding: chunked\r\n"
        elif cycle.declared_length is not None and (
            cycle.declared_length or head.method not in ("GET", "HEAD")
        ):
            cycle.upload_framing = "length"
            length = b"Content-Length: %d\r\n" % cycle.declared_length
        else:
            cycle.upload_framing = ""
            length = b""
        headers = forward.upstream_headers
        sent = self._sent
        if (
            sent
            and sent[0] is headers
            and sent[1] == head.method
            and sent[2] == head.target
            and sent[3] == length
        ):
            cycle.request_bytes = sent[4]  # the same request as the last (a DecisionMemo hit)
        else:
            cycle.request_bytes = self.gateway.pool.request_bytes(
                head.method, head.target, headers, length
            )
            self._sent = (headers, head.method, head.target, length, cycle.request_bytes)
        pool = self.gateway.pool
        cycle.retry = not cycle.upload_framing
        conn = pool.take_idle()
        if conn is not None:
            self._send(cycle, conn)
        else:
            asyncio.ensure_future(self._connect_and_send(cycle))

    async def _connect_and_send(self, cycle: Cycle) -> None:
        conn = await self.connect_upstream(cycle)
        if conn is not None:
            self._send(cycle, conn)

    async def connect_upstream(self, cycle: Cycle) -> UpstreamConnection | None:
        """A new upstream connection for `cycle`; None when connecting failed (the client was
        answered) or the client has moved on meanwhile (the connection is closed again)."""
        try:
            conn = await self.gateway.pool.connect()
        except OSError as err:
            self._upstream_failed(cycle, err)
            return None
        if self.closing or cycle is not self.cycle:
            conn.close()
            return None
        return conn

    def _send(self, cycle: Cycle, conn: UpstreamConnection) -> None:
        cycle.upstream = conn
        conn.start(cycle, cycle.request_bytes, head_only=cycle.head_only)
        timeout = self.settings.upstream_headers_timeout
        if timeout is not None and not cycle.deadline:
            # One timer per connection, re-armed only when it fires (as the idle timer).
            cycle.deadline = self.loop.time() + timeout
            if self._headers_timer is None:
                self._headers_timer = self.loop.call_at(cycle.deadline, self._headers_deadline)
        if cycle.upload_framing:
            if cycle.continue_expected and not cycle.body_received:
                self._write(framing.CONTINUE)  # authorized: now the body may come
            chunked = cycle.upload_framing == "chunked"
            held = cycle.body_hold
            cycle.body_hold = []
            for data in held:
                self._upload(cycle, conn, data, chunked)
            if cycle.body_done:
                if chunked:
                    conn.write(framing.LAST_CHUNK)
            else:
                cycle.sink = lambda data: self._upload(cycle, conn, data, chunked)
            self.resume("hold")

    @staticmethod
    def _upload(cycle: Cycle, conn: UpstreamConnection, data: bytes, chunked: bool) -> None:
        if chunked:
            conn.writelines([framing.chunk_size_line(len(data)), data, framing.CRLF])
        else:
            conn.write(data)

    def _headers_deadline(self) -> None:
        self._headers_timer = None
        cycle = self.cycle
        if cycle is None or not cycle.deadline or self.closing:
            return
        if self.loop.time() < cycle.deadline - 0.001:
            self._headers_timer = self.loop.call_at(cycle.deadline, self._headers_deadline)
            return
        cycle.deadline = 0.0
        if not cycle.started:
            if cycle.upstream is not None:
                cycle.upstream.abort()
                cycle.upstream = None
            log.warning(
                "upstream: no response headers within %gs", self.settings.upstream_headers_timeout
            )
            cycle.close_after = cycle.close_after or not cycle.body_done
            self.answer(cycle, responses.upstream_timeout())

    def _upstream_failed(self, cycle: Cycle, err: BaseException | None) -> None:
        if cycle is not self.cycle:
            return
        cycle.deadline = 0.0
        upstream = cycle.upstream
        cycle.upstream = None
        cycle.sink = None
        if cycle.retry and upstream is not None and upstream.reused and not cycle.upstream_started:
            # A kept-alive connection the upstream had just closed: once more on a new one.
            cycle.retry = False
            asyncio.ensure_future(self._connect_and_send(cycle))
            return
        if cycle.started:
            # The upstream broke off a response already under way: dropping the connection is
            # all that is left (finishing it would pass a truncated body off as whole).
            record = cycle.record
            if record is not None:
                record.reason += "; the upstream broke off the response"
            self.close_now(abort=True)
            return
        log.warning("upstream %s: %s", self.gateway.pool.address.host, err or "connection lost")
        if isinstance(err, TimeoutError):
            answer = responses.upstream_timeout()
        elif isinstance(err, UpstreamError):
            answer = responses.upstream_invalid()
        else:
            answer = responses.upstream_unreachable()
        cycle.close_after = cycle.close_after or not cycle.body_done
        self.answer(cycle, answer)

    # -- answering -------------------------------------------------------------------------------
    def answer(self, cycle: Cycle, answer: Answer) -> None:
        """The gateway's own response to `cycle`; nothing (more) goes upstream."""
        if cycle.record is None:
            cycle.record = answer.record or AuditRecord(
                new_request_id(), cycle.head.method, cycle.head.target, self.peer
            )
        upstream = cycle.upstream
        if upstream is not None:
            cycle.upstream = None
            upstream.abort()
        cycle.sink = None
        if not cycle.body_done:
            remaining = (cycle.declared_length or 0) - cycle.body_received
            if cycle.continue_expected or cycle.chunked or remaining > DISCARD_BYTES:
                cycle.close_after = True
            cycle.discarding = True
            cycle.body_hold = []
            self.resume("hold")
        if cycle.handshake:
            # A handshake answered here, whatever the status: what follows it on the connection
            # is not HTTP llhttp reads any more (reading stays paused), so the connection ends.
            cycle.close_after = True
        headers = answer.headers
        body = answer.body
        framing_header = b"Content-Length: %d\r\n" % len(body)
        self._write_head(
            cycle,
            answer.status,
            framing.status_line(answer.status, answer.reason) + framing.header_block(headers),
            framing_header,
        )
        if body and not cycle.head_only and framing.has_body("GET", answer.status):
            self._write(body)
        self._finish(cycle)

    def _write_head(self, cycle: Cycle, status: int, head: bytes, framing_header: bytes) -> bytes:
        """`head`: the status line and header block, without framing and Connection. Returns
        what was written."""
        cycle.started = True
        cycle.response_status = status
        keep = cycle.keep_alive and not cycle.close_after and not self.gateway.draining
        if not keep:
            cycle.close_after = True
        whole = b"".join(
            (head, framing_header, b"" if keep else b"Connection: close\r\n", framing.CRLF)
        )
        self._write(whole)
        return whole

    def _write(self, data: bytes) -> None:
        out = self._out
        if out is not None:
            out.append(data)
            return
        transport = self.transport
        if transport is not None and not self.closing:
            transport.write(data)

    def cork(self) -> None:
        """Collect writes to the client (until `uncork`): one syscall per upstream read."""
        if self._out is None:
            self._out = []

    def uncork(self) -> None:
        out = self._out
        self._out = None
        if out and self.transport is not None and not self.closing:
            if len(out) == 1:
                self.transport.write(out[0])
            else:
                self.transport.write(b"".join(out))

    def _finish(self, cycle: Cycle) -> None:
        cycle.deadline = 0.0
        record = cycle.record
        if record is not None:
            record.status = cycle.response_status
            self.pipeline.finished(record)
            cycle.record = None
        if cycle is not self.cycle:
            return
        self.cycle = None
        if cycle.close_after or self.closing:
            self.close_now()
            return
        if self.queue:
            following = self.queue.popleft()
            if not self.queue:
                self.resume("pipeline")
            self.cycle = following
            self._start(following)
        elif self._refusal is not None:
            refusal, self._refusal = self._refusal, None
            self.refuse(refusal)
        else:
            self._waiting_for_request = True
            self._arm_idle()
            if self.gateway.draining:
                self.close_now()

    def _abandon(self, cycle: Cycle) -> None:
        """The client left while `cycle` was in flight."""
        cycle.deadline = 0.0
        upstream = cycle.upstream
        if upstream is not None:
            cycle.upstream = None
            upstream.detach()
        waiting = cycle.waiting_body
        if waiting is not None and not waiting.done():
            waiting.cancel()
        record = cycle.record
        if record is not None:
            record.status = cycle.response_status or 499
            if not cycle.started:
                record.reason += "; the client left before the answer"
            self.pipeline.finished(record)
            cycle.record = None

    def body_too_large(self, cycle: Cycle) -> None:
        cycle.sink = None
        cycle.body_hold = []
        cycle.close_after = True
        limit = self.settings.max_body_bytes
        if cycle is self.cycle and not cycle.started:
            if cycle.record is None:
                cycle.record = AuditRecord(
                    new_request_id(), cycle.head.method, cycle.head.target, self.peer
                )
            cycle.record.reason = f"request body exceeds {limit} bytes"
            waiting = cycle.waiting_body
            if waiting is not None and not waiting.done():
                waiting.cancel()
            self.answer(cycle, responses.too_large(f"request body exceeds {limit} bytes"))
        else:
            self.close_now(abort=True)

    def refuse(self, answer: Answer) -> None:
        """A request that cannot be parsed: answer, forward nothing, close."""
        cycle = self.cycle
        if cycle is not None and cycle is not self.parsing and not self.closing:
            # A malformed request behind one still being answered: answered after it.
            self._refusal = answer
            self.pause("refused")
            if self.parsing is not None and self.parsing in self.queue:
                self.queue.remove(self.parsing)  # the malformed one itself goes nowhere
            self.parsing = None
            return
        if cycle is not None and cycle.started:
            self.close_now(abort=True)
            return
        record = AuditRecord(new_request_id(), "", self._url.decode("latin-1")[:256], self.peer)
        record.reason = answer.body.decode("utf-8", "replace").strip()
        record.status = answer.status
        self.pipeline.finished(record)
        if cycle is not None and cycle.upstream is not None:
            cycle.upstream.abort()
            cycle.upstream = None
        if cycle is not None:
            cycle.record = None  # the refusal is this request's answer and audit line
            self.cycle = None
        self._to_start = None
        self.uncork()  # the answers of whole requests before this one go out first
        self.closing = True
        transport = self.transport
        if transport is not None:
            transport.write(
                framing.status_line(answer.status)
                + framing.header_block(answer.headers)
                + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(answer.body)
                + answer.body
            )
            transport.close()

    def close_now(self, abort: bool = False) -> None:
        if not abort:
            self.uncork()
        self._out = None
        self.closing = True
        transport = self.transport
        if transport is not None:
            if abort:
                transport.abort()
            else:
                transport.close()

    @property
    def idle(self) -> bool:
        return self.cycle is None and not self.queue

    # -- hooks: bodies read whole (the ray profile's job ownership) ----------------------------
    async def _forward_buffered(self, cycle: Cycle, forward: Forward) -> None:
        try:
            body = b""
            if forward.request_body_hook is not None:
                limit = forward.request_limit
                if cycle.declared_length is not None and cycle.declared_length > limit:
                    self.answer(cycle, responses.too_large(forward.request_limit_message))
                    return
                if not cycle.body_done and cycle.continue_expected and not cycle.body_received:
                    self._write(framing.CONTINUE)
                body = await self._whole_body(cycle, limit)
                if body is None:
                    cycle.close_after = True
                    self.answer(cycle, responses.too_large(forward.request_limit_message))
                    return
                try:
                    body = forward.request_body_hook(body)
                except ValueError as err:
                    self.answer(cycle, responses.bad_request(str(err)))
                    return
            elif not cycle.body_done:
                if cycle.continue_expected and not cycle.body_received:
                    self._write(framing.CONTINUE)
                whole = await self._whole_body(cycle, self.settings.max_body_bytes)
                body = whole or b""
            head = cycle.head
            reply = await self.gateway.pool.fetch(
                head.method,
                head.target,
                forward.upstream_headers,
                forward.response_limit,
                body=body,
                timeout=self.settings.upstream_headers_timeout or 3600.0,
            )
            if forward.response_hook is not None:
                reply = await forward.response_hook(reply)
        except asyncio.CancelledError:
            return
        except TimeoutError:
            if cycle is self.cycle and not cycle.started:
                self.answer(cycle, responses.upstream_timeout())
            return
        except (OSError, UpstreamError) as err:
            self._upstream_failed(cycle, err)
            return
        if cycle is not self.cycle or self.closing:
            return
        self._answer_buffered(cycle, reply)

    async def _whole_body(self, cycle: Cycle, limit: int) -> bytes | None:
        if not cycle.body_done:
            cycle.hold_limit = limit
            cycle.waiting_body = self.loop.create_future()
            self.resume("hold")
            # Held chunks stay in body_hold; body_data keeps appending until complete.
            await cycle.waiting_body
            body = cycle.waiting_body.result()
        else:
            body = b"".join(cycle.body_hold)
            cycle.body_hold = []
        return None if cycle.held > limit else body

    def _answer_buffered(self, cycle: Cycle, reply: BufferedResponse) -> None:
        body = reply.body if reply.body is not None else b""
        headers = [(n, v) for n, v in reply.headers if n.lower() != "content-length"]
        with_body = framing.has_body(cycle.head.method, reply.status)
        self._write_head(
            cycle,
            reply.status,
            framing.status_line(reply.status, reply.reason)
            + framing.header_block(downstream_response_headers(headers)),
            b"Content-Length: %d\r\n" % len(body) if with_body or body else b"",
        )
        if with_body and body:
            self._write(body)
        self._finish(cycle)


# The usual methods' names as str without decoding them per request.
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}

# RFC 3986 host (reg-name, IPv4 or IP-literal) and optional port; no userinfo, path or spaces.
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%!$&'()*+;=-]+)(?::[0-9]{1,5})?")


def _check_upgrade(index: dict[str, list[str]], cycle: Cycle) -> None:
    """Refuse what two parsers could read as different protocols or framings."""
    upgrades = index.get("upgrade")
    if upgrades is not None:
        if len(upgrades) > 1:
            raise RequestRefused(responses.bad_request("more than one Upgrade header"))
        if cycle.chunked or cycle.declared_length:
            # The body would reach the upstream before it answers the upgrade; refused, the
            # bytes could be read there as a request nobody authorized.
            raise RequestRefused(responses.bad_request("an upgrade request cannot carry a body"))
    connection = index.get("connection")
    if connection is not None and (len(connection) > 1 or "," in connection[0]):
        tokens = {t.strip(" \t").lower() for v in connection for t in v.split(",")}
        if "close" in tokens and ("keep-alive" in tokens or "upgrade" in tokens):
            raise RequestRefused(
                responses.bad_request("the Connection header both closes and keeps or upgrades")
            )


def _parser_reason(err: Exception) -> str:
    text = str(err) or type(err).__name__
    return text.replace("\r", " ").replace("\n", " ")[:120]
