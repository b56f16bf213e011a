"""Every answer the gateway gives itself, in one place. Bodies say what to do: the `ray` CLI
prints them."""

from __future__ import annotations

import json

from raygate.identity import Identity
from raygate.pipeline.outcome import Answer, HeaderList

TOKEN_HINT = (
    "Create a token for a service account with `raygate create token <name>` "
    "(on Kubernetes: `kubectl create token <name>`) and pass it with every request, e.g.\n"
    '  export RAY_JOB_HEADERS=\'{"Authorization": "Bearer <token>"}\'\n'
    "or with curl: -H 'Authorization: Bearer <token>'\n"
)
ALLOWED_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
TEXT = ("Content-Type", "text/plain; charset=utf-8")


def text(status: int, body: str, headers: HeaderList | None = None) -> Answer:
    return Answer(status, [TEXT, *(headers or ())], body.encode())


def json_answer(status: int, document: object, headers: HeaderList | None = None) -> Answer:
    return Answer(
        status,
        [("Content-Type", "application/json; charset=utf-8"), *(headers or ())],
        json.dumps(document).encode(),
    )


def unauthorized(realm: str, *, missing: bool) -> Answer:
    first = (
        "Unauthorized: this Ray cluster requires a bearer token and the request had none.\n"
        if missing
        else "Unauthorized: the bearer token is not valid (malformed, expired, not yet valid, "
        "for another audience, or its service account was deleted).\n"
    )
    return text(401, first + TOKEN_HINT, [("WWW-Authenticate", f'Bearer realm="{realm}"')])


def forbidden(description: str, reason: str = "") -> Answer:
    body = f"Forbidden: {description}\n"
    if reason:
        body += f"Reason: {reason}\n"
    body += (
        "Ask a cluster admin for a Role and RoleBinding that grant it (see `raygate auth can-i`).\n"
    )
    return text(403, body)


def unavailable(detail: str) -> Answer:
    """503. `detail` is for the log: it can name internal addresses, so the body does not."""
    del detail
    return text(
        503,
        "Service Unavailable: raygate cannot reach its identity or policy backend; "
        "nothing was forwarded. Try again shortly (raygate's log says why).\n",
        [("Retry-After", "5")],
    )


def audit_unavailable() -> Answer:
    """503 while audit lines cannot be written (fail-closed): the log says why, not the body."""
    return text(
        503,
        "Service Unavailable: raygate cannot write its audit log; nothing was forwarded. "
        "Try again shortly (raygate's log says why).\n",
        [("Retry-After", "5")],
    )


def upstream_timeout() -> Answer:
    return text(504, "Gateway Timeout: the Ray dashboard did not answer in time.\n")


def upstream_unreachable() -> Answer:
    """502. The body does not name the upstream: its private address is nobody's business."""
    return text(502, "Bad Gateway: the Ray dashboard is unreachable.\n")


def upstream_invalid() -> Answer:
    return text(502, "Bad Gateway: the Ray dashboard sent an invalid response.\n")


def bad_gateway(detail: str) -> Answer:
    return text(502, f"Bad Gateway: {detail}\n")


def too_large(detail: str) -> Answer:
    return text(413, f"Payload Too Large: {detail}.\n")


def headers_too_large(detail: str) -> Answer:
    return text(431, f"Request Header Fields Too Large: {detail}.\n")


def bad_request(detail: str) -> Answer:
    return text(400, f"Bad Request: {detail}\n")


def not_found(detail: str = "") -> Answer:
    return text(404, f"{detail}\n" if detail else "Not Found\n")


def forbidden_origin() -> Answer:
    return text(
        403,
        "Forbidden: the session cookie is only accepted from the dashboard's own pages "
        "(Origin and Sec-Fetch-Site say this request came from another site or port).\n",
    )


def method_not_allowed() -> Answer:
    return text(405, "Method Not Allowed\n", [("Allow", ALLOWED_METHODS)])


def options() -> Answer:
    return Answer(204, [("Allow", ALLOWED_METHODS)])


def request_timeout() -> Answer:
    return text(408, "Request Timeout: the request was not sent in time.\n")


def internal_error() -> Answer:
    return text(500, "Internal Server Error: raygate failed on this request; its log says why.\n")


def unavailable_shutting_down() -> Answer:
    return text(503, "Service Unavailable: raygate is shutting down.\n", [("Retry-After", "1")])


def self_subject_review(identity: Identity) -> Answer:
    """kubectl auth whoami's answer (authentication.k8s.io/v1 SelfSubjectReview)."""
    user_info: dict[str, object] = {"username": identity.user, "groups": list(identity.groups)}
    if identity.uid:
        user_info["uid"] = identity.uid
    if identity.extra:
        user_info["extra"] = {k: list(v) for k, v in identity.extra.items()}
    return json_answer(
        200,
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "SelfSubjectReview",
            "metadata": {"creationTimestamp": None},
            "status": {"userInfo": user_info},
        },
        [("Cache-Control", "no-store")],
    )
