"""The embedded authority as the gateway sees it: a token authenticator and an RBAC authorizer
over the local store, kept current by polling the store's revision.

Every change another process makes (`raygate apply`, `delete`, `create sa`) is visible within
one poll interval; the RBAC index and the service-account table are rebuilt off the hot path
and swapped in whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from raygate.authn.jwt import ServiceAccountTokenAuthenticator, jwks, openid_configuration
from raygate.errors import StoreError
from raygate.identity import Attributes, Decision, Identity
from raygate.rbac.authorizer import LocalRBACAuthorizer
from raygate.rbac.index import PolicyIndex
from raygate.store.sqlite import FileMarks, ObjectStore, Snapshot
from raygate.store.tokens import DEFAULT_AUDIENCE, DEFAULT_ISSUER, load_signing_key

log = logging.getLogger("raygate.embedded")

POLL_INTERVAL = 0.25  # seconds; changes must show within one second
# The gateway's reads give up on a locked database after this, and keep the last good policy:
# a request must never wait for another process's lock (the CLI's writers wait longer).
READ_BUSY_TIMEOUT_MS = 500
# A request about to be refused waits at most this long for a reload (read-your-writes).
RECHECK_WAIT = 1.0
# File times this much older than the look that read them cannot hide a later write: the
# kernel's coarse clock, which stamps them, ticks every few milliseconds.
SETTLED = 0.05
STALLED_READ = 2.0  # seconds: a store read taking longer is reported as an outage
OUTAGE_REMINDER = 60.0  # seconds between "store still unreadable" log lines


def _settled(marks: FileMarks | None, taken: float) -> FileMarks | None:
    """`marks` (taken at `taken`, wall clock) if a later write is sure to change them: every
    file's last change lies SETTLED or more before the look."""
    if marks is None:
        return None
    for mark in marks:
        if mark is not None and taken - max(mark[3], mark[4]) / 1e9 < SETTLED:
            return None
    return marks


class _RecheckDenials:
    """An Authorizer that, before it denies, makes sure the policy it denied with is current."""

    def __init__(self, inner: LocalRBACAuthorizer, recheck: Callable[[], Awaitable[bool]]) -> None:
        self.inner = inner
        self._recheck = recheck

    async def authorize(self, attributes: Attributes) -> Decision:
        decision = await self.inner.authorize(attributes)
        if not decision.allowed:
            # Asked again after a reload that started after this answer (or a swap by the
            # watcher thread meanwhile): a cheap in-memory evaluation.
            await self._recheck()
            decision = await self.inner.authorize(attributes)
        return decision


