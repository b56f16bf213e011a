"""From a GatewayConfig to a serving gateway: pick the authorities, wrap them in caches, open the
listeners, and shut everything down in order. `raygate serve` and `raygate up` both run here.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from raygate.authn import TokenAuthenticator
from raygate.authz import Authorizer
from raygate.config import AuthnMode, AuthzMode, GatewayConfig, UpstreamConfig
from raygate.dataplane.server import Gateway
from raygate.dataplane.settings import GatewaySettings
from raygate.errors import BackendUnavailable, ConfigError
from raygate.observe.audit import AuditLog
from raygate.observe.metrics import GatewayMetrics
from raygate.pipeline import (
    AuthHeaders,
    Authority,
    CombinedAuthority,
    PipelineSettings,
    profile_for,
)

log = logging.getLogger("raygate.runtime")

Hook = Callable[[], Awaitable[None]]
ReadyCheck = Callable[[], Awaitable[None]]  # raises with a reason when not ready

# Graceful shutdown: in-flight requests get this long to finish once the listener closes, then
# responses being written get FINAL_WRITE_GRACE; together within Kubernetes' default 30 s
# terminationGracePeriodSeconds.
SHUTDOWN_GRACE = 20.0
FINAL_WRITE_GRACE = 5.0
METRICS_FLUSH_INTERVAL = 1.0


@dataclass
class Assembly:
    """Everything a gateway needs, and how to start, check and stop its parts."""

    settings: GatewaySettings
    ssl_context: ssl.SSLContext | None = None
    startup: list[Hook] = field(default_factory=list)
    cleanup: list[Hook] = field(default_factory=list)
    ready_checks: dict[str, ReadyCheck] = field(default_factory=dict)


def _cache_hook(metrics: GatewayMetrics) -> Callable[[str, str], None]:
    counter = metrics.cache_events

    def on_event(cache: str, event: str) -> None:
        counter.labels(cache=cache, result=event).inc()

    return on_event


async def assemble(
    config: GatewayConfig, *, audit: AuditLog | None, metrics: GatewayMetrics
) -> Assembly:
    """Build the parts `config` asks for. Nothing listens yet."""
    startup: list[Hook] = []
    cleanup: list[Hook] = []
    ready: dict[str, ReadyCheck] = {}
    public_routes: dict[str, tuple[str, bytes]] = {}

    authn_modes = config.authentication.mode
    authz_mode = config.authorization.mode
    embedded = None
    if AuthnMode.EMBEDDED in authn_modes or authz_mode is AuthzMode.EMBEDDED:
        from raygate.embedded import EmbeddedAuthority
        from raygate.store.state import resolve_state_dir

        embedded = EmbeddedAuthority(resolve_state_dir(config.state_dir, create=True))
        startup.append(embedded.start)
        cleanup.append(embedded.stop)
        public_routes.update(embedded.public_routes())
        store_authority = embedded

        async def store_ready() -> None:
            # What the watcher last saw: /readyz itself never waits on a locked database.
            if store_authority.failure is not None:
                raise BackendUnavailable(
                    f"cannot read the store, serving revision {store_authority.revision}: "
                    f"{store_authority.failure}"
                )

        ready["embedded authority"] = store_ready

    if audit is not None:

        async def audit_ready() -> None:
            if audit.failure is not None:
                raise BackendUnavailable(
                    f"cannot write {audit.path or 'the audit stream'}: {audit.failure}"
                )

        ready["audit log"] = audit_ready

    kube = None
    if config.uses_kubernetes:
        from raygate.kube.authority import connect_kube_authority

        kube = await connect_kube_authority(config, on_cache_event=_cache_hook(metrics))
        cleanup.append(kube.close)
        ready["kubernetes API server"] = kube.ping

    authenticators: list[TokenAuthenticator] = []
    for mode in authn_modes:
        if mode is AuthnMode.EMBEDDED:
            assert embedded is not None
            authenticators.append(embedded.authenticator)
        elif mode is AuthnMode.KUBERNETES:
            assert kube is not None
            authenticators.append(kube.authenticator)
        elif mode is AuthnMode.OIDC:
            from raygate.kube.authority import oidc_authenticator

            assert config.authentication.oidc is not None
            oidc, cached_oidc = oidc_authenticator(
                config.authentication.oidc,
                config.cache,
                timeout=config.limits.backend_timeout,
                on_cache_event=_cache_hook(metrics),
            )
            cleanup.append(oidc.close)
            authenticators.append(cached_oidc)
    if len(authenticators) == 1:
        authenticator = authenticators[0]
    else:
        from raygate.authn.chain import ChainAuthenticator

        authenticator = ChainAuthenticator(authenticators)

    authorizer: Authorizer
    if authz_mode is AuthzMode.EMBEDDED:
        assert embedded is not None
        authorizer = embedded.authorizer
    else:
        assert kube is not None
        authorizer = kube.authorizer
    if config.authorization.static:
        from raygate.authz.static import StaticThenAuthorizer

        authorizer = StaticThenAuthorizer(config.authorization.static, authorizer)

    sign_in = None
    oidc_config = config.authentication.oidc
    if oidc_config is not None and oidc_config.browser_sign_in:
        from raygate.sso.assemble import browser_sign_in
        from raygate.store.state import resolve_state_dir

        sign_in = browser_sign_in(
            oidc_config,
            resolve_state_dir(config.state_dir, create=True),
            timeout=config.limits.backend_timeout,
        )
        cleanup.append(sign_in.close)

    ssl_context = _listener_tls(config, startup, cleanup)

    upstream_token = config.upstream.read_token()
    authorization = config.authorization
    path_policy = authorization.path_policy
    upstream_ssl = _upstream_tls(config)
    # The one place the authority is chosen: tokens from the authenticators above, decisions
    # from the authorizer; the embedded store's revision invalidates cached decisions.
    authority: Authority
    if (
        embedded is not None
        and authenticator is embedded.authenticator
        and authorizer is embedded.authorizer
    ):
        authority = embedded  # `raygate up`: the store answers both
    else:
        authority = CombinedAuthority(authenticator, authorizer, embedded)
    pipeline = PipelineSettings(
        authority=authority,
        profile=profile_for(authorization),
        upstream_token=upstream_token,
        auth_headers=AuthHeaders(
            enabled=config.auth_header.fields_enabled,
            user_field=config.auth_header.user_field_name,
            groups_field=config.auth_header.groups_field_name,
            groups_separator=config.auth_header.group_separator,
        ),
        audit=audit,
        metrics=metrics,
        # The embedded authority answers from memory; a timeout there only costs time.
        backend_timeout=(
            None
            if kube is None and AuthnMode.OIDC not in authn_modes
            else config.limits.backend_timeout
        ),
        public_routes=public_routes,
        path_action=path_policy.action
        if (authorization.allow_paths or authorization.ignore_paths)
        else None,
        client_certificates=bool(config.listen.tls and config.listen.tls.client_ca_file),
        forward_client_authorization=config.upstream.forward_client_authorization,
        forwarded_headers=config.upstream.forwarded_headers,
        browser_login=config.browser_login,
        browser_sign_in=sign_in,
    )
    settings = GatewaySettings(
        upstream=config.upstream.url,
        pipeline=pipeline,
        max_body_bytes=config.limits.max_body_bytes,
        max_header_bytes=config.limits.max_header_bytes,
        idle_timeout=config.limits.idle_timeout,
        upstream_ssl=upstream_ssl,
        upstream_headers_timeout=config.limits.upstream_timeout,
    )
    ready["upstream"] = _upstream_check(config.upstream, upstream_token, upstream_ssl)
    return Assembly(settings, ssl_context, startup, cleanup, ready)


def _listener_tls(
    config: GatewayConfig, startup: list[Hook], cleanup: list[Hook]
) -> ssl.SSLContext | None:
    tls = config.listen.tls
    if tls is None:
        return None
    from raygate.authn.x509 import CertReloader, server_ssl_context

    context = server_ssl_context(
        tls.cert_file, tls.key_file, min_version=tls.min_version, client_ca_file=tls.client_ca_file
    )
    if tls.cert_file and tls.key_file:
        reloader = CertReloader(context, tls.cert_file, tls.key_file, interval=2.0)

        async def start_reloader() -> None:
            reloader.start()

        startup.append(start_reloader)
        cleanup.append(reloader.stop)
    return context


def _token_source(upstream: UpstreamConfig) -> str:
    if upstream.token_file:
        return f"upstream.tokenFile ({upstream.token_file})"
    if upstream.token_env:
        return f"${upstream.token_env}"
    return "upstream.tokenEnv or upstream.tokenFile"


def _upstream_tls(config: GatewayConfig) -> ssl.SSLContext | None:
    """kube-rbac-proxy's --upstream-ca-file and --upstream-client-cert-file/-key-file."""
    upstream = config.upstream
    if not (upstream.ca_file or upstream.client_cert_file):
        return None
    try:
        context = ssl.create_default_context(cafile=upstream.ca_file)
        if upstream.client_cert_file and upstream.client_key_file:
            context.load_cert_chain(upstream.client_cert_file, upstream.client_key_file)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"upstream TLS files cannot be used: {err}") from None
    return context


