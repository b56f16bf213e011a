"""The pipeline profiles of the Ray Client and Serve doors (see raygate.authz.doors for the
attributes each authorization profile asks for). No hooks: what these doors forward is opaque
to the gateway."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from raygate.authz.attributes import AttributesConfig
from raygate.authz.doors import client_attributes, serve_attributes
from raygate.identity import Attributes, Identity
from raygate.pipeline import Answer, Forward, HookContext, RequestHead


class ClientProfile:
    """A Ray Client call: its target is the gRPC method, e.g. /ray.rpc.RayletDriver/KVGet."""

    # The attributes depend on the identity and the method only.
    cacheable = True

    def __init__(self, config: AttributesConfig) -> None:
        self._config = config
        self.name = f"{config.profile} (Ray Client)"

    def attributes(self, identity: Identity, head: RequestHead) -> Sequence[Attributes]:
        return client_attributes(identity, head.path, self._config)

    async def after_authorization(
        self, forward: Forward, head: RequestHead, context: HookContext
    ) -> Answer | None:
        return None

    def hooks_for(self, head: RequestHead) -> bool:
        return False


class ServeProfile:
    """A call to Ray Serve: authorized on the application whose route prefix serves its path.

    `application_of` reads the door's current copy of Serve's application list (refreshed by
    the door before it asks for a decision); "" when no application serves the path, which only
    a rule without resourceNames allows (Serve then answers 404 itself).
    """

    # Routes move when applications are deployed: never reuse a decision for a path.
    cacheable = False

    def __init__(self, config: AttributesConfig, application_of: Callable[[str], str]) -> None:
        self._config = config
        self._application_of = application_of
        self.name = f"{config.profile} (Serve)"

    def attributes(self, identity: Identity, head: RequestHead) -> Sequence[Attributes]:
        path = head.path
        return serve_attributes(
            identity, head.method, path, self._application_of(path), self._config
        )

    async def after_authorization(
        self, forward: Forward, head: RequestHead, context: HookContext
    ) -> Answer | None:
        return None

    def hooks_for(self, head: RequestHead) -> bool:
        return False
