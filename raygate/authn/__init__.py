"""Authentication: who is calling. Each backend answers one question through one protocol."""

from __future__ import annotations

from typing import Protocol

from raygate.identity import Identity


class TokenAuthenticator(Protocol):
    """Turns a bearer token into an Identity.

    Returns None when the token is not valid (the gateway answers 401).
    Raises raygate.errors.BackendUnavailable when it cannot decide (the gateway answers 503).
    """

    async def authenticate_token(self, token: str) -> Identity | None: ...
