"""One JSON line per authorization decision: who did what, and what was answered.

Never holds a token: the record is built from the Identity and Attributes only.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from json.encoder import encode_basestring_ascii as _encode_string  # type: ignore[attr-defined]
from pathlib import Path
from typing import IO, Any

from raygate.config.model import AuditConfig, AuditFailurePolicy, AuditFormat
from raygate.identity import Attributes, Identity
from raygate.observe.kube_event import kubernetes_event
from raygate.observe.logfile import LineSink, RotatingFile, StreamSink

log = logging.getLogger("raygate.audit")


class AuditDecision(StrEnum):
    """What the gateway decided for a request: the `decision` of every audit line."""

    ALLOW = "allow"  # authorized, forwarded as the caller
    DENY = "deny"  # authenticated but not authorized (403), or a request it cannot map (400)
    UNAUTHENTICATED = "unauthenticated"  # no credential, or one that is not valid (401)
    UNAVAILABLE = "unavailable"  # the identity or policy backend could not answer (503)
    ERROR = "error"  # the gateway failed while deciding (500)
    IGNORED_PATH = "ignored-path"  # forwarded anonymously: authorization.ignorePaths
    UI_SHELL = "ui-shell"  # forwarded anonymously: the dashboard's static shell (browserLogin)
    PUBLIC = "public"  # answered by the gateway without credentials (OIDC discovery, JWKS)
    NONE = "none"  # answered before any decision (refused method, bad framing, login mode)
    SIGN_IN = "sign-in"  # browser sent to the identity provider, or back from it signed in
    SIGN_OUT = "sign-out"  # browser session ended at the logout path


# Request ids: unique per process (pid and start time), a counter within it. No uuid4 per request.
_ID_PREFIX = f"{os.getpid() & 0xFFFF:04x}{int(time.time()) & 0xFFFF:04x}"
_ids = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ids):08x}"


@dataclass(slots=True)
class AuditRecord:
    request_id: str
    method: str
    path: str
    remote: str | None
    started: float = field(default_factory=time.monotonic)
    identity: Identity | None = None
    attributes: list[Attributes] = field(default_factory=list)
    decision: AuditDecision = AuditDecision.NONE
    reason: str = ""
    status: int = 0
    user_agent: str | None = None  # as the client sent it: for the audit line, never trusted

    def to_json(self, completed: float | None = None, finished: float | None = None) -> str:
        """The line; `completed` (wall clock) and `finished` (monotonic) default to now."""
        if completed is None:
            completed = time.time()
        if finished is None:
            finished = time.monotonic()
        middle, tail = _constant_fields(self)
        second = _last_second
        if second[0] != int(completed):
            second = _utc_second(int(completed))
        remote = self.remote
        # Keys in this order, as json.dumps of one dict would write them (tests and readers
        # see the same line); only the fields that change per request are encoded here.
        return (
            f'{{"time":"{second[1]}","requestId":"{self.request_id}",'
            f'"remote":{"null" if remote is None else _encode_string(remote)},'
            f'"method":{_encode_string(self.method)},"path":{_encode_string(self.path)},'
            f'{middle},"status":{self.status},'
            f'"latencyMs":{round((finished - self.started) * 1000, 3)!r}{tail}}}'
        )


# The user, groups, decision, reason and first attributes of a line, encoded: the same for every
# request a cached decision allows, so encoded once per (identity, attributes, decision, reason).
# Keyed by the ids of the identity and first attributes; the entry holds the objects it was made
# for (so an id is never reused while its entry lives) and is used only when they are the same.
# Few: enough for the cached decisions in use at once, while a flood of tokens each used once
# (whose entries are never used again) keeps at most this many identities alive (~2 MiB at 4096).
_fragments: dict[tuple[int, int], tuple[Any, Any, str, str, str, str]] = {}
_FRAGMENTS_MAX = 512


def _constant_fields(record: AuditRecord) -> tuple[str, str]:
    identity = record.identity
    first = record.attributes[0] if record.attributes else None
    decision = record.decision
    reason = record.reason
    key = (id(identity), id(first))
    entry = _fragments.get(key)
    if (
        entry is not None
        and entry[0] is identity
        and entry[1] is first
        and entry[2] is decision
        and entry[3] == reason
    ):
        return entry[4], entry[5]
    middle = json.dumps(
        {
            "user": identity.user if identity else None,
            "groups": list(identity.groups) if identity else [],
            "decision": decision,
            "reason": reason,
        },
        separators=(",", ":"),
    )[1:-1]
    tail = ""
    if first is not None:
        data: dict[str, Any] = {"verb": first.verb}
        if first.resource_request:
            data["resource"] = {
                "namespace": first.namespace,
                "apiGroup": first.api_group,
                "resource": first.resource,
                "subresource": first.subresource,
                "name": first.name,
            }
        else:
            data["nonResourcePath"] = first.path
        tail = "," + json.dumps(data, separators=(",", ":"))[1:-1]
    if identity is not None:
        if len(_fragments) >= _FRAGMENTS_MAX:
            _fragments.clear()
        _fragments[key] = (identity, first, decision, reason, middle, tail)
    return middle, tail


_last_second: tuple[int, str] = (-1, "")


def _utc_second(second: int) -> tuple[int, str]:
    # One strftime per second, not per line (thousands of lines a second are formatted).
    global _last_second
    cached = _last_second  # one tuple, swapped whole: safe from two threads
    if cached[0] != second:
        cached = _last_second = (
            second,
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)),
        )
    return cached


FLUSH_INTERVAL = 1.0  # seconds: lines are on disk within this (fdatasync), and retries
MAX_PENDING_LINES = 100_000  # kept for a retry while the log cannot be written, then dropped
_CLOSE = object()


# The first line after a quiet moment wakes the writer, which lets a burst gather BATCH_DELAY
# before writing. While lines keep coming, the writer takes them at most every BATCH_INTERVAL
# and the event loop never wakes it: a wake per batch, and the GIL hand-offs around the
# writer's system calls, cost more than the lines themselves (futex calls on both threads).
BATCH_DELAY = 0.005
BATCH_INTERVAL = 0.01


def _encoded(record: AuditRecord, completed: float, finished: float, format: AuditFormat) -> bytes:
    """The line of a record finished at `completed` (wall clock) and `finished` (monotonic)."""
    if format is AuditFormat.KUBERNETES:
        received = completed - (finished - record.started)
        event = kubernetes_event(record, received, completed)
        return (json.dumps(event, separators=(",", ":")) + "\n").encode()
    return (record.to_json(completed, finished) + "\n").encode()


class AuditLog:
    """Audit lines, written off the hot path.

    `write(record)` formats the line and queues it; a writer thread appends everything queued
    with one write per batch (whole lines only), syncs at least every second, and retries
    while the log cannot be written. `refusal()` says, while the log cannot be written and the
    policy is fail-closed, why requests must not be forwarded. `close()` writes what is queued.
    """

    def __init__(
        self,
        path: Path | None = None,
        stream: IO[str] | None = None,
        *,
        max_size: int | None = None,
        max_backups: int = 5,
        format: AuditFormat = AuditFormat.JSON,
        failure_policy: AuditFailurePolicy = AuditFailurePolicy.FAIL_CLOSED,
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        self._path = path
        self.format = AuditFormat(format)
        self.failure_policy = AuditFailurePolicy(failure_policy)
        self._flush_interval = flush_interval
        sink: LineSink
        if path is not None:
            sink = RotatingFile(path, max_size=max_size, max_backups=max_backups)
        else:
            sink = StreamSink(stream if stream is not None else sys.stderr)
        self._sink = sink
        # Lines (and flush waiters, and the close mark) for the writer thread: deque appends
        # are atomic. `_wake` is set by the first line after the writer went quiet
        # (`_signalled` tells it is awake), and by flush and close.
        self._items: deque[object] = deque()
        self._wake = threading.Event()
        self._signalled = True  # until the writer first waits
        self._pending: deque[bytes] = deque()
        self._failure: str | None = None
        # True while requests must not be forwarded (fail-closed and failing): read per request.
        self.refusing = False
        self._failed_since = 0.0
        self._lost = 0
        self._dirty = False
        self._checked_at = 0.0  # when the sink was last checked (free space, rotated away)
        self._closed = False
        self._lock = threading.Lock()  # the sink, for a write after close
        self._open_sink()
        self._thread = threading.Thread(target=self._run, name="raygate-audit", daemon=True)
        self._thread.start()

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def failure(self) -> str | None:
        """Why audit lines cannot be written right now, or None."""
        return self._failure

    def refusal(self) -> str | None:
        """Why a request must not be forwarded now (fail-closed and the log is failing)."""
        if self._failure is not None and self.failure_policy is AuditFailurePolicy.FAIL_CLOSED:
            return f"the audit log cannot be written ({self._failure})"
        return None

    def write(self, record: AuditRecord) -> None:
        """Format the record's line and queue it for the writer thread.

        Formatting here costs a few microseconds (the constant part of a line is encoded once
        per decision, see `_constant_fields`); formatting in the writer thread instead made the
        two threads hand the GIL back and forth on every event-loop callback while it ran.
        """
        try:
            line = _encoded(record, time.time(), time.monotonic(), self.format)
        except Exception:  # a record that cannot be formatted must not fail its request
            log.exception("audit: a record could not be formatted")
            return
        if self._closed:
            with self._lock:
                self._pending.append(line)
                self._write_pending()
            return
        self._items.append(line)
        if not self._signalled:
            self._wake_writer()

    def _wake_writer(self) -> None:
        self._signalled = True
        self._wake.set()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every line queued so far was handed to the file (or failed)."""
        if self._closed:
            return True
        done = threading.Event()
        self._items.append(done)
        self._wake_writer()
        return done.wait(timeout)

    def close(self) -> None:
        """Write every queued line, sync, and stop the writer (at most a few seconds)."""
        if self._closed:
            return
        self._closed = True  # later writes are written by their caller, under the lock
        self._items.append(_CLOSE)
        self._wake_writer()
        self._thread.join(timeout=10)
        with self._lock:
            waiters: list[threading.Event] = []
            self._pending.extend(self._drain(waiters)[0])
            for waiter in waiters:
                waiter.set()
            self._write_pending()
            if self._pending:
                log.error(
                    "audit log %s: %d line(s) could not be written at shutdown",
                    self._sink,
                    len(self._pending),
                )
            self._sync()
            self._sink.close()

    # -- the writer thread -----------------------------------------------------------------------
    def _open_sink(self) -> None:
        try:
            if isinstance(self._sink, RotatingFile):
                self._sink.open()
                if self._sink.repaired:
                    log.warning(
                        "audit log %s ended with a partial line (a crash while writing); "
                        "removed its %d bytes",
                        self._sink,
                        self._sink.repaired,
                    )
            self._sink.check()
        except OSError as err:
            self._failed(err)

    def _drain(self, waiters: list[threading.Event]) -> tuple[list[bytes], bool]:
        """Everything queued: the lines, and whether the close mark was among them."""
        lines = []
        closing = False
        items = self._items
        while True:
            try:
                item = items.popleft()
            except IndexError:
                return lines, closing
            if isinstance(item, bytes):
                lines.append(item)
            elif isinstance(item, threading.Event):
                waiters.append(item)
            elif item is _CLOSE:
                closing = True

    def _run(self) -> None:
        last_sync = last_probe = time.monotonic()
        while True:
            if not self._items:
                # Quiet: the next line wakes the writer (or a flush or close, or a second).
                self._signalled = False
                if not self._items:  # a line queued just before saw it awake: no wait
                    if self._wake.wait(self._flush_interval) and not self._closed:
                        time.sleep(BATCH_DELAY)  # let the lines of a busy moment gather
            self._wake.clear()
            # Everything queued so far goes in one write.
            waiters: list[threading.Event] = []
            lines, closing = self._drain(waiters)
            with self._lock:
                self._pending.extend(lines)
                now = time.monotonic()
                # With nothing to write, the log is probed once a flush interval, not per batch.
                if self._pending or waiters or closing or now - last_probe >= self._flush_interval:
                    last_probe = now
                    self._write_pending()
                if now - last_sync >= self._flush_interval:
                    last_sync = now
                    self._sync()
            for waiter in waiters:
                waiter.set()
            if closing or self._closed:
                return
            if lines:
                # Busy: the next batch no sooner than BATCH_INTERVAL (a flush or close cuts
                # this short); the loop does not wake the writer meanwhile.
                self._wake.wait(BATCH_INTERVAL)

    def _write_pending(self) -> None:
        if not self._pending:
            self._probe()  # each second when idle: the disk may have filled, or been freed
            return
        if len(self._pending) > MAX_PENDING_LINES:
            dropped = len(self._pending) - MAX_PENDING_LINES
            for _ in range(dropped):
                self._pending.popleft()
            self._lost += dropped
        try:
            self._sink.write(b"".join(self._pending))
        except OSError as err:
            self._failed(err)
            return
        self._pending.clear()
        self._dirty = True
        now = time.monotonic()
        if self._failure is None and now - self._checked_at < self._flush_interval:
            return  # checked less than a second ago: a batch is one write, not four more calls
        self._checked_at = now
        try:
            self._sink.check()  # e.g. the disk just filled: refuse before a line is lost
        except OSError as err:
            self._failed(err)
            return
        self._recovered()

    def _probe(self) -> None:
        """With nothing to write: is the log (still, again) writable? Only a file on disk can
        tell without writing; anything else recovers with its next write."""
        if not self._sink.can_probe:
            return
        try:
            self._sink.check()
        except OSError as err:
            self._failed(err)
            return
        self._recovered()

    def _sync(self) -> None:
        if not self._dirty:
            return
        try:
            self._sink.sync()
            self._dirty = False
        except OSError as err:
            self._failed(err)

    def _failed(self, err: OSError) -> None:
        reason = err.strerror or str(err)
        if self._failure is None:
            self._failed_since = time.monotonic()
            consequence = (
                "answering 503 and forwarding nothing until it can"
                if self.failure_policy is AuditFailurePolicy.FAIL_CLOSED
                else "still forwarding (fail-open); lines are kept for a retry"
            )
            log.error("audit log %s cannot be written: %s; %s", self._sink, reason, consequence)
        if isinstance(self._sink, RotatingFile):
            self._sink.close()  # reopened on the next attempt: the file may have been replaced
        self._failure = reason
        self.refusing = self.failure_policy is AuditFailurePolicy.FAIL_CLOSED

    def _recovered(self) -> None:
        if self._failure is None:
            return
        self._failure = None
        self.refusing = False
        log.warning(
            "audit log %s writable again after %.0fs%s",
            self._sink,
            time.monotonic() - self._failed_since,
            f"; {self._lost} line(s) were dropped" if self._lost else "",
        )
        self._lost = 0


def open_audit_log(settings: AuditConfig) -> AuditLog:
    """The AuditLog the `audit:` settings (or the `--audit-*` flags) describe."""
    path = None if settings.log in (None, "", "-") else Path(str(settings.log))
    return AuditLog(
        path,
        stream=sys.stdout if path is None else None,
        max_size=settings.max_size or None,
        max_backups=settings.max_backups,
        format=settings.format,
        failure_policy=settings.failure_policy,
    )
