"""Authorization: may this identity do this. Request mapping lives in attributes.py."""

from __future__ import annotations

from typing import Protocol

from raygate.identity import Attributes, Decision


class Authorizer(Protocol):
    """Decides on Attributes.

    Raises raygate.errors.BackendUnavailable when it cannot decide (the gateway answers 503).
    """

    async def authorize(self, attributes: Attributes) -> Decision: ...
