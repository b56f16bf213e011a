"""Browser login to Ray's own dashboard, without a header-injecting extension.

Ray's dashboard UI (2.52+) already knows token login: when an API call gets 401/403 and
`/api/authentication_mode` says `token`, it asks for a token, sends it once to
`POST /api/authenticate` as a bearer token and from then on relies on the HttpOnly cookie
`ray-authentication-token`. raygate plays Ray's part in that exchange with *its own* tokens:

- the UI shell (`/`, `/favicon.ico`, `/static/...`) and `/api/authentication_mode` are served
  without credentials, as Ray serves them in token mode: they hold no cluster data;
- `POST /api/authenticate` is authenticated and authorized like a GET of the dashboard, then
  answered by raygate with the cookie set to the caller's token (Ray's token never leaves);
- the cookie is accepted as a bearer token on later requests, and never forwarded.

The cookie is HttpOnly and SameSite=Strict, so other sites can neither read it nor ride on it;
Ray itself refuses state-changing requests that come from a browser.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

import jwt
from aiohttp import web

from raygate.authz.paths import is_unambiguous_path
from raygate.pipeline.headers import RAY_TOKEN_COOKIE

AUTHENTICATION_MODE_PATH = "/api/authentication_mode"
AUTHENTICATE_PATH = "/api/authenticate"
# What Ray's dashboard serves without a token in its own token mode, minus its health checks.
UI_SHELL_PATHS = frozenset({"/", "/index.html", "/favicon.ico"})
UI_SHELL_PREFIXES = ("/static/",)
# Ray's own cookie lifetime; a JWT's expiry shortens it.
MAX_COOKIE_AGE = 30 * 24 * 3600


def is_ui_shell(method: str, raw_path: str) -> bool:
    """True for the dashboard's static shell: GET/HEAD of the page and its assets only.

    A path with dot segments or encoded separators is never the shell: Ray normalises paths,
    so `/static/../api/jobs/` would reach the API.
    """
    if method not in ("GET", "HEAD") or not is_unambiguous_path(raw_path):
        return False
    return raw_path in UI_SHELL_PATHS or raw_path.startswith(UI_SHELL_PREFIXES)


def same_origin(request: web.Request) -> bool:
    """May the session cookie count for this request? Only from the dashboard's own pages.

    SameSite=Strict keeps other *sites* out, but a site is a host name: a page served on
    another port of the same host (a notebook, a dev server) sends the cookie too, and
    WebSockets have no CORS. Browsers say where a request comes from (Sec-Fetch-Site, Origin);
    a client that says nothing (curl, scripts) is not a browser being tricked.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc.lower() != (request.host or "").lower():
        return False
    return True


def token_from_cookie(request: web.Request) -> str | None:
    token = request.cookies.get(RAY_TOKEN_COOKIE, "").strip()
    return token or None


async def authentication_mode(_request: web.Request) -> web.Response:
    """Tell the UI to ask for a token (the gateway's, whatever Ray's own mode is)."""
    return web.json_response({"authentication_mode": "token"})


def _cookie_age(token: str, now: float | None = None) -> int:
    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.PyJWTError:
        return MAX_COOKIE_AGE  # an opaque token (TokenReview): the backend decides each time
    if not isinstance(exp, int | float):
        return MAX_COOKIE_AGE
    return max(0, min(MAX_COOKIE_AGE, int(exp - (now or time.time()))))


def login_response(token: str, *, secure: bool) -> web.Response:
    """What Ray's /api/authenticate answers, with the cookie holding the caller's own token."""
    response = web.Response(
        text=json.dumps({"status": "authenticated", "message": "Token is valid"}),
        content_type="application/json",
    )
    response.set_cookie(
        RAY_TOKEN_COOKIE,
        token,
        max_age=_cookie_age(token),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=secure,
    )
    return response
