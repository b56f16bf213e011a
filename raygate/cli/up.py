"""`raygate up`: a local Ray head behind the gateway, with the embedded authority."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from yarl import URL

from raygate.authz.attributes import Profile, cluster_authorization
from raygate.cli.common import audit_config, audit_options, fail, report_errors, state_option
from raygate.config import GatewayConfig, config_from_mapping
from raygate.config.model import AuditConfig
from raygate.errors import ConfigError
from raygate.observe.audit import open_audit_log
from raygate.ray.launcher import (
    RayHead,
    RayUser,
    check_ray_user_can_run,
    port_in_use,
    ray_executable,
    resolve_ray_user,
    start_ray_head,
    start_serve,
    write_ray_info,
)
from raygate.ray.supervisor import RaySupervisor
from raygate.runtime import install_uvloop, serve
from raygate.store.state import resolve_state_dir, write_secret
from raygate.store.tokens import load_signing_key

RAY_TOKEN_FILE = "ray-auth-token"
# How often a long-lived Ray Client stream is re-authorized (default 30s); tests shorten it.
RECHECK_ENV = "RAYGATE_CLIENT_RECHECK_INTERVAL"
DEFAULT_OIDC_SCOPES = ("openid", "email", "profile")
AUDIT_FILE = "audit.log"

log = logging.getLogger("raygate.up")


def _validate_upstream(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> URL | None:
    if value is None:
        return None
    url = URL(value)
    if url.scheme not in ("http", "https") or not url.host:
        raise click.BadParameter(f"{value!r} is not an http(s) URL, e.g. http://127.0.0.1:8443")
    return url


F = TypeVar("F", bound=Callable[..., Any])


def _door_port_option(flag: str, default: int, door: str, behind: str) -> Callable[[F], F]:
    """A door's port option: it opens on --host, and 0 keeps it shut."""
    return click.option(
        flag,
        default=default,
        show_default=True,
        type=click.IntRange(0, 65535),
        help=f"Port of {door}, on --host; 0 turns it off. {behind}",
    )


@click.command()
@state_option
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address the gateway listens on."
)
@click.option(
    "--port",
    default=8265,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Port the gateway listens on (Ray's usual dashboard port).",
)
@_door_port_option(
    "--client-port",
    10001,
    'the Ray Client door (ray.init("ray://HOST:PORT"))',
    "Ray's own client server stays on a private port.",
)
@_door_port_option(
    "--serve-port",
    8000,
    "the Serve door (Ray Serve's HTTP ingress)",
    "Serve's own HTTP proxy stays on a private loopback port.",
)
@click.option(
    "--serve-rate-limit",
    default=None,
    metavar="RATE",
    help="Requests per identity and Serve application, e.g. 10/s or 600/m (default: no limit); "
    "above it the Serve door answers 429 with Retry-After.",
)
@click.option(
    "--cluster-name",
    default="ray-cluster-with-auth",
    show_default=True,
    help="RayCluster name requests are authorized against (rayclusters.ray.io/NAME).",
)
@click.option(
    "-n", "--namespace", default="default", show_default=True, help="Namespace of that RayCluster."
)
@click.option(
    "--num-cpus",
    type=click.IntRange(0, None),
    default=None,
    help="CPUs the Ray head offers (default: all).",
)
@click.option(
    "--object-store-memory",
    type=click.IntRange(78_643_200, None),
    default=None,
    help="Bytes for Ray's object store (default: Ray's choice).",
)
@click.option(
    "--upstream",
    callback=_validate_upstream,
    default=None,
    help="Front an existing Ray dashboard at this URL instead of starting Ray.",
)
@click.option(
    "--upstream-token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="With --upstream: file holding the Ray token to send upstream (RAY_AUTH_TOKEN mode).",
)
@click.option(
    "--audit-log",
    default=None,
    metavar="PATH|-",
    help="Where audit lines go (default: STATE/audit.log; `-`: stdout).",
)
@audit_options
@click.option(
    "--admin-port",
    type=click.IntRange(0, 65535),
    default=0,
    help="Serve /healthz, /readyz and Prometheus /metrics on this port (0: off).",
)
@click.option(
    "--profile",
    type=click.Choice([p.value for p in Profile]),
    default=Profile.KUBE_RBAC_PROXY.value,
    show_default=True,
    help="How requests become RBAC checks. kube-rbac-proxy: the method's verb on the RayCluster "
    "(the guide's Role); ray-k8s: ray:write on it (RBAC of Ray's own Kubernetes auth); ray: one "
    "subresource per Ray operation (rayclusters/jobs, /dashboard, /serve, ...) and job "
    "ownership (roles in examples/ray-profile-roles.yaml).",
)
@click.option(
    "--ray-user",
    default=None,
    metavar="USER",
    help="Run Ray (and so every job) as this operating-system user, so that jobs cannot read "
    "raygate's state (signing key, store, Ray's token file). raygate up must run as root.",
)
@click.option(
    "--oidc-issuer-url",
    default=None,
    help="Let people sign in with this OpenID Connect provider (https; http only on loopback): "
    "browsers get the authorization-code flow, ID tokens are accepted as bearer tokens.",
)
@click.option("--oidc-client-id", default=None, help="raygate's client id at the provider.")
@click.option(
    "--oidc-client-secret-file",
    type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path),
    default=None,
    help="File holding the client secret (a confidential client); none for a public client.",
)
@click.option(
    "--oidc-username-claim",
    default="email",
    show_default=True,
    help="ID token claim that is the user name.",
)
@click.option(
    "--oidc-username-prefix",
    default="",
    help="Put before every user name (kube-apiserver's default: ISSUER# unless the claim is "
    "email; '-' for none).",
)
@click.option(
    "--oidc-groups-claim",
    default="groups",
    show_default=True,
    help="ID token claim with the groups.",
)
@click.option("--oidc-groups-prefix", default="", help="Put before every group name.")
@click.option(
    "--oidc-scope",
    "oidc_scopes",
    multiple=True,
    help="A scope the browser sign-in asks for besides openid, email and profile (repeatable), "
    "e.g. groups (Dex) or offline_access (refresh tokens).",
)
@click.option(
    "--oidc-ca-file",
    type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path),
    default=None,
    help="CA bundle of a provider with a private CA.",
)
@click.option(
    "--workers",
    default="1",
    show_default=True,
    help="Gateway processes sharing the port (SO_REUSEPORT); auto: one per usable core.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every reload and backend error to stderr.")