def _upstream_check(
    upstream: UpstreamConfig, token: str | None, ssl_context: ssl.SSLContext | None = None
) -> ReadyCheck:
    version_url = upstream.url.rstrip("/") + "/api/version"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # Ray in token mode refuses raygate itself when its token is missing or wrong: then every
    # request would fail upstream, so the gateway is not ready (and says which setting to fix).
    # With forwardClientAuthorization the callers' own tokens go to Ray, so a refusal is normal.
    check_token = not upstream.forward_client_authorization

    async def upstream_ready() -> None:
        timeout = aiohttp.ClientTimeout(total=3)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(
                    version_url, headers=headers, ssl=ssl_context if ssl_context else True
                ) as response,
            ):
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as err:
            raise BackendUnavailable(
                f"Ray's dashboard is unreachable: {err or type(err).__name__}"
            ) from None
        if status >= 500:
            raise BackendUnavailable(f"Ray answered {status}")
        if check_token and status in (401, 403):
            if token is None:
                raise BackendUnavailable(
                    f"Ray answered {status}: it requires its token and raygate has none; "
                    f"set {_token_source(upstream)} to Ray's token"
                )
            raise BackendUnavailable(
                f"Ray answered {status}: it does not accept the token from "
                f"{_token_source(upstream)}"
            )

    return upstream_ready


