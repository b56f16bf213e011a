"""Per-identity, per-application token buckets."""

from __future__ import annotations

import pytest

from raygate.doors.ratelimit import RateLimiter, retry_after


def test_a_burst_then_refusals_with_the_wait_until_the_next_call() -> None:
    limiter = RateLimiter(2.0)  # burst 2
    assert limiter.acquire("alice", "chat", now=0.0) == 0
    assert limiter.acquire("alice", "chat", now=0.0) == 0
    wait = limiter.acquire("alice", "chat", now=0.0)
    assert wait == pytest.approx(0.5)
    assert retry_after(wait) == "1"
    assert limiter.acquire("alice", "chat", now=0.5) == 0


def test_identities_and_applications_have_their_own_buckets() -> None:
    limiter = RateLimiter(1.0)
    assert limiter.acquire("alice", "chat", now=0.0) == 0
    assert limiter.acquire("alice", "chat", now=0.0) > 0
    assert limiter.acquire("bob", "chat", now=0.0) == 0
    assert limiter.acquire("alice", "admin", now=0.0) == 0


def test_slow_rates_wait_whole_seconds() -> None:
    limiter = RateLimiter(1 / 60, burst=1)  # 1/m
    assert limiter.acquire("alice", "chat", now=0.0) == 0
    wait = limiter.acquire("alice", "chat", now=1.0)
    assert wait == pytest.approx(59.0)
    assert retry_after(wait) == "59"


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)
