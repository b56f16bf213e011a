"""`raygate apply|delete|get|create`: kubectl's object commands against the embedded authority."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import yaml

from raygate.cli.common import fail, namespace_option, report_errors, state_option
from raygate.errors import AlreadyExistsError, ConfigError, ManifestError, NotFoundError
from raygate.objects import (
    ClusterRoleBinding,
    RoleBinding,
    parse_object,
    resolve_kind,
    to_manifest,
)
from raygate.store.kinds import is_namespaced, object_ref, resource_singular
from raygate.store.manifests import load_manifests
from raygate.store.sqlite import (
    DEFAULT_NAMESPACE,
    ObjectStore,
    StoredObject,
    not_found_message,
)
from raygate.store.state import resolve_state_dir

_DRY_RUN_SUFFIX = {"none": "", "client": " (dry run)", "server": " (server dry run)"}


def _open_store(state: Path | None, *, write: bool) -> ObjectStore:
    return ObjectStore.open(resolve_state_dir(state, create=write), create=write)


def _not_found_line(kind: str, name: str) -> str:
    return f"Error from server (NotFound): {not_found_message(kind, name)}"


def _create(state: Path | None, doc: dict[str, Any]) -> None:
    """`raygate create KIND`: store the one object `doc` describes, kubectl's line on success."""
    kind, name = doc["kind"], doc["metadata"]["name"]
    try:
        obj = parse_object(doc)
        with _open_store(state, write=True) as store:
            store.create(obj)  # type: ignore[arg-type]
    except (ManifestError, AlreadyExistsError) as err:
        raise ConfigError(f"failed to create {kind.lower()}: {err}") from None
    click.echo(f"{object_ref(kind, name)} created")


# -- apply --------------------------------------------------------------------------------------


@click.command()
@click.option(
    "-f",
    "--filename",
    "filenames",
    multiple=True,
    required=True,
    help="Manifest file, directory of *.yaml/*.yml/*.json, or - for stdin. Repeatable.",
)
@namespace_option
@click.option(
    "--dry-run",
    type=click.Choice(["none", "client", "server"]),
    default="none",
    help="Validate and report what would change; store nothing.",
)
@state_option
@report_errors
def apply(
    filenames: Sequence[str], namespace: str | None, dry_run: str, state: Path | None
) -> None:
    """Create or update objects from manifests, all or nothing.

    \b
      raygate apply -f rbac.yaml
      cat rbac.yaml | raygate apply -f -
    """
    objects = load_manifests(filenames, namespace=namespace)
    if not objects:
        raise ConfigError("no objects passed to apply")
    with _open_store(state, write=True) as store:
        results = store.apply(objects, dry_run=dry_run != "none")
    for obj, action in results:
        click.echo(f"{object_ref(obj.kind, obj.name)} {action}{_DRY_RUN_SUFFIX[dry_run]}")


# -- delete -------------------------------------------------------------------------------------


def _delete_targets(
    args: Sequence[str], namespace: str | None
) -> list[tuple[str, str, str | None]]:
    """`KIND NAME...` or `KIND/NAME...` -> (kind, name, namespace) keys."""
    ns = namespace or DEFAULT_NAMESPACE
    if any("/" in arg for arg in args):
        targets = []
        for arg in args:
            kind_text, sep, name = arg.partition("/")
            if not sep or not kind_text or not name:
                raise ConfigError(
                    "there is no need to specify a resource type as a separate argument when "
                    "passing arguments in resource/name form (e.g. 'raygate delete "
                    f"{kind_text}/NAME' instead of 'raygate delete {kind_text} NAME')"
                )
            targets.append((resolve_kind(kind_text), name, ns))
        return targets
    kind = resolve_kind(args[0])
    if len(args) < 2:
        raise ConfigError("resource(s) were provided, but no name was specified")
    return [(kind, name, ns) for name in args[1:]]


