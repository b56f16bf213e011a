"""The types every layer shares: who is calling, what they ask, what was decided, and the two
questions every authority answers (TokenAuthenticator, Authorizer)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
AUTHENTICATED_GROUP = "system:authenticated"
SERVICE_ACCOUNTS_GROUP = "system:serviceaccounts"


def _frozen_extra(extra: Mapping[str, tuple[str, ...]] | None) -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType({k: tuple(v) for k, v in (extra or {}).items()})


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller, as Kubernetes' user.Info describes one.

    Slotted, as Attributes: the gateway's decision cache keeps a second's worth of both."""

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


@dataclass(frozen=True, slots=True)
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


# The verb for each method. HEAD and OPTIONS are safe methods that read nothing a GET may not
# read, so they need what a GET needs. (kube-rbac-proxy sends the verb "*" for them, which only
# a wildcard rule grants; the gateway answers OPTIONS itself, but the mapping stays total so an
# audit line always names a verb.)
_METHOD_VERBS: Mapping[str, str] = {
    "GET": "get",
    "HEAD": "get",
    "OPTIONS": "get",
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}


def verb_for_method(method: str) -> str:
    """The Kubernetes verb for an HTTP method; an unlisted method becomes its lowercased name,
    which only a rule naming that verb (or `*`) allows."""
    verb = _METHOD_VERBS.get(method)
    return verb if verb is not None else method.lower()


class TokenAuthenticator(Protocol):
    """Turns a bearer token into an Identity.

    Returns None when the token is not valid (the gateway answers 401).
    Raises raygate.errors.BackendUnavailable when it cannot decide (the gateway answers 503).
    """

    async def authenticate_token(self, token: str) -> Identity | None: ...


class Authorizer(Protocol):
    """Decides on Attributes.

    Raises raygate.errors.BackendUnavailable when it cannot decide (the gateway answers 503).
    """

    async def authorize(self, attributes: Attributes) -> Decision: ...
