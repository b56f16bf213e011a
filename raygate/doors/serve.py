"""The Serve door: Ray Serve's HTTP ingress behind the same identities and RBAC as the dashboard.

Every call is decided by the pipeline (door `serve`) on the Serve application that serves its
path, optionally rate limited per identity and application, then streamed to Serve's own HTTP
proxy on its private port, chunk by chunk both ways (server-sent events included). Ray's token
never goes to Serve: Serve does not check it, and application code would see it. Refusals are
JSON in the OpenAI API's error shape, so the `openai` client reports them as it reports
OpenAI's own (AuthenticationError, PermissionDeniedError, RateLimitError).
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from raygate.authz.paths import is_unambiguous_path
from raygate.config import ServeDoorConfig, split_host_port
from raygate.doors.guard import DoorGuard, Verdict
from raygate.doors.ratelimit import RateLimiter, retry_after
from raygate.doors.serve_apps import ServeApplications
from raygate.errors import BackendUnavailable
from raygate.observe.audit import AuditDecision
from raygate.pipeline import Door, Headers, RequestHead
from raygate.proxy import forward

log = logging.getLogger("raygate.doors.serve")

DOOR = "serve"
MAX_BODY_BYTES = 100 * 1024 * 1024
MAX_HEADER_BYTES = 20 * 1024
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_denied",
    404: "not_found",
    429: "rate_limit_exceeded",
    503: "service_unavailable",
}
# Answer headers worth keeping from the pipeline's own answers.
_KEPT_HEADERS = frozenset({"www-authenticate", "retry-after", "allow"})


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = {
        "error": {
            "message": message,
            "type": _ERROR_TYPES.get(status, "error"),
            "code": status,
        }
    }
    return web.Response(
        status=status,
        body=json.dumps(body).encode() + b"\n",
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def decoded_path(raw_path: str) -> str:
    """The path as Serve routes it (percent-decoded)."""
    return urllib.parse.unquote(raw_path)


class ServeDoor:
    def __init__(
        self,
        config: ServeDoorConfig,
        *,
        guard: DoorGuard,
        applications: ServeApplications,
        upstream_timeout: float | None = 300.0,
    ) -> None:
        self.config = config
        self.guard = guard
        self.applications = applications
        self._limiter = (
            RateLimiter(config.rate_limit, config.rate_burst) if config.rate_limit else None
        )
        self._upstream = URL(config.upstream.rstrip("/"))
        self._upstream_timeout = upstream_timeout
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._session = forward.make_client_session(10.0, None)
        app = web.Application(
            client_max_size=MAX_BODY_BYTES,
            handler_args={
                "max_field_size": MAX_HEADER_BYTES,
                "max_line_size": MAX_HEADER_BYTES,
                "max_headers": 64,
            },
        )
        app.router.add_route("*", "/{tail:.*}", self.handle, expect_handler=forward.defer_continue)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        host, port = split_host_port(self.config.listen)
        await web.TCPSite(self._runner, host, port, reuse_address=True).start()

    async def stop(self, grace: float = 5.0) -> None:
        if self._runner is not None:
            self._runner.shutdown_timeout = grace  # type: ignore[attr-defined]
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self.applications.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw_path = request.rel_url.raw_path
        head = RequestHead(
            request.method,
            request.rel_url.raw_path_qs,
            Headers(list(request.headers.items())),
            peer=request.remote,
            scheme=request.scheme,
            host=request.host,
            door=Door.SERVE,
        )
        metrics = self.guard.metrics
        if not is_unambiguous_path(raw_path):
            # Serve decodes the path before routing: `..` or `%2F` could reach another app.
            return error_response(
                400, "raygate: dot segments, empty segments and encoded separators are refused"
            )
        try:
            await self.applications.prepare(decoded_path(raw_path))
        except BackendUnavailable as err:
            log.warning("Serve door answering 503: %s", err)
            return error_response(
                503,
                "raygate: Service Unavailable: Ray Serve's application list cannot be read; "
                "nothing was forwarded. Try again shortly.",
                {"Retry-After": "5"},
            )
        verdict = await self.guard.decide(head)
        application = self.applications.application_of(decoded_path(raw_path))
        label = application or "-"
        if not verdict.allowed:
            self.guard.finished(verdict)
            if metrics is not None:
                metrics.door_call(DOOR, label, str(verdict.decision))
            return self._refusal(verdict)
        identity = verdict.identity
        if self._limiter is not None and identity is not None:
            wait = self._limiter.acquire(identity.user, application)
            if wait > 0:
                verdict = self.guard.refuse(
                    verdict,
                    AuditDecision.DENY,
                    f'raygate: Too Many Requests: "{identity.user}" is over the rate limit of '
                    f"Serve application {application or '(none)'}; retry after "
                    f"{retry_after(wait)}s.",
                    "rate limit",
                )
                self.guard.finished(verdict, status=429)
                if metrics is not None:
                    metrics.door_call(DOOR, label, "rate-limited")
                return error_response(429, verdict.message, {"Retry-After": retry_after(wait)})
        return await self._forward(request, verdict, label)

    def _refusal(self, verdict: Verdict) -> web.Response:
        answer = verdict.answer
        headers = {}
        if answer is not None:
            headers = {k: v for k, v in answer.headers if k.lower() in _KEPT_HEADERS}
        status = verdict.status
        message = verdict.message
        if status == 400 and answer is not None:
            message = "raygate: " + answer.body.decode(errors="replace").strip()
        return error_response(status, message, headers)

    async def _forward(
        self, request: web.Request, verdict: Verdict, label: str
    ) -> web.StreamResponse:
        assert self._session is not None
        headers: CIMultiDict[str] = CIMultiDict(verdict.upstream_headers)
        url = URL(str(self._upstream) + request.rel_url.raw_path_qs, encoded=True)
        record = verdict.record
        metrics = self.guard.metrics
        started = time.monotonic()
        try:
            response = await forward.forward_http(
                request, self._session, url, headers, MAX_BODY_BYTES, self._upstream_timeout
            )
        except forward.BodyTooLarge as err:
            record.reason = str(err)
            response = error_response(413, f"raygate: {err}")
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            sent = request.get(forward.PREPARED_KEY)
            if sent:
                record.reason += f"; Serve broke off the response ({type(err).__name__})"
                self.guard.finished(verdict, status=sent)
                raise
            log.warning("Serve's HTTP proxy %s: %s", self._upstream, err or type(err).__name__)
            if isinstance(err, TimeoutError):
                response = error_response(504, "raygate: Ray Serve did not answer in time.")
            else:
                response = error_response(502, "raygate: Ray Serve's HTTP proxy is unreachable.")
        if metrics is not None:
            metrics.upstream_latency.observe(time.monotonic() - started)
            metrics.door_call(DOOR, label, str(response.status))
        self.guard.finished(verdict, status=response.status)
        return response
