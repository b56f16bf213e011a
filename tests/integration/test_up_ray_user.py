"""`raygate up --ray-user USER`: started as root, Ray and every job run as USER, and a job cannot
read raygate's state (signing key, store, Ray's token file, audit log)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, executable, free_port, start_raygate_up, stop_raygate_up
from tests.helpers import http
from tests.integration.test_ray_gateway import grant_submitter, submit_no_wait

pytestmark = pytest.mark.slow

RAY_USER = "raygate-ray-test"

PROBE = """
import os, ray
ray.init()
state = os.environ["PROBE_STATE"]
found = {"uid": os.getuid()}
for name in ("sa.key", "objects.db", "ray-auth-token", "audit.log"):
    try:
        open(os.path.join(state, name), "rb").read(1)
        found[name] = "READ"
    except OSError as err:
        found[name] = type(err).__name__
print("PROBE", __import__("json").dumps(found), flush=True)
"""


@pytest.fixture(scope="module")
def ray_user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("--ray-user needs the tests to run as root")
    try:
        return pwd.getpwnam(RAY_USER)
    except KeyError:
        pass
    created = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", RAY_USER],
        capture_output=True,
        text=True,
    )
    if created.returncode != 0:
        pytest.skip(f"cannot create a throwaway user: {created.stderr.strip()}")
    return pwd.getpwnam(RAY_USER)


# This machine's Python may sit under a private home directory (/root, mode 700) that the Ray
# user cannot enter; raygate up refuses that with one line (see the test below). To run Ray as
# that user anyway, `raygate up` runs in a private mount namespace where that directory is an
# empty world-readable tmpfs with only the Python installation bound back into it. Nothing
# outside the namespace changes.
_REVEAL = """
set -e
blocked="$1"; shift
scratch=$(mktemp -d)
count=0
for keep in $KEEP; do
    mkdir -p "$scratch/$count"; mount --bind "$keep" "$scratch/$count"; count=$((count + 1))
done
mount -t tmpfs -o mode=755 tmpfs "$blocked"
count=0
for keep in $KEEP; do
    mkdir -p "$keep"; mount --bind "$scratch/$count" "$keep"; count=$((count + 1))
done
exec "$@"
"""


def _command_prefix(user: pwd.struct_passwd) -> tuple[str, ...]:
    from raygate.errors import ConfigError
    from raygate.ray.launcher import RayUser, check_ray_user_can_run, ray_executable

    ray_user = RayUser(user.pw_name, user.pw_uid, user.pw_gid, user.pw_dir)
    try:
        check_ray_user_can_run(ray_user, [sys.executable, ray_executable()])
        return ()
    except ConfigError as err:
        blocked = str(err).split("it may not enter ", 1)[-1].split(" (mode", 1)[0]
    if not Path(blocked).is_dir() or shutil.which("unshare") is None:
        pytest.skip(f"{RAY_USER} cannot run this Python and no namespace can fix it: {blocked}")
    keep = sorted(
        {
            p
            for p in (sys.base_prefix, sys.prefix, os.path.realpath(sys.executable))
            if p.startswith(blocked + "/")
        }
    )
    keep = [p if Path(p).is_dir() else str(Path(p).parent) for p in keep]
    os.environ["KEEP"] = " ".join(keep)
    return ("unshare", "-m", "--propagation", "private", "sh", "-c", _REVEAL, "sh", blocked)


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def test_jobs_run_as_the_ray_user_and_cannot_read_raygates_state(
    ray_user: pwd.struct_passwd,
) -> None:
    prefix = _command_prefix(ray_user)
    # Only the state directory's own mode keeps the Ray user out (pytest's tmp is private).
    workdir = Path(tempfile.mkdtemp(prefix="raygate-ray-user-"))
    os.chmod(workdir, 0o755)
    shutil.copytree(REPO / "examples", workdir / "examples")
    up = start_raygate_up(workdir, "--ray-user", RAY_USER, command_prefix=prefix)
    try:
        info = up.ray_info()
        assert _uid_of(int(info["pid"])) == ray_user.pw_uid  # type: ignore[arg-type]
        token = grant_submitter(up, "ray-user")
        job = submit_no_wait(
            up,
            token,
            "env",
            f"PROBE_STATE={up.state}",
            "python",
            "-c",
            PROBE,
        )
        deadline = time.monotonic() + 120
        state = ""
        while time.monotonic() < deadline and state not in ("SUCCEEDED", "FAILED", "STOPPED"):
            time.sleep(1)
            status, body, _ = http(f"{up.address}/api/jobs/{job}", token=token)
            assert status == 200, body
            state = json.loads(body)["status"]
        status, logs, _ = http(f"{up.address}/api/jobs/{job}/logs", token=token)
        assert state == "SUCCEEDED", logs
        lines = json.loads(logs)["logs"].splitlines()
        line = next((ln for ln in lines if ln.startswith("PROBE ")), None)
        assert line is not None, logs
        found = json.loads(line.removeprefix("PROBE "))
        assert found["uid"] == ray_user.pw_uid, found
        for name in ("sa.key", "objects.db", "ray-auth-token", "audit.log"):
            assert found[name] == "PermissionError", found
        assert "Ray and its jobs run as user" in "".join(up.output)
    finally:
        stop_raygate_up(up)
        shutil.rmtree(workdir, ignore_errors=True)


def test_unknown_ray_user_is_one_line_error(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the check for the user comes after the check for root")
    result = subprocess.run(
        [executable("raygate"), "up", "--port", str(free_port()), "--ray-user", "no-such-user-x"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "error: --ray-user no-such-user-x: no such user (create it, e.g. useradd)"
    ]


def test_ray_user_without_root_is_one_line_error(
    ray_user: pwd.struct_passwd, tmp_path: Path
) -> None:
    os.chmod(tmp_path, 0o777)
    result = subprocess.run(
        [
            "setpriv",
            f"--reuid={ray_user.pw_uid}",
            f"--regid={ray_user.pw_gid}",
            "--clear-groups",
            executable("raygate"),
            "up",
            "--port",
            str(free_port()),
            "--ray-user",
            "nobody",
        ],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "must run as root" in lines[0], result.stderr
