"""`raygate auth can-i`: answers, exit statuses and messages as a kubectl user expects them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from raygate.cli.auth import (
    ResourceArg,
    format_rules_table,
    impersonated_identity,
    parse_resource_arg,
)
from raygate.cli.main import main
from raygate.identity import Identity
from raygate.objects import PolicyRule, parse_object
from raygate.store.sqlite import ObjectStore

RBAC = "rbac.authorization.k8s.io/v1"
RAY_USER = "system:serviceaccount:default:ray-user"
GUIDE_CHECK = ["get", "rayclusters.ray.io/ray-cluster-with-auth"]

GUIDE = [
    {"apiVersion": "v1", "kind": "ServiceAccount",
     "metadata": {"name": "ray-user", "namespace": "default"}},
    {"apiVersion": RBAC, "kind": "Role", "metadata": {"name": "ray-user", "namespace": "default"},
     "rules": [{"apiGroups": ["ray.io"], "resources": ["rayclusters"], "verbs": ["*"]}]},
    {"apiVersion": RBAC, "kind": "RoleBinding",
     "metadata": {"name": "ray-user", "namespace": "default"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ray-user"},
     "subjects": [{"kind": "ServiceAccount", "name": "ray-user", "namespace": "default"}]},
]
EXTRA = [
    {"apiVersion": RBAC, "kind": "ClusterRole", "metadata": {"name": "health"},
     "rules": [{"nonResourceURLs": ["/healthz", "/api/*"], "verbs": ["get"]}]},
    {"apiVersion": RBAC, "kind": "ClusterRoleBinding", "metadata": {"name": "health"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "health"},
     "subjects": [{"kind": "Group", "name": "system:authenticated"}]},
    {"apiVersion": RBAC, "kind": "ClusterRole", "metadata": {"name": "submitter"},
     "rules": [{"apiGroups": ["ray.io"], "resources": ["rayclusters/jobs"],
                "verbs": ["create", "get"]}]},
    {"apiVersion": RBAC, "kind": "RoleBinding",
     "metadata": {"name": "team-a-submitters", "namespace": "team-a"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                 "name": "submitter"},
     "subjects": [{"kind": "Group", "name": "ray-submitters"},
                  {"kind": "Group", "name": "system:serviceaccounts:team-a"}]},
]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    with ObjectStore.open(tmp_path) as store:
        store.apply(parse_object(doc) for doc in GUIDE + EXTRA)  # type: ignore[misc]
    return tmp_path


def can_i(state: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["auth", "can-i", *args, "--state", str(state)])


@pytest.mark.parametrize(
    ("args", "answer"),
    [
        ([*GUIDE_CHECK, "--as", RAY_USER], "yes"),
        ([*GUIDE_CHECK, "--as", RAY_USER, "-n", "default"], "yes"),
        (["delete", "rayclusters.ray.io", "--as", RAY_USER], "yes"),
        ([*GUIDE_CHECK, "--as", "system:serviceaccount:default:someone-else"], "no"),
        ([*GUIDE_CHECK, "--as", RAY_USER, "-n", "team-a"], "no"),
        ([*GUIDE_CHECK, "--as", RAY_USER, "--all-namespaces"], "no"),
        (["get", "rayclusters/ray-cluster-with-auth", "--as", RAY_USER], "yes"),  # known group
        (["get", "rayclusters.v1.ray.io", "--as", RAY_USER], "yes"),
        (["get", "rayclusters.example.com", "--as", RAY_USER], "no"),
        ([*GUIDE_CHECK, "--as", RAY_USER, "--subresource", "jobs"], "no"),
        (["get", "pods", "--as", RAY_USER], "no"),
    ],
)
def test_guide_answers(state: Path, args: list[str], answer: str) -> None:
    result = can_i(state, *args)
    assert result.stdout == f"{answer}\n"
    assert result.exit_code == (0 if answer == "yes" else 1)


def test_explain_names_the_binding_and_rule(state: Path) -> None:
    result = can_i(state, *GUIDE_CHECK, "--as", RAY_USER, "--explain")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "yes",
        'RBAC: allowed by RoleBinding "ray-user/default" of Role "ray-user" to ServiceAccount '
        '"ray-user/default", rule: apiGroups=["ray.io"] resources=["rayclusters"] verbs=["*"]',
    ]


def test_explain_on_no_says_nothing_matched(state: Path) -> None:
    result = can_i(state, *GUIDE_CHECK, "--as", "alice", "--explain")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == ["no", "RBAC: no RBAC policy matched"]


def test_quiet_answers_with_exit_status_only(state: Path) -> None:
    assert can_i(state, *GUIDE_CHECK, "--as", RAY_USER, "-q").stdout == ""
    result = can_i(state, *GUIDE_CHECK, "--as", "alice", "--quiet")
    assert (result.stdout, result.exit_code) == ("", 1)


@pytest.mark.parametrize(
    "args",
    [
        ["delete", "clusterrolebindings"],
        ["*", "*.*"],
        ["get", "/metrics"],
        ["create", "rayclusters.ray.io/x", "--subresource", "jobs", "-A"],
    ],
)
def test_without_as_the_local_admin_may_do_anything(tmp_path: Path, args: list[str]) -> None:
    result = can_i(tmp_path / "empty", *args, "--explain")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == "yes"
    assert "local admin" in result.stdout


@pytest.mark.parametrize(
    ("args", "answer"),
    [
        (["get", "/healthz", "--as", "alice"], "yes"),
        (["get", "/api/version", "--as", RAY_USER], "yes"),  # SAs are system:authenticated
        (["post", "/api/jobs/", "--as", "alice"], "no"),
        (["get", "/metrics", "--as", "alice"], "no"),
        (["get", "/healthz", "--as", "system:anonymous"], "no"),  # not authenticated
    ],
)
def test_non_resource_urls(state: Path, args: list[str], answer: str) -> None:
    assert can_i(state, *args).stdout == f"{answer}\n"


@pytest.mark.parametrize(
    ("args", "answer"),
    [
        # the service account's own groups reach Group subjects...
        (["--as", "system:serviceaccount:team-a:runner"], "yes"),
        (["--as", "system:serviceaccount:default:runner"], "no"),
        # ...unless --as-group names the groups instead, as Kubernetes impersonation does
        (["--as", "system:serviceaccount:team-a:runner", "--as-group", "x"], "no"),
        (["--as", "alice", "--as-group", "ray-submitters"], "yes"),
        (["--as", "alice", "--as-group", "other", "--as-group", "ray-submitters"], "yes"),
        (["--as", "alice"], "no"),
    ],
)
def test_impersonated_groups(state: Path, args: list[str], answer: str) -> None:
    result = can_i(state, "create", "rayclusters.ray.io/c", "--subresource", "jobs",
                   "-n", "team-a", *args)
    assert result.stdout == f"{answer}\n"


def test_state_directory_from_environment(state: Path) -> None:
    result = CliRunner().invoke(
        main, ["auth", "can-i", *GUIDE_CHECK, "--as", RAY_USER], env={"RAYGATE_STATE": str(state)}
    )
    assert (result.stdout, result.exit_code) == ("yes\n", 0)


def test_empty_state_directory_answers_no_and_warns(tmp_path: Path) -> None:
    result = can_i(tmp_path / "nothing-here", *GUIDE_CHECK, "--as", RAY_USER)
    assert (result.stdout, result.exit_code) == ("no\n", 1)
    assert "nothing stored in" in result.stderr
    assert not (tmp_path / "nothing-here").exists()  # a check never creates state


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["", "pods", "--as", "alice"], "verb must not be empty"),
        (["get", "--as", "alice"], "two arguments"),
        (["get", "pods", "extra", "--as", "alice"], "two arguments"),
        (["get", ".ray.io", "--as", "alice"], "names no resource type"),
        (
            ["get", "pods", "--as", "system:serviceaccount:default"],
            "system:serviceaccount:NAMESPACE:NAME",
        ),
        (["get", "pods", "--as", ""], "name a user"),
        (["get", "pods", "--as-group", "admins"], "--as-group needs --as"),
        (["get", "/healthz", "--subresource", "x", "--as", "a"], "--subresource can not be used"),
        (["--list", "get", "pods"], "--list takes no"),
        (["--list", "-A", "--as", "alice"], "can not be used together"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(state: Path, args: list[str], message: str) -> None:
    result = can_i(state, *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: ")
    assert message in result.stderr


def test_bad_input_is_refused_even_for_the_local_admin(tmp_path: Path) -> None:
    result = can_i(tmp_path, "get")
    assert result.exit_code == 2
    assert "two arguments" in result.stderr


def test_unreadable_state_is_an_error_not_a_no(tmp_path: Path) -> None:
    (tmp_path / "objects.db").write_text("this is not a database")
    result = can_i(tmp_path, *GUIDE_CHECK, "--as", RAY_USER)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")


def test_list_shows_the_rules_of_the_impersonated_user(state: Path) -> None:
    result = can_i(state, "--list", "--as", RAY_USER)
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "Resources            Non-Resource URLs   Resource Names   Verbs",
        "rayclusters.ray.io   []                  []               [*]",
        "                     [/api/*]            []               [get]",
        "                     [/healthz]          []               [get]",
    ]


def test_list_for_the_local_admin_is_cluster_admin(tmp_path: Path) -> None:
    result = can_i(tmp_path, "--list")
    assert result.stdout.splitlines() == [
        "Resources   Non-Resource URLs   Resource Names   Verbs",
        "*.*         []                  []               [*]",
        "            [*]                 []               [*]",
    ]


def rule(**fields: Any) -> PolicyRule:
    return PolicyRule.model_validate(fields)


def test_rules_table_breaks_down_and_merges_like_kubectl() -> None:
    table = format_rules_table([
        rule(verbs=["get", "list"], apiGroups=["ray.io", ""], resources=["rayclusters"]),
        rule(verbs=["watch", "get"], apiGroups=["ray.io"], resources=["rayclusters"]),
        rule(verbs=["create"], apiGroups=["ray.io"], resources=["rayclusters/jobs"],
             resourceNames=["a", "b"]),
    ])
    assert table.splitlines() == [
        "Resources                 Non-Resource URLs   Resource Names   Verbs",
        "rayclusters.ray.io/jobs   []                  [a]              [create]",
        "rayclusters.ray.io/jobs   []                  [b]              [create]",
        # sorted as kubectl sorts (Go's text of each rule, verbs first)
        "rayclusters.ray.io        []                  []               [get list watch]",
        "rayclusters               []                  []               [get list]",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rayclusters.ray.io", ResourceArg("rayclusters", "ray.io", "")),
        ("rayclusters.ray.io/ray-cluster-with-auth",
         ResourceArg("rayclusters", "ray.io", "ray-cluster-with-auth")),
        ("rayclusters", ResourceArg("rayclusters", "ray.io", "")),
        ("RayCluster/Mixed-Case", ResourceArg("rayclusters", "ray.io", "Mixed-Case")),
        ("rayclusters.v1.ray.io", ResourceArg("rayclusters", "ray.io", "")),
        ("pods", ResourceArg("pods", "", "")),
        ("po/p1", ResourceArg("pods", "", "p1")),
        ("sa", ResourceArg("serviceaccounts", "", "")),
        ("roles", ResourceArg("roles", "rbac.authorization.k8s.io", "")),
        ("clusterrolebinding", ResourceArg("clusterrolebindings", "rbac.authorization.k8s.io", "")),
        ("roles.rbac.authorization.k8s.io",
         ResourceArg("roles", "rbac.authorization.k8s.io", "")),
        ("widgets", ResourceArg("widgets", "", "")),
        ("widgets.example.com", ResourceArg("widgets", "example.com", "")),
        ("pods.example.com", ResourceArg("pods", "example.com", "")),
        ("*", ResourceArg("*", "", "")),
        ("*.*", ResourceArg("*", "*", "")),
        ("pods/log", ResourceArg("pods", "", "log")),  # kubectl reads the part after / as a name
    ],
)
def test_parse_resource_arg(text: str, expected: ResourceArg) -> None:
    assert parse_resource_arg(text) == expected


@pytest.mark.parametrize(
    ("user", "groups", "expected"),
    [
        (None, (), None),
        ("alice", (), Identity("alice", groups=("system:authenticated",))),
        ("alice", ("a", "b"), Identity("alice", groups=("a", "b", "system:authenticated"))),
        ("alice", ("system:authenticated",), Identity("alice", groups=("system:authenticated",))),
        (
            RAY_USER,
            (),
            Identity(RAY_USER, groups=("system:serviceaccounts", "system:serviceaccounts:default",
                                       "system:authenticated")),
        ),
        (RAY_USER, ("g",), Identity(RAY_USER, groups=("g", "system:authenticated"))),
        ("system:anonymous", (), Identity("system:anonymous", groups=("system:unauthenticated",))),
    ],
)
def test_impersonated_identity(
    user: str | None, groups: tuple[str, ...], expected: Identity | None
) -> None:
    assert impersonated_identity(user, groups) == expected
