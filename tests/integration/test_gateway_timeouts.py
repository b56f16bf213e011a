"""A Ray that does not answer gets the caller a 504, not a request held forever."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.integration.gateway_helpers import gateway_stack, serve


def test_upstream_that_never_sends_headers_gets_504(tmp_path: Path) -> None:
    async def stuck(_request: web.Request) -> web.Response:
        await asyncio.sleep(3)  # longer than the gateway waits
        return web.Response(text="too late")

    async def quiet_stream(request: web.Request) -> web.StreamResponse:
        # Headers at once, then silence longer than the header timeout: must not be cut.
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first\n")
        await asyncio.sleep(1.5)
        await response.write(b"second\n")
        await response.write_eof()
        return response

    async def scenario() -> None:
        app = web.Application()
        app.router.add_get("/api/version", stuck)
        app.router.add_get("/api/v0/logs/stream", quiet_stream)
        async with (
            serve(app) as upstream,
            gateway_stack(
                tmp_path,
                accounts={"user": ["get"]},
                upstream_url=upstream,
                upstream_headers_timeout=0.5,
            ) as stack,
            aiohttp.ClientSession() as client,
        ):
            headers = {"Authorization": f"Bearer {stack.token('user')}"}
            async with client.get(f"{stack.url}/api/version", headers=headers) as response:
                assert response.status == 504
                assert "Gateway Timeout" in await response.text()
            async with client.get(f"{stack.url}/api/v0/logs/stream", headers=headers) as response:
                assert response.status == 200
                assert await response.text() == "first\nsecond\n"

    asyncio.run(scenario())