@click.command()
@click.argument("args", nargs=-1, metavar="(KIND NAME... | KIND/NAME...)")
@click.option(
    "-f",
    "--filename",
    "filenames",
    multiple=True,
    help="Delete the objects named in these manifests (file, directory or -).",
)
@namespace_option
@click.option("--ignore-not-found", is_flag=True, help="Treat a missing object as deleted.")
@click.option("--user", default=None, help="With `sessions`: every sign-in session of this user.")
@state_option
@report_errors
def delete(
    args: Sequence[str],
    filenames: Sequence[str],
    namespace: str | None,
    ignore_not_found: bool,
    user: str | None,
    state: Path | None,
) -> None:
    """Delete objects by manifest or by kind and name. Deleting a service account revokes
    its tokens; deleting a session (`raygate delete session NAME`, or `sessions --user U`)
    signs its browser out."""
    if args and args[0].partition("/")[0] in SESSION_KINDS:
        from raygate.cli.sessions import delete_sessions

        names = [a.partition("/")[2] for a in args if "/" in a] or list(args[1:])
        if not names and user is None:
            raise ConfigError("name a session (see `raygate get sessions`) or pass --user")
        delete_sessions(names, user, state)
        return
    if user is not None:
        raise ConfigError("--user applies to sessions only")
    if filenames and args:
        raise ConfigError(
            "when paths or stdin are provided as input, you may not specify resource arguments "
            "as well"
        )
    if filenames:
        objects = load_manifests(filenames, namespace=namespace)
        targets = [(obj.kind, obj.name, obj.namespace) for obj in objects]
    elif args:
        targets = _delete_targets(args, namespace)
    else:
        raise ConfigError("You must provide one or more resources by argument or filename.")
    if not targets:
        raise ConfigError("no objects passed to delete")
    with _open_store(state, write=True) as store:
        found = store.delete_many(targets)
    missing = []
    for (kind, name, _), existed in zip(targets, found, strict=True):
        if existed:
            click.echo(f'{resource_singular(kind)} "{name}" deleted')
        elif not ignore_not_found:
            missing.append(_not_found_line(kind, name))
    if missing:
        raise fail("\n".join(missing))


# -- get ----------------------------------------------------------------------------------------

# Browser sign-in sessions: not RBAC objects, kept beside them (raygate.cli.sessions).
SESSION_KINDS = frozenset({"session", "sessions"})


def human_age(seconds: float) -> str:
    """kubectl's AGE column (apimachinery's HumanDuration): 45s, 5m3s, 2h10m, 3d4h, 2y15d."""
    total = int(seconds)
    if total < -1:
        return "<invalid>"
    if total < 0:
        return "0s"
    if total < 120:
        return f"{total}s"
    minutes = total // 60
    if minutes < 10:
        rest = total % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = total // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        rest = hours % 24
        return f"{days}d{rest}h" if rest else f"{days}d"
    if hours < 24 * 365 * 2:
        return f"{days}d"
    years = days // 365
    if hours < 24 * 365 * 8:
        rest = days % 365
        return f"{years}y{rest}d" if rest else f"{years}y"
    return f"{years}y"


def _age(obj: StoredObject, now: datetime) -> str:
    created = obj.metadata.creation_timestamp
    if not created:
        return "<unknown>"
    when = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return human_age((now - when).total_seconds())


def _binding_columns(obj: RoleBinding | ClusterRoleBinding, wide: bool) -> list[str]:
    columns = [f"{obj.role_ref.kind}/{obj.role_ref.name}"]
    if wide:
        for kind in ("User", "Group"):
            columns.append(", ".join(s.name for s in obj.subjects if s.kind == kind))
        columns.append(
            ", ".join(f"{s.namespace}/{s.name}" for s in obj.subjects if s.kind == "ServiceAccount")
        )
    return columns


