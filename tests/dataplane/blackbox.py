"""The gateway as a black box: a `raygate up --upstream` process in front of a raw-socket recorder.

Nothing here imports the gateway's HTTP code, so the tests that use it hold for any data plane
behind the `raygate up` command line. The recorder keeps every byte each upstream connection
receives; `parse_requests` reads those bytes back with a strict HTTP/1.1 grammar written here,
independently of the gateway's parser.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from raygate.store.sqlite import ObjectStore

from ..conftest import executable
from ..integration.gateway_helpers import (
    NAMESPACE,
    grant,
    prepare_state,
    service_account,
    token_for,
)

UPSTREAM_TOKEN = "ray-token-only-the-gateway-holds"
UPSTREAM_BODY = b"upstream"
UPSTREAM_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (
    len(UPSTREAM_BODY),
    UPSTREAM_BODY,
)
# Values the corpus forges in identity headers and credentials; none may reach the upstream.
SPOOF_VALUES_FORBIDDEN = (b"system:masters", b"admin", b"stolen")
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# RFC 9110 token characters (header names and methods).
TCHAR = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
TARGET = re.compile(rb"^[\x21-\x7e]+$")
# Field values: visible characters, obs-text, SP and HTAB; no other control bytes.
FIELD_VALUE = re.compile(rb"^[\x20-\x7e\x80-\xff\t]*$")


# -- a strict reader of what reached the upstream -----------------------------------------------


class Malformed(ValueError):
    """The upstream received bytes that are not a well-formed HTTP/1.1 request."""


@dataclass
class Request:
    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    chunked: bool

    def values(self, name: str) -> list[bytes]:
        key = name.lower().encode()
        return [v for n, v in self.headers if n.lower() == key]

    def names(self) -> list[bytes]:
        return [n.lower() for n, _ in self.headers]


def _read_chunked(data: bytes, pos: int) -> tuple[bytes, int]:
    body = bytearray()
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            raise Malformed("chunk size line not terminated")
        size_field = data[pos:end].split(b";", 1)[0]
        if not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", size_field):
            raise Malformed(f"bad chunk size {data[pos:end]!r}")
        size = int(size_field, 16)
        pos = end + 2
        if size == 0:
            break
        if len(data) < pos + size + 2:
            raise Malformed("chunk data truncated")
        body += data[pos : pos + size]
        if data[pos + size : pos + size + 2] != b"\r\n":
            raise Malformed("chunk data not followed by CRLF")
        pos += size + 2
    # Trailer section, then the empty line.
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            raise Malformed("trailers not terminated")
        line = data[pos:end]
        pos = end + 2
        if not line:
            return bytes(body), pos
        _parse_field(line)


def _parse_field(line: bytes) -> tuple[bytes, bytes]:
    name, sep, value = line.partition(b":")
    if not sep or not TCHAR.match(name):
        raise Malformed(f"bad header line {line!r}")
    value = value.strip(b" \t")
    if not FIELD_VALUE.match(value):
        raise Malformed(f"bad header value {line!r}")
    return name, value


def parse_one(
    data: bytes, pos: int = 0, *, body_may_end_early: bool = False
) -> tuple[Request, int]:
    """One request starting at `pos`; returns it and where the next one starts.

    `body_may_end_early`: the data stops inside the body (its sender has not finished it yet)."""
    head_end = data.find(b"\r\n\r\n", pos)
    if head_end < 0:
        raise Malformed("head not terminated by CRLF CRLF")
    head = data[pos:head_end]
    if b"\r" in head.replace(b"\r\n", b"") or b"\n" in head.replace(b"\r\n", b""):
        raise Malformed("bare CR or LF in the head")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise Malformed(f"bad request line {lines[0]!r}")
    method, target, version = parts
    if not TCHAR.match(method) or not TARGET.match(target):
        raise Malformed(f"bad request line {lines[0]!r}")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise Malformed(f"bad version {version!r}")
    headers = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise Malformed("obs-fold")
        headers.append(_parse_field(line))
    names = [n.lower() for n, _ in headers]
    if version == b"HTTP/1.1" and names.count(b"host") != 1:
        raise Malformed(f"{names.count(b'host')} Host headers")
    lengths = [v for n, v in headers if n.lower() == b"content-length"]
    encodings = [v for n, v in headers if n.lower() == b"transfer-encoding"]
    pos = head_end + 4
    if encodings:
        if lengths:
            raise Malformed("both Content-Length and Transfer-Encoding")
        if len(encodings) != 1 or encodings[0].lower() != b"chunked":
            raise Malformed(f"Transfer-Encoding {encodings!r}")
        body, pos = _read_chunked(data, pos)
        return Request(method, target, version, headers, body, True), pos
    if len(lengths) > 1:
        raise Malformed("several Content-Length headers")
    size = 0
    if lengths:
        if not re.fullmatch(rb"[0-9]{1,18}", lengths[0]):
            raise Malformed(f"Content-Length {lengths[0]!r}")
        size = int(lengths[0])
    if len(data) < pos + size:
        if not body_may_end_early:
            raise Malformed("body truncated")
        size = len(data) - pos
    return Request(method, target, version, headers, data[pos : pos + size], False), pos + size


def parse_requests(data: bytes, *, last_body_may_end_early: bool = False) -> list[Request]:
    """Every request in `data`, which must hold whole well-formed requests and nothing else
    (with `last_body_may_end_early`, the last one's body may stop short: still being sent)."""
    requests = []
    pos = 0
    while pos < len(data):
        request, pos = parse_one(data, pos, body_may_end_early=last_body_may_end_early)
        requests.append(request)
        if any(n.lower() == b"upgrade" for n, _ in request.headers):
            break  # after an upgrade the bytes are the new protocol's
    return requests


# -- the recording upstream ---------------------------------------------------------------------


@dataclass
class Connection:
    data: bytearray = field(default_factory=bytearray)
    closed: bool = False


class RawRecorder:
    """An upstream that records every byte per connection and answers each request 200.

    It finds request boundaries leniently (only to know when to answer); what the tests assert
    is read from the recorded bytes with the strict `parse_requests`.
    """

    def __init__(self) -> None:
        self.connections: list[Connection] = []
        self._server: asyncio.AbstractServer | None = None
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection()
        self.connections.append(conn)
        self._writers.append(writer)
        pending = bytearray()
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                conn.data += chunk
                pending += chunk
                while True:
                    try:
                        request, used = parse_one(bytes(pending))
                    except Malformed:
                        if b"\r\n\r\n" in pending and _lenient_complete(pending) is None:
                            writer.close()  # not HTTP we can frame: hang up
                            return
                        break
                    del pending[:used]
                    if request.values("upgrade"):
                        key = (request.values("sec-websocket-key") or [b""])[0]
                        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
                        writer.write(
                            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                        )
                        await writer.drain()
                        while chunk := await reader.read(65536):
                            conn.data += chunk
                        return
                    if request.method == b"HEAD":
                        writer.write(UPSTREAM_ANSWER[: UPSTREAM_ANSWER.index(b"\r\n\r\n") + 4])
                    else:
                        writer.write(UPSTREAM_ANSWER)
                    await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            conn.closed = True
            writer.close()


def _lenient_complete(pending: bytearray) -> int | None:
    """Whether a head is there at all (the strict parser may only be waiting for body bytes)."""
    head_end = pending.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = bytes(pending[:head_end]).lower()
    if b"content-length" in head or b"transfer-encoding" in head:
        return head_end  # a body may still be coming
    return None


# -- the gateway --------------------------------------------------------------------------------


@dataclass
class Gateway:
    process: subprocess.Popen[bytes]
    host: str
    port: int
    state: Path
    audit_path: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def token(self, name: str, namespace: str = NAMESPACE) -> str:
        return token_for(self.state, name, namespace)

    def add_accounts(self, accounts: dict[str, Sequence[str] | None]) -> None:
        with ObjectStore.open(self.state) as store:
            for name, verbs in accounts.items():
                store.apply([service_account(name)])
                if verbs is not None:
                    grant(store, name, verbs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gateway(
    workdir: Path,
    upstream_url: str,
    accounts: dict[str, Sequence[str] | None],
    extra_args: Iterable[str] = (),
) -> Gateway:
    """`raygate up --upstream` with the embedded authority, `accounts` granted on the guide's
    RayCluster (verbs, or None for an account with no binding)."""
    state = workdir / "state"
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    prepare_state(state)
    token_file = workdir / "ray-token"
    token_file.write_text(UPSTREAM_TOKEN)
    token_file.chmod(0o600)
    audit_path = workdir / "audit.log"
    log_path = workdir / "gateway.log"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "RAYGATE_"))}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                executable("raygate"), "up",
                "--state", str(state),
                "--host", "127.0.0.1",
                "--port", str(port),
                "--upstream", upstream_url,
                "--upstream-token-file", str(token_file),
                "--audit-log", str(audit_path),
                *extra_args,
            ],
            cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    gateway = Gateway(process, "127.0.0.1", port, state, audit_path, log_path)
    gateway.add_accounts(accounts)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"raygate up exited: {gateway.log()}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return gateway
        time.sleep(0.05)
    stop_gateway(gateway)
    raise RuntimeError(f"raygate up did not listen within 30 s: {gateway.log()}")