def _metrics_registry(metrics: GatewayMetrics) -> Any:
    """This process's registry; with several workers, every worker's counts summed."""
    import os

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import CollectorRegistry, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return metrics.registry


def admin_app(assembly: Assembly, metrics: GatewayMetrics) -> web.Application:
    """/healthz, /readyz and /metrics: nothing else, so probes never pass authorization by."""
    app = web.Application()

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    # Kubelet reports a failed probe by status code only: log each change of the answer, so
    # the reason shows in the sidecar's logs without a line per probe.
    last_answer = [""]

    async def readyz(_request: web.Request) -> web.Response:
        failures = []
        for name, check in assembly.ready_checks.items():
            try:
                await asyncio.wait_for(check(), timeout=5)
            except Exception as err:  # noqa: BLE001 - any failure means not ready, with its reason
                failures.append(f"{name}: {err or type(err).__name__}")
        answer = "not ready: " + "; ".join(failures) if failures else "ready"
        if answer != last_answer[0]:
            (log.warning if failures else log.info)("%s", answer)
            last_answer[0] = answer
        if failures:
            return web.Response(status=503, text=answer + "\n")
        return web.Response(text="ok\n")

    async def metrics_handler(_request: web.Request) -> web.Response:
        metrics.flush()
        body = generate_latest(_metrics_registry(metrics))
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    return app


