"""The embedded RBAC engine behind the gateway's Authorizer slot."""

from __future__ import annotations

from raygate.identity import Attributes, Decision
from raygate.rbac.index import PolicyIndex


class LocalRBACAuthorizer:
    """Authorizer (raygate.authz) over a PolicyIndex that the store watcher can swap.

    `replace` is a single attribute assignment, so a decision sees either the old index or
    the new one, never a mix; decisions already running finish on the index they started on.
    """

    def __init__(self, index: PolicyIndex) -> None:
        self._index = index

    @property
    def index(self) -> PolicyIndex:
        return self._index

    def replace(self, index: PolicyIndex) -> None:
        self._index = index

    async def authorize(self, attributes: Attributes) -> Decision:
        return self._index.authorize(attributes)
