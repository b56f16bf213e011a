"""Opening and closing Ray's other doors with the dashboard gateway's authority, audit log and
metrics (what `config.client` and `config.serve` ask for)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Protocol

from raygate.config import GatewayConfig
from raygate.doors.guard import DoorGuard
from raygate.doors.profiles import ClientProfile, ServeProfile
from raygate.errors import ConfigError
from raygate.observe.audit import AuditLog
from raygate.observe.metrics import GatewayMetrics
from raygate.pipeline import AuthHeaders, CombinedAuthority, Pipeline, PipelineSettings, Profile
from raygate.pipeline import Door as PipelineDoor

if TYPE_CHECKING:
    from raygate.runtime import Assembly

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
        assembly: Assembly,
        *,
        audit: AuditLog | None,
        metrics: GatewayMetrics,
    ) -> None:
        self._config = config
        self._assembly = assembly
        self._audit = audit
        self._metrics = metrics
        self.opened: list[Door] = []

    def _guard(self, door: PipelineDoor, profile: Profile, hint: str) -> DoorGuard:
        """A pipeline of this door's own (profile, caches) over the gateway's authority."""
        settings = self._assembly.settings
        auth_headers = settings.auth_headers
        pipeline = Pipeline(
            PipelineSettings(
                authority=CombinedAuthority(
                    settings.authenticator,
                    settings.authorizer,
                    revision_of=self._assembly.revision_source,
                ),
                profile=profile,
                # Ray's token goes to Ray's client server in gRPC metadata (the client door
                # adds it), and never to Serve, whose applications would see it.
                upstream_token=None,
                auth_headers=AuthHeaders(
                    enabled=auth_headers.enabled,
                    user_field=auth_headers.user_field,
                    groups_field=auth_headers.groups_field,
                    groups_separator=auth_headers.groups_separator,
                ),
                audit=self._audit,
                metrics=self._metrics,
                client_certificates=False,
                realm=settings.realm,
                backend_timeout=settings.backend_timeout,
            )
        )
        return DoorGuard(pipeline, door, hint)

    async def open(self) -> None:
        config = self._config
        settings = self._assembly.settings
        if config.client is not None:
            from raygate.doors.client import ClientDoor, ClientDoorSettings

            client = ClientDoor(
                ClientDoorSettings(
                    listen=config.client.listen,
                    upstream=config.client.upstream,
                    ray_token=settings.upstream_token,
                    recheck_interval=config.client.recheck_interval,
                ),
                self._guard(
                    PipelineDoor.CLIENT, ClientProfile(config.authorization), CLIENT_TOKEN_HINT
                ),
            )
            await self._start(client, f"Ray Client door {config.client.listen}")
        if config.serve is not None:
            from raygate.doors.serve import ServeDoor
            from raygate.doors.serve_apps import ServeApplications

            applications = ServeApplications(
                config.upstream.url,
                settings.upstream_token,
                ttl=config.serve.applications_ttl,
            )
            serve = ServeDoor(
                config.serve,
                guard=self._guard(
                    PipelineDoor.SERVE,
                    ServeProfile(config.authorization, applications.application_of),
                    SERVE_TOKEN_HINT,
                ),
                applications=applications,
                upstream_timeout=config.limits.upstream_timeout,
            )
            await self._start(serve, f"Serve door {config.serve.listen}")

    async def _start(self, door: Door, what: str) -> None:
        try:
            await door.start()
        except OSError as err:
            await door.stop(0)
            raise ConfigError(f"cannot open the {what}: {err.strerror or err}") from None
        self.opened.append(door)

    async def close(self, hurry: asyncio.Event | None = None) -> None:
        doors, self.opened = self.opened, []
        grace = 0.5 if hurry is not None and hurry.is_set() else CLIENT_STOP_GRACE
        await asyncio.gather(*(door.stop(grace) for door in doors), return_exceptions=True)
