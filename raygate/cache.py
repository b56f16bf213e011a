"""The one cache: bounded, a TTL per entry, single flight. Every cache in raygate is this class
(token reviews and access reviews in authz/cache.py, verified embedded tokens in authn/jwt.py).

Bounded: least recently used entries go first, and expired ones are dropped as new ones come
in. TTL per entry: the caller says how long each value may be kept (an allow longer than a
deny; a token never past its own expiry). Single flight: many identical concurrent misses wait
on one load; a load that fails wakes every waiter with the error and is not kept, so the next
caller asks again and the gateway recovers by itself when a backend returns. Pure apart from
the clock and asyncio's futures: no I/O.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Final, Generic, TypeVar

Clock = Callable[[], float]
EventHook = Callable[[str], None]

V = TypeVar("V")

DEFAULT_MAX_ENTRIES: Final = 10_000


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""What `lookup` returns for a key it does not hold (a cached value may itself be None)."""


def token_key(token: str) -> bytes:
    """The cache key of a credential: its SHA-256, so a cache never holds a usable token."""
    # Header values that are not UTF-8 arrive surrogate-escaped; they must hash, not raise.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class TTLCache(Generic[V]):
    """A bounded map whose entries expire each on its own TTL, with single-flight loading.

    Events reported through `on_event`: "hit", "miss" (a lookup found nothing; with
    `get_or_load` this caller starts the load), "shared" (this caller joins a load already in
    flight), "evict" (an entry made room). `max_entries=0` keeps nothing: only the single flight
    remains. `clock` gives seconds; TTLs are measured on it.
    """

    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        *,
        clock: Clock = time.monotonic,
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

    def lookup(self, key: Hashable) -> V | _Missing:
        """The value kept for `key`, or MISSING (never kept, expired, or evicted)."""
        value = self._fresh(key)
        if isinstance(value, _Missing):
            self.misses += 1
            if self.on_event is not None:
                self.on_event("miss")
        else:
            # Counted inline, not through _count: this is the per-request path.
            self.hits += 1
            if self.on_event is not None:
                self.on_event("hit")
        return value

    def _fresh(self, key: Hashable) -> V | _Missing:
        entry = self._entries.get(key)
        if entry is None:
            return MISSING
        if self.clock() < entry[0]:
            self._entries.move_to_end(key)
            return entry[1]
        self._entries.pop(key, None)
        return MISSING

    def put(self, key: Hashable, value: V, ttl: float) -> None:
        """Keep `value` for `ttl` seconds; a TTL of 0 or less keeps nothing (and drops `key`)."""
        if ttl <= 0 or not self.max_entries:
            self._entries.pop(key, None)
            return
        entries = self._entries
        now = self.clock()
        entries[key] = (now + ttl, value)
        entries.move_to_end(key)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)
            self._count("evict")
        # Expired entries at the least recently used end go too (each once, so O(1) per put
        # on the whole): a cache is not left full of answers nobody may use any more.
        while next(iter(entries.values()))[0] <= now:
            entries.popitem(last=False)

    def forget(self, key: Hashable) -> None:
        self._entries.pop(key, None)

    async def get_or_load(
        self, key: Hashable, load: Callable[[], Awaitable[V]], ttl_of: Callable[[V], float]
    ) -> V:
        """The value kept for `key`, or the result of `load()` kept for `ttl_of(value)` seconds.

        Concurrent callers for one key share one `load()`.
        """
        value = self._fresh(key)
        if not isinstance(value, _Missing):
            self._count("hit")
            return value
        flight = self._in_flight.get(key)
        if flight is not None:
            self._count("shared")
        else:
            self._count("miss")
            flight = asyncio.ensure_future(self._load(key, load, ttl_of))
            # Retrieve the error even if every waiter went away, so it is not reported as lost.
            flight.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._in_flight[key] = flight
        # shield: a caller that goes away (client disconnect) must not cancel the shared load.
        return await asyncio.shield(flight)

    async def _load(
        self, key: Hashable, load: Callable[[], Awaitable[V]], ttl_of: Callable[[V], float]
    ) -> V:
        try:
            value = await load()
            self.put(key, value, ttl_of(value))
            return value
        finally:
            self._in_flight.pop(key, None)

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
