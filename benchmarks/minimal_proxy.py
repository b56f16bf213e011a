"""The floor of a Python gateway: uvloop protocols, httptools on both legs, a decision lookup.

Issue 7's yardstick: what a proxy on this design costs when it does nothing else. Per request
it parses the client's head (llhttp), hashes the bearer token and looks a decision up in a
dict, rebuilds the head for the upstream over a kept-alive connection, parses the response
(llhttp) and passes its bytes back. No audit, no metrics, no checks: only the benchmarks start
it, to show how near raygate's data plane is to what Python on this design can do.

    python benchmarks/minimal_proxy.py --port 8080 --upstream 127.0.0.1:9000 --token T
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal

import httptools
import uvloop


class Upstream(asyncio.Protocol):
    def __init__(self, client: Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.ready.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.client.out.append(data)
        self.parser.feed_data(data)
        if self.client.out:
            self.client.transport.write(b"".join(self.client.out))  # type: ignore[union-attr]
            self.client.out.clear()

    def on_message_complete(self) -> None:
        self.client.response_done()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client.transport is not None:
            self.client.transport.close()


class Client(asyncio.Protocol):
    def __init__(self, target: tuple[str, int], allowed: dict[bytes, bool]) -> None:
        self.target = target
        self.allowed = allowed
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.upstream: Upstream | None = None
        self.out: list[bytes] = []
        self.headers: list[bytes] = []
        self.url = b""
        self.token = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")  # type: ignore[union-attr]
            self.transport.close()  # type: ignore[union-attr]

    def on_message_begin(self) -> None:
        self.headers = []
        self.url = b""
        self.token = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"authorization":
            self.token = value
        else:
            self.headers.append(b"%s: %s\r\n" % (name, value))

    def on_headers_complete(self) -> None:
        key = hashlib.sha256(self.token).digest()
        if not self.allowed.get(key):
            self.transport.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")  # type: ignore[union-attr]
            return
        head = b"%s %s HTTP/1.1\r\n%sX-Remote-User: bench\r\n\r\n" % (
            self.parser.get_method(),
            self.url,
            b"".join(self.headers),
        )
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.write(head)
        else:
            asyncio.ensure_future(self._connect(head))

    async def _connect(self, head: bytes) -> None:
        loop = asyncio.get_running_loop()
        _, self.upstream = await loop.create_connection(lambda: Upstream(self), *self.target)
        self.upstream.transport.write(head)  # type: ignore[union-attr]

    def response_done(self) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()


async def serve(port: int, upstream: str, token: str) -> None:
    host, _, upstream_port = upstream.rpartition(":")
    allowed = {hashlib.sha256(b"Bearer " + token.encode()).digest(): True}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Client((host, int(upstream_port)), allowed), "127.0.0.1", port
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="host:port")
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.upstream, args.token))


if __name__ == "__main__":
    main()