@report_errors
def up(
    state: Path | None,
    host: str,
    port: int,
    client_port: int,
    serve_port: int,
    serve_rate_limit: str | None,
    cluster_name: str,
    namespace: str,
    num_cpus: int | None,
    object_store_memory: int | None,
    upstream: URL | None,
    upstream_token_file: Path | None,
    audit_log: str | None,
    audit_max_size: str,
    audit_max_backups: int,
    audit_format: str,
    audit_failure_policy: str,
    admin_port: int,
    profile: str,
    ray_user: str | None,
    oidc_issuer_url: str | None,
    oidc_client_id: str | None,
    oidc_client_secret_file: Path | None,
    oidc_username_claim: str,
    oidc_username_prefix: str,
    oidc_groups_claim: str,
    oidc_groups_prefix: str,
    oidc_scopes: tuple[str, ...],
    oidc_ca_file: Path | None,
    workers: str,
    verbose: bool,
) -> None:
    """Start a Ray head and the authenticating gateway in front of it (Ctrl-C stops both)."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    _check_names(cluster_name, namespace)
    run_as = None
    if ray_user is not None:
        if upstream is not None:
            raise ConfigError("--ray-user starts Ray as that user; it has no use with --upstream")
        run_as = resolve_ray_user(ray_user)
        check_ray_user_can_run(run_as, [sys.executable, ray_executable()])
    from raygate.workers import worker_count

    worker_processes = worker_count(workers)
    if port_in_use(host, port):
        raise fail(f"error: {host}:{port} is already in use; stop what holds it or pass --port")
    for door_port, flag in ((client_port, "--client-port"), (serve_port, "--serve-port")):
        if door_port and (door_port == port or port_in_use(host, door_port)):
            raise fail(
                f"error: {host}:{door_port} is already in use; stop what holds it or pass "
                f"{flag} (0 turns that door off)"
            )
    if client_port and client_port == serve_port:
        raise fail("error: --client-port and --serve-port must differ")
    rate_limit = _check_rate(serve_rate_limit)
    oidc = _oidc_settings(
        oidc_issuer_url,
        oidc_client_id,
        oidc_client_secret_file,
        oidc_username_claim,
        oidc_username_prefix,
        oidc_groups_claim,
        oidc_groups_prefix,
        oidc_scopes,
        oidc_ca_file,
    )
    state_dir = resolve_state_dir(state, create=True).resolve()
    _run(
        UpOptions(
            state_dir=state_dir,
            host=host,
            port=port,
            cluster_name=cluster_name,
            namespace=namespace,
            num_cpus=num_cpus,
            object_store_memory=object_store_memory,
            upstream=upstream,
            upstream_token_file=upstream_token_file,
            audit=audit_config(
                audit_log or str(state_dir / AUDIT_FILE),
                audit_max_size,
                audit_max_backups,
                audit_format,
                audit_failure_policy,
            ),
            admin_port=admin_port,
            profile=Profile(profile),
            ray_user=run_as,
            client_port=client_port,
            serve_port=serve_port,
            serve_rate_limit=rate_limit,
            oidc=oidc,
            workers=worker_processes,
        )
    )


def _check_rate(text: str | None) -> str | None:
    from raygate.config import parse_rate

    if text is None:
        return None
    try:
        parse_rate(text)
    except ValueError as err:
        raise ConfigError(f"--serve-rate-limit: {err}") from None
    return text


def _oidc_settings(
    issuer_url: str | None,
    client_id: str | None,
    client_secret_file: Path | None,
    username_claim: str,
    username_prefix: str,
    groups_claim: str,
    groups_prefix: str,
    scopes: tuple[str, ...],
    ca_file: Path | None,
) -> dict[str, object] | None:
    """`authentication.oidc` of raygate's config for the --oidc-* flags; None without them."""
    if issuer_url is None:
        if client_id is not None or client_secret_file is not None:
            raise ConfigError(
                "--oidc-client-id and --oidc-client-secret-file need --oidc-issuer-url"
            )
        return None
    if not client_id:
        raise ConfigError("--oidc-issuer-url needs --oidc-client-id")
    from raygate.config.values import check_issuer_url

    problem = check_issuer_url(issuer_url)
    if problem is not None:
        raise ConfigError(f"--oidc-issuer-url: {problem}")
    oidc: dict[str, object] = {
        "issuerURL": issuer_url,
        "clientID": client_id,
        "usernameClaim": username_claim,
        "usernamePrefix": username_prefix,
        "groupsClaim": groups_claim,
        "groupsPrefix": groups_prefix,
        "browserSignIn": True,
    }
    if client_secret_file is not None:
        oidc["clientSecretFile"] = str(client_secret_file.resolve())
    if scopes:
        # Extra scopes (groups, offline_access, ...) on top of the ones every sign-in needs.
        oidc["scopes"] = list(dict.fromkeys((*DEFAULT_OIDC_SCOPES, *scopes)))
    if ca_file is not None:
        oidc["caFile"] = str(ca_file.resolve())
    return oidc


