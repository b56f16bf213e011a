"""`raygate up`: a local Ray head behind the gateway, with the embedded authority."""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import sys
from pathlib import Path

import click
from aiohttp import web
from yarl import URL

from raygate.cli.common import fail, report_errors, state_option
from raygate.errors import ConfigError, UpstreamError
from raygate.store.state import resolve_state_dir, write_secret

RAY_TOKEN_FILE = "ray-auth-token"
AUDIT_FILE = "audit.log"

log = logging.getLogger("raygate.up")


def _validate_upstream(_ctx: click.Context, _param: click.Parameter, value: str | None) -> URL | None:
    if value is None:
        return None
    url = URL(value)
    if url.scheme not in ("http", "https") or not url.host:
        raise click.BadParameter(f"{value!r} is not an http(s) URL, e.g. http://127.0.0.1:8443")
    return url


@click.command()
@state_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the gateway listens on.")
@click.option("--port", default=8265, show_default=True, type=click.IntRange(1, 65535),
              help="Port the gateway listens on (Ray's usual dashboard port).")
@click.option("--cluster-name", default="ray-cluster-with-auth", show_default=True,
              help="RayCluster name requests are authorized against (rayclusters.ray.io/NAME).")
@click.option("-n", "--namespace", default="default", show_default=True,
              help="Namespace of that RayCluster.")
@click.option("--num-cpus", type=click.IntRange(0, None), default=None,
              help="CPUs the Ray head offers (default: all).")
@click.option("--object-store-memory", type=click.IntRange(78_643_200, None), default=None,
              help="Bytes for Ray's object store (default: Ray's choice).")
@click.option("--upstream", callback=_validate_upstream, default=None,
              help="Front an existing Ray dashboard at this URL instead of starting Ray.")
