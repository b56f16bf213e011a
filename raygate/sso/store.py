"""Browser sessions and pending sign-ins, server-side, in SQLite in the state directory.

The cookie holds a random secret; the database holds only hashes of it, so a copy of the
database (a backup, a debug dump) lets nobody sign in as anyone. The tokens a session keeps
(ID token for the logout hint, refresh token) are encrypted with a key derived from that same
secret: only the browser that holds the cookie can make the gateway use them.

Sessions live in the state directory, so they survive a gateway restart, and the CLI
(`raygate get sessions`, `raygate delete session`) revokes them in the same file: the gateway
reads the row on every request, so a revocation takes effect on the next one.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from raygate.errors import NotFoundError, StoreError
from raygate.identity import Identity
from raygate.store.state import SECRET_FILE_MODE, ensure_state_dir

DB_FILE = "sessions.db"
BUSY_TIMEOUT_MS = 15_000
# A sign-in started but not finished within this long is forgotten (its state is refused).
PENDING_TTL = 600.0
# Sign-ins under way at once, at most (a flood of unauthenticated page loads evicts the oldest).
MAX_PENDING = 10_000
SESSION_NAME_PREFIX = "session-"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    key TEXT PRIMARY KEY,             -- sha256 of the cookie secret (hex)
    user TEXT NOT NULL,
    uid TEXT NOT NULL,
    groups TEXT NOT NULL,             -- JSON list
    created REAL NOT NULL,
    expires REAL NOT NULL,            -- the ID token's exp: the session ends there (or refreshes)
    refreshed REAL NOT NULL,
    tokens BLOB NOT NULL              -- AES-GCM(nonce || ciphertext) of {id_token, refresh_token}
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user);
CREATE TABLE IF NOT EXISTS pending (
    key TEXT PRIMARY KEY,             -- sha256 of the `state` sent to the provider
    browser TEXT NOT NULL,            -- sha256 of the sign-in cookie it was sent with
    verifier TEXT NOT NULL,           -- PKCE code verifier
    nonce TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    return_to TEXT NOT NULL,
    created REAL NOT NULL
);
"""


def _digest(label: bytes, secret: str) -> bytes:
    return hashlib.sha256(label + b"\0" + secret.encode()).digest()


def session_key(secret: str) -> str:
    return _digest(b"raygate-session-id", secret).hex()


def hash_secret(secret: str) -> str:
    return _digest(b"raygate-sign-in", secret).hex()


def session_name(key: str) -> str:
    """What admins see and type: a prefix of the hash, never the cookie secret."""
    return SESSION_NAME_PREFIX + key[:16]


@dataclass(frozen=True)
class SessionTokens:
    id_token: str
    refresh_token: str | None


@dataclass(frozen=True)
class Session:
    key: str
    identity: Identity
    created: float
    expires: float
    refreshed: float
    sealed_tokens: bytes

    @property
    def name(self) -> str:
        return session_name(self.key)

    def tokens(self, secret: str) -> SessionTokens | None:
        """The session's tokens, decrypted with the cookie secret; None if they do not open."""
        blob = self.sealed_tokens
        try:
            plain = AESGCM(_digest(b"raygate-session-tokens", secret)).decrypt(
                blob[:12], blob[12:], self.key.encode()
            )
            data = json.loads(plain)
        except (InvalidTag, ValueError):
            return None
        return SessionTokens(data["id_token"], data.get("refresh_token"))


@dataclass(frozen=True)
class PendingSignIn:
    verifier: str
    nonce: str
    redirect_uri: str
    return_to: str


def seal_tokens(secret: str, key: str, tokens: SessionTokens) -> bytes:
    nonce = os.urandom(12)
    plain = json.dumps({"id_token": tokens.id_token, "refresh_token": tokens.refresh_token})
    return nonce + AESGCM(_digest(b"raygate-session-tokens", secret)).encrypt(
        nonce, plain.encode(), key.encode()
    )


def new_secret() -> str:
    return secrets.token_urlsafe(32)


