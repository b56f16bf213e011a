"""A door's view of the decision pipeline: one call in, a Verdict out, with the one-line message
the caller reads at this door.

The identity, attributes, decision, audit line and metrics all come from `Pipeline.decide`
(raygate.pipeline), the same code the dashboard's requests go through; each door has its own
Pipeline instance (its own profile and caches) over the shared authority, audit log and metrics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from raygate.identity import Attributes, Identity
from raygate.observe.audit import AuditDecision, AuditRecord
from raygate.observe.metrics import GatewayMetrics
from raygate.pipeline import Answer, Door, Forward, Headers, Pipeline, RequestHead
from raygate.pipeline.outcome import HeaderList

_STATUS = {
    AuditDecision.ALLOW: 200,
    AuditDecision.DENY: 403,
    AuditDecision.UNAUTHENTICATED: 401,
    AuditDecision.UNAVAILABLE: 503,
    AuditDecision.ERROR: 500,
}


@dataclass(frozen=True)
class Verdict:
    decision: AuditDecision
    message: str  # one line for the caller; never a token, never an internal address
    record: AuditRecord
    status: int
    forward: Forward | None = None
    answer: Answer | None = None
    started: float = 0.0

    @property
    def allowed(self) -> bool:
        return self.forward is not None

    @property
    def identity(self) -> Identity | None:
        return self.record.identity

    @property
    def attributes(self) -> list[Attributes]:
        return self.record.attributes

    @property
    def upstream_headers(self) -> HeaderList:
        return self.forward.upstream_headers if self.forward is not None else []


def refusal_message(
    door: Door, token_hint: str, decision: str, status: int, record: AuditRecord
) -> str:
    """The one line a refused caller reads at a door (never a token or internal address)."""
    if decision == AuditDecision.UNAUTHENTICATED:
        if record.reason == "no bearer token":
            return (
                "raygate: Unauthorized: this Ray cluster requires a token and the call had "
                f"none. {token_hint}"
            )
        return (
            "raygate: Unauthorized: the token is not valid (malformed, expired, for another "
            f"audience, or its service account was deleted). {token_hint}"
        )
    if decision == AuditDecision.DENY and record.attributes and status == 403:
        denied = record.attributes[-1]
        message = f"raygate: Forbidden: {denied.describe()}"
        if door is Door.SERVE and denied.resource_request:
            message += f" (Serve application {denied.name or '(none at this path)'})"
        return message
    if decision == AuditDecision.UNAVAILABLE:
        return (
            "raygate: Service Unavailable: raygate cannot reach its identity or policy "
            "backend; nothing was forwarded. Try again shortly."
        )
    if decision == AuditDecision.DENY:
        return f"raygate: refused: {record.reason}"
    return f"raygate: refused ({status})"


def bearer_token(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class DoorGuard:
    """Decides one door call through the pipeline; writes its audit line on request."""

    def __init__(self, pipeline: Pipeline, door: Door, token_hint: str = "") -> None:
        self.pipeline = pipeline
        self.door = door
        self._token_hint = token_hint

    @property
    def metrics(self) -> GatewayMetrics | None:
        return self.pipeline.settings.metrics

    async def decide(self, head: RequestHead) -> Verdict:
        started = time.monotonic()
        outcome = await self.pipeline.decide(head)
        record = outcome.record
        assert record is not None
        if isinstance(outcome, Forward):
            return Verdict(AuditDecision.ALLOW, "", record, 200, forward=outcome, started=started)
        decision = record.decision
        status = outcome.status
        return Verdict(
            decision,
            self.message(decision, status, record),
            record,
            status,
            answer=outcome,
            started=started,
        )

    async def check(
        self, authorization: str | None, target: str, *, peer: str | None = None
    ) -> Verdict:
        """A call carrying only a credential (a gRPC call): POST to `target` at this door."""
        pairs = [("authorization", authorization)] if authorization else []
        head = RequestHead("POST", target, Headers(pairs), peer=peer, door=self.door)
        return await self.decide(head)

    def message(self, decision: str, status: int, record: AuditRecord) -> str:
        return refusal_message(self.door, self._token_hint, decision, status, record)

    def refuse(
        self, verdict: Verdict, decision: AuditDecision, message: str, reason: str
    ) -> Verdict:
        """The same call refused by the door itself after the pipeline allowed it."""
        record = verdict.record
        record.decision = decision
        record.reason = reason
        return Verdict(
            decision, message, record, _STATUS.get(decision, 403), started=verdict.started
        )

    def finished(self, verdict: Verdict, status: int | None = None) -> None:
        """Write the audit line and count the answer (as the dashboard does)."""
        record = verdict.record
        record.status = verdict.status if status is None else status
        self.pipeline.finished(record)
