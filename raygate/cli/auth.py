"""`raygate auth can-i`: kubectl's access check against the embedded authority's RBAC."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import click

from raygate.cli.common import report_errors, state_option
from raygate.errors import RaygateError, UsageError
from raygate.identity import (
    AUTHENTICATED_GROUP,
    SERVICE_ACCOUNT_PREFIX,
    Attributes,
    Decision,
    Identity,
    service_account_groups,
    split_service_account_username,
)
from raygate.objects import KIND_ALIASES, RBAC_GROUP, PolicyRule
from raygate.rbac import PolicyIndex
from raygate.store.sqlite import ObjectStore
from raygate.store.state import resolve_state_dir

DEFAULT_NAMESPACE = "default"
ANONYMOUS_USER = "system:anonymous"
UNAUTHENTICATED_GROUP = "system:unauthenticated"
EXIT_NO = 1
# Distinct from a `no`, so scripts can tell "denied" from "could not answer".
EXIT_ERROR = 2

ADMIN_REASON = (
    "local admin: whoever can read the state directory holds every permission, as a cluster "
    "admin's kubeconfig does (use --as to check someone else)"
)
# What kubectl shows for cluster-admin.
ADMIN_RULES = (
    PolicyRule.model_validate({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
    PolicyRule.model_validate({"verbs": ["*"], "nonResourceURLs": ["*"]}),
)

# kubectl resolves TYPE through API discovery; we cannot, so we know the kinds raygate stores,
# the core kinds people commonly ask about, and KubeRay's. Anything else keeps the group typed.
_CORE_RESOURCES = {
    "pods": ("pod", "po"),
    "services": ("service", "svc"),
    "configmaps": ("configmap", "cm"),
    "secrets": ("secret",),
    "namespaces": ("namespace", "ns"),
    "nodes": ("node", "no"),
    "events": ("event", "ev"),
    "endpoints": ("ep",),
    "persistentvolumeclaims": ("persistentvolumeclaim", "pvc"),
    "persistentvolumes": ("persistentvolume", "pv"),
}
_RAY_RESOURCES = {
    "rayclusters": ("raycluster",),
    "rayjobs": ("rayjob",),
    "rayservices": ("rayservice",),
}


def _known_resources() -> dict[str, tuple[str, str]]:
    """Every name kubectl would accept for a known TYPE -> (plural resource, API group)."""
    known: dict[str, tuple[str, str]] = {}
    for table, group in ((_CORE_RESOURCES, ""), (_RAY_RESOURCES, "ray.io")):
        for plural, aliases in table.items():
            for alias in (plural, *aliases):
                known[alias] = (plural, group)
    for alias, kind in KIND_ALIASES.items():
        if "." not in alias:
            group = "" if kind == "ServiceAccount" else RBAC_GROUP
            known[alias] = (kind.lower() + "s", group)
    return known


_KNOWN_RESOURCES = _known_resources()
_VERSION = re.compile(r"^v\d+((alpha|beta)\d+)?$")


@dataclass(frozen=True)
class ResourceArg:
    resource: str
    api_group: str
    name: str


def parse_resource_arg(text: str) -> ResourceArg:
    """`TYPE[.VERSION][.GROUP][/NAME]` as kubectl reads it: `rayclusters.ray.io/c` ->
    (rayclusters, ray.io, c); `sa` -> (serviceaccounts, "", ""); `widgets.example.com`
    -> (widgets, example.com, "")."""
    type_text, _, name = text.partition("/")
    # kubectl lowercases the type, never the name.
    resource, _, group = type_text.lower().partition(".")
    if not resource:
        raise UsageError(f"{text!r} names no resource type (TYPE[.GROUP][/NAME])")
    version, _, rest = group.partition(".")
    if rest and _VERSION.match(version):  # rayclusters.v1.ray.io
        group = rest
    known = _KNOWN_RESOURCES.get(resource)
    if known is not None and group in ("", known[1]):
        resource, group = known
    return ResourceArg(resource, group, name)


def impersonated_identity(user: str | None, groups: tuple[str, ...]) -> Identity | None:
    """The identity kube-apiserver builds for `--as USER --as-group G...`; None without --as.

    A service-account user gets its fixed groups unless groups were given; every user but
    system:anonymous also gets system:authenticated.
    """
    if user is None:
        if groups:
            raise UsageError("--as-group needs --as: name the user whose groups they are")
        return None
    if not user or user.strip() != user:
        raise UsageError(f"--as {user!r}: name a user, e.g. --as alice")
    all_groups = list(groups)
    if user.startswith(SERVICE_ACCOUNT_PREFIX):
        parsed = split_service_account_username(user)
        if parsed is None:
            raise UsageError(
                f"--as {user!r}: a service account is system:serviceaccount:NAMESPACE:NAME"
            )
        if not groups:
            all_groups = list(service_account_groups(parsed[0]))
    implied = UNAUTHENTICATED_GROUP if user == ANONYMOUS_USER else AUTHENTICATED_GROUP
    if implied not in all_groups:
        all_groups.append(implied)
    return Identity(user=user, groups=tuple(all_groups))


def _access_attributes(
    identity: Identity, args: tuple[str, ...], subresource: str, namespace: str
) -> Attributes:
    if len(args) != 2:
        raise UsageError(
            "you must specify two arguments: verb resource or verb resource/resourceName"
        )
    verb, target = args
    if not verb.strip():
        raise UsageError("the verb must not be empty (get, list, create, delete, *, ...)")
    if target.startswith("/"):
        if subresource:
            raise UsageError("--subresource can not be used with a non-resource URL")
        return Attributes(identity, verb, resource_request=False, path=target)
    parsed = parse_resource_arg(target)
    return Attributes(
        identity,
        verb,
        namespace=namespace,
        api_group=parsed.api_group,
        resource=parsed.resource,
        subresource=subresource,
        name=parsed.name,
    )


def _load_index(state: Path | None) -> PolicyIndex:
    state_dir = resolve_state_dir(state)
    with ObjectStore.open(state_dir, create=False) as store:
        if store.path is None:
            click.echo(f"warning: nothing stored in {state_dir} yet; nothing is granted", err=True)
        return PolicyIndex.build(store.list_objects())


def _go_list(values: list[str]) -> str:
    return "[" + " ".join(values) + "]"  # how kubectl (Go's %v) prints a string list


def _breakdown(rule: PolicyRule) -> list[PolicyRule]:
    """One rule per (group, resource, verb, name) or (URL, verb), like kubectl's BreakdownRule."""
    parts: list[PolicyRule] = []
    for group in rule.api_groups:
        for resource in rule.resources:
            for verb in rule.verbs:
                for name in rule.resource_names or [None]:
                    parts.append(
                        PolicyRule(
                            verbs=[verb],
                            api_groups=[group],
                            resources=[resource],
                            resource_names=[name] if name is not None else [],
                        )
                    )
    for url in rule.non_resource_urls:
        for verb in rule.verbs:
            parts.append(PolicyRule(verbs=[verb], non_resource_urls=[url]))
    return parts


