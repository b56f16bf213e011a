"""The WebSocket bridge `ray job logs --follow` and `ray job submit` tail logs through."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from .gateway_helpers import UPSTREAM_TOKEN, bearer, client_session, gateway_stack, raw_exchange

# Ray sends no heartbeat; the bridge must not cut a quiet log tail. Kept short for the suite.
SILENCE_SECONDS = 3.0
# Bounds every receive so a broken bridge fails the test instead of hanging it.
RECEIVE_TIMEOUT = 10.0


def test_websocket_echoes_text_and_binary_and_survives_silence(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            headers = {**bearer(stack.token("ray-user")), "X-Remote-User": "system:admin"}
            url = URL(f"{stack.url}/ws/echo?follow=1&job=raysubmit%2F1", encoded=True)
            async with client_session() as client, client.ws_connect(
                url, headers=headers, heartbeat=None
            ) as ws:
                await ws.send_str("hello")
                assert await ws.receive_str(timeout=RECEIVE_TIMEOUT) == "echo:hello"
                await ws.send_bytes(b"\x00\xffbinary")
                assert await ws.receive_bytes(timeout=RECEIVE_TIMEOUT) == b"echo:\x00\xffbinary"
                await asyncio.sleep(SILENCE_SECONDS)
                await ws.send_str("still there?")
                assert await ws.receive_str(timeout=RECEIVE_TIMEOUT) == "echo:still there?"
            [seen] = stack.upstream.requests
            assert seen.raw_path == "/ws/echo?follow=1&job=raysubmit%2F1"
            assert seen.headers["Authorization"] == f"Bearer {UPSTREAM_TOKEN}"
            assert seen.headers.getall("X-Remote-User") == ["system:serviceaccount:default:ray-user"]

    asyncio.run(scenario())


def test_upstream_close_code_reaches_the_client(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            async with client_session() as client, client.ws_connect(
                stack.url / "ws/echo", headers=bearer(stack.token("ray-user")), heartbeat=None
            ) as ws:
                await ws.send_str("close 4001")
                msg = await ws.receive(timeout=RECEIVE_TIMEOUT)
                assert msg.type == aiohttp.WSMsgType.CLOSE
                assert ws.close_code == 4001

    asyncio.run(scenario())


def test_client_close_code_reaches_the_upstream(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            async with client_session() as client, client.ws_connect(
                stack.url / "ws/echo", headers=bearer(stack.token("ray-user")), heartbeat=None
            ) as ws:
                await ws.send_str("ping")
                assert await ws.receive_str(timeout=RECEIVE_TIMEOUT) == "echo:ping"
                await ws.close(code=4002)
            await asyncio.wait_for(stack.upstream.ws_closed.wait(), RECEIVE_TIMEOUT)
            assert stack.upstream.ws_close_codes == [4002]

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("account", "verbs", "status"),
    [
        pytest.param(None, None, 401, id="no-token"),
        pytest.param("submitter", ["create"], 403, id="no-get-grant"),
    ],
)
def test_websocket_upgrade_is_authorized_like_a_get(
    tmp_path: Path, account: str | None, verbs: list[str] | None, status: int
) -> None:
    async def scenario() -> None:
        accounts = {account: verbs} if account else {}
        async with gateway_stack(tmp_path / "state", accounts=accounts) as stack:
            headers = bearer(stack.token(account)) if account else {}
            async with client_session() as client:
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await client.ws_connect(stack.url / "ws/echo", headers=headers)
            assert refused.value.status == status
            assert stack.upstream.requests == []

    asyncio.run(scenario())


def test_a_refused_websocket_handshake_opens_nothing_upstream(tmp_path: Path) -> None:
    # `Upgrade: websocket` without `Connection: Upgrade`: the gateway connects the upstream
    # WebSocket first and only then finds the client's handshake invalid (400).
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            token = stack.token("ray-user")
            request = (
                f"GET /ws/echo HTTP/1.1\r\nHost: ray\r\nAuthorization: Bearer {token}\r\n"
                "Upgrade: websocket\r\nConnection: close\r\n\r\n"
            )
            answer = await raw_exchange(stack.url, request.encode())
            assert answer.startswith(b"HTTP/1.1 400")
            assert stack.upstream.requests == []

    asyncio.run(scenario())
