"""One renewal per session across the worker processes that share a state directory.

`raygate up/serve --workers N` runs N processes over one session store. A provider that
rotates refresh tokens (npm's oidc-provider, Okta, Auth0, Keycloak with rotation) accepts each
refresh token once: a second worker sending the same one gets `invalid_grant`, and with reuse
detection the provider revokes the whole sign-in. So the worker that renews a session holds
that session's lock across the provider call, and the others wait, then read what it stored.

The lock is a POSIX record lock (`fcntl.lockf`) on one byte of `STATE/sessions.lock`, at an
offset taken from the session key: one file for all sessions, nothing to clean up, and the
kernel drops the lock when its holder exits or crashes, so a dead worker never keeps a
session locked (a lease row in SQLite would stay until it timed out).

Record locks belong to a process, not to a descriptor: they do not exclude each other within
one process (the caller's asyncio.Lock does that), and closing any descriptor of the file
drops all of the process's locks on it, so each `RenewalLocks` opens one descriptor and keeps
it (one per process and state directory). The lock is taken without blocking and retried
after short asyncio sleeps, so the event loop never waits on the kernel.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from pathlib import Path

from raygate.errors import StoreError
from raygate.store.state import SECRET_FILE_MODE

LOCK_FILE = "sessions.lock"
# How often a waiting worker tries again (a renewal takes tens of milliseconds).
POLL_INTERVAL = 0.025
# Byte offsets from 48 bits of the key (a SHA-256 in hex): two sessions sharing a byte only
# renew one after the other.
_OFFSET_HEX_DIGITS = 12


def lock_offset(key: str) -> int:
    return int(key[:_OFFSET_HEX_DIGITS], 16)


class RenewalLocks:
    """The per-session renewal locks of one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None

    def _descriptor(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(
                    self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, SECRET_FILE_MODE
                )
            except OSError as err:
                raise StoreError(f"cannot open {self.path}: {err.strerror or err}") from None
        return self._fd

    def try_acquire(self, key: str) -> bool:
        """Take `key`'s lock if no other process holds it; never blocks."""
        try:
            fcntl.lockf(self._descriptor(), fcntl.LOCK_EX | fcntl.LOCK_NB, 1, lock_offset(key))
        except (BlockingIOError, PermissionError):  # EAGAIN/EACCES: another process holds it
            return False
        except OSError as err:
            raise StoreError(f"cannot lock {self.path}: {err.strerror or err}") from None
        return True

    async def acquire(self, key: str, wait: float) -> bool:
        """Take `key`'s lock, waiting at most `wait` seconds for another process to let it
        go; False if it did not."""
        deadline = time.monotonic() + wait
        while not self.try_acquire(key):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_INTERVAL)
        return True

    def release(self, key: str) -> None:
        if self._fd is None:
            return
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, lock_offset(key))
        except OSError as err:
            raise StoreError(f"cannot unlock {self.path}: {err.strerror or err}") from None

    def close(self) -> None:
        """Drops every lock this process holds on the file (call at shutdown only)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
