"""Security review: ServiceAccount `secrets` and `imagePullSecrets` are Kubernetes'
ObjectReference and LocalObjectReference, not arbitrary nested data."""

from __future__ import annotations

import io

import pytest

from raygate.errors import ManifestError
from raygate.objects import ServiceAccount, to_manifest
from raygate.store.manifests import load_manifests

SA = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa, namespace: default}\n"


def test_service_account_references_are_typed() -> None:
    text = SA + (
        "secrets:\n- {name: token, namespace: default, kind: Secret, apiVersion: v1,"
        " uid: u, resourceVersion: '1', fieldPath: x}\n"
        "imagePullSecrets:\n- {name: registry}\n"
    )
    (obj,) = load_manifests(["-"], stdin=io.StringIO(text))
    assert isinstance(obj, ServiceAccount)
    assert obj.secrets[0].name == "token" and obj.secrets[0].kind == "Secret"
    assert obj.image_pull_secrets[0].name == "registry"
    printed = to_manifest(obj)  # as `get -o yaml` shows it: camelCase, nothing added
    assert printed["secrets"] == [{"name": "token", "namespace": "default", "kind": "Secret",
                                   "apiVersion": "v1", "uid": "u", "resourceVersion": "1",
                                   "fieldPath": "x"}]
    assert printed["imagePullSecrets"] == [{"name": "registry"}]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("secrets:\n- {name: t, nested: {deep: [1, 2, 3]}}\n", "secrets[0].nested"),
        ("secrets:\n- {name: [not, a, string]}\n", "secrets[0].name"),
        ("imagePullSecrets:\n- {name: r, namespace: other}\n", "imagePullSecrets[0].namespace"),
        ("imagePullSecrets:\n- just-a-name\n", "imagePullSecrets[0]"),
    ],
)
def test_service_account_references_refuse_anything_else(extra: str, field: str) -> None:
    with pytest.raises(ManifestError) as caught:
        load_manifests(["-"], stdin=io.StringIO(SA + extra))
    assert f"field {field}" in str(caught.value)
