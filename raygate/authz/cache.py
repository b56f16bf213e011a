"""Caches in front of the authenticator and authorizer that keep the API server safe under load.

Both are raygate.cache.TTLCache: bounded (least recently used entries go first), a TTL per entry,
single-flight (many identical concurrent requests wait on one backend call). A call that fails
(BackendUnavailable or anything else) wakes every waiter with the error and is not cached, so
the next request asks again and the gateway recovers by itself when the backend returns.
"""

from __future__ import annotations

import time
from typing import Any

import jwt

from raygate.cache import DEFAULT_MAX_ENTRIES, Clock, EventHook, TTLCache, token_key
from raygate.identity import Attributes, Authorizer, Decision, Identity, TokenAuthenticator

__all__ = [
    "CachingAuthenticator",
    "CachingAuthorizer",
    "EventHook",
    "attributes_key",
    "jwt_expiry",
    "token_key",
    "unverified_claims",
]

DEFAULT_AUTHN_TTL = 120.0
DEFAULT_AUTHN_FAILURE_TTL = 10.0
DEFAULT_ALLOW_TTL = 300.0
DEFAULT_DENY_TTL = 30.0


def unverified_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT, read without verifying it (only to bound caching); else None."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return claims if isinstance(claims, dict) else None


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT, read without verifying it (only to bound caching); else None."""
    claims = unverified_claims(token)
    if claims is None:
        return None
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


class CachingAuthenticator:
    """A TokenAuthenticator that remembers answers of `inner` by token hash.

    Valid tokens are kept for `ttl`, never past their own `exp` when they are JWTs (an entry
    expires at min(now + ttl, exp); a token already past exp is not kept).
    Rejected tokens are kept for `failure_ttl`, so a flood of bad tokens costs one review per
    distinct token and not one per request.
    """

    def __init__(
        self,
        inner: TokenAuthenticator,
        *,
        ttl: float = DEFAULT_AUTHN_TTL,
        failure_ttl: float = DEFAULT_AUTHN_FAILURE_TTL,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Clock = time.time,
        on_event: EventHook | None = None,
    ) -> None:
        self.inner = inner
        self.ttl = ttl
        self.failure_ttl = failure_ttl
        self.cache: TTLCache[Identity | None] = TTLCache(
            max_entries, clock=clock, on_event=on_event
        )

    @property
    def hits(self) -> int:
        return self.cache.hits

    @property
    def misses(self) -> int:
        return self.cache.misses

    async def authenticate_token(self, token: str) -> Identity | None:
        def ttl_of(identity: Identity | None) -> float:
            if identity is None:
                return self.failure_ttl
            expiry = jwt_expiry(token)  # only on a miss: hits never parse the token
            if expiry is None:
                return self.ttl
            return min(self.ttl, expiry - self.cache.clock())

        return await self.cache.get_or_load(
            token_key(token), lambda: self.inner.authenticate_token(token), ttl_of
        )


def attributes_key(attributes: Attributes) -> tuple[object, ...]:
    """Everything a decision may depend on: the full identity (extra included) and the request."""
    identity = attributes.identity
    extra = tuple(sorted((k, tuple(v)) for k, v in identity.extra.items()))
    return (
        identity.user,
        identity.uid,
        identity.groups,
        extra,
        attributes.verb,
        attributes.resource_request,
        attributes.namespace,
        attributes.api_group,
        attributes.api_version,
        attributes.resource,
        attributes.subresource,
        attributes.name,
        attributes.path,
    )


class CachingAuthorizer:
    """An Authorizer that remembers decisions of `inner`: allows for `allow_ttl`, denies for
    `deny_ttl` (short, so a newly granted permission takes effect soon)."""

    def __init__(
        self,
        inner: Authorizer,
        *,
        allow_ttl: float = DEFAULT_ALLOW_TTL,
        deny_ttl: float = DEFAULT_DENY_TTL,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Clock = time.time,
        on_event: EventHook | None = None,
    ) -> None:
        self.inner = inner
        self.allow_ttl = allow_ttl
        self.deny_ttl = deny_ttl
        self.cache: TTLCache[Decision] = TTLCache(max_entries, clock=clock, on_event=on_event)

    @property
    def hits(self) -> int:
        return self.cache.hits

    @property
    def misses(self) -> int:
        return self.cache.misses

    async def authorize(self, attributes: Attributes) -> Decision:
        return await self.cache.get_or_load(
            attributes_key(attributes),
            lambda: self.inner.authorize(attributes),
            lambda decision: self.allow_ttl if decision.allowed else self.deny_ttl,
        )
