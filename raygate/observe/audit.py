"""One JSON line per authorization decision: who did what, and what was answered.

Never holds a token: the record is built from the Identity and Attributes only.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from raygate.identity import Attributes, Identity


class AuditDecision(StrEnum):
    """What the gateway decided for a request: the `decision` of every audit line."""

    ALLOW = "allow"  # authorized, forwarded as the caller
    DENY = "deny"  # authenticated but not authorized (403), or a request it cannot map (400)
    UNAUTHENTICATED = "unauthenticated"  # no credential, or one that is not valid (401)
    UNAVAILABLE = "unavailable"  # the identity or policy backend could not answer (503)
    ERROR = "error"  # the gateway failed while deciding (500)
    IGNORED_PATH = "ignored-path"  # forwarded anonymously: authorization.ignorePaths
    UI_SHELL = "ui-shell"  # forwarded anonymously: the dashboard's static shell (browserLogin)
    PUBLIC = "public"  # answered by the gateway without credentials (OIDC discovery, JWKS)
    NONE = "none"  # answered before any decision (refused method, bad framing, login mode)
    SIGN_IN = "sign-in"  # browser sent to the identity provider, or back from it signed in
    SIGN_OUT = "sign-out"  # browser session ended at the logout path


# Request ids: unique per process (pid and start time), a counter within it. No uuid4 per request.
_ID_PREFIX = f"{os.getpid() & 0xFFFF:04x}{int(time.time()) & 0xFFFF:04x}"
_ids = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ids):08x}"


@dataclass(slots=True)
class AuditRecord:
    request_id: str
    method: str
    path: str
    remote: str | None
    started: float = field(default_factory=time.monotonic)
    identity: Identity | None = None
    attributes: list[Attributes] = field(default_factory=list)
    decision: AuditDecision = AuditDecision.NONE
    reason: str = ""
    status: int = 0

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "requestId": self.request_id,
            "remote": self.remote,
            "method": self.method,
            "path": self.path,
            "user": self.identity.user if self.identity else None,
            "groups": list(self.identity.groups) if self.identity else [],
            "decision": self.decision,
            "reason": self.reason,
            "status": self.status,
            "latencyMs": round((time.monotonic() - self.started) * 1000, 3),
        }
        if self.attributes:
            first = self.attributes[0]
            data["verb"] = first.verb
            if first.resource_request:
                data["resource"] = {
                    "namespace": first.namespace,
                    "apiGroup": first.api_group,
                    "resource": first.resource,
                    "subresource": first.subresource,
                    "name": first.name,
                }
            else:
                data["nonResourcePath"] = first.path
        return json.dumps(data, separators=(",", ":"))


class AuditLog:
    """Appends audit lines to a file (or a stream). Thread-safe; one write per line."""

    def __init__(self, path: Path | None = None, stream: IO[str] | None = None) -> None:
        self._lock = threading.Lock()
        self._path = path
        self._file: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        self._stream = stream if stream is not None else (None if path else sys.stderr)

    @property
    def path(self) -> Path | None:
        return self._path

    def write(self, record: AuditRecord) -> None:
        line = record.to_json() + "\n"
        with self._lock:
            if self._file is not None:
                self._file.write(line)
            if self._stream is not None:
                self._stream.write(line)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
