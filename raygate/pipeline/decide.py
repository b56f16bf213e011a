"""The decision for one request: forward it as someone, or answer it here. In that order, always.

`Pipeline.decide` is the one place a request is judged; every door calls it (the HTTP data plane
and its WebSocket upgrades, and the Ray Client and Serve doors). Nothing is forwarded unless
every Attributes of the request was allowed, or a path rule says it needs no identity.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from raygate.authz.cache import jwt_expiry, unverified_claims
from raygate.authz.paths import PathAction
from raygate.cache import TTLCache
from raygate.errors import BackendUnavailable, UpstreamError
from raygate.identity import Attributes, Decision, Identity
from raygate.observe.audit import AuditDecision, AuditLog, AuditRecord, new_request_id
from raygate.observe.metrics import GatewayMetrics
from raygate.pipeline import browser, responses
from raygate.pipeline.authority import Authority
from raygate.pipeline.head import Headers, RequestHead
from raygate.pipeline.headers import GATEWAY_COOKIES, upstream_request_headers
from raygate.pipeline.outcome import Answer, BufferedResponse, Forward, HeaderList
from raygate.pipeline.profiles import Profile
from raygate.sso.flow import BrowserAnswer, BrowserSignIn, SignedIn

log = logging.getLogger("raygate.gateway")

# Bearer tokens above this size are refused before any backend sees them.
MAX_TOKEN_BYTES = 16 * 1024
# An authority that neither answers nor fails would hold every request: answer 503 instead.
DEFAULT_BACKEND_TIMEOUT = 5.0
BACKEND_DOWN_REMINDER = 60.0  # seconds between "still unavailable" log lines
# Methods that only ever echo or tunnel: never sent upstream with Ray's credentials.
REFUSED_METHODS = frozenset({"TRACE", "TRACK", "CONNECT"})
# How long an allowed decision (and an identity) is reused without asking the authority again.
# Short: the authority's own caches hold answers longer; this only spares the hot path the work
# of verifying a token and walking RBAC for every request of a busy client. The embedded
# store's changes drop it at once (the authority's revision).
DECISION_TTL = 1.0
# Who the gateway takes the caller for (`raygate whoami`): a SelfSubjectReview.
WHOAMI_PATH = "/raygate/whoami"
# Entries of the identity and decision caches, at most. They live DECISION_TTL, and those
# expired (or learnt under an older revision) are swept out every SWEEP_INTERVAL, so the caches
# hold a second's worth of distinct callers, up to this many: a flood of new tokens costs a
# worker about 1.5 MiB here (~700 bytes an entry), whatever its rate.
CACHE_ENTRIES = 2048
SWEEP_INTERVAL = 0.1
# A bearer token that failed verification (bad signature, unknown key, malformed, expired) is
# remembered by its digest for this long, under the authority's revision: the same token again
# costs a lookup, not an RSA verification (kube-rbac-proxy's delegating authenticator keeps failed
# TokenReviews for its cache TTL, 10 s by default). A store change asks again at once; a backend
# that failed (503) is not an answer and is never remembered. Bounded apart from the identities,
# so garbage pushes no caller out.
FAILED_TOKEN_TTL = 5.0
FAILED_TOKEN_ENTRIES = 4096


@dataclass
class AuthHeaders:
    """kube-rbac-proxy's --auth-header-* settings: identity passed to the upstream."""

    enabled: bool = True
    user_field: str = "X-Remote-User"
    groups_field: str = "X-Remote-Group"
    groups_separator: str = "|"


@dataclass
class PipelineSettings:
    authority: Authority
    profile: Profile
    upstream_token: str | None = None
    auth_headers: AuthHeaders = field(default_factory=AuthHeaders)
    audit: AuditLog | None = None
    metrics: GatewayMetrics | None = None
    # Paths answered without authentication (OIDC discovery, JWKS): (content type, body).
    public_routes: Mapping[str, tuple[str, bytes]] = field(default_factory=dict)
    # kube-rbac-proxy --allow-paths / --ignore-paths, on the raw path: None authorizes all.
    path_action: Callable[[str], PathAction] | None = None
    # Identify callers without a token by their verified TLS client certificate.
    client_certificates: bool = False
    forward_client_authorization: bool = False
    # X-Forwarded-For/-Proto/-Host for the upstream (config: upstream.forwardedHeaders).
    forwarded_headers: bool = True
    # Ray's dashboard UI logs in with a raygate token (see pipeline/browser.py).
    browser_login: bool = False
    realm: str = "raygate"
    backend_timeout: float | None = DEFAULT_BACKEND_TIMEOUT
    decision_ttl: float = DECISION_TTL
    # People signing in with an OpenID provider (raygate.sso.flow): sessions, callback, logout.
    browser_sign_in: BrowserSignIn | None = None


