"""Opening and closing Ray's other doors with the dashboard gateway's authority, audit log and
metrics (what `config.client` and `config.serve` ask for)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Protocol

from raygate.config import GatewayConfig
from raygate.dataplane.settings import GatewaySettings
from raygate.doors.guard import DoorGuard
from raygate.doors.profiles import ClientProfile, ServeProfile
from raygate.errors import ConfigError
from raygate.observe.audit import AuditLog
from raygate.observe.metrics import GatewayMetrics
from raygate.pipeline import Door as PipelineDoor
from raygate.pipeline import Pipeline, PipelineSettings, Profile

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

    def _pipeline_settings(
        self, profile: Profile, identity_headers: bool | None = None
    ) -> PipelineSettings:
        """The dashboard's pipeline settings (authority, audit, metrics, identity header
        names), with this door's profile. Nothing of the dashboard's own routes: no public
        routes, path rules or browser login; and no Ray token in the upstream headers: the
        client door puts it in gRPC metadata itself, and Serve must never see it (its
        applications would). X-Forwarded-* always: what an application behind a proxy reads."""
        settings = self._settings.pipeline
        auth_headers = settings.auth_headers
        if identity_headers is not None:
            auth_headers = dataclasses.replace(auth_headers, enabled=identity_headers)
        return dataclasses.replace(
            settings,
            profile=profile,
            upstream_token=None,
            public_routes={},
            path_action=None,
            client_certificates=False,
            forward_client_authorization=False,
            browser_login=False,
            auth_headers=auth_headers,
            forwarded_headers=True,
        )

    async def open(self) -> None:
        config = self._config
        settings = self._settings
        ray_token = settings.pipeline.upstream_token
        if config.client is not None:
            from raygate.doors.client import ClientDoor, ClientDoorSettings

            pipeline = Pipeline(self._pipeline_settings(ClientProfile(config.authorization)))
            client = ClientDoor(
                ClientDoorSettings(
                    listen=config.client.listen,
                    upstream=config.client.upstream,
                    ray_token=ray_token,
                    recheck_interval=config.client.recheck_interval,
                ),
                DoorGuard(pipeline, PipelineDoor.CLIENT, CLIENT_TOKEN_HINT),
            )
            await self._start(client, f"Ray Client door {config.client.listen}")
        if config.serve is not None:
            from raygate.doors.serve import ServeDoor
            from raygate.doors.serve_apps import ServeApplications

            applications = ServeApplications(
                config.upstream.url, ray_token, ttl=config.serve.applications_ttl
            )
            serve = ServeDoor(
                config.serve,
                self._pipeline_settings(
                    ServeProfile(config.authorization, applications.application_of),
                    config.serve.identity_headers,
                ),
                applications,
                dashboard_settings=settings,
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