@dataclass
class UpOptions:
    state_dir: Path
    host: str
    port: int
    cluster_name: str
    namespace: str
    num_cpus: int | None
    object_store_memory: int | None
    upstream: URL | None
    upstream_token_file: Path | None
    audit: AuditConfig
    admin_port: int = 0
    profile: Profile = Profile.KUBE_RBAC_PROXY
    ray_user: RayUser | None = None
    client_port: int = 0
    serve_port: int = 0
    serve_rate_limit: str | None = None
    # `authentication.oidc` (browser sign-in and ID tokens) from the --oidc-* flags.
    oidc: dict[str, object] | None = None
    workers: int = 1


def _check_names(cluster_name: str, namespace: str) -> None:
    from raygate.objects import check_namespace_name

    try:
        check_namespace_name(namespace)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if not cluster_name or "/" in cluster_name or len(cluster_name) > 253:
        raise ConfigError(f"--cluster-name {cluster_name!r} is not a valid object name")


def _say(message: str) -> None:
    """Progress on stderr; a closed terminal must not stop the shutdown half-way."""
    try:
        click.echo(message, err=True)
    except OSError:
        pass


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _run(options: UpOptions) -> None:
    state_dir = options.state_dir
    upstream = options.upstream
    head = None
    supervisor: RaySupervisor | None = None
    # Until the event loop takes over, SIGTERM must unwind like Ctrl-C so Ray is stopped too.
    signal.signal(signal.SIGTERM, _interrupt)
    token_file: Path | None = options.upstream_token_file
    # A missing, loose or damaged signing key is refused before anything starts.
    load_signing_key(state_dir)
    if upstream is None:
        token_file = state_dir / RAY_TOKEN_FILE
        token = secrets.token_urlsafe(32)
        write_secret(token_file, token.encode())
        as_user = f" as user {options.ray_user.name}" if options.ray_user else ""
        _say(f"Starting a Ray head{as_user} (Ray's files in {state_dir})...")

        # Ray is started before the gateway binds, and stopped after it closes, so the
        # gateway never answers for a Ray that is not there.
        def start(ports: dict[str, int] | None = None) -> RayHead:
            return start_ray_head(
                state_dir,
                token,
                num_cpus=options.num_cpus,
                object_store_memory=options.object_store_memory,
                ports=ports,
                run_as=options.ray_user,
            )

        head = start()
        supervisor = RaySupervisor(head, lambda dead: start(dead.ports))
        upstream = URL(head.dashboard_url)
        if options.serve_port:
            _say("Starting Ray Serve behind the Serve door...")
            try:
                start_serve(head)
            except BaseException:
                head.stop()
                raise
            write_ray_info(state_dir, head)
    elif options.client_port or options.serve_port:
        _say(
            "Note: with --upstream the Ray Client and Serve doors stay closed (raygate serve "
            "opens them with --client-upstream/--serve-upstream)."
        )
        options.client_port = options.serve_port = 0
    config = gateway_config(options, upstream, token_file, head)
    if options.workers > 1:
        _run_workers(options, config, upstream, head)
        return
    audit = open_audit_log(options.audit)
    try:
        install_uvloop()
        asyncio.run(
            serve(
                config,
                audit=audit,
                on_ready=lambda: _print_banner(options, upstream),
                watch=supervisor.run() if supervisor is not None else None,
                ready_checks={"ray head": supervisor.ready} if supervisor is not None else None,
            )
        )
    except KeyboardInterrupt:
        pass
    finally:
        audit.close()
        if supervisor is not None:
            head = supervisor.head  # the one running now, if Ray was restarted
            # A second Ctrl-C must not leave Ray half-stopped.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            _say("Stopping Ray...")
            head.stop()
            _say("Stopped.")