class SessionStore:
    def __init__(self, state_dir: Path, *, clock=time.time) -> None:  # type: ignore[no-untyped-def]
        ensure_state_dir(state_dir)
        self.path = state_dir / DB_FILE
        self.clock = clock
        self._local = threading.local()
        try:
            self._connection().executescript(_SCHEMA)  # idempotent; executescript commits
        except sqlite3.Error as err:
            raise StoreError(f"session store {self.path}: {err}") from None
        try:
            os.chmod(self.path, SECRET_FILE_MODE)
        except OSError as err:
            raise StoreError(f"cannot restrict {self.path}: {err.strerror or err}") from None

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(
                    self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None
                )
                db.execute("PRAGMA journal_mode=WAL")
            except sqlite3.Error as err:
                raise StoreError(f"cannot open {self.path}: {err}") from None
            self._local.db = db
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._connection()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as err:
            raise StoreError(f"session store {self.path}: {err}") from None

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # -- pending sign-ins ----------------------------------------------------------------------
    def add_pending(self, state: str, browser_secret: str, pending: PendingSignIn) -> None:
        now = self.clock()
        with self._transaction() as db:
            db.execute("DELETE FROM pending WHERE created < ?", (now - PENDING_TTL,))
            # Anyone can start sign-ins: keep only the newest MAX_PENDING of them.
            db.execute(
                "DELETE FROM pending WHERE key IN "
                "(SELECT key FROM pending ORDER BY created DESC LIMIT -1 OFFSET ?)",
                (MAX_PENDING - 1,),
            )
            db.execute(
                "INSERT INTO pending VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    hash_secret(state),
                    hash_secret(browser_secret),
                    pending.verifier,
                    pending.nonce,
                    pending.redirect_uri,
                    pending.return_to,
                    now,
                ),
            )

    def take_pending(self, state: str, browser_secret: str | None) -> PendingSignIn | None:
        """The sign-in `state` belongs to, once: it is deleted whatever the outcome, so a
        replayed state is refused. None when unknown, used, expired, or started by another
        browser (a callback link planted by someone else)."""
        key = hash_secret(state)
        with self._transaction() as db:
            row = db.execute(
                "DELETE FROM pending WHERE key = ? RETURNING browser, verifier, nonce, "
                "redirect_uri, return_to, created",
                (key,),
            ).fetchone()
        if row is None:
            return None
        browser, verifier, nonce, redirect_uri, return_to, created = row
        if self.clock() - created > PENDING_TTL:
            return None
        if browser_secret is None or not secrets.compare_digest(
            browser, hash_secret(browser_secret)
        ):
            return None
        return PendingSignIn(verifier, nonce, redirect_uri, return_to)

    # -- sessions ------------------------------------------------------------------------------
    def create(
        self, identity: Identity, expires: float, tokens: SessionTokens
    ) -> tuple[str, Session]:
        """A new session; returns the cookie secret (shown to nobody else) and the record."""
        secret = new_secret()
        key = session_key(secret)
        now = self.clock()
        sealed = seal_tokens(secret, key, tokens)
        session = Session(key, identity, now, expires, now, sealed)
        with self._transaction() as db:
            db.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    identity.user,
                    identity.uid,
                    json.dumps(list(identity.groups)),
                    now,
                    expires,
                    now,
                    sealed,
                ),
            )
        return secret, session

    def lookup(self, secret: str) -> Session | None:
        key = session_key(secret)
        try:
            row = (
                self._connection()
                .execute(
                    "SELECT key, user, uid, groups, created, expires, refreshed, tokens "
                    "FROM sessions WHERE key = ?",
                    (key,),
                )
                .fetchone()
            )
        except sqlite3.Error as err:
            raise StoreError(f"session store {self.path}: {err}") from None
        return _session(row) if row is not None else None

    def update(
        self, secret: str, identity: Identity, expires: float, tokens: SessionTokens
    ) -> bool:
        """After a refresh: new identity (groups may change), expiry and tokens. False if the
        session was revoked meanwhile."""
        key = session_key(secret)
        sealed = seal_tokens(secret, key, tokens)
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE sessions SET user = ?, uid = ?, groups = ?, expires = ?, refreshed = ?, "
                "tokens = ? WHERE key = ?",
                (
                    identity.user,
                    identity.uid,
                    json.dumps(list(identity.groups)),
                    expires,
                    self.clock(),
                    sealed,
                    key,
                ),
            )
        return cursor.rowcount == 1

    def delete_secret(self, secret: str) -> bool:
        with self._transaction() as db:
            cursor = db.execute("DELETE FROM sessions WHERE key = ?", (session_key(secret),))
        return cursor.rowcount == 1

    def list(self, user: str | None = None) -> list[Session]:
        query = "SELECT key, user, uid, groups, created, expires, refreshed, tokens FROM sessions"
        args: tuple[str, ...] = ()
        if user is not None:
            query += " WHERE user = ?"
            args = (user,)
        try:
            rows = self._connection().execute(query + " ORDER BY created", args).fetchall()
        except sqlite3.Error as err:
            raise StoreError(f"session store {self.path}: {err}") from None
        return [_session(row) for row in rows]

    def delete_named(self, name: str) -> Session:
        """`raygate delete session NAME`: NAME as `get sessions` shows it."""
        if not name.startswith(SESSION_NAME_PREFIX) or len(name) != len(SESSION_NAME_PREFIX) + 16:
            raise NotFoundError(f'sessions "{name}" not found')
        prefix = name[len(SESSION_NAME_PREFIX) :]
        with self._transaction() as db:
            rows = db.execute(
                "SELECT key, user, uid, groups, created, expires, refreshed, tokens FROM sessions "
                "WHERE substr(key, 1, 16) = ?",
                (prefix,),
            ).fetchall()
            if not rows:
                raise NotFoundError(f'sessions "{name}" not found')
            db.execute("DELETE FROM sessions WHERE substr(key, 1, 16) = ?", (prefix,))
        return _session(rows[0])

    def delete_user(self, user: str) -> int:
        with self._transaction() as db:
            cursor = db.execute("DELETE FROM sessions WHERE user = ?", (user,))
        return cursor.rowcount

    def delete_expired(self, now: float | None = None, grace: float = 0.0) -> int:
        """Sessions past their expiry by more than `grace` (those with a refresh token may
        still be renewed within it)."""
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM sessions WHERE expires < ?", ((now or self.clock()) - grace,)
            )
        return cursor.rowcount


def _session(row: tuple) -> Session:  # type: ignore[type-arg]
    key, user, uid, groups, created, expires, refreshed, tokens = row
    identity = Identity(user=user, uid=uid, groups=tuple(json.loads(groups)))
    return Session(key, identity, created, expires, refreshed, bytes(tokens))
