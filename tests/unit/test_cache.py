"""raygate.cache.TTLCache, the one cache: a TTL per entry, bounded least recently used first,
single flight, failures not kept. The caches built on it are tested where they are used
(tests/kube/test_kube_cache.py, tests/unit/store/test_tokens.py, tests/kube/test_kube_oidc.py)."""

from __future__ import annotations

import asyncio

import pytest

from raygate.cache import MISSING, TTLCache, token_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_each_entry_expires_on_its_own_ttl() -> None:
    clock = Clock()
    cache: TTLCache[str] = TTLCache(clock=clock)
    cache.put("allow", "yes", 300)
    cache.put("deny", "no", 30)
    clock.now += 29
    assert (cache.lookup("allow"), cache.lookup("deny")) == ("yes", "no")
    clock.now += 1
    assert cache.lookup("deny") is MISSING
    assert cache.lookup("allow") == "yes"
    clock.now += 270
    assert cache.lookup("allow") is MISSING
    assert len(cache) == 0


def test_expired_entries_go_as_new_ones_come_in_without_being_looked_up() -> None:
    clock = Clock()
    cache: TTLCache[int] = TTLCache(clock=clock)
    for i in range(100):
        cache.put(f"failed-{i}", i, 5)
    clock.now += 5
    cache.put("new", 0, 5)
    assert len(cache) == 1  # not 101: nobody asks for the old ones again to expire them
    assert cache.lookup("new") == 0


def test_a_kept_none_is_not_a_miss() -> None:
    cache: TTLCache[str | None] = TTLCache()
    cache.put("rejected", None, 10)
    assert cache.lookup("rejected") is None
    assert cache.lookup("never-seen") is MISSING
    assert (cache.hits, cache.misses) == (1, 1)


@pytest.mark.parametrize("ttl", [0, -1])
def test_a_ttl_of_zero_or_less_keeps_nothing_and_drops_the_old_value(ttl: float) -> None:
    cache: TTLCache[str] = TTLCache()
    cache.put("k", "old", 60)
    cache.put("k", "new", ttl)
    assert cache.lookup("k") is MISSING


def test_bounded_least_recently_used_first() -> None:
    events: list[str] = []
    cache: TTLCache[int] = TTLCache(2, on_event=events.append)
    cache.put("a", 1, 60)
    cache.put("b", 2, 60)
    assert cache.lookup("a") == 1  # "b" is now the least recently used
    cache.put("c", 3, 60)
    assert len(cache) == 2
    assert cache.lookup("b") is MISSING
    assert (cache.lookup("a"), cache.lookup("c")) == (1, 3)
    assert events.count("evict") == 1 and cache.evictions == 1


def test_forget_drops_one_entry() -> None:
    cache: TTLCache[int] = TTLCache()
    cache.put("a", 1, 60)
    cache.put("b", 2, 60)
    cache.forget("a")
    cache.forget("never-there")
    assert cache.lookup("a") is MISSING and cache.lookup("b") == 2


def test_negative_size_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        TTLCache(-1)


def test_concurrent_misses_share_one_load_and_keep_its_value() -> None:
    async def scenario() -> None:
        calls = 0

        async def load() -> str:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.01)
            return "value"

        cache: TTLCache[str] = TTLCache()
        results = await asyncio.gather(
            *(cache.get_or_load("k", load, lambda _: 60) for _ in range(10))
        )
        assert results == ["value"] * 10
        assert calls == 1 and cache.misses == 1 and cache.shared == 9
        assert await cache.get_or_load("k", load, lambda _: 60) == "value"
        assert calls == 1 and cache.hits == 1

    asyncio.run(scenario())


def test_a_failed_load_wakes_every_waiter_and_is_not_kept() -> None:
    async def scenario() -> None:
        calls = 0

        async def load() -> str:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.01)
            if calls == 1:
                raise RuntimeError("backend down")
            return "back"

        cache: TTLCache[str] = TTLCache()
        results = await asyncio.gather(
            *(cache.get_or_load("k", load, lambda _: 60) for _ in range(5)),
            return_exceptions=True,
        )
        assert all(isinstance(r, RuntimeError) for r in results)
        assert await cache.get_or_load("k", load, lambda _: 60) == "back"
        assert calls == 2

    asyncio.run(scenario())


def test_zero_entries_keeps_nothing_but_still_shares_in_flight_loads() -> None:
    async def scenario() -> None:
        calls = 0

        async def load() -> int:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.01)
            return calls

        cache: TTLCache[int] = TTLCache(0)
        assert await asyncio.gather(
            *(cache.get_or_load("k", load, lambda _: 60) for _ in range(3))
        ) == [1, 1, 1]
        assert await cache.get_or_load("k", load, lambda _: 60) == 2
        assert len(cache) == 0

    asyncio.run(scenario())


def test_token_keys_are_hashes_and_take_any_header_text() -> None:
    assert token_key("secret") == token_key("secret")
    assert b"secret" not in token_key("secret")
    assert token_key("\udcff\udcfe") != token_key("\udcfe\udcff")  # surrogate-escaped bytes


def test_a_caller_that_goes_away_does_not_cancel_the_shared_call() -> None:
    async def scenario() -> None:
        release = asyncio.Event()
        calls = 0

        async def load() -> str:
            nonlocal calls
            calls += 1
            await release.wait()
            return "value"

        cache: TTLCache[str] = TTLCache()
        first = asyncio.create_task(cache.get_or_load("k", load, lambda _: 60))
        second = asyncio.create_task(cache.get_or_load("k", load, lambda _: 60))
        await asyncio.sleep(0)
        first.cancel()
        release.set()
        assert await second == "value"
        assert calls == 1 and cache.shared == 1

    asyncio.run(scenario())