def _compact(rules: list[PolicyRule]) -> list[PolicyRule]:
    """Merge the verbs of rules on the same group, resource and name, like CompactRules."""
    merged: dict[tuple[str, str, str], list[str]] = {}
    others: list[PolicyRule] = []
    for rule in rules:
        if rule.non_resource_urls:
            if rule not in others:
                others.append(rule)
            continue
        key = (rule.api_groups[0], rule.resources[0], "".join(rule.resource_names))
        verbs = merged.setdefault(key, [])
        verbs.extend(v for v in rule.verbs if v not in verbs)
    compacted = [
        PolicyRule(
            verbs=verbs,
            api_groups=[group],
            resources=[resource],
            resource_names=[name] if name else [],
        )
        for (group, resource, name), verbs in merged.items()
    ]
    return compacted + others


def _sort_key(rule: PolicyRule) -> str:
    # kubectl sorts by the Go String() of each rule, which starts with the verbs.
    return "".join(
        _go_list(values)
        for values in (
            rule.verbs,
            rule.api_groups,
            rule.resources,
            rule.resource_names,
            rule.non_resource_urls,
        )
    )


def _resource_column(rule: PolicyRule) -> str:
    if not rule.resources:
        return ""
    resource, _, sub = rule.resources[0].partition("/")
    if rule.api_groups and rule.api_groups[0]:
        resource += "." + rule.api_groups[0]
    return f"{resource}/{sub}" if sub else resource


