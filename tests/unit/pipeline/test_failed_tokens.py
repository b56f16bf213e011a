"""A token that failed verification is remembered a few seconds by its digest and the authority's
revision: repeating it costs a lookup, never an RSA verification, and never changes an answer."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from raygate.embedded import EmbeddedAuthority
from raygate.errors import BackendUnavailable
from raygate.identity import Attributes, Decision, Identity
from raygate.pipeline import (
    Answer,
    AuditDecision,
    Forward,
    Headers,
    Pipeline,
    PipelineSettings,
    RequestHead,
    profile_for,
)
from raygate.pipeline import decide as decide_module
from raygate.store.sqlite import ObjectStore
from raygate.store.tokens import SigningKey, issue_token, load_signing_key
from tests.integration.gateway_helpers import (
    grant,
    guide_attributes,
    prepare_state,
    service_account,
    token_for,
)


class CountingAuthority:
    """The embedded authority, counting the verifications the pipeline asks it for."""

    def __init__(self, inner: EmbeddedAuthority) -> None:
        self.inner = inner
        self.verified: Counter[str] = Counter()
        self.unavailable = 0  # the next this many calls answer BackendUnavailable

    @property
    def revision(self) -> int:
        return self.inner.revision

    async def authenticate(self, credential: str) -> Identity | None:
        self.verified[credential] += 1
        if self.unavailable:
            self.unavailable -= 1
            raise BackendUnavailable("the store cannot be read")
        return await self.inner.authenticate(credential)

    async def authorize(self, attributes: Attributes) -> Decision:
        return await self.inner.authorize(attributes)


def _setup(state_dir: Path) -> tuple[Pipeline, CountingAuthority]:
    prepare_state(state_dir)
    with ObjectStore.open(state_dir) as store:
        store.apply([service_account("reader"), service_account("gone")])
        grant(store, "reader", ["get"])
    authority = CountingAuthority(EmbeddedAuthority(state_dir))
    settings = PipelineSettings(authority=authority, profile=profile_for(guide_attributes()))
    return Pipeline(settings), authority


def _decide(pipeline: Pipeline, token: str) -> Forward | Answer:
    head = RequestHead(
        "GET", "/api/version", Headers([("Authorization", f"Bearer {token}")]), peer="10.0.0.7"
    )
    return asyncio.run(pipeline.decide(head))


def _assert_refused(outcome: Forward | Answer) -> None:
    assert isinstance(outcome, Answer) and outcome.status == 401
    assert outcome.record is not None
    assert outcome.record.decision is AuditDecision.UNAUTHENTICATED
    assert outcome.record.reason == "invalid bearer token"  # every request has its audit line


def _bad_tokens(state_dir: Path) -> dict[str, str]:
    key = load_signing_key(state_dir)
    with ObjectStore.open(state_dir) as store:
        gone = store.require("ServiceAccount", "gone", "default")
        store.delete("ServiceAccount", "gone", "default")
    valid = token_for(state_dir, "reader")
    head, payload, signature = valid.split(".")
    forged = "A" if signature[-2] != "A" else "B"
    return {
        "unknown key": issue_token(
            "default", "reader", "u", signing_key=SigningKey.generate(), duration=timedelta(hours=1)
        ),
        "invalid signature": f"{head}.{payload}.{signature[:-2]}{forged}{signature[-1]}",
        "malformed": "not-a-jwt",
        "expired": issue_token(
            "default",
            "reader",
            "u",
            signing_key=key,
            duration=timedelta(minutes=10),
            now=datetime.now(UTC) - timedelta(hours=1),
        ),
        "deleted account": issue_token(
            "default",
            "gone",
            gone.metadata.uid or "",
            signing_key=key,
            duration=timedelta(hours=1),
        ),
    }


@pytest.mark.parametrize(
    "kind", ["unknown key", "invalid signature", "malformed", "expired", "deleted account"]
)
def test_a_repeated_bad_token_is_verified_once_within_the_ttl(tmp_path: Path, kind: str) -> None:
    pipeline, authority = _setup(tmp_path)
    token = _bad_tokens(tmp_path)[kind]
    authority.inner.refresh()
    for _ in range(3):
        _assert_refused(_decide(pipeline, token))
    assert authority.verified[token] == 1
    authority.inner.store.close()


def test_a_store_change_verifies_a_failed_token_again(tmp_path: Path) -> None:
    pipeline, authority = _setup(tmp_path)
    token = _bad_tokens(tmp_path)["unknown key"]
    authority.inner.refresh()
    _assert_refused(_decide(pipeline, token))
    with ObjectStore.open(tmp_path) as store:
        store.apply([service_account("newcomer")])
    assert authority.inner.refresh()
    _assert_refused(_decide(pipeline, token))
    assert authority.verified[token] == 2
    authority.inner.store.close()


def test_a_remembered_failure_expires(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decide_module, "FAILED_TOKEN_TTL", 0.05)
    pipeline, authority = _setup(tmp_path)
    token = _bad_tokens(tmp_path)["unknown key"]
    _assert_refused(_decide(pipeline, token))
    _assert_refused(_decide(pipeline, token))
    assert authority.verified[token] == 1
    time.sleep(0.1)
    _assert_refused(_decide(pipeline, token))
    assert authority.verified[token] == 2
    authority.inner.store.close()


def test_remembered_failures_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decide_module, "FAILED_TOKEN_ENTRIES", 2)
    pipeline, authority = _setup(tmp_path)
    first, second, third = (f"garbage-{i}" for i in range(3))
    for token in (first, second, third):
        _assert_refused(_decide(pipeline, token))
    for token in (third, second, first):
        _assert_refused(_decide(pipeline, token))
    # The two latest were remembered; the first made room for the third and is asked again.
    assert authority.verified == {first: 2, second: 1, third: 1}
    authority.inner.store.close()


def test_an_unavailable_backend_is_never_remembered(tmp_path: Path) -> None:
    pipeline, authority = _setup(tmp_path)
    token = token_for(tmp_path, "reader")
    authority.unavailable = 1
    outcome = _decide(pipeline, token)
    assert isinstance(outcome, Answer) and outcome.status == 503
    assert isinstance(_decide(pipeline, token), Forward)
    assert authority.verified[token] == 2
    authority.inner.store.close()


def test_a_token_not_yet_valid_is_not_remembered_as_invalid(tmp_path: Path) -> None:
    """A token from a clock a little ahead becomes valid within seconds: it is asked again."""
    pipeline, authority = _setup(tmp_path)
    with ObjectStore.open(tmp_path) as store:
        uid = store.require("ServiceAccount", "reader", "default").metadata.uid or ""
    # Issued 6 s ahead: past the verifier's 5 s leeway for a moment, then valid.
    issued = datetime.now(UTC) + timedelta(seconds=6)
    token = issue_token(
        "default", "reader", uid, signing_key=load_signing_key(tmp_path), now=issued
    )
    _assert_refused(_decide(pipeline, token))
    time.sleep(max(0.0, issued.timestamp() - 5 - time.time()) + 0.2)
    assert isinstance(_decide(pipeline, token), Forward)
    assert authority.verified[token] == 2
    authority.inner.store.close()


def test_a_flood_of_new_tokens_leaves_at_most_a_seconds_worth_of_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory: identities and decisions of tokens used once go when they expire (swept, not
    only replaced), and never number more than CACHE_ENTRIES, however many tokens come."""
    monkeypatch.setattr(decide_module, "CACHE_ENTRIES", 16)
    monkeypatch.setattr(decide_module, "SWEEP_INTERVAL", 0.0)
    pipeline, authority = _setup(tmp_path)
    pipeline.settings.decision_ttl = 0.2
    tokens = [token_for(tmp_path, "reader") for _ in range(40)]
    for token in tokens:
        assert isinstance(_decide(pipeline, token), Forward)
        # Looked into, as nothing a client sees tells what the gateway keeps.
        assert len(pipeline._identities) <= 16 and len(pipeline._allowed) <= 16
    time.sleep(0.25)
    _assert_refused(_decide(pipeline, "not-a-jwt"))  # any authentication sweeps
    assert (len(pipeline._identities), len(pipeline._allowed)) == (0, 0)
    authority.inner.store.close()