@click.option("--upstream-token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --upstream: file holding the Ray token to send upstream (RAY_AUTH_TOKEN mode).")
@click.option("--audit-log", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where audit lines go (default: STATE/audit.log).")
@click.option("-v", "--verbose", is_flag=True, help="Log every reload and backend error to stderr.")
@report_errors
def up(
    state: Path | None,
    host: str,
    port: int,
    cluster_name: str,
    namespace: str,
    num_cpus: int | None,
    object_store_memory: int | None,
    upstream: URL | None,
    upstream_token_file: Path | None,
    audit_log: Path | None,
    verbose: bool,
) -> None:
    """Start a Ray head and the authenticating gateway in front of it (Ctrl-C stops both)."""
    from raygate.ray.launcher import port_in_use

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    _check_names(cluster_name, namespace)
    if port_in_use(host, port):
        raise fail(f"error: {host}:{port} is already in use; stop what holds it or pass --port")
    state_dir = resolve_state_dir(state, create=True)
    _run(state_dir, host, port, cluster_name, namespace, num_cpus, object_store_memory,
         upstream, upstream_token_file, audit_log or state_dir / AUDIT_FILE)


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


def _run(
    state_dir: Path,
    host: str,
    port: int,
    cluster_name: str,
    namespace: str,
    num_cpus: int | None,
    object_store_memory: int | None,
    upstream: URL | None,
    upstream_token_file: Path | None,
    audit_path: Path,
) -> None:
    from raygate.ray.launcher import start_ray_head

    head = None
    # Until the event loop takes over, SIGTERM must unwind like Ctrl-C so Ray is stopped too.
    signal.signal(signal.SIGTERM, _interrupt)
    if upstream is None:
        token = secrets.token_urlsafe(32)
        write_secret(state_dir / RAY_TOKEN_FILE, token.encode())
        click.echo(f"Starting a Ray head (Ray's files in {state_dir})...", err=True)
        # Ray is started before the gateway binds, and stopped after it closes, so the
        # gateway never answers for a Ray that is not there.
        head = start_ray_head(state_dir, token, num_cpus=num_cpus,
                              object_store_memory=object_store_memory)
        upstream = URL(head.dashboard_url)
    else:
        token = None
        if upstream_token_file is not None:
            try:
                token = upstream_token_file.read_text().strip() or None
            except OSError as err:
                raise ConfigError(f"cannot read --upstream-token-file: {err.strerror}") from None
    try:
        _install_uvloop()
        asyncio.run(_serve(state_dir, host, port, cluster_name, namespace, upstream, token,
                           audit_path, head))
    except KeyboardInterrupt:
        pass
    finally:
        if head is not None:
            # A second Ctrl-C must not leave Ray half-stopped.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            _say("Stopping Ray...")
            head.stop()
            _say("Stopped.")


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # optional: the gateway works on asyncio's own loop
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _serve(
    state_dir: Path,
    host: str,
    port: int,
    cluster_name: str,
    namespace: str,
    upstream: URL,
    upstream_token: str | None,
    audit_path: Path,
    head: object | None,
) -> None:
    from raygate.authz.attributes import AttributesConfig, ResourceAttributesConfig
    from raygate.embedded import EmbeddedAuthority
    from raygate.observe.audit import AuditLog
    from raygate.observe.metrics import GatewayMetrics
    from raygate.proxy.app import GatewaySettings, attributes_mapper, build_app

    authority = EmbeddedAuthority(state_dir)
    audit = AuditLog(audit_path)
    config = AttributesConfig(
        resource_attributes=ResourceAttributesConfig(
            namespace=namespace, api_group="ray.io", api_version="v1",
            resource="rayclusters", name=cluster_name,
        )
    )
    settings = GatewaySettings(
        upstream=upstream,
        authenticator=authority.authenticator,
        authorizer=authority.authorizer,
        attributes_for=attributes_mapper(config),
        upstream_token=upstream_token,
        audit=audit,
        metrics=GatewayMetrics(),
        public_routes=authority.public_routes(),  # type: ignore[arg-type]
    )
    app = build_app(settings)
    app.on_startup.append(authority.start)
    app.on_cleanup.append(authority.stop)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror}") from None

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    address = f"http://{'localhost' if host in ('127.0.0.1', '::1') else host}:{port}"
    _print_banner(address, upstream, state_dir, audit_path, cluster_name, namespace)

    ray_exit = asyncio.create_task(_wait_for_exit(head)) if head is not None else None
    waiters = [asyncio.create_task(stop.wait())] + ([ray_exit] if ray_exit else [])
    done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    _say("Shutting down the gateway...")
    await runner.cleanup()
    audit.close()
    if ray_exit is not None and ray_exit in done:
        raise UpstreamError("Ray exited unexpectedly; see " + str(getattr(head, "log_path", "")))


async def _wait_for_exit(head: object) -> None:
    process = head.process  # type: ignore[attr-defined]
    while process.poll() is None:
        await asyncio.sleep(1)


def _print_banner(address: str, upstream: URL, state_dir: Path, audit_path: Path,
                  cluster_name: str, namespace: str) -> None:
    sa_user = f"system:serviceaccount:{namespace}:ray-user"
    ns_flag = "" if namespace == "default" else f" -n {namespace}"
    click.echo(
        f"""
raygate is up.
  Gateway (Ray dashboard and Jobs API): {address}
  Ray dashboard behind it (token-protected, not for direct use): {upstream}
  Authorizing as: rayclusters.ray.io/{cluster_name} in namespace {namespace}
  State: {state_dir}    Audit log: {audit_path}

Next, in another terminal (with this environment's bin/ on PATH):
  raygate create serviceaccount ray-user{ns_flag}
  raygate apply -f examples/ray-cluster-rbac.yaml
  raygate auth can-i get rayclusters.ray.io/{cluster_name}{ns_flag} --as={sa_user}
  export RAY_JOB_HEADERS="{{\\"Authorization\\": \\"Bearer $(raygate create token ray-user{ns_flag} --duration=1h)\\"}}"
  ray job submit --address {address} -- python -c "import ray; ray.init(); print(ray.cluster_resources())"

Press Ctrl-C to stop the gateway and Ray.
""",
        err=False,
    )
    sys.stdout.flush()
