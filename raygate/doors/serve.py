"""The Serve door: Ray Serve's HTTP ingress behind the same identities and RBAC as the dashboard.

It is the gateway's own HTTP data plane (raygate.dataplane) with Serve's HTTP proxy as upstream
and a pipeline for door `serve`: every call is decided on the Serve application that serves its
path (raygate.doors.profiles.ServeProfile), optionally rate limited per identity and
application, then streamed chunk by chunk both ways (server-sent events included). Ray's token
never goes to Serve: Serve does not check it, and application code would see it. Refusals are
JSON in the OpenAI API's error shape, so the `openai` client reports them as it reports
OpenAI's own (AuthenticationError, PermissionDeniedError, RateLimitError).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import urllib.parse
from collections.abc import Sequence

from raygate.authz.doors import SERVE_API_GROUP
from raygate.authz.paths import is_unambiguous_path
from raygate.config import ServeDoorConfig, split_host_port
from raygate.dataplane.server import Gateway
from raygate.dataplane.settings import GatewaySettings
from raygate.doors.guard import refusal_message
from raygate.doors.ratelimit import RateLimiter, retry_after
from raygate.doors.serve_apps import ServeApplications
from raygate.errors import BackendUnavailable
from raygate.observe.audit import AuditDecision, AuditRecord, new_request_id
from raygate.pipeline import (
    Answer,
    DecisionMemo,
    Door,
    Forward,
    Pipeline,
    PipelineSettings,
    RequestHead,
)

log = logging.getLogger("raygate.doors.serve")

DOOR = "serve"
TOKEN_HINT = (
    "Send 'Authorization: Bearer <token>' (the OpenAI client's api_key) with a token from "
    "`raygate create token <service-account>` (on Kubernetes: kubectl create token)."
)
RATE_LIMITED = "rate limit"
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_denied",
    404: "not_found",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_exceeded",
    500: "server_error",
    502: "server_error",
    503: "service_unavailable",
    504: "server_error",
}
# Headers of the pipeline's own answers worth keeping (the rest describe its text body).
_KEPT_HEADERS = frozenset({"www-authenticate", "retry-after", "allow", "set-cookie"})


def openai_error(
    status: int, message: str, record: AuditRecord | None, headers: Sequence[tuple[str, str]] = ()
) -> Answer:
    """An answer in the OpenAI API's error shape: {"error": {"message", "type", "code"}}."""
    body = {
        "error": {"message": message, "type": _ERROR_TYPES.get(status, "error"), "code": status}
    }
    return Answer(
        status,
        [("Content-Type", "application/json"), *headers],
        json.dumps(body).encode() + b"\n",
        record,
    )


def decoded_path(raw_path: str) -> str:
    """The path as Serve routes it (percent-decoded)."""
    return urllib.parse.unquote(raw_path)


def application_label(record: AuditRecord) -> str:
    for attrs in record.attributes:
        if attrs.api_group == SERVE_API_GROUP:
            return attrs.name or "-"
    return "-"


class ServeDoorPipeline(Pipeline):
    """The pipeline, with what only the Serve door does around it: a fresh application list
    before deciding, OpenAI-shaped refusals, rate limits, and per-application metrics."""

    def __init__(
        self,
        settings: PipelineSettings,
        applications: ServeApplications,
        limiter: RateLimiter | None = None,
    ) -> None:
        super().__init__(settings)
        self.applications = applications
        self.limiter = limiter

    async def decide(self, head: RequestHead, memo: DecisionMemo | None = None) -> Forward | Answer:
        raw_path = head.path
        if not is_unambiguous_path(raw_path):
            # Serve decodes the path before routing: `..` or `%2F` could reach another app.
            return self._refused(
                head,
                400,
                AuditDecision.DENY,
                "raygate: Bad Request: dot segments, empty segments and encoded separators are "
                "refused in Serve paths",
            )
        path = decoded_path(raw_path)
        try:
            if not self.applications.fresh_for(path):
                # In a task of its own: the data plane starts deciding outside any task (a
                # cached decision then costs none), and aiohttp's client needs one.
                await asyncio.ensure_future(self.applications.prepare(path))
        except BackendUnavailable as err:
            log.warning("Serve door answering 503: %s", err)
            return self._refused(
                head,
                503,
                AuditDecision.UNAVAILABLE,
                "raygate: Service Unavailable: Ray Serve's application list cannot be read; "
                "nothing was forwarded. Try again shortly.",
                reason=str(err),
                headers=[("Retry-After", "5")],
            )
        outcome = await super().decide(head)  # no memo: routes move when apps are deployed
        record = outcome.record
        assert record is not None
        if isinstance(outcome, Answer):
            return self._openai_shaped(outcome, record)
        identity = outcome.identity
        if self.limiter is not None and identity is not None:
            application = application_label(record)
            wait = self.limiter.acquire(identity.user, application)
            if wait > 0:
                record.decision = AuditDecision.DENY
                record.reason = RATE_LIMITED
                return openai_error(
                    429,
                    f'raygate: Too Many Requests: "{identity.user}" is over the rate limit of '
                    f"Serve application {application}; retry after {retry_after(wait)}s.",
                    record,
                    [("Retry-After", retry_after(wait))],
                )
        return outcome

    def _refused(
        self,
        head: RequestHead,
        status: int,
        decision: AuditDecision,
        message: str,
        *,
        reason: str = "",
        headers: Sequence[tuple[str, str]] = (),
    ) -> Answer:
        record = AuditRecord(new_request_id(), head.method, head.target, head.peer)
        record.decision = decision
        record.reason = reason or message
        return openai_error(status, message, record, headers)

    def _openai_shaped(self, answer: Answer, record: AuditRecord) -> Answer:
        status = answer.status
        if status == 400:
            message = "raygate: " + answer.body.decode(errors="replace").strip()
        else:
            message = refusal_message(Door.SERVE, TOKEN_HINT, record.decision, status, record)
        kept = [(k, v) for k, v in answer.headers if k.lower() in _KEPT_HEADERS]
        return openai_error(status, message, record, kept)

    def finished(self, record: AuditRecord) -> None:
        super().finished(record)
        metrics = self.settings.metrics
        if metrics is not None:
            if record.reason == RATE_LIMITED:
                outcome = "rate-limited"
            elif record.decision == AuditDecision.ALLOW:
                outcome = str(record.status)
            else:
                outcome = str(record.decision)
            metrics.door_call(DOOR, application_label(record), outcome)


class ServeDoor:
    """The data plane's HTTP server on the Serve door's address, in front of Serve's proxy."""

    def __init__(
        self,
        config: ServeDoorConfig,
        pipeline_settings: PipelineSettings,
        applications: ServeApplications,
        *,
        dashboard_settings: GatewaySettings,
    ) -> None:
        self.config = config
        self.applications = applications
        limiter = RateLimiter(config.rate_limit, config.rate_burst) if config.rate_limit else None
        self.pipeline = ServeDoorPipeline(pipeline_settings, applications, limiter)
        # The dashboard's limits and deadlines, Serve's proxy as upstream.
        self.settings = dataclasses.replace(
            dashboard_settings,
            upstream=config.upstream,
            pipeline=pipeline_settings,
            upstream_ssl=None,
        )
        self._gateway: Gateway | None = None

    async def start(self) -> None:
        self._gateway = Gateway(self.settings, self.pipeline)
        host, port = split_host_port(self.config.listen)
        await self._gateway.listen(host or None, port)

    async def stop(self, grace: float = 5.0) -> None:
        if self._gateway is not None:
            await self._gateway.drain(grace)
            await self._gateway.close()
            self._gateway = None
        await self.applications.close()
