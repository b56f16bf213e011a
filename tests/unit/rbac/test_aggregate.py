"""ClusterRole aggregation: label-selector semantics and the controller's steady state."""

from __future__ import annotations

from typing import Any

import pytest

from raygate.objects import ClusterRole, LabelSelector, PolicyRule
from raygate.rbac.aggregate import effective_cluster_role_rules, selector_matches


def selector(**fields: Any) -> LabelSelector:
    return LabelSelector.model_validate(fields)


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": operator, "values": list(values)}


def rule(resource: str, verb: str = "get") -> PolicyRule:
    return PolicyRule.model_validate(
        {"verbs": [verb], "apiGroups": ["ray.io"], "resources": [resource]}
    )


def cluster_role(
    name: str,
    rules: tuple[PolicyRule, ...] = (),
    labels: dict[str, str] | None = None,
    selectors: list[dict[str, Any]] | None = None,
) -> ClusterRole:
    doc: dict[str, Any] = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": labels or {}},
        "rules": [r.model_dump(by_alias=True) for r in rules],
    }
    if selectors is not None:
        doc["aggregationRule"] = {"clusterRoleSelectors": selectors}
    return ClusterRole.model_validate(doc)


@pytest.mark.parametrize(
    ("sel", "labels", "expected"),
    [
        (selector(), {}, True),  # empty selector: everything
        (selector(), {"a": "b"}, True),
        (selector(matchLabels={"agg": "true"}), {"agg": "true"}, True),
        (selector(matchLabels={"agg": "true"}), {"agg": "false"}, False),
        (selector(matchLabels={"agg": "true"}), {}, False),
        (selector(matchLabels={"agg": "true", "t": "x"}), {"agg": "true"}, False),
        (selector(matchLabels={"agg": "true"}), {"agg": "true", "other": "y"}, True),
        (selector(matchExpressions=[expr("tier", "In", "a", "b")]), {"tier": "b"}, True),
        (selector(matchExpressions=[expr("tier", "In", "a", "b")]), {"tier": "c"}, False),
        (selector(matchExpressions=[expr("tier", "In", "a")]), {}, False),
        (selector(matchExpressions=[expr("tier", "NotIn", "a")]), {"tier": "b"}, True),
        (selector(matchExpressions=[expr("tier", "NotIn", "a")]), {"tier": "a"}, False),
        # NotIn matches objects without the label at all, as in Kubernetes
        (selector(matchExpressions=[expr("tier", "NotIn", "a")]), {}, True),
        (selector(matchExpressions=[expr("tier", "Exists")]), {"tier": ""}, True),
        (selector(matchExpressions=[expr("tier", "Exists")]), {}, False),
        (selector(matchExpressions=[expr("tier", "DoesNotExist")]), {}, True),
        (selector(matchExpressions=[expr("tier", "DoesNotExist")]), {"tier": "a"}, False),
        # matchLabels and every expression must all hold
        (
            selector(matchLabels={"agg": "true"}, matchExpressions=[expr("tier", "Exists")]),
            {"agg": "true"},
            False,
        ),
        (
            selector(matchLabels={"agg": "true"}, matchExpressions=[expr("tier", "Exists")]),
            {"agg": "true", "tier": "x"},
            True,
        ),
    ],
)
def test_selector_matches(sel: LabelSelector, labels: dict[str, str], expected: bool) -> None:
    assert selector_matches(sel, labels) is expected


AGG = {"matchLabels": {"rbac.raygate.io/aggregate-to-admin": "true"}}
AGG_LABELS = {"rbac.raygate.io/aggregate-to-admin": "true"}


def test_aggregated_role_gets_rules_of_matching_roles_only() -> None:
    roles = [
        cluster_role("admin", selectors=[AGG]),
        cluster_role("jobs", [rule("rayclusters/jobs")], labels=AGG_LABELS),
        cluster_role("serve", [rule("rayclusters/serve")], labels=AGG_LABELS),
        cluster_role("unrelated", [rule("rayservices")]),
    ]
    rules = effective_cluster_role_rules(roles)
    assert rules["admin"] == (rule("rayclusters/jobs"), rule("rayclusters/serve"))
    assert rules["unrelated"] == (rule("rayservices"),)


def test_aggregation_replaces_declared_rules_like_the_controller() -> None:
    roles = [
        cluster_role("admin", [rule("declared")], selectors=[AGG]),
        cluster_role("jobs", [rule("rayclusters/jobs")], labels=AGG_LABELS),
    ]
    assert effective_cluster_role_rules(roles)["admin"] == (rule("rayclusters/jobs"),)


def test_aggregated_role_matching_nothing_grants_nothing() -> None:
    roles = [cluster_role("admin", [rule("declared")], selectors=[AGG])]
    assert effective_cluster_role_rules(roles)["admin"] == ()


def test_aggregation_takes_roles_in_name_order_and_drops_duplicate_rules() -> None:
    roles = [
        cluster_role("admin", selectors=[AGG]),
        cluster_role("z-role", [rule("b"), rule("a")], labels=AGG_LABELS),
        cluster_role("a-role", [rule("a"), rule("c")], labels=AGG_LABELS),
    ]
    assert effective_cluster_role_rules(roles)["admin"] == (rule("a"), rule("c"), rule("b"))


def test_any_selector_may_match() -> None:
    roles = [
        cluster_role("admin", selectors=[{"matchLabels": {"x": "1"}}, {"matchLabels": {"y": "1"}}]),
        cluster_role("r1", [rule("one")], labels={"x": "1"}),
        cluster_role("r2", [rule("two")], labels={"y": "1"}),
    ]
    assert effective_cluster_role_rules(roles)["admin"] == (rule("one"), rule("two"))


def test_aggregated_role_does_not_select_itself() -> None:
    roles = [
        cluster_role("admin", [rule("own")], labels=AGG_LABELS, selectors=[AGG]),
        cluster_role("jobs", [rule("jobs")], labels=AGG_LABELS),
    ]
    assert effective_cluster_role_rules(roles)["admin"] == (rule("jobs"),)


def test_chained_aggregation_settles() -> None:
    # admin aggregates edit (by label), edit aggregates view: admin ends with view's rules.
    roles = [
        cluster_role("admin", selectors=[{"matchLabels": {"to-admin": "true"}}]),
        cluster_role(
            "edit", labels={"to-admin": "true"}, selectors=[{"matchLabels": {"to-edit": "true"}}]
        ),
        cluster_role("view", [rule("rayclusters")], labels={"to-edit": "true"}),
    ]
    rules = effective_cluster_role_rules(roles)
    assert rules["edit"] == (rule("rayclusters"),)
    assert rules["admin"] == (rule("rayclusters"),)


def test_selection_cycle_terminates() -> None:
    roles = [
        cluster_role("a", [rule("ra")], labels={"l": "a"}, selectors=[{"matchLabels": {"l": "b"}}]),
        cluster_role("b", [rule("rb")], labels={"l": "b"}, selectors=[{"matchLabels": {"l": "a"}}]),
    ]
    rules = effective_cluster_role_rules(roles)
    # Kubernetes never settles a cycle either; all that matters is an answer from its members.
    assert all(r in (rule("ra"), rule("rb")) for r in rules["a"] + rules["b"])


def test_invalid_selector_leaves_declared_rules() -> None:
    roles = [
        cluster_role("admin", [rule("own")], selectors=[{"matchExpressions": [expr("k", "In")]}]),
        cluster_role("jobs", [rule("jobs")], labels={"k": "v"}),
    ]
    assert effective_cluster_role_rules(roles)["admin"] == (rule("own"),)
