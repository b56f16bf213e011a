"""Shared fixtures. The Ray head is started once per session, through the real `raygate up`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# A service account, a Role with `verbs` on RayClusters (those named in `resource_names`, or
# every one), and the binding between them.
CLUSTER_RBAC = """
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {name}, namespace: default}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: {name}, namespace: default}}
rules:
- apiGroups: ["ray.io"]
  resources: ["rayclusters"]
{resource_names}  verbs: [{verbs}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {name}, namespace: default}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {name}}}
subjects:
- {{kind: ServiceAccount, name: {name}, namespace: default}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def executable(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed; run `make test-deps`")
    return found


@dataclass
class RaygateUp:
    """A running `raygate up`: its address, its state, and a way to run CLI commands on it."""

    process: subprocess.Popen[str]
    address: str
    state: Path
    workdir: Path
    output: list[str] = field(default_factory=list)
    # The Ray Client door (host:port for ray://) and the Serve door (http URL), when open.
    client_address: str | None = None
    serve_address: str | None = None

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env["RAYGATE_STATE"] = str(self.state)
        env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
        env.update(extra)
        return env

    def run(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 120,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command as a user would in terminal 2 (cwd: a copy of the repo's examples)."""
        cmd = [executable(args[0]), *args[1:]]
        return subprocess.run(
            cmd,
            cwd=self.workdir,
            env=env or self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )

    def raygate(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return self.run("raygate", *args, **kwargs)  # type: ignore[arg-type]

    def token(self, account: str, namespace: str = "default", duration: str = "1h") -> str:
        result = self.raygate("create", "token", account, "-n", namespace, f"--duration={duration}")
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def grant_cluster(
        self, account: str, verb: str, cluster: str | None = "ray-cluster-with-auth"
    ) -> str:
        """Apply CLUSTER_RBAC: `account` may `verb` RayCluster `cluster` (None: any); its token."""
        names = f"  resourceNames: [{json.dumps(cluster)}]\n" if cluster else ""
        rbac = CLUSTER_RBAC.format(name=account, verbs=json.dumps(verb), resource_names=names)
        result = self.raygate("apply", "-f", "-", input=rbac)
        assert result.returncode == 0, result.stderr
        return self.token(account)

    def ray_info(self) -> dict[str, object]:
        return json.loads((self.state / "ray.json").read_text())


def start_raygate_up(
    workdir: Path,
    *extra: str,
    port: int | None = None,
    timeout: float = 180,
    command_prefix: tuple[str, ...] = (),
    doors: bool = False,
    env_extra: dict[str, str] | None = None,
) -> RaygateUp:
    """`raygate up` on free ports. The Ray Client and Serve doors (and Serve itself) only with
    `doors`; never on their fixed default ports, which other runs on the machine may hold."""
    port = port or free_port()
    state = workdir / ".raygate"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env.pop("RAYGATE_STATE", None)
    env.update(env_extra or {})
    client_port = serve_port = 0
    if doors:
        client_port, serve_port = free_port(), free_port()
    door_args = []
    if not any(a.startswith("--client-port") for a in extra):
        door_args += ["--client-port", str(client_port)]
    if not any(a.startswith("--serve-port") for a in extra):
        door_args += ["--serve-port", str(serve_port)]
    process = subprocess.Popen(
        [
            *command_prefix,
            executable("raygate"),
            "up",
            "--port",
            str(port),
            "--num-cpus",
            "1",
            "--object-store-memory",
            str(100 * 1024 * 1024),
            *door_args,
            *extra,
        ],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    up = RaygateUp(
        process,
        f"http://localhost:{port}",
        state,
        workdir,
        client_address=f"localhost:{client_port}" if client_port else None,
        serve_address=f"http://localhost:{serve_port}" if serve_port else None,
    )
    # A thread drains the output so `raygate up` never blocks on a full pipe.
    reader = threading.Thread(target=_collect, args=(process, up.output), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "raygate is up" in "".join(up.output):
            return up
        if process.poll() is not None:
            reader.join(timeout=5)
            raise RuntimeError(
                f"raygate up exited with {process.returncode}:\n{''.join(up.output)}"
            )
        time.sleep(0.2)
    stop_raygate_up(up)
    raise RuntimeError(f"raygate up did not come up in {timeout}s:\n{''.join(up.output)}")


def start_front_gateway(
    raygate_up: RaygateUp,
    workdir: Path,
    *extra: str,
    port: int | None = None,
    timeout: float = 180,
) -> RaygateUp:
    """`raygate up --upstream` (with `extra` flags) in front of `raygate_up`'s Ray dashboard,
    with its own authority and state under `workdir`."""
    return start_raygate_up(
        workdir,
        "--upstream",
        str(raygate_up.ray_info()["dashboard"]),
        "--upstream-token-file",
        str(raygate_up.state / "ray-auth-token"),
        *extra,
        port=port,
        timeout=timeout,
    )


def _collect(process: subprocess.Popen[str], sink: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        sink.append(line)


def stop_raygate_up(up: RaygateUp, sig: int = signal.SIGINT, timeout: float = 60) -> int:
    if up.process.poll() is None:
        up.process.send_signal(sig)
        try:
            up.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(up.process.pid, signal.SIGKILL)
            up.process.wait()
            _kill_ray_head(up)  # its own session: a killed `raygate up` leaves it running
    return up.process.returncode


def _kill_ray_head(up: RaygateUp) -> None:
    try:
        pid = int(up.ray_info()["pid"])  # type: ignore[arg-type]
    except (OSError, ValueError, KeyError):
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture(scope="session")
def raygate_up() -> Iterator[RaygateUp]:
    """`raygate up` in a fresh directory holding the repo's examples, as a newcomer has it.

    Not under pytest's tmp_path: pytest prunes old base temp dirs, and another pytest run on
    the machine could delete the state of this live gateway.
    """
    workdir = Path(tempfile.mkdtemp(prefix="raygate-e2e-"))
    shutil.copytree(REPO / "examples", workdir / "examples")
    # With the Ray Client and Serve doors; open Ray Client sessions are re-checked every 2 s
    # (30 s by default) so a test sees an expired token cut its session quickly.
    up = start_raygate_up(workdir, doors=True, env_extra={"RAYGATE_CLIENT_RECHECK_INTERVAL": "2s"})
    try:
        yield up
    finally:
        stop_raygate_up(up)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs mounted for the test: a disk that fills up (needs root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
