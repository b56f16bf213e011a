"""Keep `raygate up`'s Ray head running: when it dies, say so, start it again on the same
ports (the gateway's upstream does not move), and report it as down to /readyz meanwhile."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from raygate.errors import BackendUnavailable, UpstreamError
from raygate.ray.launcher import RayHead, stop_ray_head

log = logging.getLogger("raygate.ray")

POLL_INTERVAL = 0.5
MAX_BACKOFF = 30.0


class RaySupervisor:
    def __init__(self, head: RayHead, restart: Callable[[RayHead], RayHead]) -> None:
        self.head = head
        self._restart = restart  # blocking: starts a head like the given one, or UpstreamError
        self._down: str | None = None

    async def ready(self) -> None:
        """A /readyz check: raises while the head is down."""
        if self._down is not None:
            raise BackendUnavailable(self._down)

    async def run(self) -> None:
        """Watch the head forever (until cancelled)."""
        while True:
            while self.head.process.poll() is None:
                await asyncio.sleep(POLL_INTERVAL)
            code = self.head.process.returncode
            since = time.monotonic()
            self._down = f"Ray's head exited (code {code}) and is being restarted"
            log.error(
                "Ray's head exited unexpectedly (code %s); restarting it (its log: %s)",
                code,
                self.head.log_path,
            )
            # Whatever is left of it (raylet, dashboard, workers) goes first: it holds the ports.
            await asyncio.to_thread(stop_ray_head, self.head, 10)
            delay = 1.0
            while True:
                try:
                    self.head = await asyncio.to_thread(self._restart, self.head)
                    break
                except UpstreamError as err:
                    self._down = f"Ray's head is down and does not restart: {err}"
                    log.error("Ray's head did not restart: %s; trying again in %.0fs", err, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, MAX_BACKOFF)
            self._down = None
            log.warning(
                "Ray's head is running again after %.0fs (jobs it was running are lost)",
                time.monotonic() - since,
            )
