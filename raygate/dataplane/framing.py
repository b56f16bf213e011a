"""Bytes on the wire: status lines, header blocks and chunks. Header names and values are str
holding latin-1 (what HTTP/1.1 carries); they go back out byte for byte."""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus

REASONS: dict[int, bytes] = {s.value: s.phrase.encode() for s in HTTPStatus}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"
CRLF = b"\r\n"


def status_line(status: int, reason: str | bytes = b"") -> bytes:
    if isinstance(reason, str):
        reason = reason.encode("latin-1", "replace")
    return b"HTTP/1.1 %d %s\r\n" % (status, reason or REASONS.get(status, b"Unknown"))


def header_block(headers: Iterable[tuple[str, str]]) -> bytes:
    return "".join([f"{name}: {value}\r\n" for name, value in headers]).encode("latin-1", "replace")


def chunk_size_line(size: int) -> bytes:
    return b"%x\r\n" % size


def has_body(method: str, status: int) -> bool:
    """RFC 9112 §6.3: responses to HEAD, 1xx, 204 and 304 never have a body."""
    return method != "HEAD" and status >= 200 and status not in (204, 304)
