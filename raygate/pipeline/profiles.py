"""Profiles: how a request becomes the attributes to authorize, and what runs once they are.

A profile is chosen by `authorization.profile` (raygate.authz.attributes.Profile) in one place,
`profile_for`. The pipeline calls `attributes` then, once every attribute is allowed,
`after_authorization`, which may answer itself or set hooks on the Forward (the ray profile's
job ownership: raygate.pipeline.ownership).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol
from urllib.parse import parse_qs

from raygate.authz.attributes import AttributesConfig, request_attributes
from raygate.authz.attributes import Profile as ProfileName
from raygate.identity import Attributes, Decision, Identity
from raygate.observe.audit import AuditRecord
from raygate.pipeline.head import RequestHead
from raygate.pipeline.outcome import Answer, BufferedResponse, Forward, HeaderList

# The gateway's own calls to Ray (ownership lookups) are short; a Ray that does not answer
# them gets 504.
UPSTREAM_CALL_TIMEOUT = 60.0


class HookContext(Protocol):
    """What a profile's hooks may use: the pipeline's authority, and calls to the upstream."""

    async def decide_attributes(self, attributes: Attributes) -> Decision:
        """One authorization (BackendUnavailable when the authority cannot answer)."""
        ...

    async def authorize_all(
        self, attributes: Sequence[Attributes], record: AuditRecord
    ) -> Answer | None:
        """None when every one is allowed; else the 403/503 to answer, and why in `record`."""
        ...

    async def fetch(
        self, method: str, target: str, headers: HeaderList, limit: int
    ) -> BufferedResponse:
        """A bodiless request to the upstream, its answer read up to `limit` bytes.
        Raises OSError/TimeoutError/raygate.errors.UpstreamError when the upstream fails."""
        ...


class Profile(Protocol):
    """How one authorization profile maps requests and what it does after authorizing them."""

    name: str
    # True when `attributes` depends on nothing but the identity, method and raw path: the
    # pipeline may then reuse a decision for the same (credential, method, path).
    cacheable: bool

    def attributes(self, identity: Identity, head: RequestHead) -> Sequence[Attributes]:
        """Every Attributes the request needs (ValueError: a request it cannot map, 400;
        an empty list: a rewrite configured but no value sent, 400)."""
        ...

    async def after_authorization(
        self, forward: Forward, head: RequestHead, context: HookContext
    ) -> Answer | None:
        """Runs once the request is authorized: None forwards `forward` (which the hook may
        change or give body hooks), an Answer is given instead."""
        ...

    def hooks_for(self, head: RequestHead) -> bool:
        """False when `after_authorization` does nothing for this method and path: a decision
        for the same request may then be reused whole (see `DecisionMemo`)."""
        ...


class AttributesProfile:
    """The `kube-rbac-proxy` and `ray-k8s` profiles: attributes only, no hooks."""

    def __init__(self, config: AttributesConfig) -> None:
        self._config = config
        self.name = str(config.profile)
        rewrites = config.rewrites
        self._reads_query = rewrites is not None and rewrites.by_query_parameter is not None
        # Rewrites read the query or a header: then attributes depend on more than the path.
        self.cacheable = rewrites is None

    def attributes(self, identity: Identity, head: RequestHead) -> Sequence[Attributes]:
        query: dict[str, list[str]] = {}
        if self._reads_query:
            query = parse_qs(head.target.partition("?")[2], keep_blank_values=True)
        return request_attributes(
            identity, head.method, head.path, query, head.headers, self._config
        )

    async def after_authorization(
        self, forward: Forward, head: RequestHead, context: HookContext
    ) -> Answer | None:
        return None

    def hooks_for(self, head: RequestHead) -> bool:
        return False


def profile_for(config: AttributesConfig) -> Profile:
    """The profile `authorization.profile` names: the one place profiles are chosen."""
    if config.profile is ProfileName.RAY:
        from raygate.pipeline.ownership import RayProfile

        return RayProfile(config)
    return AttributesProfile(config)
