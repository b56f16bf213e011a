"""Ray Client sessions bound to the identity that opened them.

Ray routes every call by the `client_id` the client picked, and a reconnect re-attaches to it,
so whoever knows a client_id could drive someone else's driver. The first authorized call that
names a client_id binds it to the caller (user and uid); a call by anyone else is refused.
A binding outlives its last call by `ttl` (Ray's reconnect grace period is 30 s by default).
"""

from __future__ import annotations

import time
from collections import OrderedDict

from raygate.identity import Identity

DEFAULT_TTL = 3600.0
DEFAULT_MAX_SESSIONS = 100_000


def identity_key(identity: Identity) -> tuple[str, str]:
    # The uid tells a service account apart from a deleted and re-created one of the same name.
    return (identity.user, identity.uid)


class SessionBindings:
    def __init__(self, ttl: float = DEFAULT_TTL, max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        self._ttl = ttl
        self._max = max_sessions
        # client_id -> (owner, last seen); oldest-seen first.
        self._owners: OrderedDict[str, tuple[tuple[str, str], float]] = OrderedDict()

    def claim(self, client_id: str, identity: Identity) -> str | None:
        """None if `identity` may use `client_id` (binding it if free); else the owner's name."""
        now = time.monotonic()
        key = identity_key(identity)
        entry = self._owners.get(client_id)
        if entry is not None and now - entry[1] <= self._ttl and entry[0] != key:
            return entry[0][0]
        self._owners[client_id] = (key, now)
        self._owners.move_to_end(client_id)
        self._expire(now)
        return None

    def _expire(self, now: float) -> None:
        while self._owners:
            client_id, (_, seen) = next(iter(self._owners.items()))
            if now - seen <= self._ttl and len(self._owners) <= self._max:
                return
            del self._owners[client_id]

    def __len__(self) -> int:
        return len(self._owners)
