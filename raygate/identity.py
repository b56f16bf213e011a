"""The types every layer shares: who is calling, what they ask, what was decided."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
AUTHENTICATED_GROUP = "system:authenticated"
SERVICE_ACCOUNTS_GROUP = "system:serviceaccounts"


def _frozen_extra(extra: Mapping[str, tuple[str, ...]] | None) -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType({k: tuple(v) for k, v in (extra or {}).items()})


@dataclass(frozen=True)
class Identity:
    """An authenticated caller, as Kubernetes' user.Info describes one."""

    user: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: _frozen_extra(None))

    def __hash__(self) -> int:  # extra is a mapping; identity is user+uid+groups
        return hash((self.user, self.uid, self.groups))


def service_account_username(namespace: str, name: str) -> str:
    return f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"


def split_service_account_username(user: str) -> tuple[str, str] | None:
    """`system:serviceaccount:NS:NAME` -> (NS, NAME); anything else -> None."""
    if not user.startswith(SERVICE_ACCOUNT_PREFIX):
        return None
    rest = user[len(SERVICE_ACCOUNT_PREFIX) :]
    namespace, sep, name = rest.partition(":")
    if not sep or not namespace or not name or ":" in name:
        return None
    return namespace, name


def service_account_groups(namespace: str) -> tuple[str, ...]:
    """The groups Kubernetes gives every service-account token of a namespace."""
    return (SERVICE_ACCOUNTS_GROUP, f"{SERVICE_ACCOUNTS_GROUP}:{namespace}", AUTHENTICATED_GROUP)


def service_account_identity(namespace: str, name: str, uid: str = "") -> Identity:
    return Identity(
        user=service_account_username(namespace, name),
        uid=uid,
        groups=service_account_groups(namespace),
    )


@dataclass(frozen=True)
class Attributes:
    """Kubernetes authorization attributes (authorizer.AttributesRecord).

    A resource request names (namespace, api_group, resource, subresource, name);
    a non-resource request names a URL path.
    """

    identity: Identity
    verb: str
    resource_request: bool = True
    namespace: str = ""
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""

    def describe(self) -> str:
        """Kubernetes' wording for a refused request, e.g. for 403 bodies."""
        user = self.identity.user
        if not self.resource_request:
            return f'User "{user}" cannot {self.verb} path "{self.path}"'
        resource = self.resource + (f"/{self.subresource}" if self.subresource else "")
        text = f'User "{user}" cannot {self.verb} resource "{resource}" in API group "{self.api_group}"'
        if self.namespace:
            text += f' in the namespace "{self.namespace}"'
        else:
            text += " at the cluster scope"
        return text


@dataclass(frozen=True)
class Decision:
    """The answer of an authorizer. `reason` says why, naming the binding and rule when allowed."""

    allowed: bool
    reason: str = ""
    source: str = ""
