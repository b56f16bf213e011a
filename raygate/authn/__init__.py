"""Authentication: who is calling. Each backend answers one question through one protocol,
TokenAuthenticator (defined with the shared types in raygate.identity)."""

from raygate.identity import TokenAuthenticator

__all__ = ["TokenAuthenticator"]
