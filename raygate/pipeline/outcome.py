"""What a decision comes to: forward the request as someone, or answer it here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from raygate.identity import Identity
from raygate.observe.audit import AuditRecord

HeaderList = list[tuple[str, str]]


@dataclass(slots=True)
class Answer:
    """A response the gateway gives itself; nothing is forwarded."""

    status: int
    headers: HeaderList = field(default_factory=list)
    body: bytes = b""
    record: AuditRecord | None = None
    reason: str = ""  # the status line's phrase; empty: the standard one


@dataclass(slots=True)
class BufferedResponse:
    """An upstream response read whole (up to a limit) for a profile hook to look at."""

    status: int
    reason: str
    headers: HeaderList
    body: bytes | None  # None: larger than the hook's limit


# A hook over the request body (read whole up to `request_limit`): the bytes to send instead.
# ValueError: the body is refused with 400 and that message.
RequestBodyHook = Callable[[bytes], bytes]
# A hook over the upstream's response (read whole up to `response_limit`): what to answer.
ResponseHook = Callable[[BufferedResponse], Awaitable[BufferedResponse]]


@dataclass(slots=True)
class Forward:
    """Forward the request as `identity` (None: anonymous, e.g. the UI shell) with these headers.

    `upstream_headers` are the client's, with its credentials and identity headers stripped,
    Ray's token and X-Remote-* set; the data plane adds Host and the body framing.
    """

    identity: Identity | None
    upstream_headers: HeaderList
    record: AuditRecord
    response_hook: ResponseHook | None = None
    response_limit: int = 0
    request_body_hook: RequestBodyHook | None = None
    request_limit: int = 0
    request_limit_message: str = ""


Outcome = Forward | Answer
