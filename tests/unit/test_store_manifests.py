"""Reading `-f` manifests: formats, lists, and one-line errors naming file, document and field."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raygate.errors import ConfigError, ManifestError
from raygate.store.manifests import load_manifests, split_documents
from raygate.store.sqlite import ObjectStore

SA = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n"
ROLE = """apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {name}
rules:
- apiGroups: ["ray.io"]
  resources: ["rayclusters"]
  verbs: ["get"]
"""


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_multi_document_yaml_skips_empty_documents(tmp_path: Path) -> None:
    source = write(
        tmp_path / "m.yaml",
        "---\n" + SA.format(name="a") + "---\n---\n" + ROLE.format(name="r") + "---\n",
    )
    objects = load_manifests([source])
    assert [(o.kind, o.name, o.namespace) for o in objects] == [
        ("ServiceAccount", "a", "default"),
        ("Role", "r", "default"),
    ]


def test_json_and_kind_list_are_expanded(tmp_path: Path) -> None:
    listing = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "a"}},
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "b"}},
        ],
    }
    source = write(tmp_path / "list.json", json.dumps(listing, indent="\t"))
    assert [o.name for o in load_manifests([source])] == ["a", "b"]


def test_directory_reads_manifest_files_in_name_order(tmp_path: Path) -> None:
    write(tmp_path / "b.yml", SA.format(name="second"))
    write(tmp_path / "a.yaml", SA.format(name="first"))
    write(
        tmp_path / "c.json",
        json.dumps({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "third"}}),
    )
    write(tmp_path / "notes.txt", "not a manifest")
    assert [o.name for o in load_manifests([str(tmp_path)])] == ["first", "second", "third"]


def test_stdin_is_read_for_dash() -> None:
    objects = load_manifests(["-"], stdin=io.StringIO(SA.format(name="piped")))
    assert [o.name for o in objects] == ["piped"]


def test_namespace_option_fills_in_missing_namespaces(tmp_path: Path) -> None:
    source = write(tmp_path / "m.yaml", SA.format(name="a"))
    assert load_manifests([source], namespace="team")[0].namespace == "team"


def test_timestamps_from_get_output_stay_strings(tmp_path: Path) -> None:
    text = SA.format(name="a") + "  creationTimestamp: 2026-01-01T00:00:00Z\n"
    source = write(tmp_path / "m.yaml", text)
    assert load_manifests([source])[0].name == "a"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            SA.format(name="a") + "---\nkind: Role\n  bad: [\n",
            r"^m\.yaml document 2: YAML syntax error at line \d+, column \d+: ",
        ),
        (
            SA.format(name="a") + "---\n" + SA.format(name="b").replace("ServiceAccount", "Pod"),
            r'^m\.yaml document 2 \(Pod b\): field kind: unknown kind "Pod"',
        ),
        (
            ROLE.format(name="r").replace('  verbs: ["get"]\n', ""),
            r"^m\.yaml document 1 \(Role r\): field rules\[0\]\.verbs: required$",
        ),
        (
            ROLE.format(name="r").replace('verbs: ["get"]', "verbs: get"),
            r"^m\.yaml document 1 \(Role r\): field rules\[0\]\.verbs: ",
        ),
        (
            "apiVersion: v1\nkind: List\nitems:\n- kind: ServiceAccount\n  apiVersion: v1\n",
            r"^m\.yaml document 1 items\[0\] \(ServiceAccount \?\): field metadata: required$",
        ),
        ("just a string\n", r"^m\.yaml document 1: expected a mapping"),
    ],
    ids=["yaml-syntax", "unknown-kind", "missing-field", "wrong-type", "list-item", "scalar"],
)
def test_bad_manifest_is_one_line_naming_file_document_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    source = write(tmp_path / "m.yaml", text)
    with pytest.raises(ManifestError) as err:
        load_manifests([source])
    line = str(err.value).replace(str(tmp_path) + "/", "")
    assert "\n" not in line
    assert __import__("re").search(message, line), line


def test_namespace_option_that_contradicts_the_manifest_is_refused(tmp_path: Path) -> None:
    source = write(tmp_path / "m.yaml", SA.format(name="a") + "  namespace: team\n")
    with pytest.raises(
        ManifestError, match='does not match the namespace "other".*--namespace=team'
    ):
        load_manifests([source], namespace="other")


def test_missing_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match='the path ".*nope.yaml" does not exist'):
        load_manifests([str(tmp_path / "nope.yaml")])


# -- random input: never a crash, never a change ----------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
manifest_like = st.fixed_dictionaries(
    {},
    optional={
        "apiVersion": st.sampled_from(["v1", "rbac.authorization.k8s.io/v1", "x"])
        | st.text(max_size=5),
        "kind": st.sampled_from(
            ["ServiceAccount", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "List"]
        )
        | json_values,
        "metadata": st.fixed_dictionaries(
            {}, optional={"name": json_values, "namespace": json_values}
        )
        | json_values,
        "rules": json_values,
        "subjects": json_values,
        "roleRef": json_values,
        "items": json_values,
    },
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(documents=st.lists(manifest_like | json_values, min_size=1, max_size=3))
def test_random_manifests_are_stored_whole_or_rejected_with_a_manifest_error(
    tmp_path: Path, documents: list[object]
) -> None:
    with ObjectStore.open(tmp_path / "state") as store:
        store.apply(
            load_manifests(
                ["-"],
                stdin=io.StringIO("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: base}\n"),
            )
        )
        before = store.snapshot()
        text = "\n".join(json.dumps(doc) for doc in documents)
        try:
            objects = load_manifests(["-"], stdin=io.StringIO(text))
        except (ManifestError, ConfigError) as err:
            assert "\n" not in str(err)
            assert store.snapshot() == before
            return
        store.apply(objects)
        assert len(store.snapshot().objects) >= 1


@pytest.mark.parametrize(
    "document",
    [
        {"kind": "Ro\nle"},
        {"kind": "Role", "metadata": {"name": "a\nb"}},
        {"kind": "ServiceAccount", "apiVersion": "v1", "metadata": {"name": "a"}, "x\ny": 1},
        {"kind": "Role", "apiVersion": "v1", "metadata": {"name": "a", "labels": {"a\nb": 1}}},
    ],
)
def test_rejections_quoting_user_text_with_newlines_stay_one_line(document: dict) -> None:
    with pytest.raises(ManifestError) as err:
        load_manifests(["-"], stdin=io.StringIO(json.dumps(document)))
    assert "\n" not in str(err.value)


@settings(max_examples=300)
@given(text=st.text(max_size=200))
def test_random_text_never_crashes_the_reader(text: str) -> None:
    try:
        split_documents(text, "random.yaml")
    except ManifestError as err:
        assert str(err).startswith("random.yaml document ")