def table(
    kind: str, objects: Sequence[StoredObject], *, all_namespaces: bool, wide: bool, now: datetime
) -> str:
    """The rows kubectl prints for `get KIND` (same columns, 3-space gaps)."""
    with_namespace = all_namespaces and is_namespaced(kind)
    header = ["NAMESPACE"] if with_namespace else []
    header.append("NAME")
    if kind == "ServiceAccount":
        header += ["SECRETS", "AGE"]
    elif kind == "Secret":
        header += ["TYPE", "DATA", "AGE"]
    elif kind in ("Role", "ClusterRole"):
        header += ["CREATED AT"]
    else:
        header += ["ROLE", "AGE"]
        if wide:
            header += ["USERS", "GROUPS", "SERVICEACCOUNTS"]
    rows = [header]
    for obj in objects:
        row = [obj.metadata.namespace or ""] if with_namespace else []
        row.append(obj.name)
        if kind == "ServiceAccount":
            row += [str(len(obj.secrets)), _age(obj, now)]  # type: ignore[union-attr]
        elif kind == "Secret":
            secret: Any = obj
            row += [secret.type, str(len(secret.data)), _age(obj, now)]
        elif kind in ("Role", "ClusterRole"):
            row.append(obj.metadata.creation_timestamp or "")
        else:
            binding: Any = obj
            row += [_binding_columns(binding, wide)[0], _age(obj, now)]
            row += _binding_columns(binding, wide)[1:]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _without_empty(value: Any) -> Any:
    """Drop empty lists and maps, as the API server omits empty optional fields."""
    if isinstance(value, dict):
        pruned = {k: _without_empty(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in ({}, [])}
    if isinstance(value, list):
        return [_without_empty(v) for v in value]
    return value


def printable(obj: StoredObject) -> dict[str, Any]:
    """The object as `get -o yaml|json` shows it."""
    return _without_empty(to_manifest(obj))


def _as_list(objects: Sequence[StoredObject]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "items": [printable(obj) for obj in objects],
        "kind": "List",
        "metadata": {"resourceVersion": ""},
    }


def render(
    kind: str,
    objects: Sequence[StoredObject],
    output: str | None,
    *,
    single: bool,
    all_namespaces: bool,
    now: datetime,
) -> str:
    if output == "name":
        return "\n".join(object_ref(obj.kind, obj.name) for obj in objects)
    if output in ("yaml", "json"):
        doc = printable(objects[0]) if single else _as_list(objects)
        if output == "json":
            return json.dumps(doc, indent=4, sort_keys=True)
        return yaml.safe_dump(doc, sort_keys=True, default_flow_style=False).rstrip("\n")
    return table(kind, objects, all_namespaces=all_namespaces, wide=output == "wide", now=now)


@click.command()
@click.argument("kind_text", metavar="KIND[/NAME]")
@click.argument("names", nargs=-1)
@namespace_option
@click.option("-A", "--all-namespaces", is_flag=True, help="List across all namespaces.")
@click.option("-o", "--output", type=click.Choice(["yaml", "json", "name", "wide"]))
@state_option
@report_errors
def get(
    kind_text: str,
    names: Sequence[str],
    namespace: str | None,
    all_namespaces: bool,
    output: str | None,
    state: Path | None,
) -> None:
    """Show stored objects: `raygate get sa`, `raygate get role ray-user -o yaml`.

    KIND takes kubectl's names: sa, serviceaccounts, role(s), clusterrole(s), rolebinding(s),
    clusterrolebinding(s), with or without .rbac.authorization.k8s.io.
    """
    if "/" in kind_text:
        kind_text, _, name = kind_text.partition("/")
        if names or not name:
            raise ConfigError(
                "arguments in resource/name form must have a single resource and name"
            )
        names = (name,)
    if kind_text in SESSION_KINDS:
        from raygate.cli.sessions import get_sessions

        get_sessions(names, output, state)
        return
    kind = resolve_kind(kind_text)
    if names and all_namespaces and is_namespaced(kind):
        raise ConfigError("a resource cannot be retrieved by name across all namespaces")
    ns = namespace or DEFAULT_NAMESPACE
    with _open_store(state, write=False) as store:
        if names:
            found = [(name, store.get(kind, name, ns)) for name in names]
            objects = [obj for _, obj in found if obj is not None]
            missing = [_not_found_line(kind, name) for name, obj in found if obj is None]
        else:
            scope = None if all_namespaces or not is_namespaced(kind) else ns
            objects = store.list_objects(kind, scope)
            missing = []
    listing = not names
    if objects or (listing and output in ("yaml", "json")):
        text = render(
            kind,
            objects,
            output,
            single=len(names) == 1,
            all_namespaces=all_namespaces,
            now=datetime.now(UTC),
        )
        click.echo(text)
    elif listing:
        where = f" in {ns} namespace" if is_namespaced(kind) and not all_namespaces else ""
        click.echo(f"No resources found{where}.", err=True)
    if missing:
        raise fail("\n".join(missing))


# -- create -------------------------------------------------------------------------------------


class _AliasedGroup(click.Group):
    """Subcommands reachable by kubectl's short names too (`create sa`)."""

    aliases = {"sa": "serviceaccount"}

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, self.aliases.get(cmd_name, cmd_name))

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        return (command.name if command else name), command, rest


@click.group(cls=_AliasedGroup)
def create() -> None:
    """Create a service account, a token for one, or a Secret."""


@create.command("serviceaccount")
@click.argument("name")
@namespace_option
@state_option
@report_errors
def create_serviceaccount(name: str, namespace: str | None, state: Path | None) -> None:
    """Create a service account (alias: sa)."""
    doc = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace or DEFAULT_NAMESPACE},
    }
    _create(state, doc)


@create.group("secret")
def create_secret() -> None:
    """Create a Secret (generic): e.g. one to bind long-lived tokens to."""


@create_secret.command("generic")
@click.argument("name")
@click.option(
    "--from-literal",
    "literals",
    multiple=True,
    metavar="KEY=VALUE",
    help="A key and literal value to put in the Secret (repeatable).",
)
@click.option("--type", "secret_type", default="Opaque", show_default=True, help="Secret type.")
@namespace_option
@state_option
@report_errors
def create_secret_generic(
    name: str,
    literals: Sequence[str],
    secret_type: str,
    namespace: str | None,
    state: Path | None,
) -> None:
    """Create a generic Secret, as `kubectl create secret generic` does.

    \b
      raygate create secret generic chat-key
      raygate create token ray-user --bound-object-kind Secret --bound-object-name chat-key --duration 8760h
      raygate delete secret chat-key      # revokes every token bound to it
    """
    string_data: dict[str, str] = {}
    for literal in literals:
        key, sep, value = literal.partition("=")
        if not sep or not key:
            raise ConfigError(f"--from-literal {literal!r}: expected KEY=VALUE")
        string_data[key] = value
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace or DEFAULT_NAMESPACE},
        "type": secret_type,
    }
    if string_data:
        doc["stringData"] = string_data
    _create(state, doc)


