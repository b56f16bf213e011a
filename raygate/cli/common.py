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
from typing import ParamSpec, TypeVar

import click

from raygate.errors import RaygateError, UsageError
from raygate.objects import check_namespace_name
from raygate.store.sqlite import DEFAULT_NAMESPACE
from raygate.store.state import STATE_ENV

__all__ = [
    "DEFAULT_NAMESPACE",
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
