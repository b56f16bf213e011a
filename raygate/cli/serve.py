"""`raygate serve`: the gateway alone, e.g. as the sidecar of a KubeRay head pod.

Takes `--config FILE` (raygate's YAML) or kube-rbac-proxy's own flags, so a KubeRay sample can
swap its sidecar image and keep its args and ConfigMap.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import TYPE_CHECKING

import click

from raygate.cli.common import report_errors
from raygate.errors import ConfigError

if TYPE_CHECKING:
    from raygate.config import GatewayConfig
    from raygate.config.model import AuditConfig

AUDIT_ENV = "RAYGATE_AUDIT_LOG"

HELP = """Usage: raygate serve --config FILE
       raygate serve [kube-rbac-proxy flags]

Run the gateway alone (the Kubernetes sidecar). Either raygate's own YAML config, or
kube-rbac-proxy's command line, e.g. the KubeRay guide's sidecar args unchanged:

  raygate serve --insecure-listen-address=0.0.0.0:8265 --upstream=http://127.0.0.1:8443/ \\
      --config-file=/etc/kube-rbac-proxy/config-file.yaml --logtostderr=true

kube-rbac-proxy flags understood: --insecure-listen-address, --secure-listen-address,
--upstream, --config-file (authorization.resourceAttributes, rewrites, static),
--auth-header-fields-enabled, --auth-header-user-field-name, --auth-header-groups-field-name,
--auth-header-groups-field-separator, --auth-token-audiences, --allow-paths, --ignore-paths,
--tls-cert-file, --tls-private-key-file, --tls-min-version, --tls-cipher-suites,
--client-ca-file, --kubeconfig, --proxy-endpoints-port, --upstream-ca-file, --oidc-issuer,
--oidc-clientID, --oidc-username-claim, --oidc-username-prefix, --oidc-groups-claim,
--oidc-groups-prefix, --oidc-sign-alg, --oidc-ca-file, --logtostderr, -v. Unknown flags are
errors.

Ray's other doors, with either form (or `client:` / `serve:` in the YAML):
  --client-listen ADDR --client-upstream ADDR   Ray Client (gRPC), e.g. 0.0.0.0:10001 in front
                                                of Ray's client server at 127.0.0.1:23001
  --client-recheck-interval DURATION            re-authorize open sessions this often (30s)
  --serve-listen ADDR --serve-upstream URL      Ray Serve's HTTP ingress, e.g. 0.0.0.0:8000 in
                                                front of Serve's proxy at http://127.0.0.1:8001
  --serve-rate-limit RATE                       per identity and application, e.g. 10/s

--workers N (with either form): N gateway processes on the listen address (SO_REUSEPORT);
`auto` is one per core this process may use. Default 1 (or `workers:` in the YAML config).

Ray's token (RAY_AUTH_TOKEN, as KubeRay's token mode sets it) is sent upstream in place of the
caller's. Audit lines (one per decision) go to stdout, or to the file named by
--audit-log (or $RAYGATE_AUDIT_LOG, or `audit.log` in the YAML). With either form:
  --audit-log PATH|-           file, or `-` for stdout (the default)
  --audit-max-size SIZE        rotate the file past this size (100Mi by default; 0: never)
  --audit-max-backups N        rotated files kept (5)
  --audit-format json|kubernetes   raygate's line, or an audit.k8s.io/v1 Event per line
  --audit-failure-policy fail-closed|fail-open   while lines cannot be written: 503 and
                               nothing forwarded (the default), or keep forwarding
"""

# raygate's own flags, taken out before the rest is read as kube-rbac-proxy's (or --config).
_AUDIT_FLAGS = {
    "--audit-log": "log",
    "--audit-max-size": "maxSize",
    "--audit-max-backups": "maxBackups",
    "--audit-format": "format",
    "--audit-failure-policy": "failurePolicy",
}


def split_audit_flags(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """(the other arguments, {audit config key: value}) from `--audit-x V` / `--audit-x=V`."""
    rest: list[str] = []
    audit: dict[str, str] = {}
    items = iter(args)
    for arg in items:
        name, eq, value = arg.partition("=")
        key = _AUDIT_FLAGS.get(name)
        if key is None:
            rest.append(arg)
            continue
        if not eq:
            value = next(items, None)  # type: ignore[assignment]
            if value is None:
                raise ConfigError(f"flag needs an argument: {name}")
        audit[key] = value
    return rest, audit


def audit_for(config: GatewayConfig, flags: dict[str, str]) -> AuditConfig:
    """The YAML's `audit:` section, then $RAYGATE_AUDIT_LOG, then the flags: the last wins."""
    from pydantic import ValidationError

    from raygate.config.model import AuditConfig

    data = config.audit.model_dump(by_alias=True)
    if os.environ.get(AUDIT_ENV):
        data["log"] = os.environ[AUDIT_ENV]
    data.update(flags)
    try:
        return AuditConfig.model_validate(data)
    except ValidationError as err:
        error = err.errors()[0]
        key = str(error["loc"][0]) if error["loc"] else ""
        flag = next((f for f, k in _AUDIT_FLAGS.items() if k == key), key)
        message = error["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{flag}: {message}") from None


@click.command(
    context_settings={
        "ignore_unknown_options": True,
        "allow_extra_args": True,
        "help_option_names": [],
    },
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@report_errors
def serve(args: tuple[str, ...]) -> None:
    """Run the gateway alone: --config FILE, or kube-rbac-proxy's flags (the sidecar)."""
    if not args or any(a in ("-h", "--help", "-help") for a in args):
        click.echo(HELP, nl=False)
        if not args:
            raise SystemExit(2)
        return
    from raygate.config import config_from_serve_args
    from raygate.observe.audit import open_audit_log
    from raygate.runtime import install_uvloop
    from raygate.runtime import serve as run
    from raygate.workers import run_workers, worker_count

    rest, audit_flags = split_audit_flags(list(args))
    rest, workers_flag = _split_workers(rest)
    config = config_from_serve_args(rest)
    audit_config = audit_for(config, audit_flags)
    workers = worker_count(workers_flag if workers_flag is not None else config.workers)
    logging.basicConfig(
        level=logging.DEBUG if config.log_verbosity >= 4 else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )

    def ready() -> None:
        scheme = "https" if config.listen.tls is not None else "http"
        logging.getLogger("raygate.serve").info(
            "serving on %s://%s, upstream %s", scheme, config.listen.address, config.upstream.url
        )

    if workers > 1:
        status = run_workers(
            config,
            workers,
            audit=audit_config,
            on_ready=ready,
            log_level=logging.DEBUG if config.log_verbosity >= 4 else logging.INFO,
        )
        raise SystemExit(status)
    audit = open_audit_log(audit_config)
    install_uvloop()
    try:
        asyncio.run(run(config, audit=audit, on_ready=ready))
    except KeyboardInterrupt:
        pass
    finally:
        audit.close()


def _split_workers(args: list[str]) -> tuple[list[str], str | None]:
    """`--workers N` / `--workers=N` out of the other flags (they go to the config parser)."""
    rest: list[str] = []
    workers: str | None = None
    items = iter(args)
    for arg in items:
        if arg in ("--workers", "-workers"):
            workers = next(items, None)
            if workers is None:
                from raygate.errors import ConfigError

                raise ConfigError("flag needs an argument: --workers")
        elif arg.startswith(("--workers=", "-workers=")):
            workers = arg.partition("=")[2]
        else:
            rest.append(arg)
    return rest, workers
