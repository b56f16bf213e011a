"""One decision for a call at a door other than the dashboard: token -> identity -> attributes ->
RBAC, with the same authenticator, authorizer, audit log and metrics as the dashboard.

Transport-free: the Ray Client (gRPC) door and the Serve (HTTP) door turn a Verdict into their
own wire answer; the one-line message is the same everywhere.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from raygate.authn import TokenAuthenticator
from raygate.authz import Authorizer
from raygate.errors import BackendUnavailable
from raygate.identity import Attributes, Identity
from raygate.observe.audit import AuditLog, AuditRecord
from raygate.observe.metrics import GatewayMetrics

MAX_TOKEN_BYTES = 16 * 1024

ALLOW = "allow"
DENY = "deny"
UNAUTHENTICATED = "unauthenticated"
UNAVAILABLE = "unavailable"

_STATUS = {ALLOW: 200, DENY: 403, UNAUTHENTICATED: 401, UNAVAILABLE: 503}

AttributesFor = Callable[[Identity], Sequence[Attributes]]


@dataclass(frozen=True)
class Verdict:
    decision: str  # allow | deny | unauthenticated | unavailable
    message: str  # one line for the caller; never a token, never an internal address
    reason: str = ""  # for the audit line
    identity: Identity | None = None
    attributes: tuple[Attributes, ...] = ()
    started: float = field(default_factory=time.monotonic)

    @property
    def allowed(self) -> bool:
        return self.decision == ALLOW

    @property
    def status(self) -> int:
        return _STATUS[self.decision]


def bearer_token(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class DoorGuard:
    """Authenticate and authorize one door call; write its audit line and metrics on request."""

    def __init__(
        self,
        authenticator: TokenAuthenticator,
        authorizer: Authorizer,
        *,
        audit: AuditLog | None = None,
        metrics: GatewayMetrics | None = None,
        backend_timeout: float | None = 5.0,
        token_hint: str = "",
    ) -> None:
        self._authenticator = authenticator
        self._authorizer = authorizer
        self.audit_log = audit
        self.metrics = metrics
        self._timeout = backend_timeout
        self._token_hint = token_hint

    async def check(self, token: str | None, attributes_for: AttributesFor) -> Verdict:
        started = time.monotonic()
        if token is None:
            return Verdict(
                UNAUTHENTICATED,
                "raygate: Unauthorized: this Ray cluster requires a token and the call had "
                f"none. {self._token_hint}",
                "no bearer token",
                started=started,
            )
        if len(token) > MAX_TOKEN_BYTES or not token.isascii():
            return Verdict(
                UNAUTHENTICATED,
                "raygate: Unauthorized: the token is not valid (too large or not ASCII).",
                "token too large or not ASCII",
                started=started,
            )
        try:
            identity = await self._timed(
                "authn", self._authenticator.authenticate_token(token), started
            )
        except BackendUnavailable as err:
            return self._unavailable(str(err), started)
        if identity is None:
            return Verdict(
                UNAUTHENTICATED,
                "raygate: Unauthorized: the token is not valid (malformed, expired, for another "
                f"audience, or its service account was deleted). {self._token_hint}",
                "invalid bearer token",
                started=started,
            )
        attributes = tuple(attributes_for(identity))
        reasons = []
        for attrs in attributes:
            try:
                decision = await self._timed("authz", self._authorizer.authorize(attrs), started)
            except BackendUnavailable as err:
                return self._unavailable(str(err), started, identity, attributes)
            if not decision.allowed:
                return Verdict(
                    DENY,
                    f"raygate: Forbidden: {attrs.describe()}",
                    decision.reason,
                    identity,
                    attributes,
                    started,
                )
            reasons.append(decision.reason)
        return Verdict(ALLOW, "", "; ".join(r for r in reasons if r), identity, attributes, started)

    def _unavailable(
        self,
        detail: str,
        started: float,
        identity: Identity | None = None,
        attributes: tuple[Attributes, ...] = (),
    ) -> Verdict:
        return Verdict(
            UNAVAILABLE,
            "raygate: Service Unavailable: raygate cannot reach its identity or policy backend; "
            "nothing was forwarded. Try again shortly.",
            detail,
            identity,
            attributes,
            started,
        )

    async def _timed(self, call: str, awaitable: Awaitable[Any], started: float) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                return await awaitable
        except TimeoutError:
            raise BackendUnavailable(f"no {call} answer within {self._timeout:g}s") from None
        finally:
            if self.metrics is not None:
                self.metrics.backend_call(call, time.monotonic() - started)

    def record(
        self,
        verdict: Verdict,
        *,
        method: str,
        path: str,
        remote: str | None,
        status: int | None = None,
        reason: str | None = None,
    ) -> None:
        """One audit line (and the request/decision counters) for this verdict."""
        record = AuditRecord(
            request_id=uuid.uuid4().hex[:16],
            method=method,
            path=path,
            remote=remote,
            started=verdict.started,
            identity=verdict.identity,
            attributes=list(verdict.attributes),
            decision=verdict.decision,
            reason=verdict.reason if reason is None else reason,
            status=verdict.status if status is None else status,
        )
        if self.audit_log is not None:
            self.audit_log.write(record)
        if self.metrics is not None:
            self.metrics.request_answered(record.status, record.decision)