def _run_workers(
    options: UpOptions, config: GatewayConfig, upstream: URL, head: RayHead | None
) -> None:
    from raygate.workers import run_workers

    def ray_gone() -> str | None:
        if head is None or head.process.poll() is None:
            return None
        return f"Ray exited unexpectedly (code {head.process.returncode}); see {head.log_path}"

    status = 1
    try:
        status = run_workers(
            config,
            options.workers,
            audit=options.audit,
            on_ready=lambda: _print_banner(options, upstream),
            alive=ray_gone,
            log_level=logging.getLogger().level,
        )
    finally:
        if head is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            _say("Stopping Ray...")
            head.stop()
            _say("Stopped.")
    if status:
        raise SystemExit(status)


def gateway_config(
    options: UpOptions, upstream: URL, token_file: Path | None, head: RayHead | None = None
) -> GatewayConfig:
    """What `raygate up` runs: the embedded authority, the guide's resource attributes."""
    listen_host = f"[{options.host}]" if ":" in options.host else options.host
    authorization = {
        "mode": "embedded",
        **cluster_authorization(options.profile, options.cluster_name, options.namespace),
    }
    data = {
        "listen": {"address": f"{listen_host}:{options.port}"},
        "upstream": {
            "url": str(upstream),
            "tokenEnv": None,
            "tokenFile": str(token_file) if token_file else None,
        },
        "authentication": {"mode": ["embedded"]},
        "authorization": authorization,
        "authHeader": {"fieldsEnabled": True},
        "browserLogin": True,
        "stateDir": str(options.state_dir),
    }
    if head is not None:
        # Ray's dashboard reads none of X-Remote-* and X-Forwarded-*, and copies every request
        # header into a second request to its module processes: each header costs it about 1%
        # of its capacity (docs/design.md, "What the gateway costs Ray"). Serve's applications
        # get them (their door, below).
        data["authHeader"] = {"fieldsEnabled": False}
        data["upstream"]["forwardedHeaders"] = False
    if options.oidc is not None:
        data["authentication"] = {"mode": ["embedded", "oidc"], "oidc": options.oidc}
    if options.admin_port:
        data["proxyEndpoints"] = {"port": options.admin_port, "host": options.host}
    if head is not None and options.client_port:
        data["client"] = {
            "listen": f"{listen_host}:{options.client_port}",
            "upstream": f"127.0.0.1:{head.ports['client']}",
        }
        interval = os.environ.get(RECHECK_ENV)
        if interval:
            data["client"]["recheckInterval"] = interval
    if head is not None and options.serve_port and "serve" in head.ports:
        data["serve"] = {
            "listen": f"{listen_host}:{options.serve_port}",
            "upstream": f"http://127.0.0.1:{head.ports['serve']}",
            "identityHeaders": True,
        }
        if options.serve_rate_limit:
            data["serve"]["rateLimit"] = options.serve_rate_limit
    return config_from_mapping(data, source="raygate up")


