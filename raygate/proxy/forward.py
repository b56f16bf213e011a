"""Streaming HTTP and WebSocket forwarding to the upstream (the Ray dashboard).

Bodies are streamed chunk by chunk in both directions, never buffered whole: job packages
(up to 100 MiB) go up, log streams come down. Compressed bodies pass through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from raygate.proxy.headers import downstream_response_headers

log = logging.getLogger("raygate.proxy")

_WS_HANDSHAKE_HEADERS = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
     "sec-websocket-protocol"}
)


PREPARED_KEY = "raygate_prepared"


class BodyTooLarge(Exception):
    """The client sent more bytes than the configured limit."""


async def _limited(stream: aiohttp.StreamReader, limit: int) -> AsyncIterator[bytes]:
    sent = 0
    async for chunk in stream.iter_any():
        sent += len(chunk)
        if sent > limit:
            raise BodyTooLarge(f"request body exceeds {limit} bytes")
        yield chunk


def make_client_session(connect_timeout: float, read_timeout: float | None) -> aiohttp.ClientSession:
    """One pooled session per gateway. No auto headers, no decompression: pass bytes as they are."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
    connector = aiohttp.TCPConnector(limit=512, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


async def forward_http(
    request: web.Request,
    session: aiohttp.ClientSession,
    url: str,
    headers: CIMultiDict[str],
    max_body_bytes: int,
) -> web.StreamResponse:
    body: AsyncIterator[bytes] | None = None
    if request.body_exists:
        if request.content_length is not None:
            headers["Content-Length"] = str(request.content_length)
        body = _limited(request.content, max_body_bytes)
    async with session.request(
        request.method,
        url,
        headers=headers,
        data=body,
        allow_redirects=False,
        compress=None,
    ) as upstream:
        response = web.StreamResponse(
            status=upstream.status,
            reason=upstream.reason,
            headers=downstream_response_headers(upstream.headers),
        )
        chunked = "chunked" in upstream.headers.get("Transfer-Encoding", "").lower()
        if upstream.content_length is not None and not chunked:
            response.content_length = upstream.content_length
        await response.prepare(request)
        request[PREPARED_KEY] = True
        if request.method != "HEAD":
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        await response.write_eof()
        return response


async def forward_websocket(
    request: web.Request,
    session: aiohttp.ClientSession,
    url: str,
    headers: CIMultiDict[str],
) -> web.StreamResponse:
    """Bridge a WebSocket. No heartbeats or read timeouts: Ray's log tail may idle for minutes."""
    protocols = [
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    ]
    for name in list(headers):
        if name.lower() in _WS_HANDSHAKE_HEADERS:
            del headers[name]
    ws_url = url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    try:
        upstream = await session.ws_connect(
            ws_url,
            headers=headers,
            protocols=protocols,
            autoping=True,
            heartbeat=None,
            receive_timeout=None,
            max_msg_size=0,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0),
        )
    except aiohttp.WSServerHandshakeError as err:
        return web.Response(status=err.status or 502, text=f"upstream refused the WebSocket: {err.message}\n")

    client = web.WebSocketResponse(
        protocols=protocols, autoping=True, heartbeat=None, max_msg_size=0
    )
    await client.prepare(request)
    request[PREPARED_KEY] = True

    async def pump(src: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
                   dst: aiohttp.ClientWebSocketResponse | web.WebSocketResponse) -> None:
        async for msg in src:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await dst.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await dst.send_bytes(msg.data)
            elif msg.type == aiohttp.WSMsgType.ERROR:
                break
        # src closed: pass its close code on.
        if not dst.closed:
            code = src.close_code or aiohttp.WSCloseCode.OK
            await dst.close(code=code)

    tasks = [asyncio.create_task(pump(upstream, client)), asyncio.create_task(pump(client, upstream))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await upstream.close()
        if not client.closed:
            await client.close()
    return client
