"""The gateway's listeners: connections in, the pipeline and the upstream pool shared by all.

Graceful drain: stop listening, close idle keep-alive connections, let requests in flight
finish (answers then say `Connection: close`), and end what is left after the grace period.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl

from raygate.dataplane.http import HttpConnection
from raygate.dataplane.settings import GatewaySettings
from raygate.dataplane.upstream import UpstreamPool
from raygate.pipeline import Pipeline

log = logging.getLogger("raygate.dataplane")


class Gateway:
    def __init__(self, settings: GatewaySettings, pipeline: Pipeline | None = None) -> None:
        self.settings = settings
        self.pipeline = pipeline or Pipeline(settings.pipeline)
        self.pool = UpstreamPool(settings)
        self.pipeline.upstream = self.pool
        self.connections: set[HttpConnection] = set()
        self.draining = False
        self.loop = asyncio.get_event_loop()
        self._servers: list[asyncio.Server] = []

    async def listen(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        sock: socket.socket | None = None,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> asyncio.Server:
        """Accept connections on host:port (or an already bound socket)."""
        self.loop = asyncio.get_running_loop()
        scheme = "https" if ssl_context is not None else "http"
        server = await self.loop.create_server(
            lambda: HttpConnection(self, scheme),
            host=None if sock is not None else host,
            port=None if sock is not None else port,
            sock=sock,
            ssl=ssl_context,
            reuse_address=None if sock is not None else True,
            reuse_port=reuse_port if sock is None and reuse_port else None,
            backlog=1024,
        )
        self._servers.append(server)
        return server

    @property
    def addresses(self) -> list[tuple[str, int]]:
        found = []
        for server in self._servers:
            for sock in server.sockets:
                address = sock.getsockname()
                found.append((address[0], address[1]))
        return found

    async def drain(self, timeout: float, hurry: asyncio.Event | None = None) -> None:
        """Stop accepting; wait up to `timeout` s (or until `hurry`) for requests in flight;
        then close every connection left (log streams, WebSockets that would outlive us)."""
        self.draining = True
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            if conn.idle and conn.upgraded_to is None:
                conn.close_now()
        busy = [c for c in self.connections if not c.idle or c.upgraded_to is not None]
        if busy:
            log.info("waiting up to %gs for %d request(s) in flight", timeout, len(busy))
            deadline = self.loop.time() + timeout
            while self.loop.time() < deadline and not (hurry is not None and hurry.is_set()):
                if all(c.idle and c.upgraded_to is None for c in self.connections):
                    break
                await asyncio.sleep(0.05)
        left = list(self.connections)
        in_flight = [c for c in left if not c.idle or c.upgraded_to is not None]
        if in_flight:
            log.warning("closing %d request(s) still in flight", len(in_flight))
        for conn in left:
            conn.close_now(abort=False)
        self.pool.close()
        await asyncio.sleep(0)

    async def close(self) -> None:
        self.draining = True
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.close_now(abort=True)
        self.pool.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers = []
