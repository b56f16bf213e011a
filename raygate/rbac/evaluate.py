"""Kubernetes' rule-matching predicates, one per PolicyRule field.

Same semantics as pkg/apis/rbac/v1/evaluation_helpers.go and RuleAllows in
plugin/pkg/auth/authorizer/rbac: every predicate is pure and answers for one field only.
"""

from __future__ import annotations

import json

from raygate.identity import Attributes
from raygate.objects import PolicyRule

VERB_ALL = "*"
API_GROUP_ALL = "*"
RESOURCE_ALL = "*"
NON_RESOURCE_ALL = "*"


def verb_matches(rule: PolicyRule, verb: str) -> bool:
    return any(v == VERB_ALL or v == verb for v in rule.verbs)


def api_group_matches(rule: PolicyRule, api_group: str) -> bool:
    return any(g == API_GROUP_ALL or g == api_group for g in rule.api_groups)


def resource_matches(rule: PolicyRule, resource: str, subresource: str = "") -> bool:
    """`res` matches only the bare resource, `res/sub` only that subresource, `*` everything
    (subresources included) and `*/sub` that subresource of any resource."""
    combined = f"{resource}/{subresource}" if subresource else resource
    for rule_resource in rule.resources:
        if rule_resource == RESOURCE_ALL or rule_resource == combined:
            return True
        if subresource and rule_resource == f"*/{subresource}":
            return True
    return False


def resource_name_matches(rule: PolicyRule, name: str) -> bool:
    """No resourceNames means every name; otherwise the request must name one of them
    (so a rule with resourceNames never allows list, create or watch without a name)."""
    return not rule.resource_names or name in rule.resource_names


def non_resource_url_matches(rule: PolicyRule, path: str) -> bool:
    """`*` matches every path; `/prefix*` every path starting with `/prefix`; else exact."""
    for url in rule.non_resource_urls:
        if url == NON_RESOURCE_ALL or url == path:
            return True
        # Kubernetes strips every trailing '*', so `/api**` is the prefix `/api` too.
        if url.endswith("*") and path.startswith(url.rstrip("*")):
            return True
    return False


def rule_allows(rule: PolicyRule, attributes: Attributes) -> bool:
    if not verb_matches(rule, attributes.verb):
        return False
    if not attributes.resource_request:
        return non_resource_url_matches(rule, attributes.path)
    return (
        api_group_matches(rule, attributes.api_group)
        and resource_matches(rule, attributes.resource, attributes.subresource)
        and resource_name_matches(rule, attributes.name)
    )


def describe_rule(rule: PolicyRule) -> str:
    """One line naming the rule's fields in manifest spelling, e.g. for decision reasons:
    `apiGroups=["ray.io"] resources=["rayclusters"] verbs=["*"]`."""
    fields: list[tuple[str, list[str]]] = []
    if rule.non_resource_urls:
        fields.append(("nonResourceURLs", rule.non_resource_urls))
    else:
        fields.append(("apiGroups", rule.api_groups))
        fields.append(("resources", rule.resources))
        if rule.resource_names:
            fields.append(("resourceNames", rule.resource_names))
    fields.append(("verbs", rule.verbs))
    return " ".join(f"{key}={json.dumps(values)}" for key, values in fields)