class UpstreamCalls:
    """The pipeline's own calls to the upstream (profile hooks); the data plane provides them."""

    async def fetch(
        self, method: str, target: str, headers: HeaderList, limit: int
    ) -> BufferedResponse:
        raise UpstreamError("no upstream connected to the pipeline")


@dataclass(slots=True)
class _Allowed:
    identity: Identity
    attributes: Sequence[Attributes]
    reason: str
    expires: float
    revision: int


# What identifies a repeated request on one connection: method, target and every header line.
MemoKey = tuple[str, str, tuple[tuple[str, str], ...]]


@dataclass(slots=True)
class DecisionMemo:
    """One connection's last request that a cached decision allowed, and what it was forwarded
    with.

    A client on a keep-alive connection mostly repeats itself (the dashboard polling, a job
    status loop): the same method, target and header lines as its request before. Within that
    decision's life (DECISION_TTL, never past the token's exp, dropped by any store revision)
    the same request has the same decision and the same upstream headers, so the steps are
    not walked again. The connection holds it (one request's worth) and it goes with it.
    """

    key: MemoKey | None = None
    # The Headers the key was made of: a data plane that hands the same (unchanged) Headers
    # object again for the same header lines spares the comparison.
    source: Headers | None = None
    allowed: _Allowed | None = None
    headers: HeaderList = field(default_factory=list)
    user_agent: str | None = None  # of the request it holds, for each repeat's audit record


