"""Which Serve application serves a path: Serve's own application list, read from the Ray
dashboard (`GET /api/serve/applications/`, with Ray's token) and kept for a few seconds.

Serve routes a request to the application with the longest route prefix that matches the
decoded path, segment by segment; this module does the same on the same list.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from raygate.errors import BackendUnavailable

log = logging.getLogger("raygate.doors.serve")

APPLICATIONS_PATH = "/api/serve/applications/"
# After a failed refresh the last list stays in use this long, then calls get 503.
STALE_GRACE = 30.0
# A path no application serves triggers a refresh (a new deployment) at most this often.
MISS_REFRESH = 0.5


def route_prefixes(document: Mapping[str, Any]) -> dict[str, str]:
    """{route prefix: application name} from the dashboard's answer (apps without HTTP skipped)."""
    routes: dict[str, str] = {}
    applications = document.get("applications") or {}
    if not isinstance(applications, Mapping):
        raise ValueError("'applications' is not an object")
    for name, app in applications.items():
        if not isinstance(app, Mapping):
            continue
        prefix = app.get("route_prefix")
        if isinstance(prefix, str) and prefix.startswith("/"):
            routes[prefix.rstrip("/") or "/"] = str(name)
    return routes


def match_application(routes: Mapping[str, str], path: str) -> str:
    """The application with the longest route prefix matching `path` (decoded); "" if none."""
    best = ""
    best_len = -1
    for prefix, name in routes.items():
        if prefix == "/":
            matched = True
        else:
            matched = path == prefix or path.startswith(prefix + "/")
        if matched and len(prefix) > best_len:
            best, best_len = name, len(prefix)
    return best


@dataclass
class _Snapshot:
    routes: dict[str, str]
    fetched: float


class ServeApplications:
    def __init__(
        self,
        dashboard_url: str,
        ray_token: str | None,
        *,
        ttl: float = 2.0,
        timeout: float = 5.0,
    ) -> None:
        self._url = dashboard_url.rstrip("/") + APPLICATIONS_PATH
        self._headers = {"Authorization": f"Bearer {ray_token}"} if ray_token else {}
        self._ttl = ttl
        self._timeout = timeout
        self._snapshot: _Snapshot | None = None
        self._refreshing: asyncio.Future[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._last_failure = ""

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def application_of(self, path: str) -> str:
        """For the pipeline's profile: the current list's answer (see `prepare`)."""
        snapshot = self._snapshot
        return match_application(snapshot.routes, path) if snapshot is not None else ""

    def fresh_for(self, path: str) -> bool:
        """Whether the list in memory may answer for `path` without reading Ray's again: younger
        than the TTL, and (when no application serves the path) than MISS_REFRESH."""
        snapshot = self._snapshot
        if snapshot is None:
            return False
        age = time.monotonic() - snapshot.fetched
        if age >= self._ttl:
            return False
        return bool(match_application(snapshot.routes, path)) or age < MISS_REFRESH

    async def prepare(self, path: str) -> None:
        """Make sure `application_of(path)` answers from a list fresh enough for this call.

        Raises BackendUnavailable when Ray's list cannot be read and the last one is too old.
        """
        if self.fresh_for(path):
            return
        snapshot = self._snapshot
        now = time.monotonic()
        try:
            await self._refresh()
        except BackendUnavailable:
            if snapshot is None or now - snapshot.fetched > STALE_GRACE:
                raise

    async def _refresh(self) -> None:
        # Single flight: concurrent calls wait for the one fetch under way.
        if self._refreshing is not None:
            await asyncio.shield(self._refreshing)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._refreshing = future
        try:
            self._snapshot = _Snapshot(await self._fetch(), time.monotonic())
            future.set_result(None)
        except BaseException as err:
            future.set_exception(err)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            self._refreshing = None

    async def _fetch(self) -> dict[str, str]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout)
            )
        try:
            async with self._session.get(self._url, headers=self._headers) as response:
                if response.status != 200:
                    raise BackendUnavailable(
                        f"Ray's Serve application list answered {response.status}"
                    )
                document = await response.json(content_type=None)
            routes = route_prefixes(document)
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            reason = f"Ray's Serve application list is unreadable: {err or type(err).__name__}"
            if reason != self._last_failure:
                log.warning("%s", reason)
                self._last_failure = reason
            raise BackendUnavailable(reason) from None
        self._last_failure = ""
        return routes
