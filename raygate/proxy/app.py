"""The gateway: authenticate, map to attributes, authorize, then forward. In that order, always.

Each step is a small method; `handle` shows the order. Nothing reaches the upstream unless
every Attributes of the request was allowed.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from raygate.authn import TokenAuthenticator
from raygate.authz import Authorizer
from raygate.authz.attributes import AttributesConfig, Profile, request_attributes
from raygate.authz.paths import PathAction
from raygate.errors import BackendUnavailable
from raygate.identity import Attributes, Decision, Identity
from raygate.observe.audit import AuditLog, AuditRecord
from raygate.observe.metrics import GatewayMetrics
from raygate.pipeline.headers import upstream_request_headers
from raygate.proxy import browser, forward, responses

log = logging.getLogger("raygate.gateway")

# Bearer tokens above this size are refused before any backend sees them.
MAX_TOKEN_BYTES = 16 * 1024
# Ray caps job packages at 100 MiB; the rest is multipart/JSON slack.
DEFAULT_MAX_BODY_BYTES = 100 * 1024 * 1024 + 1024 * 1024
# One header line (or the request line). aiohttp's own default (8 KiB) would refuse OIDC tokens
# with many groups with a bare 400 before the gateway could say anything.
DEFAULT_MAX_HEADER_BYTES = 20 * 1024
# An authority that neither answers nor fails would hold every request: answer 503 instead.
DEFAULT_BACKEND_TIMEOUT = 5.0
MAX_HEADERS = 64
BACKEND_DOWN_REMINDER = 60.0  # seconds between "still unavailable" log lines
# Methods that only ever echo or tunnel: never sent upstream with Ray's credentials.
REFUSED_METHODS = frozenset({"TRACE", "TRACK", "CONNECT"})

AttributesMapper = Callable[[Identity, web.Request], Sequence[Attributes]]
CertificateAuthenticator = Callable[[web.Request], Identity | None]
LocalHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class AuthHeaders:
    """kube-rbac-proxy's --auth-header-* settings: identity passed to the upstream."""

    enabled: bool = True
    user_field: str = "X-Remote-User"
    groups_field: str = "X-Remote-Group"
    groups_separator: str = "|"


@dataclass
class GatewaySettings:
    upstream: URL
    authenticator: TokenAuthenticator
    authorizer: Authorizer
    attributes_for: AttributesMapper
    upstream_token: str | None = None
    auth_headers: AuthHeaders = field(default_factory=AuthHeaders)
    audit: AuditLog | None = None
    metrics: GatewayMetrics | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    backend_timeout: float | None = DEFAULT_BACKEND_TIMEOUT
    upstream_connect_timeout: float = 10.0
    # None: a log stream may be silent for minutes and must not be cut.
    upstream_read_timeout: float | None = None
    # Waiting for Ray's response headers (limits.upstreamTimeout); then 504.
    upstream_headers_timeout: float | None = 300.0
    # Paths answered by the gateway itself, without authentication (OIDC discovery, JWKS).
    public_routes: dict[str, LocalHandler] = field(default_factory=dict)
    # kube-rbac-proxy --allow-paths / --ignore-paths, on the raw path: None authorizes all.
    path_action: Callable[[str], PathAction] | None = None
    certificate_authenticator: CertificateAuthenticator | None = None
    forward_client_authorization: bool = False
    # TLS to an https upstream: its CA and raygate's client certificate (None: system CAs).
    upstream_ssl: ssl.SSLContext | None = None
    # Ray's dashboard UI logs in with a raygate token (see proxy/browser.py).
    browser_login: bool = False
    realm: str = "raygate"