def _bearer_token(head: RequestHead) -> str | None:
    value = head.headers.get("Authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def _ambiguous_credential(head: RequestHead) -> str | None:
    """Why the request names two credentials of one kind, else None. Each could be read by a
    different party (the gateway the first, a proxy or Ray the last): refused, never guessed."""
    headers = head.headers
    authorization = headers.getall("Authorization")
    if len(authorization) > 1:
        return "more than one Authorization header"
    if authorization and "," in authorization[0]:
        # No bearer token holds a comma (RFC 6750 b64token): this is a list of credentials.
        return "more than one credential in the Authorization header"
    cookies = headers.getall("Cookie")
    if not cookies:
        return None
    joined = "; ".join(cookies)
    if not any(joined.count(name) > 1 for name in GATEWAY_COOKIES):
        return None
    # Rare: only a request naming one of the gateway's cookies twice gets here.
    seen: set[str] = set()
    for pair in joined.split(";"):
        name = pair.partition("=")[0].strip()
        if name in GATEWAY_COOKIES:
            if name in seen:
                return f"more than one {name} cookie"
            seen.add(name)
    return None


class _Identified(NamedTuple):
    """An identity cache entry: who a credential was, until when, under which revision."""

    identity: Identity
    expires: float  # time.monotonic()
    revision: int


def _key(credential: str) -> bytes:
    """Caches key credentials by hash: they never hold a usable token."""
    return hashlib.sha256(credential.encode("utf-8", "surrogateescape")).digest()


def _credential_key(credential: str | bytes) -> bytes:
    """A token's key, or a client certificate's (its DER's hash: no whole certificate kept)."""
    return (
        hashlib.sha256(credential).digest() if isinstance(credential, bytes) else _key(credential)
    )


def _bounded_put(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= CACHE_ENTRIES:
        # The oldest eighth out in one pass: deleting the first key one at a time would walk
        # the holes earlier deletions left at the front of the dict, on every put.
        for oldest in list(itertools.islice(cache, CACHE_ENTRIES // 8)):
            del cache[oldest]
    cache[key] = value


def _drop_stale(cache: dict[Any, Any], now: float, revision: int) -> None:
    """Drop the entries (with `expires` and `revision`) no lookup would take any more."""
    stale = [k for k, v in cache.items() if v.expires <= now or v.revision != revision]
    for key in stale:
        del cache[key]


def _failure_ttl(token: str) -> float:
    """How long a token that failed verification may be taken as invalid without asking again:
    FAILED_TOKEN_TTL, but not at all when its (unverified) `nbf` or `iat` lies in the future,
    as it may be a valid token from a clock slightly ahead that becomes valid within seconds."""
    claims = unverified_claims(token)
    if claims is not None:
        now = time.time()
        for name in ("nbf", "iat"):
            value = claims.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value > now:
                return 0.0
    return FAILED_TOKEN_TTL


class Pipeline:
    """Decides requests. One per process; its caches are per process (per worker)."""

    def __init__(self, settings: PipelineSettings, upstream: UpstreamCalls | None = None) -> None:
        self.settings = settings
        self.upstream = upstream or UpstreamCalls()
        self._identity_headers = (
            settings.auth_headers.user_field,
            settings.auth_headers.groups_field,
        )
        self._identities: dict[bytes, _Identified] = {}
        self._allowed: dict[tuple[bytes, str, str], _Allowed] = {}
        # Tokens that failed verification lately: digest -> the revision they failed under.
        self._failed: TTLCache[int] = TTLCache(FAILED_TOKEN_ENTRIES)
        self._sweep_due = 0.0
        self._cached_for = settings.authority  # answers cached are this authority's
        # The cached decision the request being decided was allowed by (for DecisionMemo).
        self._last_allowed: _Allowed | None = None
        # When the authority went down, and when that was last logged: one line per outage
        # (and a reminder a minute), not one per refused request.
        self._backend_down_since: float | None = None
        self._backend_logged_at = 0.0
        self._backend_reason = ""

    # -- the decision ------------------------------------------------------------------------
    async def decide(self, head: RequestHead, memo: DecisionMemo | None = None) -> Forward | Answer:
        """Forward (as whom, with which headers) or Answer. Never raises.

        `memo`: the connection's own (see DecisionMemo); a request repeating the one it holds
        is decided from it."""
        if memo is not None:
            repeated = self.repeated(head, memo)
            if repeated is not None:
                return repeated
        record = AuditRecord(new_request_id(), head.method, head.target, head.peer)
        record.user_agent = head.headers.get("User-Agent")
        audit = self.settings.audit
        refusal = audit.refusal() if audit is not None and audit.refusing else None
        if refusal is not None:
            # Fail closed: nothing is forwarded while its audit line could not be kept.
            record.decision = AuditDecision.UNAVAILABLE
            record.reason = refusal
            return self._answer(responses.audit_unavailable(), record)
        try:
            forward = await self._decide(head, record)
            if memo is not None and isinstance(forward, Forward):
                self._memorize(memo, head, forward)
            return forward
        except BackendUnavailable as err:  # a profile hook's own authorization
            record.decision = AuditDecision.UNAVAILABLE
            record.reason = str(err)
            self._backend_failed("authorization", err)
            return self._answer(responses.unavailable(str(err)), record)
        except (OSError, TimeoutError, UpstreamError) as err:  # a profile hook's upstream call
            log.warning("upstream call failed: %s", err or type(err).__name__)
            answer = (
                responses.upstream_timeout()
                if isinstance(err, TimeoutError)
                else responses.upstream_unreachable()
            )
            return self._answer(answer, record)
        except Exception:
            log.exception("deciding %s %s failed", head.method, head.path)
            record.decision = AuditDecision.ERROR
            return self._answer(responses.internal_error(), record)

    async def _decide(self, head: RequestHead, record: AuditRecord) -> Forward | Answer:
        settings = self.settings
        if settings.authority is not self._cached_for:
            self._identities.clear()
            self._allowed.clear()
            self._failed = TTLCache(FAILED_TOKEN_ENTRIES)
            self._cached_for = settings.authority
        path = head.path
        # 0. two credentials of one kind: ambiguous, whichever one would be taken
        ambiguous = _ambiguous_credential(head)
        if ambiguous is not None:
            record.decision = AuditDecision.DENY
            record.reason = ambiguous
            return self._answer(responses.bad_request(ambiguous), record)
        # 1. path rules
        if head.method in REFUSED_METHODS:
            return self._answer(responses.method_not_allowed(), record)
        if settings.path_action is not None:
            action = settings.path_action(path)
            if action is PathAction.NOT_FOUND:
                return self._answer(responses.not_found(), record)
            if action is PathAction.SKIP_AUTH:
                record.decision = AuditDecision.IGNORED_PATH
                return self._anonymous(head, record)
        # 2. public routes
        public = settings.public_routes.get(path)
        if public is not None and head.method in ("GET", "HEAD"):
            record.decision = AuditDecision.PUBLIC
            return self._answer(Answer(200, [("Content-Type", public[0])], public[1]), record)
        # 3. browser session: a person's sign-in session (or the way to one); the UI shell goes
        # anonymous; Ray's token dialog is the gateway's
        signed_in = None
        if settings.browser_sign_in is not None:
            step = await self._browser_session(settings.browser_sign_in, head, record)
            if isinstance(step, Answer):
                return self._answer(step, record)
            signed_in = step
        if path == WHOAMI_PATH and head.method == "GET":
            return self._answer(await self._whoami(head, signed_in, record), record)
        if signed_in is not None:
            identity = record.identity = signed_in.identity
            return await self._authorized_forward(head, identity, record)
        if settings.browser_login:
            if head.method == "GET" and path == browser.AUTHENTICATION_MODE_PATH:
                return self._answer(browser.authentication_mode(), record)
            if browser.is_ui_shell(head.method, path):
                record.decision = AuditDecision.UI_SHELL
                return self._anonymous(head, record)
        # 4. authenticate (and, for a credential allowed this very request lately, authorize)
        credential = self._credential(head, record)
        if isinstance(credential, Answer):
            return self._answer(credential, record)
        allowed = self._recently_allowed(credential, head, path)
        self._last_allowed = allowed
        if allowed is not None:
            identity = record.identity = allowed.identity
            record.attributes = list(allowed.attributes)
            record.decision = AuditDecision.ALLOW
            record.reason = allowed.reason
            if settings.metrics is not None:
                settings.metrics.decision_cached()
        else:
            identity_or_answer = await self._authenticate(credential, head, record)
            if isinstance(identity_or_answer, Answer):
                return self._answer(identity_or_answer, record)
            identity = identity_or_answer
            if (
                settings.browser_login
                and head.method == "POST"
                and path == browser.AUTHENTICATE_PATH
            ):
                return self._answer(await self._browser_login(head, identity, record), record)
            # 5. attributes, 6. authorize
            denied = await self._authorize(head, identity, record)
            if denied is not None:
                return self._answer(denied, record)
            self._last_allowed = self._remember_allowed(credential, head, path, record)
        return await self._after_authorization(head, identity, record)

    async def _authorized_forward(
        self, head: RequestHead, identity: Identity, record: AuditRecord
    ) -> Forward | Answer:
        """Steps 5 to 7 for an identity known without a credential (a browser session)."""
        denied = await self._authorize(head, identity, record)
        if denied is not None:
            return self._answer(denied, record)
        return await self._after_authorization(head, identity, record)

    async def _after_authorization(
        self, head: RequestHead, identity: Identity, record: AuditRecord
    ) -> Forward | Answer:
        if head.method == "OPTIONS":
            return self._answer(responses.options(), record)
        # 7. profile hooks
        forward = Forward(identity, self.upstream_headers(head, identity), record)
        answer = await self.settings.profile.after_authorization(forward, head, self)
        if answer is not None:
            return self._answer(answer, record)
        return forward

    async def _browser_session(
        self, sign_in: BrowserSignIn, head: RequestHead, record: AuditRecord
    ) -> SignedIn | Answer | None:
        """The sign-in step's own routes (callback, logout), the session a cookie names, or a
        browser sent to the provider. 503 when the provider or the session store cannot
        answer: nothing is forwarded."""
        try:
            if sign_in.is_route(head):
                step: SignedIn | BrowserAnswer | None = await sign_in.route(head)
            else:
                step = await sign_in.session(head)
        except BackendUnavailable as err:
            record.decision = AuditDecision.UNAVAILABLE
            record.reason = str(err)
            self._backend_failed("sign-in", err)
            return responses.unavailable(str(err))
        if isinstance(step, BrowserAnswer):
            record.decision = AuditDecision(step.decision)
            record.reason = step.reason
            record.identity = step.identity
            return Answer(step.status, list(step.headers), step.body)
        return step

    async def _whoami(
        self, head: RequestHead, signed_in: SignedIn | None, record: AuditRecord
    ) -> Answer:
        """`raygate whoami`: who the gateway takes the caller for (kubectl auth whoami's
        SelfSubjectReview). Any authenticated caller may ask, as in Kubernetes."""
        if signed_in is not None:
            identity: Identity = signed_in.identity
            record.identity = identity
        else:
            credential = self._credential(head, record)
            if isinstance(credential, Answer):
                return credential
            found = await self._authenticate(credential, head, record)
            if isinstance(found, Answer):
                return found
            identity = found
        record.decision = AuditDecision.ALLOW
        record.reason = "whoami"
        return responses.self_subject_review(identity)

    # -- steps -------------------------------------------------------------------------------
    def _credential(self, head: RequestHead, record: AuditRecord) -> str | bytes | Answer:
        """The caller's bearer token (header, or the browser's session cookie), else its
        verified client certificate (DER bytes); or the 401/403 to answer."""
        token = _bearer_token(head)
        if token is None and self.settings.browser_login:
            token = browser.token_from_cookie(head)
            if token is not None and not browser.same_origin(head):
                # SameSite ignores ports: another page on this host would ride on the cookie.
                record.decision = AuditDecision.DENY
                record.reason = "session cookie sent by another origin"
                return responses.forbidden_origin()
        if token is None:
            if self.settings.client_certificates and head.peer_certificate:
                return head.peer_certificate
            record.decision = AuditDecision.UNAUTHENTICATED
            record.reason = "no bearer token"
            return responses.unauthorized(self.settings.realm, missing=True)
        if len(token) > MAX_TOKEN_BYTES or not token.isascii():
            # RFC 6750 tokens are ASCII; anything else is refused before any backend sees it.
            record.decision = AuditDecision.UNAUTHENTICATED
            record.reason = "token too large" if token.isascii() else "token not ASCII"
            return responses.unauthorized(self.settings.realm, missing=False)
        return token

    async def _authenticate(
        self, credential: str | bytes, head: RequestHead, record: AuditRecord
    ) -> Identity | Answer:
        key = _credential_key(credential)
        revision = self.settings.authority.revision
        now = time.monotonic()
        if now >= self._sweep_due:
            self._sweep_due = now + SWEEP_INTERVAL
            _drop_stale(self._identities, now, revision)
            _drop_stale(self._allowed, now, revision)
        cached = self._identities.get(key)
        identity: Identity | None
        if cached is not None and cached.expires > now and cached.revision == revision:
            identity = cached.identity
        elif isinstance(credential, str) and self._failed.lookup(key) == revision:
            identity = None  # failed verification lately, and nothing changed since
        else:
            try:
                identity = await self._identify(credential)
            except BackendUnavailable as err:
                record.decision = AuditDecision.UNAVAILABLE
                record.reason = str(err)
                self._backend_failed("authentication", err)
                return responses.unavailable(str(err))
            if identity is not None:
                ttl = self.settings.decision_ttl
                if isinstance(credential, str):
                    exp = jwt_expiry(credential)
                    if exp is not None:
                        ttl = min(ttl, exp - time.time())
                if ttl > 0:
                    _bounded_put(self._identities, key, _Identified(identity, now + ttl, revision))
            elif isinstance(credential, str):
                # Under the revision read before the verification: if the store changed
                # meanwhile, this entry is never taken.
                self._failed.put(key, revision, _failure_ttl(credential))
        if identity is None:
            record.decision = AuditDecision.UNAUTHENTICATED
            if isinstance(credential, bytes):
                record.reason = "client certificate without a user name"
                return responses.unauthorized(self.settings.realm, missing=True)
            record.reason = "invalid bearer token"
            return responses.unauthorized(self.settings.realm, missing=False)
        record.identity = identity
        return identity

    async def _identify(self, credential: str | bytes) -> Identity | None:
        if isinstance(credential, bytes):
            from cryptography import x509

            from raygate.authn.x509 import identity_from_certificate

            return identity_from_certificate(x509.load_der_x509_certificate(credential))
        return await self._timed("authn", self.settings.authority.authenticate(credential))

    async def _authorize(
        self, head: RequestHead, identity: Identity, record: AuditRecord
    ) -> Answer | None:
        try:
            attributes = list(self.settings.profile.attributes(identity, head))
        except ValueError as err:
            record.decision = AuditDecision.DENY
            record.reason = str(err)
            return responses.bad_request(str(err))
        record.attributes = attributes
        if not attributes:
            # kube-rbac-proxy: a rewrite configured but no value sent. Nothing to authorize,
            # so nothing is forwarded.
            record.decision = AuditDecision.DENY
            record.reason = "the request carries no value for the configured rewrite"
            return responses.bad_request(record.reason)
        return await self.authorize_all(attributes, record)

    async def _browser_login(
        self, head: RequestHead, identity: Identity, record: AuditRecord
    ) -> Answer:
        """Ray's UI login: the token it was sent becomes the session cookie, if it may look."""
        token = _bearer_token(head)
        if token is None:  # a login must present the token itself, not an old cookie
            record.decision = AuditDecision.UNAUTHENTICATED
            record.reason = "login without a bearer token"
            return responses.unauthorized(self.settings.realm, missing=True)
        # Logging in lets the browser read the dashboard: authorize it as the GET it leads to.
        denied = await self._authorize(dataclasses.replace(head, method="GET"), identity, record)
        if denied is not None:
            return denied
        return browser.login_response(token, secure=head.scheme == "https")

    # -- the decision cache ------------------------------------------------------------------
    def _recently_allowed(
        self, credential: str | bytes, head: RequestHead, path: str
    ) -> _Allowed | None:
        if not isinstance(credential, str) or not self.settings.profile.cacheable:
            return None
        entry = self._allowed.get((_key(credential), head.method, path))
        if entry is None:
            return None
        if entry.expires <= time.monotonic() or entry.revision != self.settings.authority.revision:
            return None
        return entry

    def _remember_allowed(
        self, credential: str | bytes, head: RequestHead, path: str, record: AuditRecord
    ) -> _Allowed | None:
        if not isinstance(credential, str) or not self.settings.profile.cacheable:
            return None
        cached = self._identities.get(_key(credential))
        if cached is None or record.identity is None:
            return None  # the identity was not cacheable (an expiring token): neither is this
        expires = min(cached[1], time.monotonic() + self.settings.decision_ttl)
        allowed = _Allowed(
            record.identity, tuple(record.attributes), record.reason, expires, cached[2]
        )
        _bounded_put(self._allowed, (_key(credential), head.method, path), allowed)
        return allowed

    def _memorize(self, memo: DecisionMemo, head: RequestHead, forward: Forward) -> None:
        """Keep this decision for the connection's next request, if it is a whole one: allowed
        from a credential's cached decision, and nothing a profile hook did or would do."""
        allowed, self._last_allowed = self._last_allowed, None
        if (
            allowed is None
            or forward.identity is not allowed.identity
            or allowed.attributes != tuple(forward.record.attributes)
            or forward.response_hook is not None
            or forward.request_body_hook is not None
            or self.settings.profile.hooks_for(head)
        ):
            return
        memo.key = (head.method, head.target, tuple(head.headers.items()))
        memo.source = head.headers
        memo.allowed = allowed
        memo.headers = forward.upstream_headers
        memo.user_agent = forward.record.user_agent

    def repeated(self, head: RequestHead, memo: DecisionMemo) -> Forward | None:
        """`decide`'s answer for a request repeating the one `memo` holds, while its decision
        lasts; None: `decide` walks the steps. Synchronous, so that a data plane may ask it
        first and spare the coroutine of `decide` (which asks it too)."""
        known = memo.key
        if (
            known is None
            or head.method != known[0]
            or head.target != known[1]
            or (head.headers is not memo.source and tuple(head.headers.items()) != known[2])
        ):
            return None
        allowed = memo.allowed
        settings = self.settings
        now = time.monotonic()
        if (
            allowed is None
            or allowed.expires <= now
            or allowed.revision != settings.authority.revision
            or settings.authority is not self._cached_for
        ):
            memo.key = memo.allowed = memo.source = None
            return None
        audit = settings.audit
        if audit is not None and audit.refusing:
            return None  # answered 503 by decide
        record = AuditRecord(
            new_request_id(),
            head.method,
            head.target,
            head.peer,
            started=now,
            identity=allowed.identity,
            attributes=list(allowed.attributes),
            decision=AuditDecision.ALLOW,
            reason=allowed.reason,
            user_agent=memo.user_agent,
        )
        if settings.metrics is not None:
            settings.metrics.decision_cached()
        return Forward(allowed.identity, memo.headers, record)

    # -- what hooks and doors use --------------------------------------------------------------
    async def decide_attributes(self, attributes: Attributes) -> Decision:
        """One authorizer call, bounded by backend_timeout (then BackendUnavailable)."""
        return await self._timed("authz", self.settings.authority.authorize(attributes))

    async def authorize_all(
        self, attributes: Sequence[Attributes], record: AuditRecord
    ) -> Answer | None:
        """None if every one is allowed; else the 403 (or 503) to answer, and why in `record`."""
        reasons = []
        for attrs in attributes:
            try:
                decision = await self.decide_attributes(attrs)
            except BackendUnavailable as err:
                record.decision = AuditDecision.UNAVAILABLE
                record.reason = str(err)
                self._backend_failed("authorization", err)
                return responses.unavailable(str(err))
            self._backend_answered()
            if not decision.allowed:
                record.decision = AuditDecision.DENY
                record.reason = decision.reason
                return responses.forbidden(attrs.describe(), decision.reason)
            reasons.append(decision.reason)
        record.decision = AuditDecision.ALLOW
        record.reason = "; ".join(r for r in reasons if r)
        return None

    async def fetch(
        self, method: str, target: str, headers: HeaderList, limit: int
    ) -> BufferedResponse:
        return await self.upstream.fetch(method, target, headers, limit)

    def upstream_headers(self, head: RequestHead, identity: Identity | None) -> HeaderList:
        """The headers a request goes upstream with: the client's, cleaned, and who sent it."""
        settings = self.settings
        headers = upstream_request_headers(
            head.headers,
            identity_headers=self._identity_headers,
            remote=head.peer,
            scheme=head.scheme,
            host=head.host,
            # Unauthenticated requests (UI shell, ignorePaths) go as the anonymous caller they are.
            upstream_token=settings.upstream_token if identity is not None else None,
            forward_client_authorization=settings.forward_client_authorization,
            forwarded=settings.forwarded_headers,
        )
        auth_headers = settings.auth_headers
        if identity is not None and auth_headers.enabled:
            headers.append((auth_headers.user_field, identity.user))
            if identity.groups:
                groups = auth_headers.groups_separator.join(identity.groups)
                headers.append((auth_headers.groups_field, groups))
        return headers

    def finished(self, record: AuditRecord) -> None:
        """The request is answered (record.status set): audit it and count it."""
        decision = record.decision
        if record.status >= 400 or (
            decision is not AuditDecision.NONE and decision is not AuditDecision.PUBLIC
        ):
            audit = self.settings.audit
            if audit is not None:
                audit.write(record)
        metrics = self.settings.metrics
        if metrics is not None:
            metrics.request_answered(record.status, record.decision)

    # -- helpers -------------------------------------------------------------------------------
    def _anonymous(self, head: RequestHead, record: AuditRecord) -> Forward:
        return Forward(None, self.upstream_headers(head, None), record)

    @staticmethod
    def _answer(answer: Answer, record: AuditRecord) -> Answer:
        answer.record = record
        return answer

    async def _timed(self, call: str, awaitable: Awaitable[Any]) -> Any:
        """Await the authority, within backend_timeout; a timeout is BackendUnavailable (503)."""
        timeout = self.settings.backend_timeout
        metrics = self.settings.metrics
        start = time.monotonic()
        try:
            if asyncio.current_task() is None:
                # Called outside a task (the data plane starts decisions inline, so cached ones
                # cost no task): backends with timers of their own need a task to run in.
                return await asyncio.wait_for(asyncio.ensure_future(awaitable), timeout)
            async with asyncio.timeout(timeout):
                return await awaitable
        except TimeoutError:
            raise BackendUnavailable(f"no {call} answer within {timeout:g}s") from None
        finally:
            if metrics is not None:
                metrics.backend_call(call, time.monotonic() - start)

    def _backend_failed(self, what: str, err: BackendUnavailable) -> None:
        now = time.monotonic()
        reason = f"{what}: {err}"
        if self._backend_down_since is None:
            self._backend_down_since = self._backend_logged_at = now
            self._backend_reason = reason
            log.error("%s backend unavailable, answering 503 and forwarding nothing: %s", what, err)
        elif (
            reason != self._backend_reason or now - self._backend_logged_at >= BACKEND_DOWN_REMINDER
        ):
            # A new way of failing is news; the same one is repeated only once a minute.
            self._backend_logged_at = now
            self._backend_reason = reason
            log.error(
                "%s backend still unavailable after %.0fs: %s",
                what,
                now - self._backend_down_since,
                err,
            )

    def _backend_answered(self) -> None:
        if self._backend_down_since is not None:
            log.warning(
                "identity and policy backend answering again after %.0fs",
                time.monotonic() - self._backend_down_since,
            )
            self._backend_down_since = None
