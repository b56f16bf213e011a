"""kube-rbac-proxy's static authorizer: configured entries allow before any other authorizer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from raygate.authz import Authorizer
from raygate.identity import Attributes, Decision


class StaticEntry(Protocol):
    def matches(self, attributes: Attributes) -> bool: ...


class StaticThenAuthorizer:
    """Allows what a static entry matches; asks `inner` about everything else."""

    def __init__(self, entries: Sequence[StaticEntry], inner: Authorizer) -> None:
        self.entries = tuple(entries)
        self.inner = inner

    async def authorize(self, attributes: Attributes) -> Decision:
        for index, entry in enumerate(self.entries):
            if entry.matches(attributes):
                return Decision(True, f"allowed by static authorization entry {index}", "static")
        return await self.inner.authorize(attributes)
