"""A mixed crowd of clients against the gateway, and an upstream that records what reached it.

Used by the load test (tests/dataplane/test_load.py) and the soak run (benchmarks/soak.py).
Every request carries a unique id in its path, so what the client saw, what reached the
upstream and what the audit log says can be matched one to one.

Scenarios, picked at random by each client in a loop:
- allowed: a GET with a token whose account may do everything: 200 and the upstream's echo;
- denied: a POST with a body, token of an account with no rights: 403, nothing upstream;
- bad-token / no-token: 401, nothing upstream;
- stream: a chunked log stream of LOG_LINES lines, read to its end;
- websocket: an upgrade, a few echoed messages, a clean close; denied-websocket: 403;
- vanish: a raw client that sends a head and part of its body, then disappears;
- upload (a few, on their own tasks): 100 MiB streamed up, the upstream's hash must match.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from ..integration.gateway_helpers import generated_body, generated_sha256

LOG_LINES = 20
WS_MESSAGES = 3
UPLOAD_BYTES = 100 * 1024 * 1024
REQUEST_TIMEOUT = 60.0
WEIGHTS = {
    "allowed": 50,
    "denied": 12,
    "bad-token": 8,
    "no-token": 5,
    "stream": 8,
    "websocket": 6,
    "denied-websocket": 3,
    "vanish": 8,
}


# -- the upstream -------------------------------------------------------------------------------


@dataclass
class LoadUpstream:
    """Ray's dashboard reduced to the shapes of the mix; every request's path is recorded."""

    paths: list[str] = field(default_factory=list)
    upload_hashes: dict[str, str] = field(default_factory=dict)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=2 * UPLOAD_BYTES)
        app.router.add_get("/api/logs/{id}", self._logs)
        app.router.add_get("/ws/{id}", self._websocket)
        app.router.add_route("*", "/{tail:.*}", self._echo)
        return app

    async def _echo(self, request: web.Request) -> web.Response:
        self.paths.append(request.raw_path)
        digest = hashlib.sha256()
        size = 0
        try:
            async for chunk in request.content.iter_any():
                digest.update(chunk)
                size += len(chunk)
        except (ConnectionError, aiohttp.ClientPayloadError):
            return web.Response(status=499)  # the client vanished mid-body; so did the gateway
        if size >= UPLOAD_BYTES:
            self.upload_hashes[request.raw_path] = digest.hexdigest()
        return web.json_response(
            {"path": request.raw_path, "size": size, "sha256": digest.hexdigest()}
        )

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.raw_path)
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(LOG_LINES):
            await response.write(b"log line %d\n" % i)
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        self.paths.append(request.raw_path)
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
        return ws


# -- the clients --------------------------------------------------------------------------------


@dataclass
class Tokens:
    allowed: str
    denied: str


@dataclass
class Outcome:
    """What the crowd did and saw."""

    done: Counter[str] = field(default_factory=Counter)
    # Request paths by what must hold for them: at the upstream once, or never.
    forwarded: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def fail(self, what: str) -> None:
        if len(self.failures) < 50:
            self.failures.append(what)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Crowd:
    def __init__(self, base: str, tokens: Tokens, outcome: Outcome) -> None:
        self.base = base
        self.tokens = tokens
        self.outcome = outcome
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
            auto_decompress=False,
        )

    async def close(self) -> None:
        await self.session.close()

    async def client(self, stop_at: float, think: tuple[float, float]) -> None:
        names, weights = zip(*WEIGHTS.items(), strict=True)
        while time.monotonic() < stop_at:
            scenario = random.choices(names, weights)[0]
            rid = uuid.uuid4().hex
            try:
                await getattr(self, "_" + scenario.replace("-", "_"))(rid)
                self.outcome.done[scenario] += 1
            except Exception as err:  # every failure is a finding, with what it was
                self.outcome.fail(f"{scenario} {rid}: {type(err).__name__}: {err}")
            await asyncio.sleep(random.uniform(*think))

    async def _allowed(self, rid: str) -> None:
        path = f"/api/ok/{rid}"
        self.outcome.forwarded.append(path)
        async with self.session.get(self.base + path, headers=_auth(self.tokens.allowed)) as r:
            body = await r.json()
            assert r.status == 200 and body["path"] == path, (r.status, body)

    async def _refused(self, rid: str, method: str, headers: dict[str, str], status: int) -> None:
        path = f"/api/refused/{rid}"
        self.outcome.refused.append(path)
        async with self.session.request(
            method, self.base + path, headers=headers, data=b"x" * 4096
        ) as r:
            await r.read()
            assert r.status == status, r.status

    async def _denied(self, rid: str) -> None:
        await self._refused(rid, "POST", _auth(self.tokens.denied), 403)

    async def _bad_token(self, rid: str) -> None:
        await self._refused(rid, "GET", _auth("not-a-token-" + rid), 401)

    async def _no_token(self, rid: str) -> None:
        await self._refused(rid, "GET", {}, 401)

    async def _stream(self, rid: str) -> None:
        path = f"/api/logs/{rid}"
        self.outcome.forwarded.append(path)
        async with self.session.get(self.base + path, headers=_auth(self.tokens.allowed)) as r:
            lines = [line async for line in r.content]
            assert r.status == 200 and len(lines) == LOG_LINES, (r.status, len(lines))

    async def _websocket(self, rid: str) -> None:
        path = f"/ws/{rid}"
        self.outcome.forwarded.append(path)
        async with self.session.ws_connect(
            self.base + path, headers=_auth(self.tokens.allowed)
        ) as ws:
            for i in range(WS_MESSAGES):
                await ws.send_str(f"m{i}")
                msg = await ws.receive(timeout=REQUEST_TIMEOUT)
                assert msg.data == f"echo:m{i}", msg
            await ws.close()

    async def _denied_websocket(self, rid: str) -> None:
        path = f"/ws/refused-{rid}"
        self.outcome.refused.append(path)
        try:
            async with self.session.ws_connect(self.base + path, headers=_auth(self.tokens.denied)):
                raise AssertionError("a denied WebSocket was upgraded")
        except aiohttp.WSServerHandshakeError as err:
            assert err.status == 403, err.status

    async def _vanish(self, rid: str) -> None:
        """A head with a valid token and a 1 MiB length, 64 KiB of it, then gone."""
        path = f"/api/vanish/{rid}"
        self.outcome.vanished.append(path)
        host, _, port = self.base.removeprefix("http://").partition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: ray\r\nAuthorization: Bearer {self.tokens.allowed}\r\n"
            f"Content-Length: {1024 * 1024}\r\n\r\n".encode()
            + b"v" * 65536
        )
        await writer.drain()
        await asyncio.sleep(random.uniform(0, 0.2))
        writer.transport.abort()

    async def upload(self, allowed: bool) -> None:
        rid = uuid.uuid4().hex
        path = f"/api/upload/{rid}"
        token = self.tokens.allowed if allowed else self.tokens.denied
        (self.outcome.forwarded if allowed else self.outcome.refused).append(path)
        name = "upload" if allowed else "denied-upload"
        try:
            async with self.session.put(
                self.base + path,
                headers={**_auth(token), "Content-Length": str(UPLOAD_BYTES)},
                data=generated_body(UPLOAD_BYTES),
            ) as r:
                body = await r.read()
                if allowed:
                    assert r.status == 200, (r.status, body[:200])
                else:
                    assert r.status == 403, r.status
            self.outcome.done[name] += 1
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as err:
            if allowed:
                self.outcome.fail(f"{name} {rid}: {type(err).__name__}: {err}")
            else:
                # Refused while still sending: the gateway may close before reading it all.
                self.outcome.done[name] += 1
        except Exception as err:
            self.outcome.fail(f"{name} {rid}: {type(err).__name__}: {err}")


async def run_crowd(
    base: str,
    tokens: Tokens,
    *,
    clients: int,
    seconds: float,
    uploads: int,
    denied_uploads: int = 1,
    think: tuple[float, float] = (0.2, 0.8),
    outcome: Outcome | None = None,
) -> Outcome:
    """Run the crowd for `seconds`; `outcome` (new if None) fills as it goes."""
    outcome = outcome if outcome is not None else Outcome()
    crowd = Crowd(base, tokens, outcome)
    stop_at = time.monotonic() + seconds
    try:
        tasks = [crowd.client(stop_at, think) for _ in range(clients)]

        async def spaced_uploads() -> None:
            # Spread over the run, one at a time: each is 100 MiB through loopback.
            plan = [True] * uploads + [False] * denied_uploads
            for i, allowed in enumerate(plan):
                await asyncio.sleep(seconds * i / (len(plan) + 1))
                await crowd.upload(allowed)

        await asyncio.gather(*tasks, spaced_uploads())
    finally:
        await crowd.close()
    return outcome


def upload_sha256() -> str:
    return generated_sha256(UPLOAD_BYTES)


# -- the gateway process, seen from /proc -------------------------------------------------------


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (a gateway with --workers has several)."""
    found = [pid]
    with contextlib.suppress(OSError):
        for child in open(f"/proc/{pid}/task/{pid}/children").read().split():
            found += process_tree(int(child))
    return found


def footprint(pid: int) -> tuple[int, int]:
    """RSS bytes and open descriptors, summed over the gateway's process tree."""
    pids = process_tree(pid)
    return sum(rss_bytes(p) for p in pids), sum(open_fds(p) for p in pids)
