"""The `raygate` command: kubectl-shaped object commands plus `up` and `serve`."""

from __future__ import annotations

import importlib

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
}


class _LazyGroup(click.Group):
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
