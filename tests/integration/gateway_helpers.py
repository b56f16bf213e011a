"""A real gateway in front of a recording upstream, both on loopback, for the gateway tests.

No Ray: the upstream is a small aiohttp app that records what reached it (method, raw path,
headers, body hash and size) and can answer the shapes Ray's dashboard answers: JSON, gzip
bodies, chunked log streams, WebSockets. The gateway is the one `raygate up` serves, with a real
EmbeddedAuthority over a temporary state directory and the guide's attribute configuration.

Tests run one coroutine per test with `asyncio.run`; `gateway_stack` starts and stops everything
inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from raygate.authz.attributes import AttributesConfig, ResourceAttributesConfig
from raygate.dataplane.server import Gateway
from raygate.dataplane.settings import GatewaySettings
from raygate.embedded import EmbeddedAuthority
from raygate.objects import parse_object
from raygate.observe.audit import AuditLog
from raygate.pipeline import CombinedAuthority, PipelineSettings, profile_for
from raygate.store.sqlite import ObjectStore
from raygate.store.state import write_secret
from raygate.store.tokens import KEY_FILE, SigningKey, issue_token, load_signing_key

NAMESPACE = "default"
CLUSTER_NAME = "ray-cluster-with-auth"
UPSTREAM_TOKEN = "ray-token-only-the-gateway-holds"
# Bodies up to this size are kept whole by the recorder; larger ones only hashed.
KEEP_BODY_BYTES = 1024 * 1024
GZIP_PAYLOAD = json.dumps({"jobs": [{"id": f"raysubmit_{i}"} for i in range(200)]}).encode()
GZIP_BODY = gzip.compress(GZIP_PAYLOAD, mtime=0)
# How long the chunk stream waits for the test to confirm it read the first chunk.
CHUNK_RELEASE_TIMEOUT = 5.0

_signing_key: SigningKey | None = None


def guide_attributes() -> AttributesConfig:
    """The kube-rbac-proxy resourceAttributes of the guide's RayCluster."""
    return AttributesConfig(
        resource_attributes=ResourceAttributesConfig(
            namespace=NAMESPACE,
            api_group="ray.io",
            api_version="v1",
            resource="rayclusters",
            name=CLUSTER_NAME,
        )
    )


# -- the policy ---------------------------------------------------------------------------------


def service_account(name: str, namespace: str = NAMESPACE) -> Any:
    return parse_object(
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": name, "namespace": namespace}}
    )


def role(name: str, verbs: Sequence[str], namespace: str = NAMESPACE) -> Any:
    return parse_object(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name, "namespace": namespace},
            "rules": [{"apiGroups": ["ray.io"], "resources": ["rayclusters"],
                       "verbs": list(verbs)}],
        }
    )


def role_binding(name: str, account: str, namespace: str = NAMESPACE) -> Any:
    return parse_object(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        }
    )


def grant(store: ObjectStore, account: str, verbs: Sequence[str] = ("*",)) -> None:
    """A Role on the guide's rayclusters with `verbs`, bound to the account (named after it)."""
    store.apply([role(account, verbs), role_binding(account, account)])


def prepare_state(state_dir: Path) -> None:
    """A state directory with a signing key. One RSA key per test session: generating is slow."""
    global _signing_key
    if _signing_key is None:
        _signing_key = SigningKey.generate()
    write_secret(state_dir / KEY_FILE, _signing_key.to_pem(), exclusive=True)


def token_for(state_dir: Path, name: str, namespace: str = NAMESPACE) -> str:
    """A valid token for an existing service account, as `raygate create token` issues it."""
    with ObjectStore.open(state_dir) as store:
        account = store.require("ServiceAccount", name, namespace)
    return issue_token(
        namespace, name, account.metadata.uid or "",
        signing_key=load_signing_key(state_dir), duration=timedelta(hours=1),
    )


# -- the recording upstream ---------------------------------------------------------------------


@dataclass
class Seen:
    """One request as the upstream received it."""

    method: str
    raw_path: str  # path and query exactly as sent on the wire
    headers: CIMultiDict[str]
    body: bytes = b""  # the first KEEP_BODY_BYTES
    size: int = 0
    sha256: str = ""
    complete: bool = False  # the whole body arrived


