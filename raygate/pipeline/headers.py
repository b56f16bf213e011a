"""Which headers cross the gateway, in each direction. Pure functions over header lists."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from raygate.sso.flow import HOST_PREFIX, SESSION_COOKIE, SIGN_IN_COOKIE

# RFC 9110 §7.6.1 hop-by-hop headers, plus the legacy proxy ones.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Credentials the client sent for the gateway, and every header Ray accepts a token in.
# The gateway alone speaks to Ray; a client's credential must never reach it.
CLIENT_CREDENTIAL_HEADERS = frozenset({"authorization", "x-ray-authorization"})

RAY_TOKEN_COOKIE = "ray-authentication-token"
# Cookies that are the gateway's own credentials, never the upstream's business: Ray's token
# dialog cookie and the sign-in cookies of raygate.sso.flow (with and without `__Host-`).
GATEWAY_COOKIES = (
    RAY_TOKEN_COOKIE,
    *(prefix + name for name in (SESSION_COOKIE, SIGN_IN_COOKIE) for prefix in (HOST_PREFIX, "")),
)


def connection_tokens(headers: Any) -> set[str]:
    """Header names a `Connection:` header declares hop-by-hop (any case-insensitive headers
    object with `getall`: raygate.pipeline.head.Headers, a multidict)."""
    names: set[str] = set()
    for value in headers.getall("Connection", []):
        for token in value.split(","):
            token = token.strip().lower()
            if token:
                names.add(token)
    return names


def strip_cookie(cookie_header: str, name: str) -> str:
    """The Cookie header without the named cookie.

    Kept byte-for-byte when the name does not occur. When it does, the header is rebuilt from
    what a lenient parser (aiohttp's, Ray's) would read, since they also split on whitespace:
    `a=1 ray-authentication-token=X` must lose X too.
    """
    if name not in cookie_header:
        return cookie_header.strip()
    kept = []
    for part in cookie_header.replace("\t", " ").split(";"):
        for word in part.split(" "):
            word = word.strip()
            if word and word.split("=", 1)[0].strip() != name:
                kept.append(word)
    return "; ".join(kept)


def _header_key(name: str) -> str:
    """Compare names as CGI/WSGI servers (and nginx with underscores_in_headers) read them."""
    return name.lower().replace("_", "-")


# What the gateway always sets or re-frames itself. Expect: it answers `100 Continue` itself,
# once the request is authorized. Where a request came from is the gateway's to say (its own
# X-Forwarded-For/-Proto/-Host, or nothing): a client's word for it is never passed on, in any
# of the forms proxies and frameworks read.
_GATEWAY_SET = HOP_BY_HOP | {"host", "content-length", "expect", "forwarded", "x-real-ip"}
_GATEWAY_PREFIXES = ("x-remote-", "x-forwarded-")


@functools.lru_cache(maxsize=64)
def _dropped_names(
    identity_headers: tuple[str, ...],
    forward_client_authorization: bool,
    upstream_token: bool,
) -> frozenset[str]:
    """The header names never forwarded as the client sent them (computed once per setting),
    besides every X-Remote-* and X-Forwarded-* name."""
    dropped = set(_GATEWAY_SET) | {_header_key(h) for h in identity_headers}
    if not forward_client_authorization:
        dropped |= CLIENT_CREDENTIAL_HEADERS
    elif upstream_token:
        dropped.add("authorization")  # replaced by Ray's token
    return frozenset(dropped)


def upstream_request_headers(
    incoming: Any,
    *,
    identity_headers: Iterable[str],
    remote: str | None,
    scheme: str,
    host: str | None,
    upstream_token: str | None,
    forward_client_authorization: bool = False,
    forwarded: bool = True,
) -> list[tuple[str, str]]:
    """Headers for the upstream request, as (name, value) pairs.

    Drops hop-by-hop headers, every identity header a client might forge (the gateway sets
    its own afterwards), the client's credentials, Ray's token cookie, and the client's word on
    where the request came from (X-Forwarded-*, Forwarded, X-Real-IP); adds its own
    X-Forwarded-For (the client's list, then the peer), -Proto and -Host when `forwarded`.
    Host and the body framing (Content-Length or chunked) are the data plane's to add: they
    must match what it sends, never a client value it did not check.
    """
    dropped = _dropped_names(
        tuple(identity_headers), forward_client_authorization, bool(upstream_token)
    )
    if "connection" in incoming:
        dropped = dropped | connection_tokens(incoming)
    out: list[tuple[str, str]] = []
    for name, value in incoming.items():
        lname = name.lower()
        if "_" in lname:
            lname = lname.replace("_", "-")
        if lname in dropped or lname.startswith(_GATEWAY_PREFIXES):
            continue
        if lname == "cookie":
            for cookie in GATEWAY_COOKIES:
                value = strip_cookie(value, cookie)
            if not value:
                continue
        out.append((name, value))
    if forwarded:
        prior = incoming.get("X-Forwarded-For")
        if remote:
            out.append(("X-Forwarded-For", f"{prior}, {remote}" if prior else remote))
        out.append(("X-Forwarded-Proto", scheme))
        if host:
            out.append(("X-Forwarded-Host", host))
    if upstream_token:
        out.append(("Authorization", f"Bearer {upstream_token}"))
    return out


def downstream_response_headers(upstream: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers for the client: everything but hop-by-hop ones and the framing the data plane
    redoes.

    Ray's `POST /api/authenticate` answers with a cookie holding the token it was sent, which
    behind the gateway is Ray's own secret token: such a cookie never leaves the gateway.
    """
    pairs = list(upstream.items() if hasattr(upstream, "items") else upstream)  # type: ignore[attr-defined]
    dropped = _RESPONSE_DROPPED
    for name, value in pairs:
        if name.lower() == "connection":
            dropped = dropped | {t.strip().lower() for t in value.split(",")}
    out: list[tuple[str, str]] = []
    for name, value in pairs:
        lname = name.lower()
        if lname in dropped:
            continue
        if lname == "set-cookie" and value.lstrip().startswith(_RAY_COOKIE_PREFIX):
            continue
        out.append((name, value))
    return out


_RESPONSE_DROPPED = HOP_BY_HOP | {"content-length"}
_RAY_COOKIE_PREFIX = RAY_TOKEN_COOKIE + "="
