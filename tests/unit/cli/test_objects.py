"""`raygate apply|get|delete|create` as a user types them: output, errors, exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
import yaml
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raygate.authn.jwt import ServiceAccountTokenAuthenticator
from raygate.cli.main import main
from raygate.cli.objects import human_age
from raygate.store.sqlite import ObjectStore
from raygate.store.tokens import DEFAULT_AUDIENCE, DEFAULT_ISSUER, load_signing_key

RBAC = """\
apiVersion: v1
kind: ServiceAccount
metadata:
  name: ray-user
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: ray-user
  namespace: default
rules:
- apiGroups: ["ray.io"]
  resources: ["rayclusters"]
  verbs: ["get", "create"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: ray-user
subjects:
- kind: ServiceAccount
  name: ray-user
  namespace: default
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: ray-user
"""


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def rbac_file(tmp_path: Path) -> Path:
    path = tmp_path / "rbac.yaml"
    path.write_text(RBAC)
    return path


def run(state: Path, *args: str, stdin: str | None = None) -> Result:
    runner = CliRunner()
    return runner.invoke(main, [*args, "--state", str(state)], input=stdin, catch_exceptions=False)


def stored_names(state: Path) -> list[tuple[str, str]]:
    with ObjectStore.open(state, create=False) as store:
        return [(o.kind, o.name) for o in store.list_objects()]


# -- apply --------------------------------------------------------------------------------------


def test_apply_prints_one_line_per_object_like_kubectl(state: Path, rbac_file: Path) -> None:
    result = run(state, "apply", "-f", str(rbac_file))
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "serviceaccount/ray-user created",
        "role.rbac.authorization.k8s.io/ray-user created",
        "rolebinding.rbac.authorization.k8s.io/ray-user created",
    ]


def test_reapply_reports_unchanged_and_configured(state: Path, rbac_file: Path) -> None:
    run(state, "apply", "-f", str(rbac_file))
    assert run(state, "apply", "-f", str(rbac_file)).stdout.splitlines()[1] == (
        "role.rbac.authorization.k8s.io/ray-user unchanged"
    )
    rbac_file.write_text(RBAC.replace('["get", "create"]', '["get"]'))
    assert run(state, "apply", "-f", str(rbac_file)).stdout.splitlines() == [
        "serviceaccount/ray-user unchanged",
        "role.rbac.authorization.k8s.io/ray-user configured",
        "rolebinding.rbac.authorization.k8s.io/ray-user unchanged",
    ]


def test_apply_from_stdin(state: Path) -> None:
    result = run(state, "apply", "-f", "-", stdin=RBAC)
    assert result.exit_code == 0
    assert len(stored_names(state)) == 3


def test_bad_document_rejects_the_whole_apply(state: Path, rbac_file: Path) -> None:
    run(state, "apply", "-f", str(rbac_file))
    rbac_file.write_text(
        RBAC.replace('["get", "create"]', '["get"]') + "---\nkind: Role\napiVersion: x\n"
    )
    result = run(state, "apply", "-f", str(rbac_file))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"error: {rbac_file} document 4 (Role ?): field apiVersion: "
        "Input should be 'rbac.authorization.k8s.io/v1' (and 1 more errors)\n"
    )
    with ObjectStore.open(state) as store:
        assert store.require("Role", "ray-user").rules[0].verbs == ["get", "create"]


def test_namespace_flag_contradicting_the_manifest_is_refused(state: Path, rbac_file: Path) -> None:
    result = run(state, "apply", "-f", str(rbac_file), "-n", "team")
    assert result.exit_code == 1
    assert (
        'the namespace from the provided object "default" does not match the namespace "team"'
        in (result.stderr)
    )
    assert not state.exists() or stored_names(state) == []


def test_apply_without_objects_is_an_error(state: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("---\n")
    result = run(state, "apply", "-f", str(empty))
    assert (result.exit_code, result.stderr) == (1, "error: no objects passed to apply\n")


def test_dry_run_changes_nothing(state: Path, rbac_file: Path) -> None:
    result = run(state, "apply", "-f", str(rbac_file), "--dry-run=server")
    assert result.stdout.splitlines()[0] == "serviceaccount/ray-user created (server dry run)"
    assert stored_names(state) == []


# -- get ----------------------------------------------------------------------------------------


def test_get_shows_kubectl_tables(state: Path, rbac_file: Path) -> None:
    run(state, "apply", "-f", str(rbac_file))
    sa = run(state, "get", "sa").stdout.splitlines()
    assert sa[0].split() == ["NAME", "SECRETS", "AGE"]
    assert sa[1].split()[:2] == ["ray-user", "0"]
    roles = run(state, "get", "roles.rbac.authorization.k8s.io").stdout.splitlines()
    assert roles[0] == "NAME       CREATED AT"
    bindings = run(state, "get", "rolebindings", "-o", "wide").stdout.splitlines()
    assert bindings[0].split() == ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"]
    assert bindings[1].split()[:2] == ["ray-user", "Role/ray-user"]
    assert bindings[1].split()[-1] == "default/ray-user"


def test_get_all_namespaces_adds_a_namespace_column(state: Path, rbac_file: Path) -> None:
    run(state, "apply", "-f", str(rbac_file))
    run(state, "create", "sa", "builder", "-n", "team")
    lines = run(state, "get", "serviceaccounts", "-A").stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["NAMESPACE", "NAME"],
        ["default", "ray-user"],
        ["team", "builder"],
    ]
    assert run(state, "get", "sa").stdout.count("\n") == 2  # header + ray-user only


def test_get_yaml_shows_server_metadata_and_round_trips_through_apply(
    state: Path, rbac_file: Path
) -> None:
    run(state, "apply", "-f", str(rbac_file))
    text = run(state, "get", "role", "ray-user", "-o", "yaml").stdout
    doc = yaml.safe_load(text)
    assert doc["kind"] == "Role"
    assert set(doc["metadata"]) >= {"uid", "resourceVersion", "creationTimestamp"}
    assert run(state, "apply", "-f", "-", stdin=text).stdout == (
        "role.rbac.authorization.k8s.io/ray-user unchanged\n"
    )


def test_get_json_of_a_kind_is_a_list(state: Path, rbac_file: Path) -> None:
    run(state, "apply", "-f", str(rbac_file))
    doc = json.loads(run(state, "get", "sa", "-o", "json").stdout)
    assert doc["kind"] == "List"
    assert [item["metadata"]["name"] for item in doc["items"]] == ["ray-user"]


def test_get_name_output(state: Path, rbac_file: Path) -> None:
    run(state, "apply", "-f", str(rbac_file))
    assert run(state, "get", "rolebinding", "-o", "name").stdout == (
        "rolebinding.rbac.authorization.k8s.io/ray-user\n"
    )


def test_get_with_nothing_stored_says_so_on_stderr(state: Path) -> None:
    result = run(state, "get", "sa")
    assert (result.exit_code, result.stdout) == (0, "")
    assert result.stderr == "No resources found in default namespace.\n"
    assert run(state, "get", "clusterroles").stderr == "No resources found.\n"
    assert not state.exists()  # reading creates nothing


def test_get_missing_object_is_not_found(state: Path) -> None:
    result = run(state, "get", "sa", "ghost")
    assert result.exit_code == 1
    assert result.stderr == 'Error from server (NotFound): serviceaccounts "ghost" not found\n'


def test_get_unknown_kind_is_one_line_error(state: Path) -> None:
    result = run(state, "get", "pods")
    assert result.exit_code == 1
    assert result.stderr.startswith('error: the server doesn\'t have a resource type "pods"')
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("seconds", "age"),
    [
        (5, "5s"),
        (119, "119s"),
        (150, "2m30s"),
        (600, "10m"),
        (7200, "120m"),
        (4 * 3600 + 60, "4h1m"),
        (30 * 3600, "30h"),
        (3 * 86400 + 3600, "3d1h"),
        (30 * 86400, "30d"),
        (800 * 86400, "2y70d"),
    ],
)
def test_age_column_reads_like_kubectl(seconds: int, age: str) -> None:
    assert human_age(seconds) == age


# -- delete -------------------------------------------------------------------------------------


def test_delete_by_file_names_each_deleted_object(state: Path, rbac_file: Path) -> None:
    run(state, "apply", "-f", str(rbac_file))
    result = run(state, "delete", "-f", str(rbac_file))
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        'serviceaccount "ray-user" deleted',
        'role.rbac.authorization.k8s.io "ray-user" deleted',
        'rolebinding.rbac.authorization.k8s.io "ray-user" deleted',
    ]
    assert stored_names(state) == []


def test_delete_missing_object_is_not_found_unless_ignored(state: Path, rbac_file: Path) -> None:
    run(state, "apply", "-f", str(rbac_file))
    result = run(state, "delete", "role", "ray-user", "x")
    assert result.exit_code == 1
    assert result.stdout == 'role.rbac.authorization.k8s.io "ray-user" deleted\n'
    assert result.stderr == (
        'Error from server (NotFound): roles.rbac.authorization.k8s.io "x" not found\n'
    )
    assert run(state, "delete", "role", "x", "--ignore-not-found").exit_code == 0


def test_delete_accepts_kind_slash_name(state: Path, rbac_file: Path) -> None:
    run(state, "apply", "-f", str(rbac_file))
    result = run(state, "delete", "sa/ray-user", "rolebinding/ray-user")
    assert result.exit_code == 0
    assert stored_names(state) == [("Role", "ray-user")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "error: You must provide one or more resources by argument or filename.\n"),
        (["sa"], "error: resource(s) were provided, but no name was specified\n"),
    ],
)
def test_delete_without_targets_explains(state: Path, args: list[str], message: str) -> None:
    result = run(state, "delete", *args)
    assert (result.exit_code, result.stderr) == (1, message)


# -- create -------------------------------------------------------------------------------------


def test_create_serviceaccount_and_its_duplicate(state: Path) -> None:
    first = run(state, "create", "serviceaccount", "ray-user")
    assert (first.exit_code, first.stdout) == (0, "serviceaccount/ray-user created\n")
    again = run(state, "create", "sa", "ray-user")
    assert again.exit_code == 1
    assert again.stderr == (
        'error: failed to create serviceaccount: serviceaccounts "ray-user" already exists\n'
    )


def test_create_serviceaccount_with_an_invalid_name(state: Path) -> None:
    result = run(state, "create", "sa", "Not_Valid")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: failed to create serviceaccount: ")
    assert "metadata.name" in result.stderr


def test_create_token_prints_only_a_token_that_authenticates(state: Path) -> None:
    run(state, "create", "sa", "ray-user", "-n", "team")
    result = run(state, "create", "token", "ray-user", "-n", "team", "--duration", "2h")
    assert result.exit_code == 0
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 7200
    with ObjectStore.open(state) as store:
        snapshot = store.snapshot()
    authenticator = ServiceAccountTokenAuthenticator(
        [load_signing_key(state, create=False).public_key],
        DEFAULT_ISSUER,
        [DEFAULT_AUDIENCE],
        snapshot.service_account_uid,
    )
    identity = asyncio.run(authenticator.authenticate_token(token))
    assert identity is not None and identity.user == "system:serviceaccount:team:ray-user"


def test_create_token_with_audiences(state: Path) -> None:
    run(state, "create", "sa", "ray-user")
    token = run(state, "create", "token", "ray-user", "--audience", "a", "--audience", "b").stdout
    assert jwt.decode(token.strip(), options={"verify_signature": False})["aud"] == ["a", "b"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nobody"], 'error: failed to create token: serviceaccounts "nobody" not found\n'),
        (
            ["ray-user", "--duration", "3600"],
            'error: invalid duration "3600": missing unit; write e.g. 3600s, 3600m or 3600h\n',
        ),
        (
            ["ray-user", "--duration", "72h"],
            "error: --duration 72h is too long: at most 48h is allowed\n",
        ),
    ],
)
def test_create_token_errors_are_one_line(state: Path, args: list[str], message: str) -> None:
    run(state, "create", "sa", "ray-user")
    result = run(state, "create", "token", *args)
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", message)


def test_wrong_flag_is_a_usage_error(state: Path) -> None:
    assert run(state, "get", "sa", "--bogus").exit_code == 2


# -- the installed console script ------------------------------------------------------------


def test_installed_raygate_command_end_to_end(tmp_path: Path, rbac_file: Path) -> None:
    raygate = Path(sys.executable).parent / "raygate"
    env = {**os.environ, "RAYGATE_STATE": str(tmp_path / "via-env")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(raygate), *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    applied = cli("apply", "-f", str(rbac_file))
    assert applied.returncode == 0, applied.stderr
    assert "serviceaccount/ray-user created" in applied.stdout
    token = cli("create", "token", "ray-user", "--duration=1h")
    assert token.returncode == 0 and token.stdout.count(".") == 2 and token.stderr == ""
    missing = cli("create", "token", "ghost")
    assert (missing.returncode, missing.stderr) == (
        1,
        'error: failed to create token: serviceaccounts "ghost" not found\n',
    )
    unknown = cli("get", "pods")
    assert unknown.returncode == 1 and unknown.stderr.startswith("error: ")
    assert "Traceback" not in unknown.stderr
    usage = cli("apply")
    assert usage.returncode == 2


def test_invalid_namespace_flag_is_a_usage_error(state: Path) -> None:
    result = run(state, "create", "sa", "ray-user", "-n", "Bad_NS")
    assert result.exit_code == 2
    assert "namespace 'Bad_NS' is not a valid name" in result.stderr
    assert not state.exists()


def test_error_naming_a_multi_line_value_stays_on_one_line(state: Path) -> None:
    manifest = json.dumps({"kind": "Role", "metadata": {"name": "two\nlines"}})
    result = run(state, "apply", "-f", "-", stdin=manifest)
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: <stdin> document 1")


def test_get_by_name_across_all_namespaces_is_refused_like_kubectl(state: Path) -> None:
    result = run(state, "get", "sa", "ray-user", "-A")
    assert (result.exit_code, result.stderr) == (
        1,
        "error: a resource cannot be retrieved by name across all namespaces\n",
    )


_field_values = st.none() | st.integers() | st.text(max_size=6) | st.lists(st.text(max_size=4))
random_manifests = st.fixed_dictionaries(
    {},
    optional={
        "apiVersion": st.sampled_from(["v1", "rbac.authorization.k8s.io/v1"]) | _field_values,
        "kind": st.sampled_from(["ServiceAccount", "Role", "RoleBinding", "List"]) | _field_values,
        "metadata": st.fixed_dictionaries({}, optional={"name": _field_values}) | _field_values,
        "rules": st.lists(st.dictionaries(st.sampled_from(["verbs", "resources"]), _field_values)),
        "roleRef": st.dictionaries(st.sampled_from(["kind", "name", "apiGroup"]), _field_values),
        "items": _field_values,
    },
)


def _snapshot_objects(state: Path) -> tuple[object, ...]:
    with ObjectStore.open(state) as store:
        return store.snapshot().objects


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(documents=st.lists(random_manifests, min_size=1, max_size=3))
def test_random_apply_exits_0_or_1_and_changes_nothing_when_refused(
    state: Path, documents: list[object]
) -> None:
    run(state, "create", "sa", "base")  # exists after the first example; that is fine
    before = _snapshot_objects(state)
    text = "\n---\n".join(yaml.safe_dump(doc) for doc in documents)
    runner = CliRunner()
    result = runner.invoke(main, ["apply", "-f", "-", "--state", str(state)], input=text)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.exit_code in (0, 1)
    if result.exit_code == 1:
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
        assert _snapshot_objects(state) == before
