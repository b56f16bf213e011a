"""`raygate rotate-key`: replace the embedded authority's signing key on purpose."""

from __future__ import annotations

from pathlib import Path

import click

from raygate.cli.common import report_errors, state_option
from raygate.store.state import resolve_state_dir
from raygate.store.tokens import KEY_FILE, rotate_signing_key


@click.command("rotate-key")
@state_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@report_errors
def rotate_key(state: Path | None, yes: bool) -> None:
    """Make a new signing key: every token issued so far stops working."""
    state_dir = resolve_state_dir(state, create=True)
    if not yes:
        click.confirm(
            f"Replace {state_dir / KEY_FILE}? Every token issued so far stops working",
            abort=True,
            err=True,
        )
    key = rotate_signing_key(state_dir)
    click.echo(
        f"signing key rotated (key id {key.kid}); tokens issued before no longer verify. "
        "Restart running gateways (raygate up / serve) and issue new tokens."
    )
