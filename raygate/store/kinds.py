"""How kubectl and the API server name a kind in messages: `serviceaccount/x`, `roles.rbac...`."""

from __future__ import annotations

from raygate.objects import MODELS, NAMESPACED_KINDS, RBAC_GROUP

_RESOURCES: dict[str, str] = {
    "ServiceAccount": "serviceaccounts",
    "Secret": "secrets",
    "Role": "roles",
    "ClusterRole": "clusterroles",
    "RoleBinding": "rolebindings",
    "ClusterRoleBinding": "clusterrolebindings",
}
_GROUPS: dict[str, str] = {
    kind: ("" if kind in ("ServiceAccount", "Secret") else RBAC_GROUP) for kind in MODELS
}


def is_namespaced(kind: str) -> bool:
    return kind in NAMESPACED_KINDS


def resource_plural(kind: str) -> str:
    """`roles.rbac.authorization.k8s.io`, `serviceaccounts`: the API server's wording in errors."""
    group = _GROUPS[kind]
    return f"{_RESOURCES[kind]}.{group}" if group else _RESOURCES[kind]


def resource_singular(kind: str) -> str:
    """`role.rbac.authorization.k8s.io`, `serviceaccount`: kubectl's prefix in `TYPE/NAME`."""
    group = _GROUPS[kind]
    return f"{kind.lower()}.{group}" if group else kind.lower()


def object_ref(kind: str, name: str) -> str:
    """`serviceaccount/ray-user`, as `kubectl apply` and `-o name` print an object."""
    return f"{resource_singular(kind)}/{name}"