def _address(host: str, port: int) -> str:
    shown = "localhost" if host in ("127.0.0.1", "::1", "localhost") else host
    return f"http://{shown}:{port}"


def _print_banner(options: UpOptions, upstream: URL) -> None:
    address = _address(options.host, options.port)
    namespace, cluster_name = options.namespace, options.cluster_name
    state_dir, audit_path = options.state_dir, options.audit.log or "stdout"
    if audit_path == "-":
        audit_path = "stdout"
    admin = (
        f"\n  Health and metrics: http://{options.host}:{options.admin_port}/metrics"
        if options.admin_port
        else ""
    )
    ray_user = (
        f"\n  Ray and its jobs run as user {options.ray_user.name} (they cannot read {state_dir})"
        if options.ray_user
        else ""
    )
    doors = ""
    if options.client_port:
        doors += (
            f"\n  Ray Client door: ray://{_address(options.host, options.client_port)[7:]}"
            " (RAY_AUTH_MODE=token RAY_AUTH_TOKEN=<token>)"
        )
    if options.serve_port:
        doors += (
            f"\n  Serve door (Ray Serve's HTTP ingress): {_address(options.host, options.serve_port)}"
            " (Authorization: Bearer <token>)"
        )
    sa_user = f"system:serviceaccount:{namespace}:ray-user"
    ns_flag = "" if namespace == "default" else f" -n {namespace}"
    profile = "" if options.profile is Profile.KUBE_RBAC_PROXY else f" (profile {options.profile})"
    rbac_file, check = "ray-cluster-rbac.yaml", "get {}"
    if options.profile is Profile.RAY:
        rbac_file, check = "ray-profile-roles.yaml", "create {} --subresource=jobs"
    elif options.profile is Profile.RAY_K8S:
        check = "ray:write {}"
    check = check.format(f"rayclusters.ray.io/{cluster_name}")
    browser = (
        f"In a browser: open {address} and paste the output of "
        f"`raygate create token ray-user{ns_flag}`\ninto the dashboard's token dialog."
    )
    if options.oidc is not None:
        browser = (
            f"In a browser: open {address} and sign in with {options.oidc['issuerURL']}\n"
            f"(sign out at {address}/raygate/logout; service-account tokens: {address}/?login=token).\n"
            f"People need RBAC too: bind roles to kind User (alice@example.com) or Group.\n"
            f"CLI: raygate login --issuer {options.oidc['issuerURL']} --client-id "
            f'{options.oidc["clientID"]}; eval "$(raygate env)"'
        )
    click.echo(
        f"""
raygate is up.
  Gateway (Ray dashboard and Jobs API): {address}{doors}
  Ray dashboard behind it (token-protected, not for direct use): {upstream}
  Authorizing as: rayclusters.ray.io/{cluster_name} in namespace {namespace}{profile}{ray_user}
  State: {state_dir}    Audit log: {audit_path}{admin}

Next, in another terminal (with this environment's bin/ on PATH):
  raygate create serviceaccount ray-user{ns_flag}
  raygate apply -f examples/{rbac_file}
  raygate auth can-i {check}{ns_flag} --as={sa_user}
  export RAY_JOB_HEADERS="{{\\"Authorization\\": \\"Bearer $(raygate create token ray-user{ns_flag} --duration=1h)\\"}}"
  ray job submit --address {address} -- python -c "import ray; ray.init(); print(ray.cluster_resources())"

{browser}

Press Ctrl-C to stop the gateway and Ray.
""",
        err=False,
    )
    sys.stdout.flush()