def stop_gateway(gateway: Gateway) -> None:
    if gateway.process.poll() is None:
        gateway.process.send_signal(signal.SIGTERM)
        try:
            gateway.process.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(gateway.process.pid, signal.SIGKILL)
            gateway.process.wait(5)


# -- a raw client -------------------------------------------------------------------------------

# Any version: a gateway that echoes the request's (HTTP/0.9, HTTP/2.0) still answers.
STATUS_LINE = re.compile(rb"(?:^|\r\n)HTTP/\d\.\d (\d{3})[ \r]")


def statuses(answer: bytes) -> list[int]:
    """The statuses of the responses in `answer`, interim ones but 101 left out."""
    codes = [int(code) for code in STATUS_LINE.findall(answer)]
    return [c for c in codes if not 100 <= c < 200 or c == 101]


def complete_answers(data: bytes, *, head: bool = False) -> tuple[list[int], bool]:
    """Statuses of the whole responses at the start of `data`, and whether the stream is now
    another protocol (after 101) or unframed (read to the end). `head`: answers to HEAD."""
    found: list[int] = []
    pos = 0
    while True:
        head_end = data.find(b"\r\n\r\n", pos)
        if head_end < 0:
            return found, False
        lines = data[pos:head_end].split(b"\r\n")
        match = re.match(rb"HTTP/\d\.\d (\d{3})", lines[0])
        if not match:
            return found, False
        status = int(match.group(1))
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        pos = head_end + 4
        if status == 101:
            return [*found, status], True
        if 100 <= status < 200:
            continue
        if status in (204, 304) or head:
            found.append(status)
            continue
        if b"content-length" in fields:
            end = pos + int(fields[b"content-length"])
            if len(data) < end:
                return found, False
            found.append(status)
            pos = end
            continue
        if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
            end = data.find(b"\r\n0\r\n\r\n", pos - 2)
            if end < 0:
                return found, False
            found.append(status)
            pos = end + 7
            continue
        return found, True  # body until the connection closes


