"""`raygate apply` killed with SIGKILL at any moment: the store holds the old objects or the new
ones, never a mix, and stays a sound database the next command (and the gateway) can read."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from raygate.store.sqlite import DB_FILE, ObjectStore
from tests.conftest import executable

COUNT = 1500


def manifest(version: str) -> str:
    items = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": f"role-{i}", "namespace": "default", "labels": {"v": version}},
            "rules": [{"apiGroups": ["ray.io"], "resources": ["rayclusters"], "verbs": ["get"]}],
        }
        for i in range(COUNT)
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def versions_in(state: Path) -> dict[str, int]:
    with sqlite3.connect(state / DB_FILE) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with ObjectStore.open(state) as store:
        roles = store.list_objects("Role")
    found: dict[str, int] = {}
    for role in roles:
        label = (role.metadata.labels or {}).get("v", "?")
        found[label] = found.get(label, 0) + 1
    return found


def test_sigkill_during_apply_leaves_old_or_new_objects_never_half(tmp_path: Path) -> None:
    state = tmp_path / ".raygate"
    env = {**os.environ, "RAYGATE_STATE": str(state)}
    files = {}
    for version in ("old", "new"):
        files[version] = tmp_path / f"{version}.json"
        files[version].write_text(manifest(version))
    first = subprocess.run(
        [executable("raygate"), "apply", "-f", str(files["old"])],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert first.returncode == 0, first.stderr
    # Time one whole apply, then kill others at points spread over it.
    start = time.monotonic()
    subprocess.run(
        [executable("raygate"), "apply", "-f", str(files["old"])], env=env, capture_output=True
    )
    duration = time.monotonic() - start
    outcomes = set()
    current = "old"
    for step in range(8):
        target = "new" if current == "old" else "old"
        process = subprocess.Popen(
            [executable("raygate"), "apply", "-f", str(files[target])],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(duration * (0.3 + 0.1 * step))
        process.send_signal(signal.SIGKILL)
        process.wait()
        found = versions_in(state)
        assert found in ({"old": COUNT}, {"new": COUNT}), f"half an apply was kept: {found}"
        current = next(iter(found))
        outcomes.add("finished" if current == target else "rolled back")
    # Some kills must have landed in the middle, or the test proves nothing.
    assert "rolled back" in outcomes, outcomes
