"""Opening and closing Ray's other doors with the dashboard gateway's authority, audit log and
metrics (what `config.client` and `config.serve` ask for)."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from raygate.config import GatewayConfig
from raygate.errors import ConfigError
from raygate.observe.audit import AuditLog
from raygate.observe.metrics import GatewayMetrics
from raygate.proxy.app import GatewaySettings

log = logging.getLogger("raygate.doors")

CLIENT_TOKEN_HINT = (
    "Pass a token in the environment: RAY_AUTH_MODE=token RAY_AUTH_TOKEN=$(raygate create token "
    "<service-account>) (on Kubernetes: kubectl create token <service-account>)."
)
SERVE_TOKEN_HINT = (
    "Send 'Authorization: Bearer <token>' (the OpenAI client's api_key) with a token from "
    "`raygate create token <service-account>` (on Kubernetes: kubectl create token)."
)
# Ray Client sessions live for hours: on shutdown they get this long, then are cut.
CLIENT_STOP_GRACE = 3.0


class Door(Protocol):
    async def start(self) -> None: ...
    async def stop(self, grace: float = ...) -> None: ...


class Doors:
    def __init__(
        self,
        config: GatewayConfig,
        settings: GatewaySettings,
        *,
        audit: AuditLog | None,
        metrics: GatewayMetrics,
    ) -> None:
        self._config = config
        self._settings = settings
        self._audit = audit
        self._metrics = metrics
        self.opened: list[Door] = []

    def _guard(self, hint: str):  # type: ignore[no-untyped-def]
        from raygate.doors.guard import DoorGuard

        settings = self._settings
        return DoorGuard(
            settings.authenticator,
            settings.authorizer,
            audit=self._audit,
            metrics=self._metrics,
            backend_timeout=settings.backend_timeout,
            token_hint=hint,
        )

    async def open(self) -> None:
        config = self._config
        if config.client is not None:
            from raygate.doors.client import ClientDoor, ClientDoorSettings

            door = ClientDoor(
                ClientDoorSettings(
                    listen=config.client.listen,
                    upstream=config.client.upstream,
                    ray_token=self._settings.upstream_token,
                    attributes=config.authorization,
                    recheck_interval=config.client.recheck_interval,
                ),
                self._guard(CLIENT_TOKEN_HINT),
            )
            await self._start(door, f"Ray Client door {config.client.listen}")
        if config.serve is not None:
            from raygate.doors.serve import ServeDoor

            door = ServeDoor(
                config.serve,
                dashboard=config.upstream.url,
                ray_token=self._settings.upstream_token,
                attributes=config.authorization,
                guard=self._guard(SERVE_TOKEN_HINT),
                upstream_timeout=config.limits.upstream_timeout,
            )
            await self._start(door, f"Serve door {config.serve.listen}")

    async def _start(self, door: Door, what: str) -> None:
        try:
            await door.start()
        except OSError as err:
            raise ConfigError(f"cannot open the {what}: {err}") from None
        self.opened.append(door)

    async def close(self, hurry: asyncio.Event | None = None) -> None:
        doors, self.opened = self.opened, []
        grace = 0.5 if hurry is not None and hurry.is_set() else CLIENT_STOP_GRACE
        await asyncio.gather(*(door.stop(grace) for door in doors), return_exceptions=True)
