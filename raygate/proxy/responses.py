"""The answers the gateway gives itself. Bodies say what to do: the `ray` CLI prints them."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from yarl import URL

TOKEN_HINT = (
    "Create a token for a service account with `raygate create token <name>` "
    "(on Kubernetes: `kubectl create token <name>`) and pass it with every request, e.g.\n"
    '  export RAY_JOB_HEADERS=\'{"Authorization": "Bearer <token>"}\'\n'
    "or with curl: -H 'Authorization: Bearer <token>'\n"
)


def _text(status: int, body: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=body, headers=headers, content_type="text/plain")


def unauthorized(realm: str, *, missing: bool) -> web.Response:
    first = (
        "Unauthorized: this Ray cluster requires a bearer token and the request had none.\n"
        if missing
        else "Unauthorized: the bearer token is not valid (malformed, expired, not yet valid, "
        "for another audience, or its service account was deleted).\n"
    )
    return _text(401, first + TOKEN_HINT, {"WWW-Authenticate": f'Bearer realm="{realm}"'})


def forbidden(description: str, reason: str = "") -> web.Response:
    body = f"Forbidden: {description}\n"
    if reason:
        body += f"Reason: {reason}\n"
    body += (
        "Ask a cluster admin for a Role and RoleBinding that grant it (see `raygate auth can-i`).\n"
    )
    return _text(403, body)


def unavailable(detail: str) -> web.Response:
    """503. `detail` is for the log: it can name internal addresses, so the body does not."""
    del detail
    return _text(
        503,
        "Service Unavailable: raygate cannot reach its identity or policy backend; "
        "nothing was forwarded. Try again shortly (raygate's log says why).\n",
        {"Retry-After": "5"},
    )


def audit_unavailable() -> web.Response:
    """503 while audit lines cannot be written (fail-closed): the log says why, not the body."""
    return _text(
        503,
        "Service Unavailable: raygate cannot write its audit log; nothing was forwarded. "
        "Try again shortly (raygate's log says why).\n",
        {"Retry-After": "5"},
    )


def upstream_unreachable(upstream: URL, err: BaseException) -> web.Response:
    """502/504. The body does not name the upstream: its private address is nobody's business."""
    del upstream
    if isinstance(err, TimeoutError):
        return _text(504, "Gateway Timeout: the Ray dashboard did not answer in time.\n")
    if isinstance(err, aiohttp.ClientConnectionError | OSError):
        return _text(502, "Bad Gateway: the Ray dashboard is unreachable.\n")
    return _text(502, "Bad Gateway: the Ray dashboard sent an invalid response.\n")


def too_large(detail: str) -> web.Response:
    return _text(413, f"Payload Too Large: {detail}.\n")


def bad_request(detail: str) -> web.Response:
    return _text(400, f"Bad Request: {detail}\n")


def not_found() -> web.Response:
    return _text(404, "Not Found\n")


def forbidden_origin() -> web.Response:
    return _text(
        403,
        "Forbidden: the session cookie is only accepted from the dashboard's own pages "
        "(Origin and Sec-Fetch-Site say this request came from another site or port).\n",
    )


def method_not_allowed() -> web.Response:
    return _text(
        405, "Method Not Allowed\n", {"Allow": "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"}
    )
