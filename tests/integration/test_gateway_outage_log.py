"""An outage of the identity backend is one log line when it starts and one when it ends."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import pytest

from raygate.errors import BackendUnavailable
from raygate.identity import Identity
from tests.integration.gateway_helpers import bearer, gateway_stack


class Flaky:
    """An authenticator whose backend is down until `up` is set."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.up = False

    async def authenticate_token(self, token: str) -> Identity | None:
        if not self.up:
            raise BackendUnavailable("cannot reach https://10.0.0.1:443 for a TokenReview")
        return await self.inner.authenticate_token(token)  # type: ignore[attr-defined]


def test_outage_logs_once_and_recovery_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["get"]}) as stack:
            flaky = Flaky(stack.authority.authenticator)
            stack.use(authenticator=flaky)
            headers = bearer(stack.token("ray-user"))
            async with aiohttp.ClientSession() as client:
                for _ in range(20):
                    async with client.get(stack.url / "api/version", headers=headers) as response:
                        assert response.status == 503
                flaky.up = True
                async with client.get(stack.url / "api/version", headers=headers) as response:
                    assert response.status == 200

    with caplog.at_level(logging.WARNING, logger="raygate.gateway"):
        asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records if r.name == "raygate.gateway"]
    assert len([m for m in lines if "unavailable" in m]) == 1, lines
    assert len([m for m in lines if "answering again" in m]) == 1, lines