def format_rules_table(rules: list[PolicyRule]) -> str:
    """The `kubectl auth can-i --list` table for `rules`."""
    parts = [part for rule in rules for part in _breakdown(rule)]
    rows = [["Resources", "Non-Resource URLs", "Resource Names", "Verbs"]]
    for rule in sorted(_compact(parts), key=_sort_key):
        rows.append(
            [
                _resource_column(rule),
                _go_list(rule.non_resource_urls),
                _go_list(rule.resource_names),
                _go_list(rule.verbs),
            ]
        )
    # kubectl's tab writer: columns at least 10 wide, 3 spaces of padding, last one unpadded.
    widths = [max(10, *(len(row[i]) + 3 for row in rows)) for i in range(3)]
    return "\n".join(
        "".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + row[3]
        for row in rows
    )


@click.group()
def auth() -> None:
    """Inspect authorization, like `kubectl auth`."""


@auth.command("can-i")
@click.argument("args", nargs=-1, metavar="VERB TYPE[.GROUP][/NAME] | VERB /URL")
@click.option("--subresource", default="", help="Subresource, e.g. jobs for rayclusters/jobs.")
@click.option("-n", "--namespace", default=None, help="Namespace to ask about (default: default).")
@click.option(
    "-A", "--all-namespaces", is_flag=True, help="Ask about every namespace (cluster scope)."
)
@click.option("--as", "as_user", default=None, metavar="USER", help="Ask for this user.")
@click.option(
    "--as-group",
    "as_groups",
    multiple=True,
    metavar="GROUP",
    help="A group of the --as user (repeatable).",
)
@click.option("--list", "list_rules", is_flag=True, help="List every allowed action instead.")
@click.option("--explain", is_flag=True, help="Print why, naming the binding and rule.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing; answer with the exit status.")
@state_option
@report_errors
def can_i(
    args: tuple[str, ...],
    subresource: str,
    namespace: str | None,
    all_namespaces: bool,
    as_user: str | None,
    as_groups: tuple[str, ...],
    list_rules: bool,
    explain: bool,
    quiet: bool,
    state: Path | None,
) -> None:
    """Check whether an action is allowed: prints yes (exit 0) or no (exit 1).

    \b
      raygate auth can-i get rayclusters.ray.io/ray-cluster-with-auth \\
          --as system:serviceaccount:default:ray-user
      raygate auth can-i create rayclusters.ray.io --subresource jobs -n team-a --as alice
      raygate auth can-i get /healthz --as bob --as-group ray-admins
      raygate auth can-i --list --as system:serviceaccount:default:ray-user

    Without --as the question is about you, the local admin: whoever can read the state
    directory holds every permission (as a cluster admin's kubeconfig does), so the answer is
    always yes. --as system:serviceaccount:NS:NAME brings that account's groups
    (system:serviceaccounts, system:serviceaccounts:NS, system:authenticated), as Kubernetes
    impersonation does; any other --as user gets system:authenticated plus its --as-group.

    Exit status: 0 yes, 1 no, 2 the question could not be answered (bad input, unreadable state).
    """
    identity = impersonated_identity(as_user, as_groups)
    scope = "" if all_namespaces else (namespace or DEFAULT_NAMESPACE)
    if list_rules:
        if args:
            raise UsageError("--list takes no VERB or TYPE arguments")
        if quiet or all_namespaces or subresource:
            raise UsageError(
                "--list and --quiet, --all-namespaces, --subresource can not be used together"
            )
        if identity is None:
            rules: list[PolicyRule] = list(ADMIN_RULES)
        else:
            rules = [rule for _, rule in _load_or_exit(state).rules_for(identity, scope)]
        click.echo(format_rules_table(rules))
        return

    attributes = _access_attributes(identity or Identity(user="admin"), args, subresource, scope)
    if identity is None:
        decision = Decision(allowed=True, reason=ADMIN_REASON, source="local-admin")
    else:
        decision = _load_or_exit(state).authorize(attributes)
    if not quiet:
        click.echo("yes" if decision.allowed else "no")
        if explain:
            click.echo(decision.reason)
    if not decision.allowed:
        raise click.exceptions.Exit(EXIT_NO)


def _load_or_exit(state: Path | None) -> PolicyIndex:
    try:
        return _load_index(state)
    except RaygateError as err:
        click.echo(f"error: {err}", err=True)
        raise click.exceptions.Exit(EXIT_ERROR) from None
