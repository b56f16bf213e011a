"""What every door hands the decision pipeline: the head of one request, transport-free."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum


class Door(StrEnum):
    """Where a request came in: each door maps requests to attributes its own way."""

    DASHBOARD = "dashboard"  # Ray's dashboard and Jobs API (HTTP, WebSocket)
    CLIENT = "client"  # Ray Client (gRPC)
    SERVE = "serve"  # Ray Serve's HTTP ingress


def name_index(pairs: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """Each lowercased header name with its values, in order."""
    index: dict[str, list[str]] = {}
    for name, value in pairs:
        key = name.lower()
        values = index.get(key)
        if values is None:
            index[key] = [value]
        else:
            values.append(value)
    return index


class Headers:
    """Header lines in order, as (name, value) strings; names compared case-insensitively.

    Built once per request from the parser's pairs; the name index is made on first lookup.
    """

    __slots__ = ("_index", "_pairs")

    def __init__(
        self,
        pairs: Sequence[tuple[str, str]] = (),
        index: dict[str, list[str]] | None = None,
    ) -> None:
        """`index`, when given, maps each lowercased name to its values in order (a parser
        that saw every line builds it on the way)."""
        self._pairs = pairs
        self._index = index

    def _lookup(self) -> dict[str, list[str]]:
        index = self._index
        if index is None:
            index = self._index = name_index(self._pairs)
        return index

    def get(self, name: str, default: str | None = None) -> str | None:
        index = self._index
        values = (index if index is not None else self._lookup()).get(name.lower())
        return values[0] if values else default

    def getall(self, name: str, default: Sequence[str] = ()) -> list[str]:
        values = self._lookup().get(name.lower())
        return list(values) if values else list(default)

    def items(self) -> Sequence[tuple[str, str]]:
        return self._pairs

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._lookup()

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def __repr__(self) -> str:
        return f"Headers({list(self._pairs)!r})"


@dataclass(slots=True)
class RequestHead:
    """One request as it arrived, before any body: what a decision may depend on.

    Never changed once made (`dataclasses.replace` gives another); not frozen only because a
    frozen dataclass costs a microsecond more to make, once per request."""

    method: str
    target: str  # raw request target (path and query) exactly as sent, never normalised
    headers: Headers
    peer: str | None = None  # client address
    # DER of the client's TLS certificate, verified against the listener's client CA.
    peer_certificate: bytes | None = None
    scheme: str = "http"
    host: str = ""
    door: Door = Door.DASHBOARD

    @property
    def path(self) -> str:
        """The raw path: the target without its query."""
        path = self.target.partition("?")[0]
        return path or "/"
