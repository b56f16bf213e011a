"""`raygate apply -f` then `raygate get -o json` shows what was applied, for random objects.

Both commands run through the CLI (click's runner) over a fresh embedded store, as a user runs
them. Only the fields the store sets itself (uid, resourceVersion, creationTimestamp) are
added, and empty lists and maps are left out as the API server omits them.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raygate.cli.main import main

SERVER_FIELDS = {"uid", "resourceVersion", "creationTimestamp"}
RBAC = "rbac.authorization.k8s.io/v1"
KINDS = {"ServiceAccount": "sa", "Role": "role", "ClusterRole": "clusterrole",
         "RoleBinding": "rolebinding", "ClusterRoleBinding": "clusterrolebinding"}  # fmt: skip

resource_rule = st.fixed_dictionaries(
    {
        "verbs": st.lists(st.sampled_from(["get", "create", "*"]), min_size=1, unique=True),
        "apiGroups": st.lists(st.sampled_from(["", "ray.io", "*"]), min_size=1, unique=True),
        "resources": st.lists(
            st.sampled_from(["rayclusters", "rayclusters/jobs", "*/log", "*"]),
            min_size=1,
            unique=True,
        ),
    },
    optional={"resourceNames": st.lists(st.sampled_from(["c1", "c2"]), min_size=1, unique=True)},
)
non_resource_rule = st.fixed_dictionaries(
    {
        "verbs": st.lists(st.sampled_from(["get", "*"]), min_size=1, unique=True),
        "nonResourceURLs": st.lists(
            st.sampled_from(["/healthz", "/api/*", "*"]), min_size=1, unique=True
        ),
    }
)
label_name = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?\Z")
names = st.from_regex(r"\A[a-z0-9]([a-z0-9.-]{0,30}[a-z0-9])?\Z").filter(
    lambda n: ".." not in n and ".-" not in n and "-." not in n
)
label_values = st.from_regex(r"\A([A-Za-z0-9]([A-Za-z0-9_.-]{0,20}[A-Za-z0-9])?)?\Z")


@st.composite
def metadata(draw: st.DrawFn, namespaced: bool) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": draw(names)}
    if namespaced:
        meta["namespace"] = draw(st.sampled_from(["default", "team-a"]))
    labels = draw(st.dictionaries(label_name, label_values, max_size=3))
    if labels:
        meta["labels"] = labels
    annotations = draw(st.dictionaries(label_name, st.text(max_size=40), max_size=2))
    if annotations:
        meta["annotations"] = annotations
    return meta


subject = st.one_of(
    st.builds(lambda n: {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": n},
              st.sampled_from(["alice", "oidc:bob@example.com"])),
    st.builds(lambda n: {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": n},
              st.sampled_from(["dev", "system:authenticated"])),
    st.builds(lambda n, ns: {"kind": "ServiceAccount", "name": n, "namespace": ns},
              label_name, st.sampled_from(["default", "team-a"])),
)  # fmt: skip


@st.composite
def objects(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(KINDS)))
    namespaced = kind in ("ServiceAccount", "Role", "RoleBinding")
    doc: dict[str, Any] = {
        "apiVersion": "v1" if kind == "ServiceAccount" else RBAC,
        "kind": kind,
        "metadata": draw(metadata(namespaced)),
    }
    if kind == "ServiceAccount":
        if draw(st.booleans()):
            doc["automountServiceAccountToken"] = draw(st.booleans())
    elif kind == "Role":
        doc["rules"] = draw(st.lists(resource_rule, max_size=3))
    elif kind == "ClusterRole":
        doc["rules"] = draw(st.lists(st.one_of(resource_rule, non_resource_rule), max_size=3))
    else:
        role_kind = (
            "ClusterRole"
            if kind == "ClusterRoleBinding"
            else draw(st.sampled_from(["Role", "ClusterRole"]))
        )
        doc["roleRef"] = {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind,
                          "name": draw(names)}  # fmt: skip
        doc["subjects"] = draw(st.lists(subject, min_size=1, max_size=3))
    return doc


def _key(doc: dict[str, Any]) -> tuple[str, str, str]:
    return doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"]


def without_empty(value: Any) -> Any:
    if isinstance(value, dict):
        pruned = {k: without_empty(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in ({}, [])}
    if isinstance(value, list):
        return [without_empty(v) for v in value]
    return value


def cli(state: Path, *args: str) -> str:
    result = CliRunner().invoke(main, [*args, "--state", str(state)])
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


def get_json(state: Path, doc: dict[str, Any]) -> dict[str, Any]:
    args = ["get", KINDS[doc["kind"]], doc["metadata"]["name"], "-o", "json"]
    if "namespace" in doc["metadata"]:
        args += ["-n", doc["metadata"]["namespace"]]
    return json.loads(cli(state, *args))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(objects(), min_size=1, max_size=4, unique_by=_key), st.data())
def test_apply_then_get_returns_what_was_applied(
    docs: list[dict[str, Any]], data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        # JSON, one file per object: PyYAML's emitter garbles some characters (U+0085).
        manifests = Path(tmp) / "objects"
        manifests.mkdir()
        for i, doc in enumerate(docs):
            (manifests / f"{i}.json").write_text(json.dumps(doc), encoding="utf-8")
        out = cli(state, "apply", "-f", str(manifests))
        assert out.count(" created") == len(docs)
        uids = {}
        for doc in docs:
            got = get_json(state, doc)
            server = {k: got["metadata"].pop(k) for k in SERVER_FIELDS}
            assert got == without_empty(doc)
            uids[_key(doc)] = server["uid"]
        # Applied again: nothing changes, not even the uid.
        assert cli(state, "apply", "-f", str(manifests)).count(" unchanged") == len(docs)
        # One object changed: get shows the change, and the same uid.
        changed = data.draw(st.sampled_from(docs))
        changed["metadata"].setdefault("labels", {})["changed"] = "yes"
        manifest = Path(tmp) / "changed.json"
        manifest.write_text(json.dumps(changed), encoding="utf-8")
        assert " configured" in cli(state, "apply", "-f", str(manifest))
        got = get_json(state, changed)
        assert got["metadata"].pop("uid") == uids[_key(changed)]
        for field in SERVER_FIELDS - {"uid"}:
            got["metadata"].pop(field)
        assert got == without_empty(changed)
