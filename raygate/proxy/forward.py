"""Streaming HTTP and WebSocket forwarding to the upstream (the Ray dashboard).

Bodies are streamed chunk by chunk in both directions, never buffered whole: job packages
(up to 100 MiB) go up, log streams come down. Compressed bodies pass through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from raygate.errors import BodyTooLarge
from raygate.pipeline.headers import downstream_response_headers

log = logging.getLogger("raygate.proxy")

_WS_HANDSHAKE_HEADERS = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    }
)


# The status sent, once a response started: after that an error can only drop the connection.
PREPARED_KEY = web.RequestKey("raygate_prepared", int)


class _LimitedBody:
    """The client's body, streamed on to the upstream until it passes `limit` bytes.

    aiohttp's client turns an error raised by a request body into a ClientConnectionError, so
    `exceeded` tells the caller that it was the limit, not the upstream, that stopped the upload.
    """

    def __init__(self, stream: aiohttp.StreamReader, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self.exceeded = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        async for chunk in self._stream.iter_any():
            sent += len(chunk)
            if sent > self._limit:
                self.exceeded = True
                raise BodyTooLarge(f"request body exceeds {self._limit} bytes")
            yield chunk


def make_client_session(
    connect_timeout: float,
    read_timeout: float | None,
    ssl_context: ssl.SSLContext | None = None,
) -> aiohttp.ClientSession:
    """One pooled session per gateway. No auto headers, no decompression: pass bytes as they are."""
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=connect_timeout, sock_read=read_timeout
    )
    # No pool cap: a fixed cap lets a few hundred idle log followers (or unread UI-shell
    # downloads) lock every other caller out. Ray bounds what it accepts itself.
    connector = aiohttp.TCPConnector(
        limit=0, ttl_dns_cache=300, ssl=ssl_context if ssl_context is not None else True
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


async def defer_continue(_request: web.Request) -> None:
    """aiohttp's expect handler: send nothing yet (see forward_http)."""
    return None


def _expects_continue(request: web.Request) -> bool:
    return (
        request.version >= aiohttp.HttpVersion11
        and request.headers.get("Expect", "").lower() == "100-continue"
    )


async def forward_http(
    request: web.Request,
    session: aiohttp.ClientSession,
    url: URL,
    headers: CIMultiDict[str],
    max_body_bytes: int,
    headers_timeout: float | None = None,
) -> web.StreamResponse:
    """Forward one request. `headers_timeout` bounds the wait for the upstream's response
    headers (the upload included), not the body: a log stream may be quiet for minutes."""
    body: _LimitedBody | None = None
    if _expects_continue(request):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if request.body_exists:
        if request.content_length is not None:
            headers["Content-Length"] = str(request.content_length)
        body = _LimitedBody(request.content, max_body_bytes)
    try:
        async with asyncio.timeout(headers_timeout):
            upstream = await session.request(
                request.method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                compress=None,
            )
    except aiohttp.ClientConnectionError:
        if body is not None and body.exceeded:
            raise BodyTooLarge(f"request body exceeds {max_body_bytes} bytes") from None
        raise
    async with upstream:
        response = web.StreamResponse(
            status=upstream.status,
            reason=upstream.reason,
            headers=downstream_response_headers(upstream.headers),
        )
        chunked = "chunked" in upstream.headers.get("Transfer-Encoding", "").lower()
        if upstream.content_length is not None and not chunked:
            response.content_length = upstream.content_length
        await response.prepare(request)
        request[PREPARED_KEY] = response.status
        if request.method != "HEAD":
            async for chunk in upstream.content.iter_any():
                try:
                    await response.write(chunk)
                except ConnectionError:
                    # The client left (Ctrl-C on `ray logs --follow`): a normal end for a stream.
                    return response
        await response.write_eof()
        return response


async def forward_websocket(
    request: web.Request,
    session: aiohttp.ClientSession,
    url: URL,
    headers: CIMultiDict[str],
) -> web.StreamResponse:
    """Bridge a WebSocket. No heartbeats or read timeouts: Ray's log tail may idle for minutes."""
    protocols = [
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    ]
    for name in list(headers):
        if name.lower() in _WS_HANDSHAKE_HEADERS:
            del headers[name]
    ws_url = url.with_scheme("wss" if url.scheme == "https" else "ws")
    client = web.WebSocketResponse(
        protocols=protocols, autoping=True, heartbeat=None, max_msg_size=0
    )
    # A handshake the gateway cannot complete must not open anything upstream.
    if not client.can_prepare(request).ok:
        return web.Response(status=400, text="Bad Request: not a valid WebSocket handshake\n")
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
        return web.Response(
            status=err.status or 502, text=f"upstream refused the WebSocket: {err.message}\n"
        )

    try:
        await client.prepare(request)
    except BaseException:
        await upstream.close()
        raise
    request[PREPARED_KEY] = client.status

    async def pump(
        src: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
        dst: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
    ) -> None:
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

    tasks = [
        asyncio.create_task(pump(upstream, client)),
        asyncio.create_task(pump(client, upstream)),
    ]
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
