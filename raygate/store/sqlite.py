"""The embedded authority's objects, in SQLite in the state directory.

One row per object; every write is one `BEGIN IMMEDIATE` transaction, so concurrent CLI writes
queue instead of interleaving, and an apply of many objects lands whole or not at all. A global
revision counter (a row, bumped by every change) gives each object its resourceVersion and lets a
running gateway see, with one cheap query, that another process changed something.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from raygate.errors import AlreadyExistsError, NotFoundError, StoreError
from raygate.fileid import file_id
from raygate.objects import (
    MODELS,
    ClusterRole,
    ClusterRoleBinding,
    Role,
    RoleBinding,
    Secret,
    ServiceAccount,
    to_manifest,
)
from raygate.store.kinds import is_namespaced, resource_plural
from raygate.store.state import ensure_state_dir

StoredObject = ServiceAccount | Secret | Role | ClusterRole | RoleBinding | ClusterRoleBinding
ApplyAction = Literal["created", "configured", "unchanged"]

DB_FILE = "objects.db"
DEFAULT_NAMESPACE = "default"
BUSY_TIMEOUT_MS = 15_000
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,          -- '' for cluster-scoped kinds
    name TEXT NOT NULL,
    uid TEXT NOT NULL,
    resource_version INTEGER NOT NULL,
    creation_timestamp TEXT NOT NULL,
    manifest TEXT NOT NULL,           -- canonical JSON without the server-set metadata
    PRIMARY KEY (kind, namespace, name)
);
CREATE TABLE IF NOT EXISTS revision (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO revision (id, value) VALUES (1, 0);
"""


def not_found_message(kind: str, name: str) -> str:
    """The API server's wording: `roles.rbac.authorization.k8s.io "x" not found`."""
    return f'{resource_plural(kind)} "{name}" not found'


def object_key(kind: str, name: str, namespace: str | None) -> tuple[str, str, str]:
    """(kind, namespace, name) as stored: namespaced kinds default to `default`, others ''."""
    if kind not in MODELS:
        raise StoreError(f"unknown kind {kind!r}")
    ns = (namespace or DEFAULT_NAMESPACE) if is_namespaced(kind) else ""
    return kind, ns, name


@dataclass(frozen=True)
class Snapshot:
    """Every stored object at one revision; lookups are in memory, for the gateway's hot path."""

    version: int
    objects: tuple[StoredObject, ...]
    _service_account_uids: Mapping[tuple[str, str], str] = field(repr=False)
    _secret_uids: Mapping[tuple[str, str], str] = field(repr=False, default_factory=dict)

    @classmethod
    def of(cls, version: int, objects: Iterable[StoredObject]) -> Snapshot:
        objects = tuple(objects)

        def uids(kind: type) -> Mapping[tuple[str, str], str]:
            return MappingProxyType(
                {
                    (obj.metadata.namespace or DEFAULT_NAMESPACE, obj.metadata.name): (
                        obj.metadata.uid or ""
                    )
                    for obj in objects
                    if isinstance(obj, kind)
                }
            )

        return cls(version, objects, uids(ServiceAccount), uids(Secret))

    @property
    def policy_objects(self) -> tuple[StoredObject, ...]:
        """What RBAC is made of (no Secrets)."""
        return tuple(obj for obj in self.objects if not isinstance(obj, Secret))

    def service_account_uid(self, namespace: str, name: str) -> str | None:
        return self._service_account_uids.get((namespace, name))

    def secret_uid(self, namespace: str, name: str) -> str | None:
        return self._secret_uids.get((namespace, name))


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _without_server_fields(obj: StoredObject, default_namespace: str) -> StoredObject:
    meta = obj.metadata.model_copy(
        update={
            "uid": None,
            "resource_version": None,
            "creation_timestamp": None,
            "namespace": (obj.metadata.namespace or default_namespace)
            if is_namespaced(obj.kind)
            else None,
        }
    )
    return obj.model_copy(update={"metadata": meta})


