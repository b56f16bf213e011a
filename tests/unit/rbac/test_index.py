"""PolicyIndex: Kubernetes' RBAC authorizer semantics over bindings, roles and subjects."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raygate.errors import ManifestError
from raygate.identity import Attributes, Identity, service_account_identity
from raygate.objects import ClusterRoleBinding, RoleBinding, Subject, parse_object
from raygate.rbac import LocalRBACAuthorizer, PolicyIndex

RBAC = "rbac.authorization.k8s.io/v1"


def role(name: str, namespace: str, *rules: dict[str, Any]) -> Any:
    return parse_object(
        {"apiVersion": RBAC, "kind": "Role", "metadata": {"name": name, "namespace": namespace},
         "rules": list(rules)}
    )


def cluster_role(
    name: str, *rules: dict[str, Any], labels: dict[str, str] | None = None,
    aggregate: dict[str, str] | None = None,
) -> Any:
    doc: dict[str, Any] = {
        "apiVersion": RBAC, "kind": "ClusterRole",
        "metadata": {"name": name, "labels": labels or {}}, "rules": list(rules),
    }
    if aggregate is not None:
        doc["aggregationRule"] = {"clusterRoleSelectors": [{"matchLabels": aggregate}]}
    return parse_object(doc)


def binding(
    name: str, namespace: str | None, role_kind: str, role_name: str, *subjects: dict[str, Any]
) -> Any:
    """A RoleBinding in `namespace`, or a ClusterRoleBinding when namespace is None."""
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return parse_object(
        {
            "apiVersion": RBAC,
            "kind": "ClusterRoleBinding" if namespace is None else "RoleBinding",
            "metadata": metadata,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind,
                        "name": role_name},
            "subjects": list(subjects),
        }
    )


def sa(name: str, namespace: str) -> dict[str, Any]:
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}


def user(name: str) -> dict[str, Any]:
    return {"kind": "User", "name": name, "apiGroup": "rbac.authorization.k8s.io"}


def group(name: str) -> dict[str, Any]:
    return {"kind": "Group", "name": name, "apiGroup": "rbac.authorization.k8s.io"}


def rule(verbs: list[str], resources: list[str], groups: list[str] | None = None,
         names: list[str] | None = None) -> dict[str, Any]:
    return {"verbs": verbs, "apiGroups": groups if groups is not None else ["ray.io"],
            "resources": resources, "resourceNames": names or []}


def url_rule(verbs: list[str], urls: list[str]) -> dict[str, Any]:
    return {"verbs": verbs, "nonResourceURLs": urls}


def ask(
    who: Identity, verb: str, resource: str = "rayclusters", namespace: str = "default",
    name: str = "", subresource: str = "", api_group: str = "ray.io",
) -> Attributes:
    return Attributes(who, verb, namespace=namespace, api_group=api_group, resource=resource,
                      subresource=subresource, name=name)


def ask_path(who: Identity, verb: str, path: str, namespace: str = "") -> Attributes:
    return Attributes(who, verb, resource_request=False, path=path, namespace=namespace)


RAY_USER = service_account_identity("default", "ray-user")
OTHER_SA = service_account_identity("default", "someone-else")
RAY_USER_IN_TEAM = service_account_identity("team-a", "ray-user")
ALICE = Identity(user="alice", groups=("system:authenticated",))
BOB = Identity(user="bob", groups=("ray-admins", "system:authenticated"))

# The Role and RoleBinding from the KubeRay kube-rbac-proxy guide, verbatim in substance.
GUIDE = [
    parse_object({"apiVersion": "v1", "kind": "ServiceAccount",
                  "metadata": {"name": "ray-user", "namespace": "default"}}),
    role("ray-user", "default", rule(["*"], ["rayclusters"])),
    binding("ray-user", "default", "Role", "ray-user", sa("ray-user", "default")),
]
GUIDE_GET = dict(verb="get", name="ray-cluster-with-auth")


@pytest.mark.parametrize(
    ("attributes", "allowed"),
    [
        (ask(RAY_USER, **GUIDE_GET), True),
        (ask(RAY_USER, "create", name="ray-cluster-with-auth", subresource=""), True),
        (ask(OTHER_SA, **GUIDE_GET), False),
        (ask(RAY_USER, **GUIDE_GET, namespace="team-a"), False),
        (ask(RAY_USER_IN_TEAM, **GUIDE_GET), False),
        (ask(RAY_USER, **GUIDE_GET, namespace=""), False),  # cluster scope: no RoleBindings
        (ask(RAY_USER, **GUIDE_GET, api_group=""), False),
        (ask(RAY_USER, **GUIDE_GET, subresource="jobs"), False),
        (ask(Identity(user="ray-user"), **GUIDE_GET), False),  # a User is not the SA
    ],
)
def test_guide_role_and_binding(attributes: Attributes, allowed: bool) -> None:
    assert PolicyIndex.build(GUIDE).authorize(attributes).allowed is allowed


def test_allowed_reason_names_binding_role_subject_and_rule() -> None:
    decision = PolicyIndex.build(GUIDE).authorize(ask(RAY_USER, **GUIDE_GET))
    assert decision.reason == (
        'RBAC: allowed by RoleBinding "ray-user/default" of Role "ray-user" to '
        'ServiceAccount "ray-user/default", '
        'rule: apiGroups=["ray.io"] resources=["rayclusters"] verbs=["*"]'
    )
    assert decision.source == "rbac"


def test_denied_reason_says_no_policy_matched() -> None:
    decision = PolicyIndex.build(GUIDE).authorize(ask(OTHER_SA, **GUIDE_GET))
    assert not decision.allowed
    assert decision.reason == "RBAC: no RBAC policy matched"
    assert decision.source == "rbac"


def test_empty_policy_denies() -> None:
    assert not PolicyIndex.build([]).authorize(ask(RAY_USER, **GUIDE_GET)).allowed


def test_role_in_other_namespace_does_not_grant() -> None:
    index = PolicyIndex.build([
        role("ray-user", "team-a", rule(["*"], ["rayclusters"])),
        binding("ray-user", "default", "Role", "ray-user", sa("ray-user", "default")),
    ])
    decision = index.authorize(ask(RAY_USER, **GUIDE_GET))
    assert not decision.allowed
    assert 'Role "ray-user" not found in namespace "default"' in decision.reason


def test_role_binding_to_cluster_role_grants_only_in_its_namespace() -> None:
    index = PolicyIndex.build([
        cluster_role("ray-viewer", rule(["get"], ["rayclusters"])),
        binding("view", "team-a", "ClusterRole", "ray-viewer", user("alice")),
    ])
    assert index.authorize(ask(ALICE, "get", namespace="team-a")).allowed
    assert not index.authorize(ask(ALICE, "get", namespace="default")).allowed
    assert not index.authorize(ask(ALICE, "get", namespace="")).allowed


def test_cluster_role_binding_grants_in_every_namespace_and_cluster_wide() -> None:
    index = PolicyIndex.build([
        cluster_role("ray-viewer", rule(["get", "list"], ["rayclusters"])),
        binding("view", None, "ClusterRole", "ray-viewer", user("alice")),
    ])
    for namespace in ("default", "team-a", ""):
        assert index.authorize(ask(ALICE, "list", namespace=namespace)).allowed
    assert not index.authorize(ask(ALICE, "delete")).allowed
    reason = index.authorize(ask(ALICE, "get")).reason
    assert reason.startswith('RBAC: allowed by ClusterRoleBinding "view" of ClusterRole '
                             '"ray-viewer" to User "alice"')


def test_cluster_role_binding_to_a_role_grants_nothing() -> None:
    doc = {
        "apiVersion": RBAC, "kind": "ClusterRoleBinding", "metadata": {"name": "b"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        "subjects": [user("alice")],
    }
    with pytest.raises(ManifestError, match="can only refer to a ClusterRole"):
        parse_object(doc)  # refused on apply, as kube-apiserver refuses it
    # ...but one stored before that check still loads (the schema allows it): it grants nothing.
    stored = ClusterRoleBinding.model_validate(doc)
    index = PolicyIndex.build([role("r", "default", rule(["*"], ["*"], ["*"])), stored])
    assert not index.authorize(ask(ALICE, "get")).allowed


@pytest.mark.parametrize("role_kind", ["Role", "ClusterRole"])
def test_binding_to_missing_role_grants_nothing_and_says_so(role_kind: str) -> None:
    index = PolicyIndex.build([binding("b", "default", role_kind, "gone", user("alice"))])
    decision = index.authorize(ask(ALICE, "get"))
    assert not decision.allowed
    assert f'{role_kind} "gone" not found' in decision.reason


def test_binding_starts_granting_once_its_role_exists() -> None:
    objects = [binding("b", "default", "ClusterRole", "late", user("alice"))]
    assert not PolicyIndex.build(objects).authorize(ask(ALICE, "get")).allowed
    objects.append(cluster_role("late", rule(["get"], ["rayclusters"])))
    assert PolicyIndex.build(objects).authorize(ask(ALICE, "get")).allowed


def _role_binding_with_unqualified_sa(namespace: str | None) -> RoleBinding:
    """Kubernetes accepts a ServiceAccount subject without namespace in a RoleBinding (it means
    the binding's namespace); raygate.objects refuses it at parse time, so build it directly."""
    base = binding("b", namespace, "ClusterRole", "edit", user("placeholder"))
    subject = Subject.model_construct(kind="ServiceAccount", name="ray-user", namespace=None,
                                      api_group=None)
    return base.model_copy(update={"subjects": [subject]})


def test_unqualified_sa_subject_in_role_binding_means_the_binding_namespace() -> None:
    index = PolicyIndex.build([
        cluster_role("edit", rule(["*"], ["rayclusters"])),
        _role_binding_with_unqualified_sa("default"),
    ])
    decision = index.authorize(ask(RAY_USER, "get"))
    assert decision.allowed
    assert 'to ServiceAccount "ray-user/default"' in decision.reason
    assert not index.authorize(ask(RAY_USER_IN_TEAM, "get", namespace="team-a")).allowed


def test_unqualified_sa_subject_in_cluster_role_binding_never_matches() -> None:
    index = PolicyIndex.build([
        cluster_role("edit", rule(["*"], ["rayclusters"])),
        _role_binding_with_unqualified_sa(None),
    ])
    for who in (RAY_USER, RAY_USER_IN_TEAM, Identity(user="ray-user")):
        assert not index.authorize(ask(who, "get")).allowed


@pytest.mark.parametrize(
    ("subject", "who", "allowed"),
    [
        (group("system:serviceaccounts:default"), RAY_USER, True),
        (group("system:serviceaccounts:default"), OTHER_SA, True),
        (group("system:serviceaccounts:default"), RAY_USER_IN_TEAM, False),
        (group("system:serviceaccounts"), RAY_USER_IN_TEAM, True),
        (group("system:serviceaccounts"), ALICE, False),
        (group("system:authenticated"), ALICE, True),
        (group("system:authenticated"), RAY_USER, True),
        (group("ray-admins"), BOB, True),
        (group("ray-admins"), ALICE, False),
        (group("alice"), ALICE, False),  # a group subject never matches a user name
        (user("alice"), ALICE, True),
        (user("ray-admins"), BOB, False),  # a user subject never matches a group
        (user("system:serviceaccount:default:ray-user"), RAY_USER, True),
        (sa("ray-user", "default"), RAY_USER, True),
        (sa("ray-user", "team-a"), RAY_USER, False),
    ],
)
def test_subjects(subject: dict[str, Any], who: Identity, allowed: bool) -> None:
    index = PolicyIndex.build([
        cluster_role("edit", rule(["*"], ["rayclusters"])),
        binding("b", "default", "ClusterRole", "edit", subject),
    ])
    assert index.authorize(ask(who, "get")).allowed is allowed


def test_reason_names_first_subject_that_applies() -> None:
    index = PolicyIndex.build([
        cluster_role("edit", rule(["*"], ["rayclusters"])),
        binding("b", None, "ClusterRole", "edit", user("carol"), group("ray-admins"), user("bob")),
    ])
    assert 'to Group "ray-admins"' in index.authorize(ask(BOB, "get")).reason


def test_cluster_role_bindings_are_visited_before_role_bindings() -> None:
    index = PolicyIndex.build([
        cluster_role("edit", rule(["*"], ["rayclusters"])),
        binding("a-namespaced", "default", "ClusterRole", "edit", user("alice")),
        binding("z-cluster", None, "ClusterRole", "edit", user("alice")),
    ])
    assert 'ClusterRoleBinding "z-cluster"' in index.authorize(ask(ALICE, "get")).reason


@pytest.mark.parametrize(
    ("attributes", "allowed"),
    [
        (ask(ALICE, "get", name="mine"), True),
        (ask(ALICE, "delete", name="mine"), True),
        (ask(ALICE, "get", name="theirs"), False),
        (ask(ALICE, "list"), False),  # no name: a name-restricted rule does not apply
        (ask(ALICE, "create", name="mine", subresource="jobs"), True),
        (ask(ALICE, "create", name="theirs", subresource="jobs"), False),
        (ask(ALICE, "get", name="mine", subresource="serve"), False),
        (ask(ALICE, "get", name="x", resource="rayservices", subresource="status"), True),
        (ask(ALICE, "get", name="x", resource="rayservices"), False),
    ],
)
def test_resource_names_and_subresources(attributes: Attributes, allowed: bool) -> None:
    index = PolicyIndex.build([
        role("owner", "default",
             rule(["get", "delete"], ["rayclusters"], names=["mine"]),
             rule(["create"], ["rayclusters/jobs"], names=["mine"]),
             rule(["get"], ["*/status"])),
        binding("owner", "default", "Role", "owner", user("alice")),
    ])
    assert index.authorize(attributes).allowed is allowed


def test_non_resource_urls_are_granted_by_cluster_role_bindings() -> None:
    index = PolicyIndex.build([
        cluster_role("health", url_rule(["get"], ["/healthz", "/api/*"])),
        binding("health", None, "ClusterRole", "health", group("system:authenticated")),
    ])
    assert index.authorize(ask_path(ALICE, "get", "/healthz")).allowed
    assert index.authorize(ask_path(ALICE, "get", "/api/version")).allowed
    assert not index.authorize(ask_path(ALICE, "post", "/api/jobs/")).allowed
    assert not index.authorize(ask_path(ALICE, "get", "/metrics")).allowed


def test_non_resource_urls_are_never_granted_by_role_bindings() -> None:
    index = PolicyIndex.build([
        cluster_role("health", url_rule(["get"], ["*"])),
        binding("health", "default", "ClusterRole", "health", user("alice")),
    ])
    # Even if a caller fills in a namespace, non-resource requests have none in Kubernetes.
    assert not index.authorize(ask_path(ALICE, "get", "/healthz", namespace="default")).allowed
    assert not index.authorize(ask_path(ALICE, "get", "/healthz")).allowed


def test_aggregated_cluster_role_grants_aggregated_rules() -> None:
    to_admin = {"rbac.raygate.io/aggregate-to-admin": "true"}
    index = PolicyIndex.build([
        cluster_role("raygate-admin", aggregate=to_admin),
        cluster_role("jobs", rule(["*"], ["rayclusters/jobs"]), labels=to_admin),
        cluster_role("not-aggregated", rule(["*"], ["rayclusters/serve"])),
        binding("admins", None, "ClusterRole", "raygate-admin", group("ray-admins")),
    ])
    decision = index.authorize(ask(BOB, "create", name="c", subresource="jobs"))
    assert decision.allowed
    assert 'ClusterRole "raygate-admin"' in decision.reason
    assert not index.authorize(ask(BOB, "create", name="c", subresource="serve")).allowed


def test_service_accounts_are_ignored_and_unknown_objects_refused() -> None:
    assert PolicyIndex.build(GUIDE[:1]).binding_count == 0
    with pytest.raises(TypeError, match="dict"):
        PolicyIndex.build([{"kind": "Role"}])


def test_rules_for_lists_cluster_and_namespace_grants() -> None:
    index = PolicyIndex.build([
        *GUIDE,
        cluster_role("health", url_rule(["get"], ["/healthz"])),
        binding("health", None, "ClusterRole", "health", group("system:serviceaccounts")),
    ])
    in_default = index.rules_for(RAY_USER, "default")
    assert [source for source, _ in in_default] == [
        'ClusterRoleBinding "health" of ClusterRole "health" to Group "system:serviceaccounts"',
        'RoleBinding "ray-user/default" of Role "ray-user" to ServiceAccount "ray-user/default"',
    ]
    assert in_default[1][1].resources == ["rayclusters"]
    assert len(index.rules_for(RAY_USER, "")) == 1
    assert len(index.rules_for(RAY_USER, "team-a")) == 1
    assert index.rules_for(ALICE, "default") == []


def test_local_authorizer_answers_from_the_index_it_holds_and_swaps_atomically() -> None:
    authorizer = LocalRBACAuthorizer(PolicyIndex.build([]))
    attributes = ask(RAY_USER, **GUIDE_GET)
    assert not asyncio.run(authorizer.authorize(attributes)).allowed
    authorizer.replace(PolicyIndex.build(GUIDE))
    assert asyncio.run(authorizer.authorize(attributes)).allowed
    assert authorizer.index.binding_count == 1


# --- properties -------------------------------------------------------------------------------

NAMESPACES = ["default", "team-a"]
QUERIES = [
    ask(who, verb, namespace=ns, name=name, subresource=sub)
    for who in (RAY_USER, RAY_USER_IN_TEAM, ALICE, BOB)
    for verb in ("get", "create")
    for ns in (*NAMESPACES, "")
    for name in ("", "c1")
    for sub in ("", "jobs")
] + [ask_path(who, "get", "/healthz") for who in (RAY_USER, ALICE, BOB)]

ROLES = [
    role("r", "default", rule(["get"], ["rayclusters"])),
    role("r", "team-a", rule(["create"], ["rayclusters/jobs"], names=["c1"])),
    cluster_role("c", rule(["*"], ["*/jobs"])),
    cluster_role("h", url_rule(["get"], ["/health*"])),
]

subjects = st.sampled_from([
    sa("ray-user", "default"), sa("ray-user", "team-a"), user("alice"), user("bob"),
    group("ray-admins"), group("system:serviceaccounts:team-a"), group("system:authenticated"),
])


def namespace_and_ref(refs: list[tuple[str, str]]) -> st.SearchStrategy[tuple[Any, ...]]:
    """(binding namespace, roleRef); a ClusterRoleBinding (None) never refers to a Role, which
    Kubernetes refuses."""
    return st.tuples(st.sampled_from([None, *NAMESPACES]), st.sampled_from(refs)).filter(
        lambda pair: pair[0] is not None or pair[1][0] == "ClusterRole"
    )


bindings = st.builds(
    lambda i, where, subs: binding(f"b{i}", where[0], *where[1], *subs),
    st.integers(0, 5),
    namespace_and_ref([("Role", "r"), ("ClusterRole", "c"), ("ClusterRole", "h"),
                       ("ClusterRole", "missing")]),
    st.lists(subjects, min_size=1, max_size=3),
)
unrelated_subjects = st.sampled_from([
    sa("ray-user", "elsewhere"), sa("other", "default"), user("mallory"), group("strangers"),
    user("system:serviceaccount:team-b:ray-user"),
])
unrelated_bindings = st.builds(
    lambda i, where, subs: binding(f"u{i}", where[0], *where[1], *subs),
    st.integers(0, 50),
    namespace_and_ref([("Role", "r"), ("ClusterRole", "c"), ("ClusterRole", "h")]),
    st.lists(unrelated_subjects, min_size=1, max_size=3),
)


def _dedupe(objects: list[Any]) -> list[Any]:
    """One binding per (kind, namespace, name), as a store would hold them."""
    return list({(o.kind, o.namespace, o.name): o for o in objects}.values())


@settings(max_examples=150, deadline=None)
@given(st.lists(bindings, max_size=6), st.lists(unrelated_bindings, max_size=20))
def test_unrelated_bindings_never_change_a_decision(related: list[Any], other: list[Any]) -> None:
    base = PolicyIndex.build([*ROLES, *_dedupe(related)])
    grown = PolicyIndex.build([*ROLES, *_dedupe(related), *_dedupe(other)])
    for attributes in QUERIES:
        assert grown.authorize(attributes) == base.authorize(attributes)


def _scan_like_kubernetes(objects: list[Any], attributes: Attributes) -> bool:
    """Reference: walk every binding as Kubernetes' DefaultRuleResolver does, no index."""
    who = attributes.identity
    namespace = attributes.namespace if attributes.resource_request else ""
    roles = {(o.namespace, o.name): o.rules for o in objects if o.kind == "Role"}
    cluster_roles = {o.name: o.rules for o in objects if o.kind == "ClusterRole"}

    def applies(subject: Subject, binding_namespace: str) -> bool:
        if subject.kind == "User":
            return subject.name == who.user
        if subject.kind == "Group":
            return subject.name in who.groups
        sa_namespace = subject.namespace or binding_namespace
        return bool(sa_namespace) and who.user == (
            f"system:serviceaccount:{sa_namespace}:{subject.name}"
        )

    from raygate.rbac.evaluate import rule_allows

    for obj in objects:
        if obj.kind == "ClusterRoleBinding":
            rules = cluster_roles.get(obj.role_ref.name, []) if obj.role_ref.kind == "ClusterRole" \
                else []
        elif obj.kind == "RoleBinding" and namespace and obj.namespace == namespace:
            rules = (roles.get((namespace, obj.role_ref.name), []) if obj.role_ref.kind == "Role"
                     else cluster_roles.get(obj.role_ref.name, []))
        else:
            continue
        binding_namespace = obj.namespace or ""
        if any(applies(s, binding_namespace) for s in obj.subjects):
            if any(rule_allows(r, attributes) for r in rules):
                return True
    return False


@settings(max_examples=150, deadline=None)
@given(st.lists(bindings, max_size=8))
def test_index_decides_like_a_full_scan(related: list[Any]) -> None:
    objects = [*ROLES, *_dedupe(related)]
    index = PolicyIndex.build(objects)
    for attributes in QUERIES:
        assert index.authorize(attributes).allowed is _scan_like_kubernetes(objects, attributes)
