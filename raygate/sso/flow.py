"""Browser sign-in with an OpenID provider: the "browser session" step of the request path.

Transport independent: it reads a request head (method, raw target, headers, scheme, host)
and says who the caller is (`SignedIn`), or what to answer (`BrowserAnswer`: a redirect to the
provider, the callback's redirect back, a 401/403/400), or `None` (not a browser-session
request: bearer tokens, client certificates and the token dialog take it from there).

- A *browser* is a GET/HEAD that accepts `text/html` and carries no Authorization header; it is
  sent through the authorization-code flow with PKCE (S256), `state` and `nonce`. Everything
  else (API clients, the dashboard's own XHRs) gets 401 from the later steps, never a redirect.
- The callback address is built from the request's own scheme and host.
- `state` is single-use, expires after 10 minutes, and is bound to the browser that started the
  sign-in by a second cookie (so a callback link planted by someone else is refused).
- The session is a server-side record (`raygate.sso.store`) behind an HttpOnly, SameSite=Lax
  cookie named `__Host-raygate-session` with `Secure` (https, or http on a loopback address,
  which browsers treat as secure); on plain http elsewhere the `__Host-` prefix cannot be used
  and the cookie is `raygate-session`. It ends at the ID token's expiry unless the provider
  gave a refresh token, which renews it: one request at a time per session, in this process
  (an asyncio.Lock) and across the workers sharing the state directory
  (`raygate.sso.renewal_lock`), since a provider that rotates refresh tokens accepts each once.
- Requests that change state need same-origin proof (`Origin`, else `Sec-Fetch-Site`).
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from authlib.common.security import generate_token

from raygate.authn.oidc import OIDCAuthenticator, OIDCOptions, identity_from_claims
from raygate.config.values import is_loopback_host
from raygate.errors import BackendUnavailable, ProviderError, SignInError, StoreError
from raygate.identity import Identity
from raygate.sso.provider import (
    PKCE,
    OIDCProviderClient,
    TokenSet,
    in_task,
    new_state,
)
from raygate.sso.renewal_lock import RenewalLocks
from raygate.sso.store import PENDING_TTL, PendingSignIn, Session, SessionStore, SessionTokens

CALLBACK_PATH = "/oauth2/callback"
LOGIN_PATH = "/raygate/login"
LOGOUT_PATHS = ("/raygate/logout", "/oauth2/sign_out")
SIGNED_OUT_PATH = "/raygate/signed-out"
SESSION_COOKIE = "raygate-session"
SIGN_IN_COOKIE = "raygate-signin"
HOST_PREFIX = "__Host-"
# The query parameter that keeps Ray's own token dialog (service-account tokens): `/?login=token`.
TOKEN_LOGIN_PARAM = "login"
RAY_TOKEN_COOKIE = "ray-authentication-token"
# Renew a little before the ID token expires, so a request in flight does not carry a dead one.
REFRESH_MARGIN = 10.0
# How long a request waits for another worker renewing the same session before answering 503
# (the session is kept): twice the backend timeout (5 s by default; `browser_sign_in` passes
# the configured one), for the holder's provider call and then its ID-token check.
RENEWAL_WAIT = 10.0
# The cookie outlives the ID token when a refresh token can renew the session server-side.
REFRESHABLE_COOKIE_AGE = 7 * 24 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class HeaderLookup(Protocol):
    def get(self, name: str, default: str | None = None) -> str | None: ...


class RequestHeadLike(Protocol):
    """What this step reads of a request (`raygate.pipeline.RequestHead` has it all)."""

    @property
    def method(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def headers(self) -> HeaderLookup: ...
    @property
    def scheme(self) -> str: ...
    @property
    def host(self) -> str: ...


@dataclass(frozen=True)
class SignedIn:
    identity: Identity
    session: str  # the session's name, as `raygate get sessions` shows it


@dataclass(frozen=True)
class BrowserAnswer:
    """Answer this; nothing is forwarded. `decision`/`reason` go to the audit record."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    decision: str
    reason: str = ""
    identity: Identity | None = None