def _bearer_token(request: web.Request) -> str | None:
    value = request.headers.get("Authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


class Gateway:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._identity_headers = (
            settings.auth_headers.user_field,
            settings.auth_headers.groups_field,
        )
        # The ray profile's mapper carries its job ownership (raygate.pipeline.ownership).
        self._job_ownership = getattr(settings.attributes_for, "job_ownership", None)
        # When the authority went down, and when that was last logged: one line per outage
        # (and a reminder a minute), not one per refused request.
        self._backend_down_since: float | None = None
        self._backend_logged_at = 0.0
        self._backend_reason = ""

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self, _app: web.Application | None = None) -> None:
        self._session = forward.make_client_session(
            self.settings.upstream_connect_timeout,
            self.settings.upstream_read_timeout,
            self.settings.upstream_ssl,
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "gateway not started"
        return self._session

    async def stop(self, _app: web.Application | None = None) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the pipeline ------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        record = AuditRecord(
            request_id=uuid.uuid4().hex[:16],
            method=request.method,
            # The raw path: the one that was authorized and forwarded.
            path=request.rel_url.raw_path,
            remote=request.remote,
        )
        try:
            response = await self._pipeline(request, record)
        except forward.BodyTooLarge as err:
            record.reason = str(err)
            response = responses.too_large(str(err))
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            sent = request.get(forward.PREPARED_KEY)
            if sent:
                # The upstream broke off a response already under way: dropping the connection
                # is all that is left (finishing it would pass a truncated body off as whole).
                record.status = sent
                record.reason += f"; the upstream broke off the response ({type(err).__name__})"
                self._record(record)
                raise
            log.warning("upstream %s: %s", self.settings.upstream, err or type(err).__name__)
            response = responses.upstream_unreachable(self.settings.upstream, err)
        record.status = response.status
        if record.decision != "none" or record.status >= 400:
            self._record(record)
        return response

    async def _pipeline(self, request: web.Request, record: AuditRecord) -> web.StreamResponse:
        if request.method in REFUSED_METHODS:
            return responses.method_not_allowed()
        path = request.path
        local = self.settings.public_routes.get(path)
        if local is not None and request.method in ("GET", "HEAD"):
            return await local(request)
        if self.settings.path_action is not None:
            action = self.settings.path_action(request.rel_url.raw_path)
            if action is PathAction.NOT_FOUND:
                return responses.not_found()
            if action is PathAction.SKIP_AUTH:
                record.decision = "ignored-path"
                return await self._forward(request, None)

        browser_login = self.settings.browser_login
        if browser_login:
            raw_path = request.rel_url.raw_path
            if request.method == "GET" and raw_path == browser.AUTHENTICATION_MODE_PATH:
                return await browser.authentication_mode(request)
            if browser.is_ui_shell(request.method, raw_path):
                record.decision = "ui-shell"
                return await self._forward(request, None)

        identity = await self.authenticate(request, record)
        if isinstance(identity, web.StreamResponse):
            return identity
        if (
            browser_login
            and request.method == "POST"
            and request.rel_url.raw_path == browser.AUTHENTICATE_PATH
        ):
            return await self._browser_login(request, identity, record)
        denied = await self.authorize(request, identity, record)
        if denied is not None:
            return denied
        if request.method == "OPTIONS":
            return web.Response(
                status=204, headers={"Allow": "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"}
            )
        if self._job_ownership is not None:
            answered = await self._job_ownership.handle(request, identity, record, self)
            if answered is not None:
                return answered
        return await self._forward(request, identity)

    async def _browser_login(
        self, request: web.Request, identity: Identity, record: AuditRecord
    ) -> web.StreamResponse:
        """Ray's UI login: the token it was sent becomes the session cookie, if it may look."""
        token = _bearer_token(request)
        if token is None:  # a login must present the token itself, not an old cookie
            record.decision = "unauthenticated"
            record.reason = "login without a bearer token"
            return responses.unauthorized(self.settings.realm, missing=True)
        # Logging in lets the browser read the dashboard: authorize it as the GET it leads to.
        denied = await self.authorize(request.clone(method="GET"), identity, record)
        if denied is not None:
            return denied
        return browser.login_response(token, secure=request.secure)

    async def authenticate(
        self, request: web.Request, record: AuditRecord
    ) -> Identity | web.StreamResponse:
        token = _bearer_token(request)
        if token is None and self.settings.browser_login:
            token = browser.token_from_cookie(request)
            if token is not None and not browser.same_origin(request):
                # SameSite ignores ports: another page on this host would ride on the cookie.
                record.decision = "deny"
                record.reason = "session cookie sent by another origin"
                return responses.forbidden_origin()
        identity: Identity | None = None
        if token is None:
            if self.settings.certificate_authenticator is not None:
                identity = self.settings.certificate_authenticator(request)
            if identity is None:
                record.decision = "unauthenticated"
                record.reason = "no bearer token"
                return responses.unauthorized(self.settings.realm, missing=True)
        elif len(token) > MAX_TOKEN_BYTES or not token.isascii():
            # RFC 6750 tokens are ASCII; anything else is refused before any backend sees it.
            record.decision = "unauthenticated"
            record.reason = "token too large" if token.isascii() else "token not ASCII"
            return responses.unauthorized(self.settings.realm, missing=False)
        else:
            try:
                identity = await self._timed(
                    "authn", self.settings.authenticator.authenticate_token(token)
                )
            except BackendUnavailable as err:
                record.decision = "unavailable"
                record.reason = str(err)
                self._backend_failed("authentication", err)
                return responses.unavailable(str(err))
            if identity is None:
                record.decision = "unauthenticated"
                record.reason = "invalid bearer token"
                return responses.unauthorized(self.settings.realm, missing=False)
        record.identity = identity
        return identity

    async def authorize(
        self, request: web.Request, identity: Identity, record: AuditRecord
    ) -> web.StreamResponse | None:
        try:
            attributes = list(self.settings.attributes_for(identity, request))
        except ValueError as err:
            record.decision = "deny"
            record.reason = str(err)
            return responses.bad_request(str(err))
        record.attributes = attributes
        if not attributes:
            # kube-rbac-proxy: a rewrite configured but no value sent. Nothing to authorize,
            # so nothing is forwarded.
            record.decision = "deny"
            record.reason = "the request carries no value for the configured rewrite"
            return responses.bad_request(record.reason)
        return await self.authorize_attributes(attributes, record)

    async def decide(self, attributes: Attributes) -> Decision:
        """One authorizer call, bounded by backend_timeout (then BackendUnavailable)."""
        return await self._timed("authz", self.settings.authorizer.authorize(attributes))

    async def authorize_attributes(
        self, attributes: Sequence[Attributes], record: AuditRecord
    ) -> web.StreamResponse | None:
        """None if every one is allowed; else the 403 (or 503) to answer, and why in `record`."""
        reasons = []
        for attrs in attributes:
            try:
                decision = await self.decide(attrs)
            except BackendUnavailable as err:
                record.decision = "unavailable"
                record.reason = str(err)
                self._backend_failed("authorization", err)
                return responses.unavailable(str(err))
            self._backend_answered()
            if not decision.allowed:
                record.decision = "deny"
                record.reason = decision.reason
                return responses.forbidden(attrs.describe(), decision.reason)
            reasons.append(decision.reason)
        record.decision = "allow"
        record.reason = "; ".join(r for r in reasons if r)
        return None

    def upstream_headers(self, request: web.Request, identity: Identity | None) -> CIMultiDict[str]:
        """The headers a request goes upstream with: the client's, cleaned, and who sent it."""
        settings = self.settings
        # The pipeline's helper returns a list of pairs; this aiohttp gateway edits a multidict.
        headers = CIMultiDict(
            upstream_request_headers(
                request.headers,
                identity_headers=self._identity_headers,
                remote=request.remote,
                scheme=request.scheme,
                host=request.host,
                # Unauthenticated requests (UI shell, ignorePaths) go as the anonymous caller they are.
                upstream_token=settings.upstream_token if identity is not None else None,
                forward_client_authorization=settings.forward_client_authorization,
            )
        )
        if identity is not None and settings.auth_headers.enabled:
            headers[settings.auth_headers.user_field] = identity.user
            if identity.groups:
                separator = settings.auth_headers.groups_separator
                headers[settings.auth_headers.groups_field] = separator.join(identity.groups)
        return headers

    async def _forward(self, request: web.Request, identity: Identity | None) -> web.StreamResponse:
        settings = self.settings
        assert self._session is not None, "gateway not started"
        headers = self.upstream_headers(request, identity)
        if request.content_length is not None and request.content_length > settings.max_body_bytes:
            return responses.too_large(f"request body exceeds {settings.max_body_bytes} bytes")
        url = self._upstream_url(request)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await forward.forward_websocket(request, self._session, url, headers)
        start = time.monotonic()
        response = await forward.forward_http(
            request,
            self._session,
            url,
            headers,
            settings.max_body_bytes,
            settings.upstream_headers_timeout,
        )
        if settings.metrics is not None:
            settings.metrics.upstream_latency.observe(time.monotonic() - start)
        return response

    def _upstream_url(self, request: web.Request) -> URL:
        return self.upstream_url(request.rel_url.raw_path_qs)

    def upstream_url(self, raw_path_qs: str) -> URL:
        # encoded=True: the path and query go on exactly as the client sent them (and as they
        # were authorized); re-parsing would resolve `..` and decode `%2F`, `%7E`, ...
        base = str(self.settings.upstream).rstrip("/")
        return URL(base + raw_path_qs, encoded=True)

    async def _timed(self, call: str, awaitable: Awaitable[Any]) -> Any:
        """Await the authority, within backend_timeout; a timeout is BackendUnavailable (503)."""
        timeout = self.settings.backend_timeout
        metrics = self.settings.metrics
        start = time.monotonic()
        try:
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

    def _record(self, record: AuditRecord) -> None:
        if self.settings.audit is not None:
            self.settings.audit.write(record)
        metrics = self.settings.metrics
        if metrics is not None:
            metrics.request_answered(record.status, record.decision)


GATEWAY_KEY = web.AppKey("gateway", Gateway)


def attributes_mapper(config: AttributesConfig) -> AttributesMapper:
    """Bind the pure mapping to aiohttp requests; the query is parsed only if a rewrite reads it."""
    if config.profile is Profile.RAY:
        from raygate.pipeline.ownership import RayAttributesMapper

        return RayAttributesMapper(config)
    rewrites = config.rewrites
    reads_query = rewrites is not None and rewrites.by_query_parameter is not None

    def map_request(identity: Identity, request: web.Request) -> Sequence[Attributes]:
        query = {k: request.query.getall(k) for k in request.query} if reads_query else {}
        return request_attributes(
            identity, request.method, request.rel_url.raw_path, query, request.headers, config
        )

    return map_request


def build_app(settings: GatewaySettings, *, client_max_size: int | None = None) -> web.Application:
    gateway = Gateway(settings)
    app = web.Application(
        client_max_size=client_max_size or settings.max_body_bytes,
        handler_args={
            "max_field_size": settings.max_header_bytes,
            "max_line_size": settings.max_header_bytes,
            # Bounds what one connection can make the gateway hold before any authentication.
            "max_headers": MAX_HEADERS,
        },
    )
    app[GATEWAY_KEY] = gateway
    app.on_startup.append(gateway.start)
    app.on_cleanup.append(gateway.stop)
    # No `100 Continue` before the request is authorized: a refused client must not be invited
    # to send its body (forward_http sends it once the request may go upstream).
    app.router.add_route("*", "/{tail:.*}", gateway.handle, expect_handler=forward.defer_continue)
    return app
