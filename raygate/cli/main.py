"""The `raygate` command: kubectl-shaped object commands plus `up` and `serve`."""

from __future__ import annotations

import importlib
import sys

import click

from raygate import __version__

# (module, attribute) of each top-level command; imported lazily so `raygate get` stays fast
# and does not import aiohttp or Ray.
_COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("raygate.cli.up", "up"),
    "serve": ("raygate.cli.serve", "serve"),
    "apply": ("raygate.cli.objects", "apply"),
    "delete": ("raygate.cli.objects", "delete"),
    "get": ("raygate.cli.objects", "get"),
    "create": ("raygate.cli.objects", "create"),
    "auth": ("raygate.cli.auth", "auth"),
    "manifests": ("raygate.cli.manifests", "manifests"),
    "rotate-key": ("raygate.cli.keys", "rotate_key"),
    "login": ("raygate.cli.login", "login"),
    "env": ("raygate.cli.login", "env"),
    "whoami": ("raygate.cli.login", "whoami"),
}


class _LazyGroup(click.Group):
    def main(self, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        """Usage errors as one line, kubectl-style: `error: ... (see 'raygate get --help')`."""
        try:
            # Without standalone mode click returns a command's exit code instead of exiting.
            code = super().main(*args, standalone_mode=False, **kwargs)
            sys.exit(code if isinstance(code, int) else 0)
        except click.exceptions.NoArgsIsHelpError as err:
            click.echo(err.ctx.get_help() if err.ctx is not None else err.format_message())
            sys.exit(0)
        except click.UsageError as err:
            path = err.ctx.command_path if err.ctx is not None else "raygate"
            click.echo(f"error: {err.format_message()} (see '{path} --help')", err=True)
            sys.exit(err.exit_code)
        except click.exceptions.Exit as err:
            sys.exit(err.exit_code)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        except click.ClickException as err:
            err.show()
            sys.exit(err.exit_code)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in _COMMANDS if self.get_command(ctx, name) is not None)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        try:
            module = importlib.import_module(target[0])
        except ModuleNotFoundError as err:
            if err.name != target[0]:
                raise
            return None
        return getattr(module, target[1], None)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="raygate")
def main() -> None:
    """Identity and Kubernetes-style access control in front of a Ray cluster."""


if __name__ == "__main__":
    main()
