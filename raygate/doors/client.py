"""The Ray Client door: a generic gRPC proxy in front of Ray's client server.

Every method is relayed as a raw-bytes stream (unary calls too: on the wire a unary call is a
stream of one message), so nothing depends on Ray's protobufs. Each call is authorized with the
caller's `authorization` metadata, which is replaced by Ray's token upstream. Measured with
Ray 2.60: the client sends its token on every call, opens no other connection, and fails within
a second with the server's message when its connect-time PING is answered and its data stream
refused; a bare UNAUTHENTICATED on the PING makes it wait 30 s and blame the ports.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio

from raygate.authz.cache import jwt_expiry
from raygate.doors.guard import DoorGuard, Verdict, bearer_token
from raygate.doors.raywire import (
    PING_REQUEST,
    PING_RESPONSE,
    RAY_STARTUP_FAILURE,
    RAY_STARTUP_NOTE,
    explain_ray_startup_failure,
    init_response,
)
from raygate.doors.sessions import SessionBindings
from raygate.observe.audit import AuditDecision

log = logging.getLogger("raygate.doors.client")

DOOR = "client"
# Ray's own limit (ray.util.client.common.GRPC_MAX_MESSAGE_SIZE): 2 GiB - 1.
MAX_MESSAGE_BYTES = 2 * 1024 * 1024 * 1024 - 1
DEFAULT_RECHECK_INTERVAL = 30.0

DATAPATH = "/ray.rpc.RayletDataStreamer/Datapath"
LOGSTREAM = "/ray.rpc.RayletLogStreamer/Logstream"
CLUSTER_INFO = "/ray.rpc.RayletDriver/ClusterInfo"
# Ray's ray_client.proto (2.x): every RayletDriver method is unary but GetObject, which streams
# its answer; Datapath and Logstream stream both ways. Anything else is relayed as a stream.
UNARY_SERVICE = "/ray.rpc.RayletDriver/"
UNARY_STREAM_METHODS = frozenset({"/ray.rpc.RayletDriver/GetObject"})

# The session's streams, open as long as it is: audited when opened, re-checked while open.
# Every other call is short (GetObject streams one object's chunks per `ray.get`): authorized
# like the rest, audited when refused, not one audit line per `ray.get`.
STREAMS = frozenset({DATAPATH, LOGSTREAM})

# Responses of the data stream looked into for Ray's own InitResponse (the first, normally).
INIT_LOOKAHEAD = 3

# Metadata the gRPC runtime sets itself, or that carries the caller's credential.
_DROPPED_METADATA = frozenset(
    {
        "authorization",
        "user-agent",
        "content-type",
        "te",
        "host",
        # A caller's word on who it is or where it came from is never passed on (as the
        # HTTP doors: raygate.pipeline.headers).
        "x-ray-authorization",
        "forwarded",
        "x-real-ip",
    }
)
_DROPPED_PREFIXES = (":", "grpc-", "x-remote-", "x-forwarded-")


def read_metadata(
    metadata: Iterable[tuple[str, Any]],
) -> tuple[str | None, str | None, list[tuple[str, Any]]]:
    """A call's credential, its Ray Client session id, and the metadata that goes upstream:
    everything else but transport keys and what a caller might forge."""
    authorization = None
    client_id = None
    forwarded: list[tuple[str, Any]] = []
    for key, value in metadata:
        if key == "authorization":
            authorization = value if isinstance(value, str) else None
            continue
        if key == "client_id" and isinstance(value, str):
            client_id = value
        if key in _DROPPED_METADATA or key.startswith(_DROPPED_PREFIXES):
            continue
        forwarded.append((key, value))
    return authorization, client_id, forwarded


# Ray's client treats these codes as final (ray.util.client.common.GRPC_UNRECOVERABLE_ERRORS);
# any other code on the data stream makes it reconnect for its 30 s grace period, and only
# then report a generic timeout. Refusals therefore travel as FAILED_PRECONDITION (a token
# problem is not fixed by retrying) with raygate's message as the details.
REFUSAL_CODE = grpc.StatusCode.FAILED_PRECONDITION

SERVER_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Ray's client pings every 30 s, also without calls; refusing them would drop sessions.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.so_reuseport", 0),
]
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 600_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # One channel carries every session: no per-channel connection limit on Ray's side.
    ("grpc.use_local_subchannel_pool", 1),
]


@dataclass(frozen=True)
class ClientDoorSettings:
    listen: str  # host:port
    upstream: str  # host:port of Ray's client server
    ray_token: str | None
    recheck_interval: float = DEFAULT_RECHECK_INTERVAL


@dataclass(frozen=True, slots=True)
class _Admission:
    verdict: Verdict
    authorization: str | None  # the caller's, for re-checks of a long-lived stream
    metadata: list[tuple[str, Any]]  # for the upstream call, with Ray's token
    peer: str


class ClientDoor:
    """The gRPC server, its upstream channel, and the per-call relay."""

    def __init__(
        self,
        settings: ClientDoorSettings,
        guard: DoorGuard,
        sessions: SessionBindings | None = None,
    ) -> None:
        self.settings = settings
        self.guard = guard
        self.sessions = sessions or SessionBindings()
        self._server: aio.Server | None = None
        self._channel: aio.Channel | None = None
        self._methods: dict[str, Callable[..., Any]] = {}
        self.port: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._channel = aio.insecure_channel(self.settings.upstream, options=CHANNEL_OPTIONS)
        server = aio.server(options=SERVER_OPTIONS)
        server.add_generic_rpc_handlers((_GenericHandler(self),))
        try:
            self.port = server.add_insecure_port(self.settings.listen)
        except RuntimeError as err:
            raise OSError(f"cannot listen on {self.settings.listen}: {err}") from None
        if not self.port:
            raise OSError(f"cannot listen on {self.settings.listen}")
        await server.start()
        self._server = server

    async def stop(self, grace: float = 5.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    def _upstream(self, method: str, kind: str) -> Callable[..., Any]:
        call = self._methods.get(method)
        if call is None:
            assert self._channel is not None
            # No serializers: messages cross as the bytes they arrived as.
            call = self._methods[method] = getattr(self._channel, kind)(method)
        return call

    # -- one call ----------------------------------------------------------------------------
    async def _admit(self, method: str, context: aio.ServicerContext) -> _Admission:
        """Decide the call and bind its session; the metadata to send upstream."""
        authorization, client_id, forwarded = read_metadata(context.invocation_metadata() or ())
        guard = self.guard
        peer = context.peer()
        verdict = await guard.check(authorization, method, peer=peer)
        identity = verdict.identity
        if verdict.allowed and client_id is not None and identity is not None:
            owner = self.sessions.claim(client_id, identity)
            if owner is not None:
                verdict = guard.refuse(
                    verdict,
                    AuditDecision.DENY,
                    f'raygate: Forbidden: Ray Client session {client_id} belongs to "{owner}", '
                    f'not to "{identity.user}"',
                    f"Ray Client session {client_id} is bound to {owner}",
                )
        if verdict.allowed and self.settings.ray_token:
            forwarded.append(("authorization", f"Bearer {self.settings.ray_token}"))
        return _Admission(verdict, authorization, forwarded, peer)

    def _refused(self, method: str, verdict: Verdict) -> grpc.StatusCode:
        """Audit and count a refused call; the status to abort it with."""
        self.guard.finished(verdict)
        metrics = self.guard.metrics
        if metrics is not None:
            metrics.door_call(DOOR, method, str(verdict.decision))
        # A backend outage is passing: UNAVAILABLE lets the client retry; a refusal is not.
        if verdict.decision == AuditDecision.UNAVAILABLE:
            return grpc.StatusCode.UNAVAILABLE
        return REFUSAL_CODE

    def _upstream_failure(self, err: aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
        """Ray's error as the client gets it: its own, said to be Ray's where that helps."""
        details = err.details() or ""
        if RAY_STARTUP_FAILURE in details:
            details = RAY_STARTUP_NOTE + details
        elif err.code() is grpc.StatusCode.UNAVAILABLE and not self._upstream_ready():
            log.warning("Ray's client server at %s: %s", self.settings.upstream, details)
            details = "raygate: Ray's client server is unreachable; try again shortly."
        return err.code(), details

    def _count(self, method: str, outcome: str) -> None:
        metrics = self.guard.metrics
        if metrics is not None:
            metrics.door_call(DOOR, method, outcome)

    async def unary(self, method: str, request: bytes, context: aio.ServicerContext) -> bytes:
        """A unary RayletDriver call (ClusterInfo, KV*, Schedule, ...)."""
        admission = await self._admit(method, context)
        verdict = admission.verdict
        if not verdict.allowed:
            code = self._refused(method, verdict)
            if method == CLUSTER_INFO and request == PING_REQUEST:
                # Answer the connect-time PING so the client goes on to open its data stream,
                # where it reads the refusal (see the module docstring).
                return PING_RESPONSE
            await context.abort(code, verdict.message)
        outcome = "OK"
        try:
            call = self._upstream(method, "unary_unary")
            return await call(request, metadata=admission.metadata)
        except aio.AioRpcError as err:
            outcome = err.code().name
            await context.abort(*self._upstream_failure(err))
            raise  # not reached: abort raises
        finally:
            self._count(method, outcome)

    async def unary_stream(
        self, method: str, request: bytes, context: aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """GetObject: one request, the object's chunks back."""
        admission = await self._admit(method, context)
        verdict = admission.verdict
        if not verdict.allowed:
            await context.abort(self._refused(method, verdict), verdict.message)
        call = self._upstream(method, "unary_stream")(request, metadata=admission.metadata)
        outcome = "OK"
        try:
            async for message in call:
                yield message
        except aio.AioRpcError as err:
            outcome = err.code().name
            await context.abort(*self._upstream_failure(err))
        finally:
            call.cancel()
            self._count(method, outcome)

    async def relay(
        self, method: str, requests: AsyncIterator[bytes], context: aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """A bidirectional stream (the session's Datapath and Logstream), or a method this door
        does not know: relayed message by message both ways."""
        admission = await self._admit(method, context)
        verdict = admission.verdict
        if not verdict.allowed:
            await context.abort(self._refused(method, verdict), verdict.message)
        guard = self.guard
        metrics = guard.metrics
        is_stream = method in STREAMS
        if is_stream:
            guard.finished(verdict)  # one audit line per session stream opened
        call = self._upstream(method, "stream_stream")(requests, metadata=admission.metadata)
        watcher = None
        cut: list[Verdict] = []
        if is_stream:
            if metrics is not None:
                metrics.door_streams.labels(method=method).inc()
            watcher = asyncio.ensure_future(
                self._watch(admission.authorization, method, admission.peer, call, cut)
            )
        outcome = "OK"
        lookahead = INIT_LOOKAHEAD if method == DATAPATH else 0
        try:
            async for message in call:
                if lookahead:
                    lookahead -= 1
                    if init_response(message) is not None:
                        lookahead = 0
                        message = explain_ray_startup_failure(message)
                yield message
            trailing = await call.trailing_metadata()
            if trailing:
                context.set_trailing_metadata(tuple(trailing))
        except aio.AioRpcError as err:
            outcome = err.code().name
            await context.abort(*self._upstream_failure(err))
        except asyncio.CancelledError:
            if not cut:
                outcome = "CANCELLED"
                raise
            verdict = cut[0]
            outcome = "cut"
            verdict.record.reason = f"stream cut: {verdict.record.reason}"
            guard.finished(verdict)
            await context.abort(REFUSAL_CODE, verdict.message)
        finally:
            if watcher is not None:
                watcher.cancel()
            call.cancel()
            if is_stream and metrics is not None:
                metrics.door_streams.labels(method=method).dec()
            self._count(method, outcome)

    def _upstream_ready(self) -> bool:
        channel = self._channel
        if channel is None:
            return False
        return channel.get_state() is grpc.ChannelConnectivity.READY

    async def _watch(
        self, authorization: str | None, method: str, peer: str, call: Any, cut: list[Verdict]
    ) -> None:
        """Re-check a long-lived stream: when its token expires and every recheck interval."""
        interval = self.settings.recheck_interval
        token = bearer_token(authorization)
        expiry = jwt_expiry(token) if token else None
        while True:
            delay = interval
            if expiry is not None:
                delay = min(delay, max(expiry - time.time(), 0.0) + 0.05)
            await asyncio.sleep(delay)
            verdict = await self.guard.check(authorization, method, peer=peer)
            if verdict.decision in (AuditDecision.UNAUTHENTICATED, AuditDecision.DENY):
                # A backend outage is not a reason to cut a running session; a refusal is.
                cut.append(verdict)
                call.cancel()
                return


class _GenericHandler(grpc.GenericRpcHandler):
    def __init__(self, door: ClientDoor) -> None:
        self._door = door

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        # Partials of the async methods: gRPC inspects the behaviour to tell an async
        # generator from a coroutine (a plain wrapper would be run in a thread).
        method = handler_call_details.method
        door = self._door
        if method in UNARY_STREAM_METHODS:
            return grpc.unary_stream_rpc_method_handler(
                functools.partial(door.unary_stream, method)
            )
        if method.startswith(UNARY_SERVICE) and method not in STREAMS:
            return grpc.unary_unary_rpc_method_handler(functools.partial(door.unary, method))
        return grpc.stream_stream_rpc_method_handler(functools.partial(door.relay, method))
