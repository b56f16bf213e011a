"""Which headers cross the gateway, in each direction. Pure functions over header lists."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from multidict import CIMultiDict, CIMultiDictProxy

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


def connection_tokens(headers: Mapping[str, str] | CIMultiDictProxy[str]) -> set[str]:
    """Header names a `Connection:` header declares hop-by-hop."""
    names: set[str] = set()
    getall = getattr(headers, "getall", None)
    values = getall("Connection", []) if getall else [headers.get("Connection", "")]
    for value in values:
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


def upstream_request_headers(
    incoming: CIMultiDictProxy[str],
    *,
    identity_headers: Iterable[str],
    remote: str | None,
    scheme: str,
    host: str | None,
    upstream_token: str | None,
    forward_client_authorization: bool = False,
) -> CIMultiDict[str]:
    """Headers for the upstream request.

    Drops hop-by-hop headers, every identity header a client might forge (the gateway sets
    its own afterwards), the client's credentials, and Ray's token cookie; adds X-Forwarded-*.
    """
    # Expect: the gateway answers `100 Continue` itself, once the request is authorized.
    dropped = HOP_BY_HOP | connection_tokens(incoming) | {"host", "content-length", "expect"}
    dropped |= {_header_key(h) for h in identity_headers}
    if not forward_client_authorization:
        dropped |= CLIENT_CREDENTIAL_HEADERS
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        lname = _header_key(name)
        if lname in dropped or lname.startswith("x-remote-"):
            continue
        if lname == "cookie":
            value = strip_cookie(value, RAY_TOKEN_COOKIE)
            if not value:
                continue
        out.add(name, value)
    # Content-Length is re-added from the parsed request by the caller so it always matches
    # what is streamed, never a client value the gateway did not check.
    prior = incoming.get("X-Forwarded-For")
    if remote:
        out["X-Forwarded-For"] = f"{prior}, {remote}" if prior else remote
    out["X-Forwarded-Proto"] = scheme
    if host:
        out["X-Forwarded-Host"] = host
    if upstream_token:
        out["Authorization"] = f"Bearer {upstream_token}"
    return out


def downstream_response_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """Headers for the client: everything but hop-by-hop ones and the framing we redo.

    Ray's `POST /api/authenticate` answers with a cookie holding the token it was sent, which
    behind the gateway is Ray's own secret token: such a cookie never leaves the gateway.
    """
    dropped = HOP_BY_HOP | connection_tokens(upstream) | {"content-length"}
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.items():
        lname = name.lower()
        if lname in dropped:
            continue
        if lname == "set-cookie" and value.lstrip().startswith(RAY_TOKEN_COOKIE + "="):
            continue
        out.add(name, value)
    return out
