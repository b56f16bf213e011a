"""Browser sessions at rest: hashed ids, sealed tokens, single-use sign-in state, revocation."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from raygate.errors import NotFoundError
from raygate.identity import Identity
from raygate.sso.store import (
    DB_FILE,
    PENDING_TTL,
    PendingSignIn,
    SessionStore,
    SessionTokens,
)

ALICE = Identity("alice@example.com", "alice", ("ml-team", "system:authenticated"))
TOKENS = SessionTokens("header.payload.signature", "refresh-me")


def test_the_database_holds_neither_the_cookie_secret_nor_a_token(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    secret, _ = store.create(ALICE, 2e9, TOKENS)
    raw = (tmp_path / DB_FILE).read_bytes() + b"".join(
        p.read_bytes() for p in tmp_path.glob(DB_FILE + "-*")
    )
    assert secret.encode() not in raw
    assert b"refresh-me" not in raw and b"header.payload.signature" not in raw
    assert stat.S_IMODE((tmp_path / DB_FILE).stat().st_mode) == 0o600


def test_a_session_survives_reopening_the_store(tmp_path: Path) -> None:
    secret, created = SessionStore(tmp_path).create(ALICE, 2e9, TOKENS)
    again = SessionStore(tmp_path).lookup(secret)
    assert again is not None and again.identity == ALICE and again.name == created.name
    assert again.tokens(secret) == TOKENS
    assert again.tokens("another-secret") is None
    assert SessionStore(tmp_path).lookup("another-secret") is None


def test_an_admin_deletes_a_session_by_its_listed_name(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    secret, session = store.create(ALICE, 2e9, TOKENS)
    other, _ = store.create(Identity("bob@example.com"), 2e9, TOKENS)
    assert [s.name for s in store.list()] == [session.name, store.lookup(other).name]  # type: ignore[union-attr]
    assert secret not in session.name
    store.delete_named(session.name)
    assert store.lookup(secret) is None and store.lookup(other) is not None
    with pytest.raises(NotFoundError):
        store.delete_named(session.name)
    assert store.delete_user("bob@example.com") == 1
    assert store.list() == []


def test_sign_in_state_is_single_use_and_bound_to_its_browser(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    pending = PendingSignIn("verifier", "nonce", "http://localhost/oauth2/callback", "/#/jobs")
    store.add_pending("state-1", "browser-1", pending)
    assert store.take_pending("state-1", "browser-1") == pending
    assert store.take_pending("state-1", "browser-1") is None  # replayed
    store.add_pending("state-2", "browser-1", pending)
    assert store.take_pending("state-2", "browser-2") is None  # planted in another browser
    assert store.take_pending("state-2", "browser-1") is None  # and then gone
    assert store.take_pending("forged", "browser-1") is None


def test_sign_in_state_expires(tmp_path: Path) -> None:
    now = [1000.0]
    store = SessionStore(tmp_path, clock=lambda: now[0])
    store.add_pending("state", "browser", PendingSignIn("v", "n", "r", "/"))
    now[0] += PENDING_TTL + 1
    assert store.take_pending("state", "browser") is None


def test_a_refresh_replaces_groups_expiry_and_tokens(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    secret, _ = store.create(ALICE, 100.0, TOKENS)
    moved = Identity(ALICE.user, ALICE.uid, ("viewers", "system:authenticated"))
    assert store.update(secret, moved, 200.0, SessionTokens("new.id.token", None))
    session = store.lookup(secret)
    assert session is not None and session.identity == moved and session.expires == 200.0
    assert session.tokens(secret) == SessionTokens("new.id.token", None)
    store.delete_secret(secret)
    assert not store.update(secret, moved, 300.0, TOKENS)


def test_rows_are_keyed_by_hash(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    secret, session = store.create(ALICE, 2e9, TOKENS)
    keys = [r[0] for r in sqlite3.connect(tmp_path / DB_FILE).execute("SELECT key FROM sessions")]
    assert keys == [session.key] and secret not in keys[0]


def test_pending_sign_ins_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("raygate.sso.store.MAX_PENDING", 3)
    now = [1000.0]
    store = SessionStore(tmp_path, clock=lambda: now[0])
    for i in range(5):
        now[0] += 1
        store.add_pending(f"state-{i}", "browser", PendingSignIn("v", "n", "r", "/"))
    assert store.take_pending("state-0", "browser") is None  # evicted, oldest first
    assert store.take_pending("state-4", "browser") is not None
    assert store.take_pending("state-2", "browser") is not None