def cookies(head: RequestHeadLike) -> dict[str, str]:
    """The Cookie header's pairs (the first of a repeated name wins, as browsers order them)."""
    found: dict[str, str] = {}
    for part in (head.headers.get("Cookie") or "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name and name not in found:
            found[name] = value.strip().strip('"')
    return found


def _split(target: str) -> tuple[str, str]:
    path, _, query = target.partition("?")
    return path, query


def secure_cookies(head: RequestHeadLike) -> bool:
    """May cookies be `Secure` (and so `__Host-`)? Under TLS, and on loopback, where browsers
    treat plain http as a secure context."""
    return head.scheme == "https" or _loopback_authority(head.host)


@functools.lru_cache(maxsize=256)
def _loopback_authority(host: str) -> bool:
    # Asked on every request with a cookie; hosts are few (bounded cache: Host is the client's).
    try:
        return is_loopback_host(urlsplit(f"//{host}").hostname)
    except ValueError:
        return False


def cookie_name(base: str, head: RequestHeadLike) -> str:
    return HOST_PREFIX + base if secure_cookies(head) else base


def _set_cookie(head: RequestHeadLike, base: str, value: str, max_age: int) -> tuple[str, str]:
    parts = [f"{cookie_name(base, head)}={value}", "Path=/", "HttpOnly", "SameSite=Lax"]
    if secure_cookies(head):
        parts.append("Secure")
    parts.append(f"Max-Age={max_age}")
    return ("Set-Cookie", "; ".join(parts))


def _clear_cookie(head: RequestHeadLike, base: str) -> tuple[str, str]:
    return _set_cookie(head, base, "", 0)


def is_browser_navigation(head: RequestHeadLike) -> bool:
    """A person's browser opening a page: GET/HEAD accepting text/html, no Authorization."""
    if head.method not in ("GET", "HEAD") or head.headers.get("Authorization"):
        return False
    if head.headers.get("Upgrade"):
        return False
    return "text/html" in (head.headers.get("Accept") or "").lower()


def wants_token_dialog(head: RequestHeadLike) -> bool:
    """Ray's own token dialog (service-account tokens) stays: `/?login=token`, or a browser
    that already holds the dialog's cookie, is not sent to the provider."""
    _, query = _split(head.target)
    if parse_qs(query).get(TOKEN_LOGIN_PARAM) == ["token"]:
        return True
    return RAY_TOKEN_COOKIE in cookies(head)


def same_origin(head: RequestHeadLike) -> bool:
    """May the session cookie count for this request?

    SameSite=Lax keeps other *sites* from riding on it except in top-level GET navigations,
    but a site is a host name: a page on another port of the same host (a notebook, a dev
    server) sends it too. So: an `Origin` must be this origin; a request that changes state
    must prove it is same-origin (Origin, or else Sec-Fetch-Site); a GET from elsewhere counts
    only as a top-level navigation (a link to the dashboard).
    """
    headers = head.headers
    origin = headers.get("Origin")
    site = headers.get("Sec-Fetch-Site")
    unsafe = head.method not in SAFE_METHODS
    if origin is not None:
        parts = urlsplit(origin)
        if parts.scheme != head.scheme or parts.netloc.lower() != head.host.lower():
            return False
    elif unsafe and site != "same-origin":
        return False
    if site is not None and site not in ("same-origin", "none"):
        return (
            not unsafe
            and headers.get("Sec-Fetch-Mode") == "navigate"
            and not headers.get("Upgrade")
        )
    return True


def safe_return_to(target: str) -> str:
    """Only a path on this gateway: never `//evil.example` or `/\\evil`, never a URL."""
    if (
        not target.startswith("/")
        or target.startswith(("//", "/\\"))
        or any(c in target for c in "\r\n")
    ):
        return "/"
    return target


def _text(
    status: int, text: str, decision: str, reason: str = "", headers: Sequence[tuple[str, str]] = ()
) -> BrowserAnswer:
    return BrowserAnswer(
        status,
        (("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store"), *headers),
        text.encode(),
        decision,
        reason or text.splitlines()[0],
    )


def _redirect(
    location: str,
    decision: str,
    reason: str,
    headers: Sequence[tuple[str, str]] = (),
    identity: Identity | None = None,
) -> BrowserAnswer:
    return BrowserAnswer(
        302,
        (("Location", location), ("Cache-Control", "no-store"), *headers),
        b"",
        decision,
        reason,
        identity,
    )


SIGNED_OUT_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Signed out</title></head>
<body><p>You are signed out of the Ray dashboard.</p><p><a href="/">Sign in again</a></p></body></html>
"""


@dataclass
class BrowserSignIn:
    """The browser sign-in step. One per gateway; `close()` on shutdown."""

    provider: OIDCProviderClient
    verifier: OIDCAuthenticator
    options: OIDCOptions
    store: SessionStore
    locks: RenewalLocks
    clock: Callable[[], float] = time.time
    renewal_wait: float = RENEWAL_WAIT
    _refreshing: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def close(self) -> None:
        await self.provider.close()
        await self.verifier.close()
        self.store.close()
        self.locks.close()

    # -- routes of its own ----------------------------------------------------------------------
    def is_route(self, head: RequestHeadLike) -> bool:
        path, _ = _split(head.target)
        return path in (CALLBACK_PATH, LOGIN_PATH, SIGNED_OUT_PATH, *LOGOUT_PATHS)

    async def route(self, head: RequestHeadLike) -> BrowserAnswer:
        path, query = _split(head.target)
        params = parse_qs(query)
        if path == CALLBACK_PATH:
            if head.method != "GET":
                return _text(405, "Method Not Allowed\n", "deny", headers=(("Allow", "GET"),))
            return await self._callback(head, params)
        if path in LOGOUT_PATHS:
            return await self._logout(head)
        if path == SIGNED_OUT_PATH:
            return BrowserAnswer(
                200,
                (("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")),
                SIGNED_OUT_PAGE.encode(),
                "public",
            )
        # LOGIN_PATH: start a sign-in explicitly, back to `rd` afterwards.
        return await self._start(head, safe_return_to(params.get("rd", ["/"])[0]))

    # -- the step -----------------------------------------------------------------------------
    async def session(self, head: RequestHeadLike) -> SignedIn | BrowserAnswer | None:
        """Who the session cookie says, or the answer for a browser without a valid session;
        None when this step has nothing to say (a bearer token, an API client, the token
        dialog)."""
        if head.headers.get("Authorization"):
            return None
        secret = cookies(head).get(cookie_name(SESSION_COOKIE, head))
        if not secret:
            if is_browser_navigation(head) and not wants_token_dialog(head):
                return await self._start(head, safe_return_to(head.target))
            return None
        if not same_origin(head):
            return _text(
                403,
                "Forbidden: the session cookie is only accepted from the dashboard's own pages "
                "(Origin and Sec-Fetch-Site say this request came from another site or port).\n",
                "deny",
                "session cookie sent by another origin",
            )
        try:
            session = self.store.lookup(secret)
        except StoreError as err:
            raise BackendUnavailable(str(err)) from None
        if session is None:
            return await self._ended(head, "session unknown, revoked or signed out")
        if self._renewal_due(session, secret):
            refreshed = await self._refresh(head, secret, session)
            if not isinstance(refreshed, Session):
                return refreshed
            session = refreshed
        return SignedIn(session.identity, session.name)

    def _renewal_due(self, session: Session, secret: str) -> bool:
        """Past the ID token's expiry; or, with a refresh token, a little before it (never
        more than a quarter of the token's lifetime, so short-lived tokens are not renewed on
        every request)."""
        now = self.clock()
        if now >= session.expires:
            return True
        margin = min(REFRESH_MARGIN, (session.expires - session.refreshed) / 4)
        if now < session.expires - margin:
            return False
        tokens = session.tokens(secret)
        return tokens is not None and tokens.refresh_token is not None

    async def _ended(self, head: RequestHeadLike, reason: str) -> BrowserAnswer:
        """No (more) session: a browser signs in again; anything else gets 401."""
        clear = _clear_cookie(head, SESSION_COOKIE)
        if is_browser_navigation(head):
            return await self._start(
                head, safe_return_to(head.target), reason=reason, extra=(clear,)
            )
        return _text(
            401,
            "Unauthorized: your sign-in session has ended (expired, revoked or signed out). "
            "Reload the page to sign in again.\n",
            "unauthenticated",
            reason,
            headers=(clear, ("WWW-Authenticate", 'Bearer realm="raygate"')),
        )

    async def _refresh(
        self, head: RequestHeadLike, secret: str, session: Session
    ) -> Session | BrowserAnswer:
        """Renew the session once, whichever request of whichever worker gets there first;
        the others use what it stored."""
        lock = self._refreshing.setdefault(session.key, asyncio.Lock())
        try:
            async with lock:
                # Another request may have renewed it while this one waited.
                current = self.store.lookup(secret)
                if current is None:
                    return await self._ended(head, "session revoked")
                if not self._renewal_due(current, secret):
                    return current
                # Another worker may be renewing it: while its ID token holds, go on with it
                # rather than wait; once expired, wait for that renewal (bounded).
                still_valid = self.clock() < current.expires
                wait = 0.0 if still_valid else self.renewal_wait
                if not await self.locks.acquire(current.key, wait):
                    if still_valid:
                        return current
                    raise BackendUnavailable(
                        "another gateway worker has been renewing this sign-in session for "
                        f"over {self.renewal_wait:g}s (is the identity provider slow?)"
                    )
                try:
                    return await self._renew(head, secret)
                finally:
                    self.locks.release(current.key)
        except StoreError as err:
            raise BackendUnavailable(str(err)) from None
        finally:
            if not lock.locked():
                self._refreshing.pop(session.key, None)

    async def _renew(self, head: RequestHeadLike, secret: str) -> Session | BrowserAnswer:
        """The renewal itself, under the session's locks (raises StoreError)."""
        # Read again: another worker may have renewed it before this one got the lock.
        current = self.store.lookup(secret)
        if current is None:
            return await self._ended(head, "session revoked")
        if not self._renewal_due(current, secret):
            return current
        tokens = current.tokens(secret)
        if tokens is None or tokens.refresh_token is None:
            self.store.delete_secret(secret)
            return await self._ended(head, "session expired with its ID token")
        try:
            renewed = await self.provider.refresh(tokens.refresh_token)
            identity, expires = await self._verify(renewed, nonce=None)
        except SignInError as err:
            self.store.delete_secret(secret)
            return await self._ended(head, f"session could not be renewed: {err}")
        if not self.store.update(
            secret,
            identity,
            expires,
            SessionTokens(renewed.id_token, renewed.refresh_token),
        ):
            return await self._ended(head, "session revoked")
        updated = self.store.lookup(secret)
        return updated if updated is not None else await self._ended(head, "session revoked")

    # -- sign-in ------------------------------------------------------------------------------
    def redirect_uri(self, head: RequestHeadLike) -> str:
        return f"{head.scheme}://{head.host}{CALLBACK_PATH}"

    async def _start(
        self,
        head: RequestHeadLike,
        return_to: str,
        *,
        reason: str = "no session: sent to the identity provider",
        extra: Sequence[tuple[str, str]] = (),
    ) -> BrowserAnswer:
        existing = cookies(head).get(cookie_name(SIGN_IN_COOKIE, head))
        # Several tabs signing in at once share one browser secret (a new one would orphan
        # the others' pending sign-ins).
        browser_secret = existing if existing and len(existing) >= 32 else generate_token(43)
        pkce = PKCE.new()
        state, nonce = new_state(), generate_token(32)
        redirect_uri = self.redirect_uri(head)
        try:
            location = await self.provider.authorization_url(
                redirect_uri, state=state, nonce=nonce, code_challenge=pkce.challenge
            )
            self.store.add_pending(
                state, browser_secret, PendingSignIn(pkce.verifier, nonce, redirect_uri, return_to)
            )
        except StoreError as err:
            raise BackendUnavailable(str(err)) from None
        cookie = _set_cookie(head, SIGN_IN_COOKIE, browser_secret, int(PENDING_TTL))
        return _redirect(location, "sign-in", reason, (cookie, *extra))

    async def _callback(self, head: RequestHeadLike, params: dict[str, list[str]]) -> BrowserAnswer:
        def one(name: str) -> str | None:
            values = params.get(name, [])
            return values[0] if len(values) == 1 else None

        state, code, error = one("state"), one("code"), one("error")
        clear_sign_in = _clear_cookie(head, SIGN_IN_COOKIE)
        if state is None:
            return _text(
                400, "Bad Request: the sign-in callback has no state.\n", "unauthenticated"
            )
        pending = self.store.take_pending(
            state, cookies(head).get(cookie_name(SIGN_IN_COOKIE, head))
        )
        if pending is None:
            return _text(
                400,
                "Bad Request: unknown, expired or already used sign-in state (or it was started "
                "in another browser). Open the dashboard again to sign in.\n",
                "unauthenticated",
                "forged, replayed or expired state",
            )
        issuer = one("iss")
        if issuer is not None and issuer != self.options.issuer_url:
            # RFC 9207: the answer came from another provider (a mix-up attack).
            return _text(
                400, "Bad Request: the sign-in answer names another issuer.\n", "unauthenticated"
            )
        if error is not None:
            return _text(
                403,
                f"Forbidden: the identity provider refused the sign-in ({error}).\n",
                "unauthenticated",
                f"provider refused sign-in: {error}",
                headers=(clear_sign_in,),
            )
        if code is None:
            return _text(400, "Bad Request: the sign-in callback has no code.\n", "unauthenticated")
        try:
            tokens = await self.provider.exchange_code(code, pending.redirect_uri, pending.verifier)
            identity, expires = await self._verify(tokens, nonce=pending.nonce)
        except ProviderError as err:
            return _text(
                400,
                f"Bad Request: the identity provider did not accept the sign-in code ({err.error}); "
                "it may have been used already. Open the dashboard again to sign in.\n",
                "unauthenticated",
                f"code refused by the provider: {err.error}",
                headers=(clear_sign_in,),
            )
        except SignInError as err:
            return _text(
                403, f"Forbidden: {err}.\n", "unauthenticated", str(err), headers=(clear_sign_in,)
            )
        try:
            secret, session = self.store.create(
                identity, expires, SessionTokens(tokens.id_token, tokens.refresh_token)
            )
        except StoreError as err:
            raise BackendUnavailable(str(err)) from None
        max_age = (
            REFRESHABLE_COOKIE_AGE if tokens.refresh_token else max(1, int(expires - self.clock()))
        )
        return _redirect(
            pending.return_to,
            "sign-in",
            f"signed in ({session.name})",
            (_set_cookie(head, SESSION_COOKIE, secret, max_age), clear_sign_in),
            identity,
        )

    async def _verify(self, tokens: TokenSet, *, nonce: str | None) -> tuple[Identity, float]:
        claims = await in_task(self.verifier.verify(tokens.id_token))
        if claims is None:
            raise SignInError(
                "the provider's ID token did not verify (issuer, audience, signature or expiry)"
            )
        if nonce is not None:
            got = claims.get("nonce")
            if not isinstance(got, str) or not secrets.compare_digest(got, nonce):
                raise SignInError("the ID token's nonce does not match this sign-in")
        identity = identity_from_claims(self.options, claims)
        if identity is None:
            raise SignInError(
                f"the provider's user cannot be used: no usable {self.options.username_claim!r} "
                "claim (or an unverified email, or a reserved system: name)"
            )
        return identity, float(claims["exp"])

    # -- sign-out -----------------------------------------------------------------------------
    async def _logout(self, head: RequestHeadLike) -> BrowserAnswer:
        if head.method not in ("GET", "POST"):
            return _text(405, "Method Not Allowed\n", "deny", headers=(("Allow", "GET, POST"),))
        if head.method == "POST" and not same_origin(head):
            return _text(403, "Forbidden: sign-out from another origin.\n", "deny")
        secret = cookies(head).get(cookie_name(SESSION_COOKIE, head))
        id_token = None
        identity = None
        if secret:
            try:
                session = self.store.lookup(secret)
                if session is not None:
                    identity = session.identity
                    tokens = session.tokens(secret)
                    id_token = tokens.id_token if tokens else None
                    self.store.delete_secret(secret)
            except StoreError as err:
                raise BackendUnavailable(str(err)) from None
        signed_out = f"{head.scheme}://{head.host}{SIGNED_OUT_PATH}"
        location = await self.provider.end_session_url(
            id_token_hint=id_token, post_logout_redirect_uri=signed_out
        )
        clear = _clear_cookie(head, SESSION_COOKIE)
        return _redirect(location or SIGNED_OUT_PATH, "sign-out", "signed out", (clear,), identity)
