"""ClusterRole aggregation, as Kubernetes' clusterrole-aggregation controller does it.

A ClusterRole with an aggregationRule has its rules *replaced* by the rules of every other
ClusterRole whose labels match any of its clusterRoleSelectors (taken in name order, duplicates
dropped). Kubernetes reaches a steady state by re-running the controller whenever a ClusterRole
changes, so aggregated roles that select other aggregated roles see those roles' aggregated
rules; `effective_cluster_role_rules` computes that steady state directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from raygate.objects import ClusterRole, LabelSelector, LabelSelectorRequirement, PolicyRule

_RuleKey = tuple[tuple[str, ...], ...]


def _requirement_valid(req: LabelSelectorRequirement) -> bool:
    if req.operator in ("In", "NotIn"):
        return bool(req.values)
    return not req.values


def selector_valid(selector: LabelSelector) -> bool:
    """Kubernetes rejects In/NotIn without values and Exists/DoesNotExist with values."""
    return all(_requirement_valid(req) for req in selector.match_expressions)


def _requirement_matches(req: LabelSelectorRequirement, labels: Mapping[str, str]) -> bool:
    present = req.key in labels
    if req.operator == "In":
        return present and labels[req.key] in req.values
    if req.operator == "NotIn":
        return not present or labels[req.key] not in req.values
    if req.operator == "Exists":
        return present
    return not present  # DoesNotExist


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Label-selector semantics: every matchLabels pair and every expression must hold;
    an empty selector matches everything."""
    if any(labels.get(key) != value for key, value in selector.match_labels.items()):
        return False
    return all(_requirement_matches(req, labels) for req in selector.match_expressions)


def _rule_key(rule: PolicyRule) -> _RuleKey:
    return (
        tuple(rule.verbs),
        tuple(rule.api_groups),
        tuple(rule.resources),
        tuple(rule.resource_names),
        tuple(rule.non_resource_urls),
    )


def _aggregate_once(
    role: ClusterRole,
    by_name: list[ClusterRole],
    rules: Mapping[str, tuple[PolicyRule, ...]],
) -> tuple[PolicyRule, ...]:
    assert role.aggregation_rule is not None
    selectors = role.aggregation_rule.cluster_role_selectors
    if not all(selector_valid(s) for s in selectors):
        # The controller gives up on an invalid selector; the role keeps the rules it has.
        return rules[role.name]
    collected: list[PolicyRule] = []
    seen: set[_RuleKey] = set()
    for selector in selectors:
        for other in by_name:
            if other.name == role.name or not selector_matches(selector, other.metadata.labels):
                continue
            for rule in rules[other.name]:
                key = _rule_key(rule)
                if key not in seen:
                    seen.add(key)
                    collected.append(rule)
    return tuple(collected)


def effective_cluster_role_rules(
    cluster_roles: Iterable[ClusterRole],
) -> dict[str, tuple[PolicyRule, ...]]:
    """The rules each ClusterRole grants once aggregation has settled, by role name."""
    by_name = sorted(cluster_roles, key=lambda r: r.name)
    rules: dict[str, tuple[PolicyRule, ...]] = {r.name: tuple(r.rules) for r in by_name}
    aggregated = [r for r in by_name if r.aggregation_rule is not None]
    # Updating in place (name order) settles chains in one pass per link; the bound keeps
    # selection cycles, which never settle in Kubernetes either, from looping forever.
    for _ in range(len(aggregated) + 1):
        changed = False
        for role in aggregated:
            new_rules = _aggregate_once(role, by_name, rules)
            if new_rules != rules[role.name]:
                rules[role.name] = new_rules
                changed = True
        if not changed:
            break
    return rules
