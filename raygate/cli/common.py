"""What every raygate command shares: the `--state` and `-n` options and how errors end a command.

    @click.command()
    @state_option
    @report_errors
    def mycommand(state: Path | None) -> None: ...

`report_errors` turns any raygate.errors.RaygateError into one `error: ...` line on stderr and
exit status 1 (a UsageError: exit status 2, as click's usage errors), so no command prints a
traceback for a mistake the user can fix.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import click

from raygate.config.model import DEFAULT_AUDIT_MAX_BACKUPS, AuditFailurePolicy, AuditFormat
from raygate.errors import ConfigError, RaygateError, UsageError
from raygate.objects import check_namespace_name
from raygate.store.sqlite import DEFAULT_NAMESPACE
from raygate.store.state import STATE_ENV

if TYPE_CHECKING:
    from raygate.config.model import AuditConfig

__all__ = [
    "DEFAULT_NAMESPACE",
    "audit_options",
    "audit_config",
    "EXIT_ERROR",
    "fail",
    "namespace_option",
    "report_errors",
    "state_option",
]

P = ParamSpec("P")
R = TypeVar("R")

EXIT_ERROR = 1


def fail(message: str) -> click.exceptions.Exit:
    """Print `message` to stderr as is and return the exit to raise: `raise fail(...)`."""
    click.echo(message, err=True)
    return click.exceptions.Exit(EXIT_ERROR)


def report_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate a click callback: a RaygateError becomes `error: <message>` and exit 1, a
    UsageError click's usage error (exit 2)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except UsageError as err:
            raise click.UsageError(str(err)) from None
        except RaygateError as err:
            # One line, whatever a message quotes (a name from a manifest may hold a newline).
            raise fail("error: " + str(err).replace("\n", "\\n")) from None

    return wrapper


state_option = click.option(
    "--state",
    envvar=STATE_ENV,
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"State directory of the embedded authority (default ${STATE_ENV}, else ./.raygate).",
)


def _check_namespace(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_namespace_name(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


# None when not given: kubectl refuses a manifest's namespace only if -n was given explicitly.
# Use `namespace or DEFAULT_NAMESPACE` for the effective namespace.
namespace_option = click.option(
    "-n",
    "--namespace",
    default=None,
    callback=_check_namespace,
    help="Namespace of namespaced objects (default: default).",
)


def audit_options(func: Callable[P, R]) -> Callable[P, R]:
    """`--audit-max-size`, `--audit-max-backups`, `--audit-format`, `--audit-failure-policy`."""
    options = [
        click.option(
            "--audit-max-size",
            default="100Mi",
            show_default=True,
            metavar="SIZE",
            help="Rotate the audit log when it would grow past this (bytes, or 100Mi, 10M; "
            "0: never).",
        ),
        click.option(
            "--audit-max-backups",
            type=click.IntRange(0, None),
            default=DEFAULT_AUDIT_MAX_BACKUPS,
            show_default=True,
            help="Rotated audit logs kept (audit.log.1 is the newest).",
        ),
        click.option(
            "--audit-format",
            type=click.Choice([f.value for f in AuditFormat]),
            default=AuditFormat.JSON.value,
            show_default=True,
            help="json: raygate's line; kubernetes: audit.k8s.io/v1 Event, as kube-apiserver "
            "writes its audit log.",
        ),
        click.option(
            "--audit-failure-policy",
            type=click.Choice([p.value for p in AuditFailurePolicy]),
            default=AuditFailurePolicy.FAIL_CLOSED.value,
            show_default=True,
            help="While audit lines cannot be written (disk full, unwritable): fail-closed "
            "answers 503 and forwards nothing; fail-open keeps forwarding.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def audit_config(
    log: str | None, max_size: str, max_backups: int, format: str, failure_policy: str
) -> AuditConfig:
    """The `--audit-*` flags as the `audit:` section of the config."""
    from pydantic import ValidationError

    from raygate.config.model import AuditConfig

    try:
        return AuditConfig(
            log=log,
            max_size=max_size,  # type: ignore[arg-type]
            max_backups=max_backups,
            format=AuditFormat(format),
            failure_policy=AuditFailurePolicy(failure_policy),
        )
    except ValidationError as err:
        message = err.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(f"--audit-max-size: {message}") from None