@dataclass
class RecordingUpstream:
    """Ray's dashboard, reduced to what the gateway must carry faithfully."""

    requests: list[Seen] = field(default_factory=list)
    # Set by a test once it read the first chunk of /stream/chunks; the stream then goes on.
    first_chunk_read: asyncio.Event = field(default_factory=asyncio.Event)
    second_chunk_sent_early: bool = False
    # The close code of each finished WebSocket, as the upstream saw it.
    ws_close_codes: list[int | None] = field(default_factory=list)
    ws_closed: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/stream/gzip", self._gzip)
        app.router.add_get("/stream/chunks", self._chunks)
        app.router.add_get("/stream/broken", self._broken_stream)
        app.router.add_get("/ws/echo", self._websocket)
        app.router.add_route("*", "/cookies", self._cookies)
        app.router.add_route("*", "/{tail:.*}", self._record_and_answer)
        return app

    async def _receive(self, request: web.Request) -> Seen:
        seen = Seen(request.method, request.raw_path, CIMultiDict(request.headers))
        self.requests.append(seen)
        digest = hashlib.sha256()
        kept = bytearray()
        try:
            async for chunk in request.content.iter_any():
                digest.update(chunk)
                seen.size += len(chunk)
                if len(kept) < KEEP_BODY_BYTES:
                    kept += chunk[: KEEP_BODY_BYTES - len(kept)]
        except (ConnectionError, aiohttp.ClientPayloadError):
            seen.body = bytes(kept)  # the sender gave up mid-body: recorded as incomplete
            return seen
        seen.body, seen.sha256, seen.complete = bytes(kept), digest.hexdigest(), True
        return seen

    async def _record_and_answer(self, request: web.Request) -> web.Response:
        seen = await self._receive(request)
        return web.json_response(
            {"method": seen.method, "path": seen.raw_path, "size": seen.size, "sha256": seen.sha256}
        )

    async def _gzip(self, request: web.Request) -> web.Response:
        await self._receive(request)
        return web.Response(
            body=GZIP_BODY,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    async def _chunks(self, request: web.Request) -> web.StreamResponse:
        await self._receive(request)
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"first line\n")
        try:
            await asyncio.wait_for(self.first_chunk_read.wait(), CHUNK_RELEASE_TIMEOUT)
        except TimeoutError:
            self.second_chunk_sent_early = True
        await response.write(b"second line\n")
        await response.write_eof()
        return response

    async def _broken_stream(self, request: web.Request) -> web.StreamResponse:
        """A log stream whose server dies after the first chunk."""
        await self._receive(request)
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"first line\n")
        assert request.transport is not None
        request.transport.abort()
        return response

    async def _cookies(self, request: web.Request) -> web.Response:
        await self._receive(request)
        response = web.Response(text="ok")
        response.headers.add("Set-Cookie", f"ray-authentication-token={UPSTREAM_TOKEN}; Path=/")
        response.headers.add("Set-Cookie", "dashboard-theme=dark; Path=/")
        return response

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        self.requests.append(Seen(request.method, request.raw_path, CIMultiDict(request.headers)))
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                if msg.data.startswith("close "):
                    await ws.close(code=int(msg.data.split()[1]), message=b"bye")
                    break
                await ws.send_str("echo:" + msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(b"echo:" + msg.data)
        self.ws_close_codes.append(ws.close_code)
        self.ws_closed.set()
        return ws


# -- serving ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve(app: web.Application, port: int = 0) -> AsyncIterator[URL]:
    """Serve `app` on loopback (a free port unless given); yields its base URL."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield URL.build(scheme="http", host=host, port=port)
    finally:
        await runner.cleanup()


def free_port_url() -> URL:
    """A loopback URL where nothing listens (the port was free a moment ago)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return URL.build(scheme="http", host="127.0.0.1", port=port)


@dataclass
class Stack:
    """A running gateway, its upstream and its authority."""

    url: URL
    upstream: RecordingUpstream
    authority: EmbeddedAuthority
    state_dir: Path
    audit_path: Path
    settings: GatewaySettings
    gateway: Gateway

    def token(self, name: str, namespace: str = NAMESPACE) -> str:
        return token_for(self.state_dir, name, namespace)

    def use(self, authenticator: Any = None, authorizer: Any = None) -> None:
        """Put another authenticator or authorizer in front of the running gateway."""
        self.settings.pipeline.authority = CombinedAuthority(
            authenticator or self.authority.authenticator,
            authorizer or self.authority.authorizer,
            self.authority,
        )

    def audit_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]


