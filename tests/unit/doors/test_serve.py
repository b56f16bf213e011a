"""The Serve door's own answers: OpenAI-shaped refusals, and failing closed when Serve's
application list cannot be read."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from raygate.doors.serve import application_label, openai_error
from raygate.doors.serve_apps import ServeApplications
from raygate.errors import BackendUnavailable
from raygate.identity import Attributes, service_account_identity
from raygate.observe.audit import AuditRecord


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, "authentication_error"), (403, "permission_denied"), (429, "rate_limit_exceeded")],
)
def test_refusals_have_the_openai_error_shape(status: int, kind: str) -> None:
    answer = openai_error(status, "raygate: no", None, [("Retry-After", "2")])
    assert answer.status == status
    assert ("Content-Type", "application/json") in answer.headers
    assert ("Retry-After", "2") in answer.headers
    assert json.loads(answer.body) == {
        "error": {"message": "raygate: no", "type": kind, "code": status}
    }


def test_metrics_name_the_application_from_the_decision() -> None:
    record = AuditRecord("id", "POST", "/chat/v1", None)
    assert application_label(record) == "-"
    record.attributes = [
        Attributes(
            identity=service_account_identity("default", "alice"),
            verb="create",
            api_group="serve.ray.io",
            resource="applications",
            name="chat",
        )
    ]
    assert application_label(record) == "chat"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreadable_application_list_fails_closed() -> None:
    async def attempt() -> None:
        applications = ServeApplications(f"http://127.0.0.1:{closed_port()}", "t", timeout=2)
        try:
            await applications.prepare("/chat/v1/models")
        finally:
            await applications.close()

    with pytest.raises(BackendUnavailable):
        asyncio.run(attempt())
