"""Reading `-f` manifests: formats, lists, and one-line errors naming file, document and field."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raygate.errors import ConfigError, ManifestError
from raygate.store.manifests import MAX_ALIASES, MAX_SOURCE_BYTES, load_manifests, split_documents
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


# Manifests kubectl would refuse, or that would cost unbounded time and memory, are refused with
# one line before anything is stored: duplicate keys (the last one used to win silently), alias
# bombs, oversized sources.
ROLE_WITH_DUPLICATE_VERBS = """\
apiVersion: v1
kind: ServiceAccount
metadata: {name: sa}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: reader
  namespace: default
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: ["get"]
  verbs: ["*"]
"""



def one_line_error(text: str, source: str = "m.yaml") -> str:
    with pytest.raises(ManifestError) as caught:
        split_documents(text, source)
    message = str(caught.value)
    assert "\n" not in message
    return message



def test_duplicate_key_is_refused_naming_key_file_document_and_line(tmp_path: Path) -> None:
    path = tmp_path / "role.yaml"
    path.write_text(ROLE_WITH_DUPLICATE_VERBS)
    with pytest.raises(ManifestError) as caught:
        load_manifests([str(path)])
    message = str(caught.value)
    assert message.startswith(f"{path} document 2 at line 14")
    assert 'duplicate key "verbs" (first at line 13)' in message



@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ("kind: Role\nkind: ClusterRole\n", "kind", 2),
        ("metadata:\n  name: a\n  name: b\n", "name", 3),
        ("metadata: {name: a, name: b}\n", "name", 1),
        ("a: 1\n'a': 2\n", "a", 2),
        ("subjects:\n- {kind: User, name: x}\n- {kind: User, name: y, kind: Group}\n",
         "kind", 3),
    ],
    ids=["top-level", "nested", "flow-mapping", "quoted-spelling", "in-a-list"],
)
def test_duplicate_keys_anywhere_are_refused(text: str, key: str, line: int) -> None:
    message = one_line_error(text)
    assert message.startswith(f"m.yaml document 1 at line {line}")
    assert f'duplicate key "{key}"' in message



def test_duplicate_key_in_a_later_document_names_that_document() -> None:
    text = "a: 1\n---\nb: 1\n---\nc: 1\nc: 2\n"
    assert one_line_error(text).startswith("m.yaml document 3 at line 6")



def test_merge_keys_may_still_be_overridden() -> None:
    text = "base: &b {verbs: [get], x: 1}\nrule:\n  <<: *b\n  verbs: [list]\n"
    (doc,) = split_documents(text, "m.yaml")
    assert doc.body["rule"] == {"verbs": ["list"], "x": 1}



def test_duplicate_key_in_json_is_refused() -> None:
    text = '{"kind": "Role", "metadata": {"name": "a", "name": "b"}}'
    message = one_line_error(text, "m.json")
    assert message.startswith("m.json document 1")
    assert 'duplicate key "name"' in message



def alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = ['a0: &a0 ["lol"]']
    for level in range(1, levels + 1):
        refs = ", ".join([f"*a{level - 1}"] * width)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\n"



def test_alias_bomb_is_refused() -> None:
    text = alias_bomb()
    assert len(text) < 700  # ~387 million nodes once expanded
    message = one_line_error(text)
    assert message.startswith("m.yaml document 1 at line")
    assert "aliases expand the document beyond" in message



def test_alias_bomb_through_apply_is_a_manifest_error(tmp_path: Path) -> None:
    body = alias_bomb().replace("a0:", "apiVersion: v1\nkind: ServiceAccount\nmetadata: "
                                "{name: x}\na0:", 1)
    with pytest.raises(ManifestError, match="aliases expand"):
        load_manifests(["-"], stdin=io.StringIO(body))



def test_many_aliases_are_refused() -> None:
    text = "x: &x 1\nall: [" + ", ".join(["*x"] * (MAX_ALIASES + 1)) + "]\n"
    assert f"more than {MAX_ALIASES} aliases" in one_line_error(text)



def test_self_referencing_alias_is_refused() -> None:
    assert "refers to a node that contains it" in one_line_error("a: &a [1, *a]\n")



def test_a_few_ordinary_aliases_still_load() -> None:
    text = "x: &v [get, list]\nrules:\n- verbs: *v\n- verbs: *v\n"
    (doc,) = split_documents(text, "m.yaml")
    assert doc.body["rules"] == [{"verbs": ["get", "list"]}, {"verbs": ["get", "list"]}]



def test_alias_budget_is_per_document() -> None:
    one = "x: &x 1\nall: [" + ", ".join(["*x"] * MAX_ALIASES) + "]\n"
    assert len(split_documents(one + "---\n" + one, "m.yaml")) == 2



def test_oversized_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * MAX_SOURCE_BYTES + "\n")
    with pytest.raises(ManifestError, match=f"{path} is larger than 4 MiB"):
        load_manifests([str(path)])



def test_oversized_stdin_is_refused() -> None:
    big = io.StringIO("# " + "x" * MAX_SOURCE_BYTES + "\n")
    with pytest.raises(ManifestError, match="<stdin> is larger than 4 MiB"):
        load_manifests(["-"], stdin=big)



def test_source_just_under_the_cap_is_read(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    head = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa}\n# "
    path.write_text(head + "x" * (MAX_SOURCE_BYTES - len(head) - 1) + "\n")
    assert [obj.name for obj in load_manifests([str(path)])] == ["sa"]

