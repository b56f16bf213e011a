"""`raygate get sessions` and `raygate delete session NAME` (or `--user U`): browser sign-in
sessions (raygate.sso.store) as an administrator sees and revokes them. A deleted session ends
at the browser's next request."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import click
import yaml

from raygate.errors import NotFoundError
from raygate.sso.store import DB_FILE, Session, SessionStore
from raygate.store.state import resolve_state_dir


def _store(state: Path | None) -> SessionStore | None:
    path = resolve_state_dir(state)
    if not (path / DB_FILE).exists():
        return None
    return SessionStore(path)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _document(session: Session) -> dict[str, object]:
    return {
        "name": session.name,
        "user": session.identity.user,
        "uid": session.identity.uid,
        "groups": list(session.identity.groups),
        "created": _iso(session.created),
        "expires": _iso(session.expires),
        "refreshed": _iso(session.refreshed),
    }


def get_sessions(names: Sequence[str], output: str | None, state: Path | None) -> None:
    from raygate.cli.objects import human_age

    store = _store(state)
    sessions = store.list() if store is not None else []
    if names:
        wanted = set(names)
        missing = wanted - {s.name for s in sessions}
        sessions = [s for s in sessions if s.name in wanted]
        for name in sorted(missing):
            click.echo(f'Error from server (NotFound): sessions "{name}" not found', err=True)
    if not sessions and not names:
        if output in ("json", "yaml"):
            click.echo(json.dumps({"items": []}) if output == "json" else "items: []")
        else:
            click.echo("No sessions found.", err=True)
        return
    if output == "name":
        click.echo("\n".join(f"session/{s.name}" for s in sessions))
    elif output in ("json", "yaml"):
        doc = {"items": [_document(s) for s in sessions]}
        click.echo(json.dumps(doc, indent=4) if output == "json" else yaml.safe_dump(doc).rstrip())
    else:
        now = datetime.now(UTC).timestamp()
        rows = [("NAME", "USER", "GROUPS", "AGE", "EXPIRES IN")]
        for s in sessions:
            groups = ",".join(g for g in s.identity.groups if g != "system:authenticated")
            left = human_age(s.expires - now) if s.expires > now else "expired"
            rows.append(
                (s.name, s.identity.user, groups or "<none>", human_age(now - s.created), left)
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            click.echo("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if names and len(sessions) < len(set(names)):
        raise click.exceptions.Exit(1)


def delete_sessions(names: Sequence[str], user: str | None, state: Path | None) -> None:
    store = _store(state)
    if user is not None:
        count = store.delete_user(user) if store is not None else 0
        click.echo(f'{count} session(s) of user "{user}" deleted')
        return
    missing = []
    for name in names:
        try:
            if store is None:
                raise NotFoundError(f'sessions "{name}" not found')
            session = store.delete_named(name)
        except NotFoundError as err:
            missing.append(f"Error from server (NotFound): {err}")
            continue
        click.echo(f'session "{name}" deleted (user {session.identity.user})')
    if missing:
        click.echo("\n".join(missing), err=True)
        raise click.exceptions.Exit(1)
