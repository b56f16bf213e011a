"""Caches in front of the authenticator and authorizer that keep the API server safe under load.

Both are bounded (least recently used entries go first), expire entries on their own TTL, and are
single-flight: many identical concurrent requests wait on one backend call. A call that fails
(BackendUnavailable or anything else) wakes every waiter with the error and is not cached, so
the next request asks again and the gateway recovers by itself when the backend returns.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import jwt

from raygate.authn import TokenAuthenticator
from raygate.authz import Authorizer
from raygate.identity import Attributes, Decision, Identity

Clock = Callable[[], float]
EventHook = Callable[[str], None]

V = TypeVar("V")

DEFAULT_AUTHN_TTL = 120.0
DEFAULT_AUTHN_FAILURE_TTL = 10.0
DEFAULT_ALLOW_TTL = 300.0
DEFAULT_DENY_TTL = 30.0
DEFAULT_MAX_ENTRIES = 10_000


class SingleFlightCache(Generic[V]):
    """A bounded TTL map whose misses are loaded once however many callers ask at the same time.

    Events reported through `on_event`: "hit", "miss" (this caller starts a backend call),
    "shared" (this caller joins a call already in flight), "evict" (an entry made room).
    `max_entries=0` keeps nothing: only the single flight remains.
    """

    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        *,
        clock: Clock = time.time,
        on_event: EventHook | None = None,
    ) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must not be negative")
        self.max_entries = max_entries
        self.clock = clock
        self.on_event = on_event
        self.hits = 0
        self.misses = 0
        self.shared = 0
        self.evictions = 0
        self._entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()
        self._in_flight: dict[Hashable, asyncio.Future[V]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def get_or_load(
        self, key: Hashable, load: Callable[[], Awaitable[V]], ttl_of: Callable[[V], float]
    ) -> V:
        """The cached value for `key`, or the result of `load()` kept for `ttl_of(value)` s."""
        entry = self._entries.get(key)
        if entry is not None:
            expires, value = entry
            if self.clock() < expires:
                self._entries.move_to_end(key)
                self._count("hit")
                return value
            del self._entries[key]
        flight = self._in_flight.get(key)
        if flight is not None:
            self._count("shared")
        else:
            self._count("miss")
            flight = asyncio.ensure_future(self._load(key, load, ttl_of))
            # Retrieve the error even if every waiter went away, so it is not reported as lost.
            flight.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._in_flight[key] = flight
        # shield: a caller that goes away (client disconnect) must not cancel the shared call.
        return await asyncio.shield(flight)

    async def _load(
        self, key: Hashable, load: Callable[[], Awaitable[V]], ttl_of: Callable[[V], float]
    ) -> V:
        try:
            value = await load()
            ttl = ttl_of(value)
            if ttl > 0 and self.max_entries:
                self._store(key, self.clock() + ttl, value)
            return value
        finally:
            self._in_flight.pop(key, None)

    def _store(self, key: Hashable, expires: float, value: V) -> None:
        self._entries[key] = (expires, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self._count("evict")

    def _count(self, event: str) -> None:
        if event == "hit":
            self.hits += 1
        elif event == "miss":
            self.misses += 1
        elif event == "shared":
            self.shared += 1
        elif event == "evict":
            self.evictions += 1
        if self.on_event is not None:
            self.on_event(event)


def token_key(token: str) -> bytes:
    """The cache key of a token: its SHA-256, so the cache never holds a usable credential."""
    # Header values that are not UTF-8 arrive surrogate-escaped; they must hash, not raise.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT, read without verifying it (only to bound caching); else None."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
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
        self.cache: SingleFlightCache[Identity | None] = SingleFlightCache(
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
        self.cache: SingleFlightCache[Decision] = SingleFlightCache(
            max_entries, clock=clock, on_event=on_event
        )

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
