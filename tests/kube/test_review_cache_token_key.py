"""Security review: a token that is not valid UTF-8 (the server hands such header bytes over
surrogate-escaped) is a bad token (401), never a crash in the cache key (500)."""

from __future__ import annotations

import asyncio

from raygate.authz.cache import CachingAuthenticator, token_key
from raygate.identity import Identity


class RejectAll:
    def __init__(self) -> None:
        self.calls = 0

    async def authenticate_token(self, token: str) -> Identity | None:
        self.calls += 1
        return None


def test_surrogate_escaped_token_is_rejected_not_an_error() -> None:
    inner = RejectAll()
    authn = CachingAuthenticator(inner)
    assert asyncio.run(authn.authenticate_token("\udcff\udcfe")) is None
    assert inner.calls == 1


def test_distinct_non_utf8_tokens_have_distinct_keys() -> None:
    assert token_key("\udcff\udcfe") != token_key("\udcfe\udcff")
    assert token_key("abc") == token_key("abc")