async def exchange(
    host: str, port: int, data: bytes, *, want: int = 1, grace: float = 0.05, limit: float = 5.0
) -> bytes:
    """Send `data` on a fresh connection and read the answer: until the server closes, or it
    has sent `want` whole final responses and then nothing more for `grace` seconds, or `limit`
    passes."""
    reader, writer = await asyncio.open_connection(host, port)
    answer = bytearray()
    try:
        try:
            writer.write(data)
            await writer.drain()
        except ConnectionError:
            pass
        deadline = time.monotonic() + limit
        while (left := deadline - time.monotonic()) > 0:
            done, _ = complete_answers(bytes(answer), head=data.startswith(b"HEAD "))
            wait = min(left, grace) if len(done) >= want else left
            try:
                chunk = await asyncio.wait_for(reader.read(65536), wait)
            except TimeoutError:
                if len(done) >= want:
                    break
                continue
            except ConnectionError:
                break
            if not chunk:
                break
            answer += chunk
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return bytes(answer)


class RecorderThread:
    """A RawRecorder on its own event loop in a thread, for tests that run one loop per test
    while the recorder must outlive them."""

    def __init__(self) -> None:
        import threading

        self.recorder = RawRecorder()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.recorder.start(), self._loop).result(10)

    @property
    def url(self) -> str:
        return self.recorder.url

    def connection_bytes(self) -> list[bytes]:
        async def copy() -> list[bytes]:
            return [bytes(c.data) for c in self.recorder.connections]

        return asyncio.run_coroutine_threadsafe(copy(), self._loop).result(10)

    def lengths(self) -> list[int]:
        return [len(data) for data in self.connection_bytes()]

    def new_bytes(self, lengths: Sequence[int]) -> list[bytes]:
        """What each connection received since `lengths()` returned `lengths` (non-empty only)."""
        now = self.connection_bytes()
        old = [*lengths, *[0] * (len(now) - len(lengths))]
        return [data[start:] for data, start in zip(now, old, strict=True) if len(data) > start]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.recorder.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def requests_with(marker: bytes, connections: Sequence[bytes]) -> tuple[int, list[Request], str]:
    """How often `marker` occurs in what the upstream received; the requests whose target holds
    it (read strictly); and the parse error of a connection holding it, if any ('' if none)."""
    occurrences = sum(data.count(marker) for data in connections)
    found: list[Request] = []
    error = ""
    for data in connections:
        if marker not in data:
            continue
        try:
            requests = parse_requests(data)
        except Malformed as err:
            error = f"{err} in {data[:2000]!r}"
            continue
        found += [r for r in requests if marker in r.target]
    return occurrences, found, error