def _canonical_json(obj: StoredObject) -> str:
    return json.dumps(to_manifest(obj), sort_keys=True, separators=(",", ":"))


def _from_row(row: tuple[str, str, str, str, int, str, str]) -> StoredObject:
    kind, _namespace, _name, uid, resource_version, created, manifest = row
    doc: dict[str, Any] = json.loads(manifest)
    doc["metadata"].update(
        uid=uid, resourceVersion=str(resource_version), creationTimestamp=created
    )
    return MODELS[kind].model_validate(doc)  # type: ignore[return-value]


_COLUMNS = "kind, namespace, name, uid, resource_version, creation_timestamp, manifest"


# (device, inode, size, mtime ns, ctime ns) of the database file and of its WAL (None: absent).
FileMarks = tuple[tuple[int, int, int, int, int] | None, ...]


class ObjectStore:
    """The stored objects. Safe to share between threads; one connection per store."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None) -> None:
        self._conn = conn
        self._path = path  # None: nothing stored yet and opened read-only (reads see no objects)
        self._lock = threading.RLock()
        self._file_id = file_id(path) if path is not None else None

    @classmethod
    def open(
        cls, state_dir: Path, *, create: bool = True, busy_timeout_ms: int = BUSY_TIMEOUT_MS
    ) -> ObjectStore:
        """Open (with `create`, first creating) `objects.db` in the state directory.

        Without `create` and with no database yet, the store is empty and refuses writes, so
        read-only commands leave the file system untouched.
        """
        path = Path(state_dir) / DB_FILE
        if not create and not path.exists():
            conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            conn.executescript(_SCHEMA)
            return cls(conn, None)
        if create:
            ensure_state_dir(Path(state_dir))
        return cls._connect(path, busy_timeout_ms, create_schema=True)

    @classmethod
    def open_existing(cls, state_dir: Path, *, busy_timeout_ms: int) -> ObjectStore:
        """Open a store that must already be there, whole: a missing file, one that is not a
        database or holds no raygate schema is a StoreError, and nothing is created or written.
        For the gateway, which must never mistake a damaged store for an empty policy."""
        path = Path(state_dir) / DB_FILE
        if not path.exists():
            raise StoreError(f"{path} does not exist")
        store = cls._connect(path, busy_timeout_ms, create_schema=False)
        try:
            version = store._conn.execute("PRAGMA user_version").fetchone()[0]
            if version != _SCHEMA_VERSION:
                raise StoreError(f"{path} holds no raygate objects (schema {version})")
            store.data_version()
        except (sqlite3.Error, StoreError) as err:
            store.close()
            if isinstance(err, StoreError):
                raise
            raise StoreError(f"cannot read {path}: {err}") from None
        return store

    @classmethod
    def _connect(cls, path: Path, busy_timeout_ms: int, *, create_schema: bool) -> ObjectStore:
        conn: sqlite3.Connection | None = None
        try:
            # The objects are not secret, but nobody but the owner needs to read them.
            flags = os.O_RDWR | (os.O_CREAT if create_schema else 0)
            os.close(os.open(path, flags, 0o600))
            conn = sqlite3.connect(
                path,
                timeout=busy_timeout_ms / 1000,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            store = cls(conn, path)
            if create_schema:
                store._ensure_schema()
            return store
        except (sqlite3.Error, OSError, StoreError) as err:
            if conn is not None:
                conn.close()
            if isinstance(err, StoreError):
                raise
            reason = err.strerror if isinstance(err, OSError) and err.strerror else err
            raise StoreError(f"cannot open {path}: {reason}") from None

    def _ensure_schema(self) -> None:
        # Checked before taking the write lock, so readers of an existing store never queue.
        if self._conn.execute("PRAGMA user_version").fetchone()[0] == _SCHEMA_VERSION:
            return
        with self._write_transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise StoreError(
                    f"{self._path} was written by a newer raygate (schema {version}); "
                    "upgrade raygate"
                )
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> Path | None:
        return self._path

    def file_marks(self) -> FileMarks | None:
        """What the file system says of the database and its WAL: (device, inode, size, mtime
        and ctime in ns) each, None for a file not there. A committed write changes it, though
        two writes within one tick of the kernel's coarse clock may leave the times the same.
        None for an in-memory store, or when a file cannot be looked at."""
        if self._path is None:
            return None
        marks: list[tuple[int, int, int, int, int] | None] = []
        for path in (self._path, self._path.with_name(self._path.name + "-wal")):
            try:
                info = os.stat(path)
            except FileNotFoundError:
                marks.append(None)
                continue
            except OSError:
                return None
            marks.append(
                (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
            )
        return tuple(marks)

    def replaced(self) -> bool:
        """Whether the file at the store's path is no longer the one this connection reads
        (moved away, deleted, or put back from a copy): then only a new connection sees it."""
        return self._path is not None and file_id(self._path) != self._file_id

    # -- transactions -------------------------------------------------------------------------

    @contextmanager
    def _write_transaction(self, *, commit: bool = True) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: take the write lock first, so concurrent writers queue (busy_timeout)
        instead of failing when a read transaction tries to upgrade. `commit=False` rolls back."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as err:
                raise StoreError(f"cannot write {self._path}: {err}") from None
            try:
                yield self._conn
            except BaseException:
                with suppress(sqlite3.Error):  # SQLite may have rolled back already
                    self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT" if commit else "ROLLBACK")
            except sqlite3.Error as err:
                with suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise StoreError(f"cannot write {self._path}: {err}") from None

    @contextmanager
    def _read_transaction(self) -> Iterator[sqlite3.Connection]:
        # One transaction so that multi-statement reads see a single revision.
        with self._lock:
            try:
                self._conn.execute("BEGIN")
                try:
                    yield self._conn
                finally:
                    self._conn.execute("COMMIT")
            except sqlite3.Error as err:
                raise StoreError(f"cannot read {self._path}: {err}") from None

    def _require_writable(self) -> None:
        if self._path is None:
            raise StoreError("the store was opened read-only and has no database yet")

    @staticmethod
    def _bump_revision(conn: sqlite3.Connection) -> int:
        return conn.execute(
            "UPDATE revision SET value = value + 1 WHERE id = 1 RETURNING value"
        ).fetchone()[0]

    @staticmethod
    def _select(conn: sqlite3.Connection, key: tuple[str, str, str]) -> tuple | None:
        return conn.execute(
            f"SELECT {_COLUMNS} FROM objects WHERE kind = ? AND namespace = ? AND name = ?", key
        ).fetchone()

    def _put(
        self, conn: sqlite3.Connection, obj: StoredObject, *, must_not_exist: bool
    ) -> tuple[StoredObject, ApplyAction]:
        desired = _without_server_fields(obj, DEFAULT_NAMESPACE)
        key = object_key(desired.kind, desired.metadata.name, desired.metadata.namespace)
        manifest = _canonical_json(desired)
        row = self._select(conn, key)
        if row is not None and must_not_exist:
            raise AlreadyExistsError(f'{resource_plural(key[0])} "{key[2]}" already exists')
        if row is not None and row[6] == manifest:
            return _from_row(row), "unchanged"
        revision = self._bump_revision(conn)
        if row is None:
            uid, created, action = str(uuid.uuid4()), _now_rfc3339(), "created"
            conn.execute(
                f"INSERT INTO objects ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*key, uid, revision, created, manifest),
            )
        else:
            uid, created, action = row[3], row[5], "configured"
            conn.execute(
                "UPDATE objects SET resource_version = ?, manifest = ? "
                "WHERE kind = ? AND namespace = ? AND name = ?",
                (revision, manifest, *key),
            )
        return _from_row((*key, uid, revision, created, manifest)), action  # type: ignore[return-value]

    # -- writes -------------------------------------------------------------------------------

    def apply(
        self, objects: Iterable[StoredObject], *, dry_run: bool = False
    ) -> list[tuple[StoredObject, ApplyAction]]:
        """Create or replace each object, all in one transaction; like `kubectl apply`.

        Returns each stored object (uid and creationTimestamp kept on update, resourceVersion
        bumped only when something changed) with `created`, `configured` or `unchanged`.
        With `dry_run` nothing is kept.
        """
        self._require_writable()
        try:
            with self._write_transaction(commit=not dry_run) as conn:
                return [self._put(conn, obj, must_not_exist=False) for obj in objects]
        except sqlite3.Error as err:
            raise StoreError(f"cannot write {self._path}: {err}") from None

    def create(self, obj: StoredObject) -> StoredObject:
        """Store a new object; AlreadyExistsError if its kind, namespace and name are taken."""
        self._require_writable()
        try:
            with self._write_transaction() as conn:
                stored, _ = self._put(conn, obj, must_not_exist=True)
        except sqlite3.Error as err:
            raise StoreError(f"cannot write {self._path}: {err}") from None
        return stored

    def delete(self, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete one object; False if it did not exist."""
        return self.delete_many([(kind, name, namespace)])[0]

    def delete_many(self, keys: Iterable[tuple[str, str, str | None]]) -> list[bool]:
        """Delete (kind, name, namespace) keys in one transaction; per key, whether it existed."""
        self._require_writable()
        found: list[bool] = []
        try:
            with self._write_transaction() as conn:
                for kind, name, namespace in keys:
                    key = object_key(kind, name, namespace)
                    gone = conn.execute(
                        "DELETE FROM objects WHERE kind = ? AND namespace = ? AND name = ?", key
                    ).rowcount
                    if gone:
                        self._bump_revision(conn)
                    found.append(bool(gone))
        except sqlite3.Error as err:
            raise StoreError(f"cannot write {self._path}: {err}") from None
        return found

    # -- reads --------------------------------------------------------------------------------

    def get(self, kind: str, name: str, namespace: str | None = None) -> StoredObject | None:
        key = object_key(kind, name, namespace)
        with self._read_transaction() as conn:
            row = self._select(conn, key)
        return None if row is None else _from_row(row)

    def require(self, kind: str, name: str, namespace: str | None = None) -> StoredObject:
        """Like get, but NotFoundError (`serviceaccounts "x" not found`) when missing."""
        obj = self.get(kind, name, namespace)
        if obj is None:
            raise NotFoundError(not_found_message(kind, name))
        return obj

    def list_objects(
        self, kind: str | None = None, namespace: str | None = None
    ) -> list[StoredObject]:
        """Objects sorted by kind, namespace, name. `namespace=None` means all namespaces;
        a namespace filter does not hide cluster-scoped kinds (they belong to none)."""
        query = f"SELECT {_COLUMNS} FROM objects"
        clauses: list[str] = []
        params: list[str] = []
        if kind is not None:
            object_key(kind, "", None)  # validates the kind
            clauses.append("kind = ?")
            params.append(kind)
        if namespace is not None:
            clauses.append("(namespace = ? OR namespace = '')")
            params.append(namespace)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        query += " ORDER BY kind, namespace, name"
        with self._read_transaction() as conn:
            rows = conn.execute(query, params).fetchall()
        return [_from_row(row) for row in rows]

    def data_version(self) -> int:
        """A number that changes whenever any process changes a stored object.

        A read of one row: cheap enough to poll every half second.
        """
        with self._lock:
            try:
                return self._conn.execute("SELECT value FROM revision WHERE id = 1").fetchone()[0]
            except sqlite3.Error as err:
                raise StoreError(f"cannot read {self._path}: {err}") from None

    def snapshot(self) -> Snapshot:
        """All objects at one revision, parsed, with in-memory lookups."""
        with self._read_transaction() as conn:
            version = conn.execute("SELECT value FROM revision WHERE id = 1").fetchone()[0]
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM objects ORDER BY kind, namespace, name"
            ).fetchall()
        return Snapshot.of(version, (_from_row(row) for row in rows))
