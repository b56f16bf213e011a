"""Security review: manifests kubectl would refuse, or that would cost unbounded time and
memory, are refused with one line before anything is stored: duplicate keys (the last one
used to win silently), alias bombs, oversized sources."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from raygate.errors import ManifestError
from raygate.store.manifests import (
    MAX_ALIASES,
    MAX_SOURCE_BYTES,
    load_manifests,
    split_documents,
)

ROLE = """\
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
    path.write_text(ROLE)
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
