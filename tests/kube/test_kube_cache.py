"""The caches in front of TokenReview and SubjectAccessReview: call counts at the fake API server,
TTLs on an injected clock, single flight, bounds, and no caching of failures."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import jwt
import pytest

from raygate.authz.cache import (
    CachingAuthenticator,
    CachingAuthorizer,
    jwt_expiry,
    token_key,
)
from raygate.errors import BackendUnavailable
from raygate.identity import Attributes, Decision, Identity
from raygate.kube.client import KubeClient
from raygate.kube.sar import SubjectAccessReviewAuthorizer
from raygate.kube.tokenreview import TokenReviewAuthenticator

from .fakeapi import SUBJECT_ACCESS_REVIEWS, TOKEN_REVIEWS, FakeKubeAPI, FakeUser, running_fake


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def ray_attributes(user: str, verb: str = "get") -> Attributes:
    return Attributes(
        identity=Identity(user, groups=("system:authenticated",)), verb=verb,
        namespace="default", api_group="ray.io", resource="rayclusters", name="ray",
    )


def allow_alice(attributes: Attributes) -> Decision:
    allowed = attributes.identity.user == "alice"
    return Decision(allowed, reason="alice is allowed" if allowed else "not alice")


async def kube_client(fake: FakeKubeAPI, tmp_path: Path) -> KubeClient:
    return await KubeClient.from_kubeconfig(fake.write_kubeconfig(tmp_path / "kubeconfig"))


def test_concurrent_identical_authentications_make_one_token_review(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_fake(users={"good": FakeUser("alice")}) as fake:
            async with await kube_client(fake, tmp_path) as client:
                fake.delay = 0.05  # keep the first review in flight while the others arrive
                authn = CachingAuthenticator(TokenReviewAuthenticator(client))
                results = await asyncio.gather(
                    *(authn.authenticate_token("good") for _ in range(100))
                )
            assert {r.user for r in results if r} == {"alice"} and all(results)
            assert fake.calls[TOKEN_REVIEWS] == 1

    asyncio.run(scenario())


def test_flood_of_bad_tokens_costs_one_review_per_distinct_token(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_fake() as fake:
            async with await kube_client(fake, tmp_path) as client:
                authn = CachingAuthenticator(TokenReviewAuthenticator(client))
                bad_tokens = [f"bad-token-{i}" for i in range(50)]
                results = []
                for _wave in range(20):  # 1,000 requests, each wave after the previous answered
                    results += await asyncio.gather(*map(authn.authenticate_token, bad_tokens))
            assert results == [None] * 1000
            assert fake.calls[TOKEN_REVIEWS] == 50

    asyncio.run(scenario())


def test_rejected_token_is_asked_again_after_the_failure_ttl(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = Clock()
        async with running_fake() as fake:
            async with await kube_client(fake, tmp_path) as client:
                authn = CachingAuthenticator(
                    TokenReviewAuthenticator(client), failure_ttl=10, clock=clock
                )
                assert await authn.authenticate_token("new-token") is None
                fake.add_user("new-token", FakeUser("carol"))  # e.g. just created
                clock.advance(9)
                assert await authn.authenticate_token("new-token") is None
                clock.advance(2)
                identity = await authn.authenticate_token("new-token")
                assert identity is not None and identity.user == "carol"
            assert fake.calls[TOKEN_REVIEWS] == 2

    asyncio.run(scenario())


def test_allow_is_cached_five_minutes_and_deny_thirty_seconds(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = Clock()
        async with running_fake(authorize=allow_alice) as fake:
            async with await kube_client(fake, tmp_path) as client:
                authz = CachingAuthorizer(SubjectAccessReviewAuthorizer(client), clock=clock)
                alice, bob = ray_attributes("alice"), ray_attributes("bob")
                assert (await authz.authorize(alice)).allowed
                assert not (await authz.authorize(bob)).allowed
                assert fake.calls[SUBJECT_ACCESS_REVIEWS] == 2

                clock.advance(29)
                await authz.authorize(alice)
                await authz.authorize(bob)
                assert fake.calls[SUBJECT_ACCESS_REVIEWS] == 2

                clock.advance(2)  # 31 s: the deny expired, the allow did not
                await authz.authorize(alice)
                await authz.authorize(bob)
                assert fake.calls[SUBJECT_ACCESS_REVIEWS] == 3

                clock.advance(300 - 31)  # 300 s: the allow expired too
                await authz.authorize(alice)
                assert fake.calls[SUBJECT_ACCESS_REVIEWS] == 4
            assert authz.hits == 3 and authz.misses == 4

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("first", "second", "same_entry"),
    [
        (ray_attributes("alice"), ray_attributes("alice"), True),
        (ray_attributes("alice"), ray_attributes("alice", verb="delete"), False),
        (ray_attributes("alice"), ray_attributes("mallory"), False),
        (
            ray_attributes("alice"),
            Attributes(Identity("alice", groups=("system:authenticated", "admins")), "get",
                       namespace="default", api_group="ray.io", resource="rayclusters",
                       name="ray"),
            False,
        ),
        (
            Attributes(Identity("alice", extra={"scope": ("read",)}), "get", resource="x"),
            Attributes(Identity("alice", extra={"scope": ("write",)}), "get", resource="x"),
            False,
        ),
        (
            Attributes(Identity("alice"), "get", resource="rayclusters", subresource="jobs"),
            Attributes(Identity("alice"), "get", resource="rayclusters", subresource="proxy"),
            False,
        ),
    ],
    ids=["identical", "other-verb", "other-user", "other-groups", "other-extra", "other-sub"],
)
def test_decisions_are_cached_per_identity_and_request(
    first: Attributes, second: Attributes, same_entry: bool
) -> None:
    calls: list[Attributes] = []

    class Recording:
        async def authorize(self, attributes: Attributes) -> Decision:
            calls.append(attributes)
            return Decision(True)

    async def scenario() -> None:
        authz = CachingAuthorizer(Recording())
        await authz.authorize(first)
        await authz.authorize(second)

    asyncio.run(scenario())
    assert len(calls) == (1 if same_entry else 2)


UNVERIFIED_KEY = "a-key-the-cache-never-checks-32-bytes-long"


def make_jwt(exp: float) -> str:
    return jwt.encode({"sub": "alice", "exp": int(exp)}, UNVERIFIED_KEY, algorithm="HS256")


class CountingAuthenticator:
    def __init__(self) -> None:
        self.calls = 0

    async def authenticate_token(self, token: str) -> Identity | None:
        self.calls += 1
        return Identity("alice")


def test_valid_token_is_not_cached_past_its_own_expiry() -> None:
    async def scenario() -> None:
        clock = Clock()
        inner = CountingAuthenticator()
        authn = CachingAuthenticator(inner, ttl=120, clock=clock)
        token = make_jwt(clock.now + 30)
        await authn.authenticate_token(token)
        clock.advance(29)
        await authn.authenticate_token(token)
        assert inner.calls == 1
        clock.advance(2)  # past exp, well within the 120 s TTL
        await authn.authenticate_token(token)
        assert inner.calls == 2

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("opaque-token", None),
        (make_jwt(1_900_000_000), 1_900_000_000.0),
        (jwt.encode({"sub": "x"}, UNVERIFIED_KEY, algorithm="HS256"), None),
        (jwt.encode({"exp": "soon"}, UNVERIFIED_KEY, algorithm="HS256"), None),
        ("a.b.c", None),
    ],
    ids=["opaque", "jwt", "jwt-without-exp", "jwt-with-text-exp", "garbage-jwt"],
)
def test_jwt_expiry_is_read_without_verifying(token: str, expected: float | None) -> None:
    assert jwt_expiry(token) == expected


def test_opaque_token_is_cached_for_the_ttl() -> None:
    async def scenario() -> None:
        clock = Clock()
        inner = CountingAuthenticator()
        authn = CachingAuthenticator(inner, ttl=120, clock=clock)
        await authn.authenticate_token("opaque")
        clock.advance(119)
        await authn.authenticate_token("opaque")
        clock.advance(2)
        await authn.authenticate_token("opaque")
        assert inner.calls == 2

    asyncio.run(scenario())


def test_cache_keeps_a_hash_not_the_token() -> None:
    async def scenario() -> None:
        authn = CachingAuthenticator(CountingAuthenticator())
        await authn.authenticate_token("super-secret-token")
        keys = list(authn.cache._entries)
        assert keys == [token_key("super-secret-token")]
        assert b"super-secret-token" not in keys[0]

    asyncio.run(scenario())


def test_backend_failure_wakes_every_waiter_and_is_not_cached(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_fake(users={"good": FakeUser("alice")}) as fake:
            async with await kube_client(fake, tmp_path) as client:
                authn = CachingAuthenticator(TokenReviewAuthenticator(client))
                fake.delay = 0.05
                fake.fail_with = 503
                results = await asyncio.gather(
                    *(authn.authenticate_token("good") for _ in range(20)),
                    return_exceptions=True,
                )
                assert all(isinstance(r, BackendUnavailable) for r in results)
                assert fake.calls[TOKEN_REVIEWS] == 1
                fake.fail_with = None
                identity = await authn.authenticate_token("good")
                assert identity is not None and identity.user == "alice"
            assert fake.calls[TOKEN_REVIEWS] == 2

    asyncio.run(scenario())


def test_cache_is_bounded_least_recently_used_first() -> None:
    async def scenario() -> None:
        inner = CountingAuthenticator()
        events: list[str] = []
        authn = CachingAuthenticator(inner, max_entries=2, on_event=events.append)
        for token in ("a", "b", "a", "c"):  # "b" is the least recently used when "c" arrives
            await authn.authenticate_token(token)
        assert len(authn.cache) == 2
        await authn.authenticate_token("a")
        assert inner.calls == 3
        await authn.authenticate_token("b")
        assert inner.calls == 4
        assert events.count("evict") == 2
        assert events[:4] == ["miss", "miss", "hit", "miss"]

    asyncio.run(scenario())

def test_default_clock_is_wall_time() -> None:
    # JWT `exp` is wall-clock seconds; the cache must compare it to the same clock.
    assert abs(CachingAuthenticator(CountingAuthenticator()).cache.clock() - time.time()) < 60


def test_zero_entries_keeps_nothing_but_still_shares_in_flight_calls() -> None:
    async def scenario() -> None:
        inner = CountingAuthenticator()
        authn = CachingAuthenticator(inner, max_entries=0)
        await asyncio.gather(*(authn.authenticate_token("t") for _ in range(10)))
        assert inner.calls == 1
        await authn.authenticate_token("t")
        assert inner.calls == 2 and len(authn.cache) == 0

    asyncio.run(scenario())


class RejectAll:
    def __init__(self) -> None:
        self.calls = 0

    async def authenticate_token(self, token: str) -> Identity | None:
        self.calls += 1
        return None



def test_a_token_that_is_not_utf8_is_rejected_not_an_error() -> None:
    """The server hands non-UTF-8 header bytes over surrogate-escaped: a bad token (401), never a
    crash in the cache key (500)."""
    inner = RejectAll()
    authn = CachingAuthenticator(inner)
    assert asyncio.run(authn.authenticate_token("\udcff\udcfe")) is None
    assert inner.calls == 1



def test_distinct_non_utf8_tokens_have_distinct_keys() -> None:
    assert token_key("\udcff\udcfe") != token_key("\udcfe\udcff")
    assert token_key("abc") == token_key("abc")

