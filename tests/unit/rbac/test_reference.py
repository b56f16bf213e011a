"""The RBAC engine decides as a plain evaluator of Kubernetes' RBAC rules, for random policies.

The reference (tests/unit/rbac/reference.py) is written from Kubernetes' documentation and its authorizer's behaviour
(plugin/pkg/auth/authorizer/rbac: ClusterRoleBindings everywhere, RoleBindings only for resource
requests in their own namespace; PolicyRule matching field by field), over the raw manifests,
with nothing shared with raygate but the manifests themselves.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from raygate.identity import Attributes, Identity, service_account_identity
from raygate.objects import parse_object
from raygate.rbac import PolicyIndex
from tests.unit.rbac.reference import latest, reference_allows

RBAC = "rbac.authorization.k8s.io/v1"
NAMESPACES = ["ns-a", "ns-b"]
USERS = ["alice", "bob"]
GROUPS = [
    "dev",
    "ops",
    "system:authenticated",
    "system:serviceaccounts",
    "system:serviceaccounts:ns-a",
]
SA_NAMES = ["runner", "viewer"]
ROLE_NAMES = ["r0", "r1"]
VERBS = ["get", "list", "create", "update", "patch", "delete", "watch", "*"]
API_GROUPS = ["", "ray.io", "apps", "*"]
RESOURCES = ["rayclusters", "rayclusters/jobs", "rayclusters/dashboard", "pods", "pods/log",
             "*/jobs", "*/log", "*", "rayclusters/*"]  # fmt: skip
RESOURCE_NAMES = ["c1", "c2"]
URLS = ["/healthz", "/api", "/api/*", "/api/v1/*", "/api**", "*", "/metrics", "/"]
PATHS = ["/healthz", "/healthz/x", "/api", "/api/", "/api/v1/jobs", "/apix", "/metrics", "/", ""]

# -- random policies, as manifests --------------------------------------------------------------

resource_rule = st.fixed_dictionaries(
    {
        "verbs": st.lists(st.sampled_from(VERBS), min_size=1, max_size=3, unique=True),
        "apiGroups": st.lists(st.sampled_from(API_GROUPS), min_size=1, max_size=2, unique=True),
        "resources": st.lists(st.sampled_from(RESOURCES), min_size=1, max_size=3, unique=True),
    },
    optional={
        "resourceNames": st.lists(
            st.sampled_from(RESOURCE_NAMES), min_size=1, max_size=2, unique=True
        )
    },
)
non_resource_rule = st.fixed_dictionaries(
    {
        "verbs": st.lists(st.sampled_from(VERBS), min_size=1, max_size=3, unique=True),
        "nonResourceURLs": st.lists(st.sampled_from(URLS), min_size=1, max_size=3, unique=True),
    }
)


@st.composite
def roles(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "apiVersion": RBAC,
        "kind": "Role",
        "metadata": {"name": draw(st.sampled_from(ROLE_NAMES)),
                     "namespace": draw(st.sampled_from(NAMESPACES))},
        "rules": draw(st.lists(resource_rule, max_size=3)),
    }  # fmt: skip


@st.composite
def cluster_roles(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "apiVersion": RBAC,
        "kind": "ClusterRole",
        "metadata": {"name": draw(st.sampled_from(ROLE_NAMES))},
        "rules": draw(st.lists(st.one_of(resource_rule, non_resource_rule), max_size=3)),
    }


subjects = st.one_of(
    st.builds(lambda n: {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": n},
              st.sampled_from([*USERS, "system:serviceaccount:ns-a:runner"])),
    st.builds(lambda n: {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": n},
              st.sampled_from(GROUPS)),
    st.builds(lambda n, ns: {"kind": "ServiceAccount", "name": n, "namespace": ns},
              st.sampled_from(SA_NAMES), st.sampled_from(NAMESPACES)),
)  # fmt: skip


@st.composite
def bindings(draw: st.DrawFn) -> dict[str, Any]:
    cluster = draw(st.booleans())
    role_kind = "ClusterRole" if cluster else draw(st.sampled_from(["Role", "ClusterRole"]))
    metadata = {"name": draw(st.sampled_from(["b0", "b1", "b2", "b3"]))}
    if not cluster:
        metadata["namespace"] = draw(st.sampled_from(NAMESPACES))
    return {
        "apiVersion": RBAC,
        "kind": "ClusterRoleBinding" if cluster else "RoleBinding",
        "metadata": metadata,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind,
                    "name": draw(st.sampled_from(ROLE_NAMES))},
        "subjects": draw(st.lists(subjects, min_size=1, max_size=3)),
    }  # fmt: skip


identities = st.one_of(
    st.builds(
        lambda user, groups: Identity(user=user, groups=tuple(groups)),
        st.sampled_from(USERS),
        st.lists(st.sampled_from(GROUPS), max_size=3, unique=True),
    ),
    st.builds(service_account_identity, st.sampled_from(NAMESPACES), st.sampled_from(SA_NAMES)),
)


def _concrete(values: list[str], pool: list[str]) -> list[str]:
    return [v for v in values if "*" not in v] or pool


@st.composite
def requests(draw: st.DrawFn, identity: Identity, docs: list[dict[str, Any]]) -> Attributes:
    """A request; half of them aimed at a rule of the policy, so that allows are common."""
    rules = [r for d in docs if d["kind"] in ("Role", "ClusterRole") for r in d["rules"]]
    aimed = draw(st.sampled_from(rules)) if rules and draw(st.booleans()) else {}
    verb = draw(st.sampled_from(_concrete(aimed.get("verbs", []), VERBS[:-1])))
    if "nonResourceURLs" in aimed or (not aimed and draw(st.integers(0, 3)) == 0):
        path = draw(
            st.sampled_from(PATHS + [u.rstrip("*") + "x" for u in aimed.get("nonResourceURLs", [])])
        )
        return Attributes(identity, verb, resource_request=False, path=path)
    resource = draw(
        st.sampled_from(_concrete(aimed.get("resources", []), ["rayclusters", "pods", "jobs"]))
    )
    resource, _, subresource = resource.partition("/")
    if not subresource:
        subresource = draw(st.sampled_from(["", "", "jobs", "log", "dashboard"]))
    return Attributes(
        identity,
        verb,
        namespace=draw(st.sampled_from([*NAMESPACES, *NAMESPACES, ""])),
        api_group=draw(
            st.sampled_from(_concrete(aimed.get("apiGroups", []), ["", "ray.io", "apps"]))
        ),
        resource=resource,
        subresource=subresource,
        name=draw(st.sampled_from(aimed.get("resourceNames", []) + ["", "c1", "c3"])),
    )


@st.composite
def identities_for(draw: st.DrawFn, docs: list[dict[str, Any]]) -> Identity:
    """An identity; half of them named by a subject of the policy."""
    named = [s for d in docs if "subjects" in d for s in d["subjects"]]
    if not named or draw(st.booleans()):
        return draw(identities)
    subject = draw(st.sampled_from(named))
    groups = draw(st.lists(st.sampled_from(GROUPS), max_size=2, unique=True))
    if subject["kind"] == "ServiceAccount":
        return service_account_identity(subject["namespace"], subject["name"])
    if subject["kind"] == "User":
        return Identity(user=subject["name"], groups=tuple(groups))
    return Identity(user=draw(st.sampled_from(USERS)), groups=(subject["name"], *groups))


# -- the property -------------------------------------------------------------------------------

EXAMPLES = 400


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=st.lists(st.one_of(roles(), cluster_roles(), bindings()), max_size=12),
    data=st.data(),
)
def test_rbac_engine_agrees_with_the_reference_evaluator(
    policy: list[dict[str, Any]], data: st.DataObject
) -> None:
    docs = latest(policy)
    index = PolicyIndex.build([parse_object(doc) for doc in docs])
    for _ in range(8):
        request = data.draw(requests(data.draw(identities_for(docs)), docs))
        decision = index.authorize(request)
        event("allowed" if decision.allowed else "denied")
        assert decision.allowed is reference_allows(docs, request), (request, decision.reason)
