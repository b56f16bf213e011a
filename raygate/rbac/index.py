"""A policy index: Kubernetes RBAC decisions over a fixed set of objects, keyed by subject.

Kubernetes walks every ClusterRoleBinding and every RoleBinding of the namespace per request;
here bindings are filed under the user names and group names they name, so a decision only
looks at the bindings of the caller's user and groups, whatever the total count.
Visiting order and reasons follow Kubernetes: ClusterRoleBindings first, then the RoleBindings
of the request's namespace, each binding's rules in order; the first matching rule allows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from raygate.identity import Attributes, Decision, Identity, service_account_username
from raygate.objects import (
    ClusterRole,
    ClusterRoleBinding,
    PolicyRule,
    Role,
    RoleBinding,
    Secret,
    ServiceAccount,
    Subject,
)
from raygate.rbac.aggregate import effective_cluster_role_rules
from raygate.rbac.evaluate import describe_rule, rule_allows

SOURCE = "rbac"

# Subjects are filed under ("user", name) or ("group", name); service accounts are users.
_SubjectKey = tuple[str, str]
# A role's rules, each with its text for reasons, described once per role rather than per decision.
_RoleRules = tuple[tuple[PolicyRule, str], ...]


def _described(rules: Iterable[PolicyRule]) -> _RoleRules:
    return tuple((rule, describe_rule(rule)) for rule in rules)


@dataclass(frozen=True, eq=False)
class _Grant:
    """One binding with its role reference resolved to rules."""

    order: int  # visiting order: cluster bindings by name, then role bindings by name
    kind: str  # "ClusterRoleBinding" or "RoleBinding"
    name: str
    namespace: str  # "" for a ClusterRoleBinding
    role_kind: str
    role_name: str
    subjects: tuple[Subject, ...]
    rules: _RoleRules
    problem: str  # why the binding grants nothing, e.g. its role does not exist

    def describe(self, subject_index: int) -> str:
        """Kubernetes' wording, e.g. `RoleBinding "ray-user/default" of Role "ray-user" to
        ServiceAccount "ray-user/default"`."""
        name = f"{self.name}/{self.namespace}" if self.kind == "RoleBinding" else self.name
        subject = _describe_subject(self.subjects[subject_index], self.namespace)
        return f'{self.kind} "{name}" of {self.role_kind} "{self.role_name}" to {subject}'


def _describe_subject(subject: Subject, binding_namespace: str) -> str:
    if subject.kind == "ServiceAccount":
        return f'ServiceAccount "{subject.name}/{subject.namespace or binding_namespace}"'
    return f'{subject.kind} "{subject.name}"'


def _subject_key(subject: Subject, binding_namespace: str) -> _SubjectKey | None:
    if subject.kind == "User":
        return ("user", subject.name)
    if subject.kind == "Group":
        return ("group", subject.name)
    # A ServiceAccount subject without a namespace means "in the binding's namespace" in a
    # RoleBinding and matches nobody in a ClusterRoleBinding.
    namespace = subject.namespace or binding_namespace
    if not namespace:
        return None
    return ("user", service_account_username(namespace, subject.name))


def _identity_keys(identity: Identity) -> list[_SubjectKey]:
    return [("user", identity.user), *(("group", g) for g in identity.groups)]


class PolicyIndex:
    """Immutable once built (but for the allows it remembers); `authorize` and `rules_for`
    are safe to share."""

    def __init__(
        self,
        cluster_grants: dict[_SubjectKey, list[tuple[_Grant, int]]],
        namespace_grants: dict[tuple[str, str, str], list[tuple[_Grant, int]]],
        binding_count: int,
    ) -> None:
        self._cluster = cluster_grants
        self._namespaced = namespace_grants
        self.binding_count = binding_count
        # The allow each (binding, subject, rule) gives, made once: its reason is the same for
        # every request it allows, and the gateway keeps a second's worth of them in its
        # decision cache. Bounded by the policy's size; a new revision builds a new index.
        self._allows: dict[tuple[int, int, int], Decision] = {}

    @classmethod
    def build(cls, objects: Iterable[object]) -> PolicyIndex:
        """Index parsed objects (raygate.objects); ServiceAccounts are ignored."""
        roles: dict[tuple[str, str], _RoleRules] = {}
        cluster_roles: list[ClusterRole] = []
        cluster_bindings: list[ClusterRoleBinding] = []
        role_bindings: list[RoleBinding] = []
        for obj in objects:
            if isinstance(obj, Role):
                roles[(obj.namespace or "", obj.name)] = _described(obj.rules)
            elif isinstance(obj, ClusterRole):
                cluster_roles.append(obj)
            elif isinstance(obj, ClusterRoleBinding):
                cluster_bindings.append(obj)
            elif isinstance(obj, RoleBinding):
                role_bindings.append(obj)
            elif not isinstance(obj, ServiceAccount | Secret):
                raise TypeError(f"PolicyIndex cannot index {type(obj).__name__} objects")
        cluster_rules = {
            name: _described(rules)
            for name, rules in effective_cluster_role_rules(cluster_roles).items()
        }

        grants: list[_Grant] = []
        for crb in sorted(cluster_bindings, key=lambda b: b.name):
            ref = crb.role_ref
            rules, problem = cluster_rules.get(ref.name), ""
            if ref.kind != "ClusterRole":
                rules, problem = (), "a ClusterRoleBinding can only refer to a ClusterRole"
            elif rules is None:
                rules, problem = (), f'ClusterRole "{ref.name}" not found'
            grants.append(
                _Grant(
                    len(grants),
                    crb.kind,
                    crb.name,
                    "",
                    ref.kind,
                    ref.name,
                    tuple(crb.subjects),
                    rules,
                    problem,
                )
            )
        for rb in sorted(role_bindings, key=lambda b: (b.namespace or "", b.name)):
            ref, namespace = rb.role_ref, rb.namespace or ""
            if ref.kind == "Role":
                found = roles.get((namespace, ref.name))
                where = f' in namespace "{namespace}"'
            else:
                found, where = cluster_rules.get(ref.name), ""
            rules = found if found is not None else ()
            problem = "" if found is not None else f'{ref.kind} "{ref.name}" not found{where}'
            grants.append(
                _Grant(
                    len(grants),
                    rb.kind,
                    rb.name,
                    namespace,
                    ref.kind,
                    ref.name,
                    tuple(rb.subjects),
                    rules,
                    problem,
                )
            )

        cluster: dict[_SubjectKey, list[tuple[_Grant, int]]] = defaultdict(list)
        namespaced: dict[tuple[str, str, str], list[tuple[_Grant, int]]] = defaultdict(list)
        for grant in grants:
            filed: set[_SubjectKey] = set()
            for i, subject in enumerate(grant.subjects):
                key = _subject_key(subject, grant.namespace)
                # Kubernetes reports the first subject that applies; file only that one.
                if key is None or key in filed:
                    continue
                filed.add(key)
                if grant.kind == "ClusterRoleBinding":
                    cluster[key].append((grant, i))
                else:
                    namespaced[(grant.namespace, *key)].append((grant, i))
        return cls(dict(cluster), dict(namespaced), len(grants))

    def _grants_for(self, identity: Identity, namespace: str) -> list[tuple[_Grant, int]]:
        """The bindings that apply to `identity`, in Kubernetes' visiting order, each with
        the index of its first subject naming the identity."""
        first_subject: dict[int, tuple[_Grant, int]] = {}
        for key in _identity_keys(identity):
            found = list(self._cluster.get(key, ()))
            if namespace:
                found.extend(self._namespaced.get((namespace, *key), ()))
            for grant, i in found:
                seen = first_subject.get(grant.order)
                if seen is None or i < seen[1]:
                    first_subject[grant.order] = (grant, i)
        return [first_subject[order] for order in sorted(first_subject)]

    def authorize(self, attributes: Attributes) -> Decision:
        # Non-resource requests have no namespace in Kubernetes, so RoleBindings never apply.
        namespace = attributes.namespace if attributes.resource_request else ""
        problems: list[str] = []
        for grant, subject_index in self._grants_for(attributes.identity, namespace):
            if grant.problem:
                problems.append(f"{grant.describe(subject_index)}: {grant.problem}")
            for rule_index, (rule, rule_text) in enumerate(grant.rules):
                if rule_allows(rule, attributes):
                    key = (grant.order, subject_index, rule_index)
                    allow = self._allows.get(key)
                    if allow is None:
                        reason = (
                            f"RBAC: allowed by {grant.describe(subject_index)}, rule: {rule_text}"
                        )
                        allow = self._allows[key] = Decision(True, reason, SOURCE)
                    return allow
        reason = "RBAC: no RBAC policy matched"
        if problems:
            reason += " (" + "; ".join(problems) + ")"
        return Decision(allowed=False, reason=reason, source=SOURCE)

    def rules_for(self, identity: Identity, namespace: str) -> list[tuple[str, PolicyRule]]:
        """Every rule granted to `identity` in `namespace` ("" = cluster-wide grants only),
        each with the binding that grants it, as `auth can-i --list` shows them."""
        return [
            (grant.describe(i), rule)
            for grant, i in self._grants_for(identity, namespace)
            for rule, _ in grant.rules
        ]
