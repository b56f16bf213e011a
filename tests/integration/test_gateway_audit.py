"""The audit log: one JSON line per decision, naming who, what and the answer, never the token."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from .gateway_helpers import Stack, bearer, client_session, gateway_stack

RAY_USER = "system:serviceaccount:default:ray-user"
OTHER = "system:serviceaccount:default:other"
RAYCLUSTER = {
    "namespace": "default",
    "apiGroup": "ray.io",
    "resource": "rayclusters",
    "subresource": "",
    "name": "ray-cluster-with-auth",
}


async def _wait_for_audit_lines(stack: Stack, count: int, timeout: float = 5.0) -> None:
    """Until the audit file has `count` lines (a request's line is written when it ends)."""
    deadline = time.monotonic() + timeout
    while len(stack.audit_lines()) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def test_one_audit_line_per_decision_without_the_token(tmp_path: Path) -> None:
    async def scenario() -> None:
        accounts = {"ray-user": ["*"], "other": None}
        async with gateway_stack(tmp_path / "state", accounts=accounts) as stack:
            token = stack.token("ray-user")
            other_token = stack.token("other")
            garbage = "garbage-token-that-must-not-be-logged"
            async with client_session() as client:
                async with client.get(stack.url / "api/version") as resp:
                    assert resp.status == 401
                async with client.get(stack.url / "api/version", headers=bearer(garbage)) as resp:
                    assert resp.status == 401
                async with client.post(
                    stack.url / "api/jobs/", headers=bearer(token), json={"entrypoint": "true"}
                ) as resp:
                    assert resp.status == 200
                async with client.delete(
                    stack.url / "api/jobs/raysubmit_1", headers=bearer(other_token)
                ) as resp:
                    assert resp.status == 403
            lines = stack.audit_lines()
            text = stack.audit_path.read_text()

        assert [(line["decision"], line["status"]) for line in lines] == [
            ("unauthenticated", 401),
            ("unauthenticated", 401),
            ("allow", 200),
            ("deny", 403),
        ]
        assert [line["user"] for line in lines] == [None, None, RAY_USER, OTHER]
        allowed, denied = lines[2], lines[3]
        assert (allowed["method"], allowed["path"], allowed["verb"]) == (
            "POST",
            "/api/jobs/",
            "create",
        )
        assert allowed["resource"] == RAYCLUSTER
        assert "system:authenticated" in allowed["groups"]
        assert (denied["verb"], denied["resource"]) == ("delete", RAYCLUSTER)
        assert len({line["requestId"] for line in lines}) == len(lines)
        for secret in (token, other_token, garbage):
            assert secret not in text
        # No piece of a JWT either (its header and payload segments stand alone in base64).
        for segment in token.split("."):
            assert segment not in text

    asyncio.run(scenario())


def test_public_discovery_routes_write_no_audit_lines(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state") as stack:
            async with client_session() as client:
                async with client.get(stack.url / "openid/v1/jwks") as resp:
                    assert resp.status == 200
            assert stack.audit_path.read_text() == ""

    asyncio.run(scenario())


def test_client_leaving_a_log_stream_is_audited_and_the_gateway_keeps_serving(
    tmp_path: Path,
) -> None:
    # Ctrl-C on `ray logs --follow` ends every followed stream this way.
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            token = bearer(stack.token("ray-user"))
            async with client_session() as client:
                resp = await client.get(stack.url / "stream/chunks", headers=token)
                assert await resp.content.readline() == b"first line\n"
                resp.close()  # drops the connection
            stack.upstream.first_chunk_read.set()  # the upstream sends on, into a closed client
            await _wait_for_audit_lines(stack, 1)
            async with client_session() as client:
                async with client.get(stack.url / "api/version", headers=token) as resp:
                    assert resp.status == 200
            lines = stack.audit_lines()
        assert [(line["path"], line["status"], line["decision"]) for line in lines] == [
            ("/stream/chunks", 200, "allow"),
            ("/api/version", 200, "allow"),
        ]

    asyncio.run(scenario())


def test_full_disk_fails_closed_nothing_forwarded_unaudited_then_recovers(
    tiny_disk: Path,
) -> None:
    from raygate.observe.audit import AuditLog
    from tests.observe.test_audit_log import fill

    audit = AuditLog(tiny_disk / "audit.log")

    async def scenario() -> None:
        accounts = {"ray-user": ["*"]}
        async with gateway_stack(tiny_disk / "state", accounts=accounts, audit=audit) as stack:
            headers = bearer(stack.token("ray-user"))
            async with client_session() as client:
                async with client.get(stack.url / "api/version", headers=headers) as resp:
                    assert resp.status == 200
                filler = fill(tiny_disk, leave=16 * 1024)
                await asyncio.sleep(1.5)  # the writer's periodic check sees the disk full
                forwarded = len(stack.upstream.requests)
                for _ in range(20):
                    async with client.get(stack.url / "api/jobs/", headers=headers) as resp:
                        assert resp.status == 503
                        assert "audit log" in await resp.text()
                assert len(stack.upstream.requests) == forwarded, "forwarded while unaudited"
                filler.unlink()
                deadline = time.monotonic() + 5
                status = 503
                while status == 503 and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                    async with client.get(stack.url / "api/jobs/", headers=headers) as resp:
                        status = resp.status
                assert status == 200
        audit.close()

    asyncio.run(scenario())
    import json

    lines = [json.loads(line) for line in (tiny_disk / "audit.log").read_text().splitlines()]
    decisions = [line["decision"] for line in lines]
    assert decisions[0] == "allow" and decisions[-1] == "allow"
    assert decisions.count("unavailable") >= 20, "the 503 decisions were not kept"