class EmbeddedAuthority:
    """Serves from memory the policy of the last good read of the store; reads the store only
    in a worker thread, one read at a time, never on the event loop. While the store cannot be
    read (locked, unreadable, corrupted, missing) it keeps that policy, says why in `failure`
    (for /readyz) and in one log line, and reopens the database until it reads again."""

    def __init__(
        self,
        state_dir: Path,
        *,
        issuer: str = DEFAULT_ISSUER,
        audiences: tuple[str, ...] = (DEFAULT_AUDIENCE,),
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self.state_dir = state_dir
        self.store = ObjectStore.open(state_dir, busy_timeout_ms=READ_BUSY_TIMEOUT_MS)
        self._snapshot: Snapshot = self.store.snapshot()
        key = load_signing_key(state_dir)
        self.issuer = issuer
        self.authenticator = ServiceAccountTokenAuthenticator(
            [key.public_key],
            issuer,
            list(audiences),
            self._lookup_uid,
            lookup_secret_uid=self._lookup_secret_uid,
            recheck=self.recheck,
        )
        self._rbac = LocalRBACAuthorizer(PolicyIndex.build(self._snapshot.objects))
        self.authorizer = _RecheckDenials(self._rbac, self.recheck)
        self._jwks = json.dumps(jwks([key.public_key]))
        self._discovery = json.dumps(openid_configuration(issuer))
        self._poll_interval = poll_interval
        self._task: asyncio.Task[None] | None = None
        self._reload: asyncio.Future[bool] | None = None
        self._reload_lock = threading.Lock()
        self._store_ok = True  # False after a failed read: reopen before the next one
        self._failure: str | None = None
        self._failed_since = 0.0
        self._failure_logged_at = 0.0
        # The store's file marks (ObjectStore.file_marks) taken before the last good read, when
        # settled: while the files still show them, nothing was written since that read.
        self._quiet: FileMarks | None = None

    @property
    def revision(self) -> int:
        """The store revision the policy in memory was read at."""
        return self._snapshot.version

    @property
    def failure(self) -> str | None:
        """Why the store cannot be read right now (the last good policy is served), or None."""
        return self._failure

    async def authenticate(self, credential: str) -> Identity | None:
        return await self.authenticator.authenticate_token(credential)

    async def authorize(self, attributes: Attributes) -> Decision:
        return await self.authorizer.authorize(attributes)

    def _lookup_uid(self, namespace: str, name: str) -> str | None:
        return self._snapshot.service_account_uid(namespace, name)

    def _lookup_secret_uid(self, namespace: str, name: str) -> str | None:
        return self._snapshot.secret_uid(namespace, name)

    async def recheck(self) -> bool:
        """Read-your-writes for a caller about to be refused: `raygate create sa` then a token
        then a request within one poll interval must not fail. Waits (at most RECHECK_WAIT, so
        a locked store delays a refusal by that much, never longer, and never blocks the event
        loop) for a reload that started after the caller asked, sharing it with every other
        caller. True when the policy changed since the caller's answer was given. Waits for
        nothing when the store's files show nothing written since the last read (a refusal
        then costs a stat, not a read in a thread)."""
        version = self._snapshot.version
        quiet = self._quiet
        if quiet is not None and self.store.file_marks() == quiet:
            return False  # nothing written since the last read: the policy in memory is current
        try:
            async with asyncio.timeout(RECHECK_WAIT):
                running = self._reload
                if running is not None and not running.done():
                    # It may have read the store before the caller's write: wait, then reload.
                    await asyncio.shield(running)
                await asyncio.shield(self._reload_shared())
        except (TimeoutError, StoreError):
            pass
        return self._snapshot.version != version

    def _reload_shared(self) -> asyncio.Future[bool]:
        if self._reload is None or self._reload.done():
            self._reload = asyncio.ensure_future(asyncio.to_thread(self.refresh))
            # A failure is reported by refresh itself; nobody may be left to retrieve it.
            self._reload.add_done_callback(lambda f: f.cancelled() or f.exception())
        return self._reload

    def refresh(self) -> bool:
        """Reload if the store changed. True when something was reloaded; StoreError (after
        logging it) when the store cannot be read, the last good policy staying in place.

        Runs in a worker thread, one at a time, and never replaces a newer revision by an
        older one (unless the file itself was replaced, e.g. restored from a copy).
        """
        with self._reload_lock:
            try:
                reopened = self._reopen_if_needed()
                marks, taken = self.store.file_marks(), time.time()
                version = self.store.data_version()
                if version == self._snapshot.version and not reopened:
                    self._answering()
                    self._quiet = _settled(marks, taken)
                    return False
                snapshot = self.store.snapshot()
            except StoreError as err:
                self._store_ok = False
                self._quiet = None
                self._failed(str(err))
                raise
            self._answering()
            if snapshot.version == self._snapshot.version or (
                snapshot.version < self._snapshot.version and not reopened
            ):
                return False
            index = PolicyIndex.build(snapshot.objects)
            # Swap both together: the authorizer and the uid table describe one revision. The
            # index first: a request that already sees the new snapshot must see its index too.
            self._rbac.replace(index)
            self._snapshot = snapshot
            self._quiet = _settled(marks, taken)
        log.info(
            "policy reloaded at revision %s (%d objects)", snapshot.version, len(snapshot.objects)
        )
        return True

    def _reopen_if_needed(self) -> bool:
        """A connection that failed, or whose file was replaced, is closed and opened again:
        SQLite keeps reading the old file (or its broken state) otherwise."""
        if self._store_ok and not self.store.replaced():
            return False
        with contextlib.suppress(Exception):
            self.store.close()
        self.store = ObjectStore.open_existing(self.state_dir, busy_timeout_ms=READ_BUSY_TIMEOUT_MS)
        self._store_ok = True
        return True

    def _failed(self, reason: str) -> None:
        now = time.monotonic()
        if self._failure is None:
            self._failed_since = self._failure_logged_at = now
            log.error(
                "cannot read the store, serving the policy of revision %s until it can: %s",
                self._snapshot.version,
                reason,
            )
        elif reason != self._failure or now - self._failure_logged_at >= OUTAGE_REMINDER:
            self._failure_logged_at = now
            log.error(
                "store still unreadable after %.0fs, serving revision %s: %s",
                now - self._failed_since,
                self._snapshot.version,
                reason,
            )
        self._failure = reason

    def _answering(self) -> None:
        if self._failure is not None:
            log.warning("store readable again after %.0fs", time.monotonic() - self._failed_since)
            self._failure = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            reload = self._reload_shared()
            # asyncio.wait, not wait_for: it neither cancels the read on a timeout nor (Python
            # 3.11) swallows this task's own cancellation when the read ends at that moment.
            done, _ = await asyncio.wait({reload}, timeout=STALLED_READ)
            if not done:
                # SQLite waits out some locks (a process stuck in recovery) on its own,
                # whatever the busy timeout: say so now, and wait for that read to end.
                self._failed(
                    f"a read has not answered for {STALLED_READ:g}s "
                    "(the database is locked by another process?)"
                )
                await asyncio.wait({reload})
            error = None if reload.cancelled() else reload.exception()
            if error is not None and not isinstance(error, StoreError):
                # Whatever broke this reload, the next one must run: a dead watcher would keep
                # deleted accounts' tokens working until a restart. (StoreError: logged by
                # refresh; the last good policy stays.)
                log.error(
                    "cannot reload policy, keeping revision %s",
                    self._snapshot.version,
                    exc_info=error,
                )

    async def start(self, _app: object = None) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._watch())

    async def stop(self, _app: object = None) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.store.close()

    def public_routes(self) -> dict[str, tuple[str, bytes]]:
        """OIDC discovery and JWKS (content type, body), served without authentication like
        kube-apiserver does."""
        return {
            "/.well-known/openid-configuration": ("application/json", self._discovery.encode()),
            "/openid/v1/jwks": ("application/jwk-set+json", self._jwks.encode()),
        }
