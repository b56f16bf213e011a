"""The object store: what `raygate apply/get/delete` and a running gateway rely on."""

from __future__ import annotations

import multiprocessing
import re
import sqlite3
import stat
from pathlib import Path

import pytest

from raygate.errors import AlreadyExistsError, NotFoundError, StoreError
from raygate.objects import parse_object
from raygate.store.sqlite import DB_FILE, ObjectStore, Snapshot


def service_account(name: str, namespace: str | None = None, **labels: str) -> object:
    metadata: dict[str, object] = {"name": name, "labels": labels}
    if namespace:
        metadata["namespace"] = namespace
    return parse_object({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata})


def role(name: str, verbs: list[str], namespace: str = "default") -> object:
    return parse_object(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name, "namespace": namespace},
            "rules": [{"apiGroups": ["ray.io"], "resources": ["rayclusters"], "verbs": verbs}],
        }
    )


def cluster_role(name: str) -> object:
    return parse_object(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [{"nonResourceURLs": ["/api/*"], "verbs": ["get"]}],
        }
    )


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    with ObjectStore.open(tmp_path / "state") as opened:
        yield opened


# -- apply / create / get / delete -----------------------------------------------------------


def test_apply_creates_with_server_metadata_and_default_namespace(store: ObjectStore) -> None:
    [(stored, action)] = store.apply([service_account("ray-user")])
    assert action == "created"
    assert stored.metadata.namespace == "default"
    assert re.fullmatch(r"[0-9a-f-]{36}", stored.metadata.uid or "")
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stored.metadata.creation_timestamp or ""
    )
    assert store.get("ServiceAccount", "ray-user", "default") == stored


def test_update_keeps_uid_and_creation_time_and_bumps_resource_version(
    store: ObjectStore,
) -> None:
    [(first, _)] = store.apply([role("ray-user", ["get"])])
    [(second, action)] = store.apply([role("ray-user", ["get", "create"])])
    assert action == "configured"
    assert second.metadata.uid == first.metadata.uid
    assert second.metadata.creation_timestamp == first.metadata.creation_timestamp
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)
    assert second.rules[0].verbs == ["get", "create"]


def test_applying_the_same_object_again_is_unchanged_and_bumps_nothing(
    store: ObjectStore,
) -> None:
    store.apply([role("ray-user", ["get"])])
    before = store.data_version()
    [(stored, action)] = store.apply([role("ray-user", ["get"])])
    assert action == "unchanged"
    assert store.data_version() == before
    assert stored.metadata.resource_version == str(before)


def test_client_sent_uid_and_resource_version_are_ignored(store: ObjectStore) -> None:
    [(first, _)] = store.apply([service_account("ray-user")])
    echoed = first.model_copy(
        update={
            "metadata": first.metadata.model_copy(
                update={"uid": "forged", "resource_version": "999"}
            )
        }
    )
    [(again, action)] = store.apply([echoed])
    assert action == "unchanged"
    assert again.metadata.uid == first.metadata.uid


def test_create_refuses_an_existing_object_with_kubernetes_wording(store: ObjectStore) -> None:
    store.create(service_account("ray-user"))
    with pytest.raises(AlreadyExistsError, match=r'^serviceaccounts "ray-user" already exists$'):
        store.create(service_account("ray-user"))


def test_same_name_in_two_namespaces_are_two_objects(store: ObjectStore) -> None:
    store.apply([service_account("ray-user"), service_account("ray-user", "team")])
    default = store.get("ServiceAccount", "ray-user", "default")
    team = store.get("ServiceAccount", "ray-user", "team")
    assert default and team and default.metadata.uid != team.metadata.uid


def test_list_filters_by_kind_and_namespace(store: ObjectStore) -> None:
    store.apply(
        [
            service_account("a"),
            service_account("b", "team"),
            role("r", ["get"], "team"),
            cluster_role("viewer"),
        ]
    )
    assert [o.name for o in store.list_objects("ServiceAccount")] == ["a", "b"]
    assert [o.name for o in store.list_objects("ServiceAccount", "team")] == ["b"]
    assert sorted(o.name for o in store.list_objects(namespace="team")) == ["b", "r", "viewer"]
    assert len(store.list_objects()) == 4


def test_delete_reports_whether_the_object_existed(store: ObjectStore) -> None:
    store.apply([service_account("ray-user")])
    assert store.delete("ServiceAccount", "ray-user")
    assert not store.delete("ServiceAccount", "ray-user")
    assert store.get("ServiceAccount", "ray-user") is None


