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
from collections.abc import Callable
from pathlib import Path

from raygate.authn.jwt import ServiceAccountTokenAuthenticator, jwks, openid_configuration
from raygate.errors import StoreError
from raygate.identity import Attributes, Decision, Identity
from raygate.rbac.authorizer import LocalRBACAuthorizer
from raygate.rbac.index import PolicyIndex
from raygate.store.sqlite import ObjectStore, Snapshot
from raygate.store.tokens import DEFAULT_AUDIENCE, DEFAULT_ISSUER, load_signing_key

log = logging.getLogger("raygate.embedded")

POLL_INTERVAL = 0.25  # seconds; changes must show within one second


class _RecheckDenials:
    """An Authorizer that, before it denies, makes sure the policy it denied with is current."""

    def __init__(self, inner: LocalRBACAuthorizer, refresh: Callable[[], bool]) -> None:
        self.inner = inner
        self._refresh = refresh

    async def authorize(self, attributes: Attributes) -> Decision:
        index = self.inner.index
        decision = await self.inner.authorize(attributes)
        # The watcher thread may have swapped the index in since: that counts as a reload too.
        if not decision.allowed and (self._refresh() or self.inner.index is not index):
            decision = await self.inner.authorize(attributes)
        return decision


class EmbeddedAuthority:
    def __init__(
        self,
        state_dir: Path,
        *,
        issuer: str = DEFAULT_ISSUER,
        audiences: tuple[str, ...] = (DEFAULT_AUDIENCE,),
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self.state_dir = state_dir
        self.store = ObjectStore.open(state_dir)
        self._snapshot: Snapshot = self.store.snapshot()
        key = load_signing_key(state_dir)
        self.issuer = issuer
        self.authenticator = ServiceAccountTokenAuthenticator(
            [key.public_key],
            issuer,
            list(audiences),
            self._lookup_uid,
            lookup_secret_uid=self._lookup_secret_uid,
        )
        self._rbac = LocalRBACAuthorizer(PolicyIndex.build(self._snapshot.objects))
        self.authorizer = _RecheckDenials(self._rbac, self._refresh_now)
        self._jwks = json.dumps(jwks([key.public_key]))
        self._discovery = json.dumps(openid_configuration(issuer))
        self._poll_interval = poll_interval
        self._task: asyncio.Task[None] | None = None
        self._reload_lock = threading.Lock()

    @property
    def revision(self) -> int:
        """The store revision the policy in memory was built from."""
        return self._snapshot.version

    async def authenticate(self, credential: str) -> Identity | None:
        return await self.authenticator.authenticate_token(credential)

    async def authorize(self, attributes: Attributes) -> Decision:
        return await self.authorizer.authorize(attributes)

    def _lookup_uid(self, namespace: str, name: str) -> str | None:
        snapshot = self._snapshot
        uid = snapshot.service_account_uid(namespace, name)
        # The watcher thread may have swapped the snapshot in since: that counts as a reload too.
        if uid is None and (self._refresh_now() or self._snapshot is not snapshot):
            uid = self._snapshot.service_account_uid(namespace, name)
        return uid

    def _lookup_secret_uid(self, namespace: str, name: str) -> str | None:
        uid = self._snapshot.secret_uid(namespace, name)
        if uid is None and self._refresh_now():
            uid = self._snapshot.secret_uid(namespace, name)
        return uid

    def _refresh_now(self) -> bool:
        """Read-your-writes for a caller about to be refused: `raygate create sa` then a token
        then a request within one poll interval must not fail. Costs one cheap read, and only
        on the refusing path."""
        try:
            return self.refresh()
        except StoreError as err:
            log.error("cannot reload policy, keeping revision %s: %s", self._snapshot.version, err)
            return False

    def refresh(self) -> bool:
        """Reload if the store changed. True when something was reloaded.

        Called from the watcher's thread and, before a refusal, from the event loop: one at a
        time, and never replacing a newer revision by an older one. True too when another
        caller reloaded while this one waited: the caller's answer came from the older revision
        and must be asked again (else a token minted just now gets a 401 during the reload).
        """
        if self.store.data_version() == self._snapshot.version:
            return False
        with self._reload_lock:
            if self.store.data_version() == self._snapshot.version:
                return True  # the other caller just reloaded it
            snapshot = self.store.snapshot()
            if snapshot.version <= self._snapshot.version:
                return False
            index = PolicyIndex.build(snapshot.objects)
            # Swap both together: the authorizer and the uid table describe one revision. The
            # index first: a request on the event loop that already sees the new snapshot (so
            # finds the store current and does not reload) must see the new index too.
            self._rbac.replace(index)
            self._snapshot = snapshot
        log.info(
            "policy reloaded at revision %s (%d objects)", snapshot.version, len(snapshot.objects)
        )
        return True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                await asyncio.to_thread(self.refresh)
            except StoreError as err:
                # Keep serving the last good policy; a broken store must not open the gate.
                log.error(
                    "cannot reload policy, keeping revision %s: %s", self._snapshot.version, err
                )
            except Exception:
                # Whatever broke this reload, the next one must run: a dead watcher would keep
                # deleted accounts' tokens working until a restart.
                log.exception("cannot reload policy, keeping revision %s", self._snapshot.version)

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