async def serve(
    config: GatewayConfig,
    *,
    audit: AuditLog | None,
    on_ready: Callable[[], None] | None = None,
    stop: asyncio.Event | None = None,
    watch: Awaitable[None] | None = None,
    sock: socket.socket | None = None,
    reuse_port: bool = False,
    metrics: GatewayMetrics | None = None,
    admin: bool = True,
    ready_checks: dict[str, ReadyCheck] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (or `stop`, or `watch` finishing), then shut down gracefully.

    `sock`: an already bound listening socket instead of binding `listen.address`;
    `reuse_port`: bind with SO_REUSEPORT (one of several workers, raygate.workers);
    `admin`: whether this process serves /healthz, /readyz and /metrics;
    `ready_checks`: more /readyz checks (e.g. `raygate up`'s Ray head).
    """
    metrics = metrics or GatewayMetrics()
    assembly = await assemble(config, audit=audit, metrics=metrics)
    assembly.ready_checks.update(ready_checks or {})
    for hook in assembly.startup:
        await hook()
    gateway = Gateway(assembly.settings)
    from raygate.doors.assembly import Doors

    doors = Doors(config, assembly.settings, audit=audit, metrics=metrics)
    admin_runner: web.AppRunner | None = None
    flusher: asyncio.Future[None] | None = None
    hurry = asyncio.Event()
    try:
        try:
            await gateway.listen(
                config.listen.host,
                config.listen.port,
                sock=sock,
                ssl_context=assembly.ssl_context,
                reuse_port=reuse_port,
            )
        except OSError as err:
            raise ConfigError(
                f"cannot listen on {config.listen.address}: {err.strerror or err}"
            ) from None
        # Ray's other doors live in one process (the one serving the admin endpoints): Ray
        # Client sessions are bound to identities in its memory.
        if admin:
            await doors.open()
        admin_address = config.proxy_endpoints_address
        if admin and admin_address is not None:
            admin_runner = web.AppRunner(
                admin_app(assembly, metrics),
                handle_signals=False,
                access_log=None,
                shutdown_timeout=FINAL_WRITE_GRACE,
            )
            await admin_runner.setup()
            await _start_site(
                web.TCPSite(admin_runner, *admin_address, reuse_address=True),
                f"{admin_address[0]}:{admin_address[1]}",
            )
        stop = stop or asyncio.Event()

        def on_signal() -> None:
            # The first signal starts a graceful shutdown; a second one cuts it short.
            (hurry if stop.is_set() else stop).set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        flusher = asyncio.ensure_future(_flush_metrics(metrics))
        if on_ready is not None:
            on_ready()
        waiters = [asyncio.ensure_future(stop.wait())]
        if watch is not None:
            waiters.append(asyncio.ensure_future(watch))
        done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in done:
            task.result()  # a watcher's error ends the gateway with that error
    finally:
        # Stop taking connections, let the requests in flight end (their answers close their
        # connections), then end what is left: a job package still uploading gets the grace.
        await doors.close(hurry)
        await gateway.drain(SHUTDOWN_GRACE, hurry)
        await gateway.close()
        if flusher is not None:
            flusher.cancel()
        metrics.flush()
        if admin_runner is not None:
            await admin_runner.cleanup()
        for hook in reversed(assembly.cleanup):
            await hook()


async def _flush_metrics(metrics: GatewayMetrics) -> None:
    """Counts reach the Prometheus metrics (and other workers' scrapes) within a second."""
    while True:
        await asyncio.sleep(METRICS_FLUSH_INTERVAL)
        metrics.flush()


async def _start_site(site: web.TCPSite, address: str) -> None:
    try:
        await site.start()
    except OSError as err:
        raise ConfigError(f"cannot listen on {address}: {err.strerror or err}") from None


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # optional: the gateway works on asyncio's own loop
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