def test_require_names_the_missing_object_like_the_api_server(store: ObjectStore) -> None:
    with pytest.raises(NotFoundError, match=r'^roles.rbac.authorization.k8s.io "x" not found$'):
        store.require("Role", "x", "default")


def test_delete_many_deletes_what_exists_in_one_go(store: ObjectStore) -> None:
    store.apply([service_account("a"), cluster_role("viewer")])
    found = store.delete_many(
        [
            ("ServiceAccount", "a", None),
            ("ServiceAccount", "nope", None),
            ("ClusterRole", "viewer", None),
        ]
    )
    assert found == [True, False, True]
    assert store.list_objects() == []


def test_apply_is_all_or_nothing_when_a_write_fails(store: ObjectStore) -> None:
    store.apply([service_account("kept")])
    before = store.snapshot()

    class Broken:
        kind = "ServiceAccount"  # passes nothing the store can serialize

    with pytest.raises(Exception):  # noqa: B017 - any failure must roll everything back
        store.apply([service_account("new-one"), Broken()])  # type: ignore[list-item]
    after = store.snapshot()
    assert after.objects == before.objects
    assert after.version == before.version


def test_dry_run_reports_actions_and_stores_nothing(store: ObjectStore) -> None:
    [(_, action)] = store.apply([service_account("ray-user")], dry_run=True)
    assert action == "created"
    assert store.list_objects() == []


def test_read_only_open_of_a_missing_store_sees_nothing_and_creates_nothing(
    tmp_path: Path,
) -> None:
    with ObjectStore.open(tmp_path / "absent", create=False) as empty:
        assert empty.list_objects() == []
        assert empty.get("ServiceAccount", "x") is None
        with pytest.raises(StoreError):
            empty.apply([service_account("x")])
    assert not (tmp_path / "absent").exists()


def test_database_file_is_private(tmp_path: Path) -> None:
    ObjectStore.open(tmp_path / "state").close()
    assert stat.S_IMODE((tmp_path / "state" / DB_FILE).stat().st_mode) == 0o600


def test_unknown_kind_is_a_store_error(store: ObjectStore) -> None:
    with pytest.raises(StoreError, match="unknown kind"):
        store.get("Pod", "x")


# -- change detection and snapshots ----------------------------------------------------------


def test_data_version_changes_when_another_connection_writes(tmp_path: Path) -> None:
    with ObjectStore.open(tmp_path) as gateway, ObjectStore.open(tmp_path) as cli:
        seen = gateway.data_version()
        cli.apply([service_account("ray-user")])
        after_create = gateway.data_version()
        assert after_create != seen
        cli.delete("ServiceAccount", "ray-user")
        assert gateway.data_version() != after_create


def test_snapshot_looks_up_service_account_uids_in_memory(store: ObjectStore) -> None:
    [(sa, _)] = store.apply([service_account("ray-user", "team")])
    snapshot = store.snapshot()
    assert isinstance(snapshot, Snapshot)
    assert snapshot.service_account_uid("team", "ray-user") == sa.metadata.uid
    assert snapshot.service_account_uid("default", "ray-user") is None
    assert snapshot.version == store.data_version()
    assert snapshot.objects == (sa,)


def test_recreated_service_account_gets_a_new_uid(store: ObjectStore) -> None:
    [(first, _)] = store.apply([service_account("ray-user")])
    store.delete("ServiceAccount", "ray-user")
    [(second, _)] = store.apply([service_account("ray-user")])
    assert second.metadata.uid != first.metadata.uid


# -- two processes at once -------------------------------------------------------------------


def _apply_many(state_dir: str, prefix: str, count: int) -> None:
    with ObjectStore.open(Path(state_dir)) as own:
        for i in range(count):
            own.apply([service_account(f"{prefix}-{i}"), role(f"{prefix}-{i}", ["get"])])


def test_concurrent_writers_in_two_processes_lose_nothing(tmp_path: Path) -> None:
    count = 40
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_apply_many, args=(str(tmp_path), prefix, count))
        for prefix in ("left", "right")
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    with ObjectStore.open(tmp_path) as check:
        names = {(o.kind, o.name) for o in check.list_objects()}
        versions = [int(o.metadata.resource_version) for o in check.list_objects()]
    expected = {
        (kind, f"{prefix}-{i}")
        for prefix in ("left", "right")
        for i in range(count)
        for kind in ("ServiceAccount", "Role")
    }
    assert names == expected
    assert len(set(versions)) == len(versions)  # every write got its own resourceVersion
    with sqlite3.connect(tmp_path / DB_FILE) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