@contextlib.asynccontextmanager
async def serve_gateway(settings: GatewaySettings) -> AsyncIterator[tuple[URL, Gateway]]:
    """The data plane of `raygate up` serving `settings` on a free loopback port."""
    gateway = Gateway(settings)
    await gateway.listen("127.0.0.1", 0)
    host, port = gateway.addresses[0]
    try:
        yield URL.build(scheme="http", host=host, port=port), gateway
    finally:
        await gateway.close()


@contextlib.asynccontextmanager
async def gateway_stack(
    state_dir: Path,
    *,
    accounts: dict[str, Sequence[str] | None] | None = None,
    upstream_url: URL | None = None,
    **overrides: Any,
) -> AsyncIterator[Stack]:
    """The gateway of `raygate up`, with the embedded authority over `state_dir`.

    `accounts` maps service-account names (namespace default) to the verbs a Role grants them on
    the guide's RayCluster (None: no binding). `overrides` replace GatewaySettings (or pipeline
    settings) fields, e.g. `browser_login=True`. `upstream_url` points it elsewhere than the
    recording upstream.
    """
    prepare_state(state_dir)
    with ObjectStore.open(state_dir) as store:
        for name, verbs in (accounts or {}).items():
            store.apply([service_account(name)])
            if verbs is not None:
                grant(store, name, verbs)
    upstream = RecordingUpstream()
    authority = EmbeddedAuthority(state_dir)
    audit_path = state_dir / "audit.log"
    audit = AuditLog(audit_path)
    async with serve(upstream.app()) as recorded_url:
        pipeline = PipelineSettings(
            authority=authority,
            profile=profile_for(guide_attributes()),
            upstream_token=UPSTREAM_TOKEN,
            audit=audit,
            public_routes=authority.public_routes(),
            backend_timeout=None,
        )
        settings = GatewaySettings(upstream=str(upstream_url or recorded_url), pipeline=pipeline)
        authenticator = overrides.pop("authenticator", authority.authenticator)
        authorizer = overrides.pop("authorizer", authority.authorizer)
        if authenticator is not authority.authenticator or authorizer is not authority.authorizer:
            pipeline.authority = CombinedAuthority(authenticator, authorizer, authority)
        for name, value in overrides.items():
            target = settings if hasattr(settings, name) else pipeline
            if not hasattr(target, name):
                raise TypeError(f"no gateway setting {name!r}")
            setattr(target, name, value)
        await authority.start()
        try:
            async with serve_gateway(settings) as (url, gateway):
                yield Stack(url, upstream, authority, state_dir, audit_path, settings, gateway)
        finally:
            await authority.stop()
            audit.close()


async def raw_exchange(url: URL, data: bytes, timeout: float = 10.0) -> bytes:
    """Send bytes as they are on one connection; everything read until the server closes it.

    End the last request with `Connection: close` so the server closes when it is done.
    """
    assert url.host is not None and url.port is not None
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def status_of(answer: bytes) -> int:
    """The status code of the first response in raw bytes read back; 0 when there is none."""
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    return int(match.group(1)) if match else 0


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def client_session(**kwargs: Any) -> aiohttp.ClientSession:
    """A client that shows bytes as they came: no decompression, no cookie handling."""
    return aiohttp.ClientSession(
        auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(), **kwargs
    )


def _pattern_chunks(total: int, chunk_size: int) -> Iterator[bytes]:
    sent = 0
    index = 0
    while sent < total:
        size = min(chunk_size, total - sent)
        block = hashlib.sha256(index.to_bytes(8, "big")).digest()
        yield (block * (size // len(block) + 1))[:size]
        sent += size
        index += 1


async def generated_body(total: int, chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """`total` bytes of a deterministic pattern, produced chunk by chunk (never held whole)."""
    for chunk in _pattern_chunks(total, chunk_size):
        yield chunk


def generated_sha256(total: int, chunk_size: int = 1024 * 1024) -> str:
    """The hash of `generated_body(total, chunk_size)`, computed chunk by chunk."""
    digest = hashlib.sha256()
    for chunk in _pattern_chunks(total, chunk_size):
        digest.update(chunk)
    return digest.hexdigest()