@create.command("token")
@click.argument("name")
@namespace_option
@click.option(
    "--duration",
    default="1h",
    show_default=True,
    help="Lifetime, as a Go duration (10m to 48h; up to 8760h when bound to a Secret): 30m, "
    "1h, 1h30m, 24h.",
)
@click.option(
    "--bound-object-kind",
    type=click.Choice(["Secret"]),
    default=None,
    help="Bind the token to an object: it stops being valid when that object is deleted "
    "(like kubectl create token).",
)
@click.option(
    "--bound-object-name",
    default=None,
    help="Name of the object (in the service account's namespace) the token is bound to.",
)
@click.option(
    "--audience",
    "audiences",
    multiple=True,
    help="Intended audience of the token (repeatable); default: the issuer, which raygate checks.",
)
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False),
    default=None,
    help="Ask this cluster's API server (TokenRequest, like `kubectl create token`) "
    "instead of the embedded authority.",
)
@state_option
@report_errors
def create_token(
    name: str,
    namespace: str | None,
    duration: str,
    audiences: Sequence[str],
    kubeconfig: str | None,
    state: Path | None,
    bound_object_kind: str | None = None,
    bound_object_name: str | None = None,
) -> None:
    """Print a signed token for service account NAME, and nothing else, on stdout:

    \b
      export TOKEN=$(raygate create token ray-user --duration=1h)
      export TOKEN=$(raygate create token ray-user --kubeconfig ~/.kube/config)
      # a long-lived key, revoked by deleting the Secret:
      raygate create token ray-user --bound-object-kind Secret --bound-object-name KEY --duration 8760h
    """
    # Imported here: RSA and JWT code is not needed by the other object commands.
    from raygate.durations import parse_duration
    from raygate.store.tokens import (
        DEFAULT_AUDIENCE,
        MAX_BOUND_TOKEN_DURATION,
        MAX_TOKEN_DURATION,
        check_token_duration,
        issue_token,
        load_signing_key,
    )

    if bool(bound_object_kind) != bool(bound_object_name):
        raise ConfigError(
            "--bound-object-kind and --bound-object-name go together, e.g. "
            "--bound-object-kind Secret --bound-object-name KEY"
        )
    lifetime = check_token_duration(
        parse_duration(duration),
        maximum=MAX_BOUND_TOKEN_DURATION if bound_object_kind else MAX_TOKEN_DURATION,
    )
    ns = namespace or DEFAULT_NAMESPACE
    if kubeconfig is not None:
        if bound_object_kind:
            raise ConfigError(
                "with --kubeconfig use kubectl create token --bound-object-kind (the API "
                "server binds tokens itself)"
            )
        click.echo(_kube_token(kubeconfig, ns, name, lifetime, audiences))
        return
    bound_secret = None
    with _open_store(state, write=False) as store:
        account = store.get("ServiceAccount", name, ns)
        if account is not None and bound_object_name:
            secret = store.get("Secret", bound_object_name, ns)
            if secret is None:
                raise NotFoundError(
                    f"failed to create token: {not_found_message('Secret', bound_object_name)}"
                )
            bound_secret = (bound_object_name, secret.metadata.uid or "")
    if account is None:
        raise NotFoundError(f"failed to create token: {not_found_message('ServiceAccount', name)}")
    key = load_signing_key(resolve_state_dir(state, create=True))
    click.echo(
        issue_token(
            ns,
            name,
            account.metadata.uid or "",
            signing_key=key,
            duration=lifetime,
            audiences=list(audiences) or [DEFAULT_AUDIENCE],
            bound_secret=bound_secret,
        )
    )


def _kube_token(
    kubeconfig: str, namespace: str, name: str, lifetime: timedelta, audiences: Sequence[str]
) -> str:
    """A token from the cluster's TokenRequest API for NAMESPACE/NAME."""
    import asyncio

    from raygate.errors import BackendUnavailable
    from raygate.kube.client import KubeClient

    async def request() -> str:
        async with await KubeClient.from_kubeconfig(kubeconfig) as client:
            return await client.create_token_request(
                namespace,
                name,
                duration_seconds=int(lifetime.total_seconds()),
                audiences=list(audiences),
            )

    try:
        return asyncio.run(request())
    except BackendUnavailable as err:
        if "answered 404" in str(err):
            raise NotFoundError(
                f"failed to create token: {not_found_message('ServiceAccount', name)}"
            ) from None
        raise
