"""What the door benchmarks share: a `raygate up` with both doors in a temporary directory, a
service account allowed everything on the cluster and on Serve, and where Ray's own ports are.

Loopback only; `stop()` stops the gateway and Ray (only the processes started here).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import Cores, free_port, stop

BIN = Path(sys.executable).parent

RBAC = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: bench, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: bench, namespace: default}
rules:
- {apiGroups: ["ray.io"], resources: ["rayclusters"], verbs: ["*"]}
- {apiGroups: ["serve.ray.io"], resources: ["applications"], verbs: ["*"]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: bench, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: bench}
subjects: [{kind: ServiceAccount, name: bench, namespace: default}]
"""


@dataclass
class Up:
    process: subprocess.Popen[str]
    workdir: Path
    state: Path
    port: int
    client_port: int
    serve_port: int

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env["RAYGATE_STATE"] = str(self.state)
        env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
        env.update(extra)
        return env

    def raygate(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [str(BIN / "raygate"), *args],
            env=self.env(),
            input=stdin,
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout.strip()

    def token(self) -> str:
        return self.raygate("create", "token", "bench", "--duration", "2h")

    @property
    def ray_token(self) -> str:
        return (self.state / "ray-auth-token").read_text().strip()

    @property
    def ray_ports(self) -> dict[str, int]:
        info: dict[str, Any] = json.loads((self.state / "ray.json").read_text())
        return info["ports"]

    def stop(self) -> None:
        stop(self.process, signal.SIGINT, timeout=60)
        shutil.rmtree(self.workdir, ignore_errors=True)


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each measure's median over the alternating rounds, to the millisecond."""
    return {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}


def start_up(*, client: bool, serve: bool, num_cpus: int = 2, cores: Cores | None = None) -> Up:
    """`cores`: start it on the server core (Ray's whole process tree inherits it; the gateway
    can be moved afterwards)."""
    workdir = Path(tempfile.mkdtemp(prefix="raygate-bench-"))
    port, client_port, serve_port = free_port(), free_port(), free_port()
    command = [
        str(BIN / "raygate"),
        "up",
        "--port",
        str(port),
        "--client-port",
        str(client_port if client else 0),
        "--serve-port",
        str(serve_port if serve else 0),
        "--num-cpus",
        str(num_cpus),
        "--object-store-memory",
        str(400 * 1024 * 1024),
    ]
    process = subprocess.Popen(
        cores.server(command) if cores is not None else command,
        cwd=workdir,
        env={k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    up = Up(process, workdir, workdir / ".raygate", port, client_port, serve_port)
    assert process.stdout is not None
    deadline = time.monotonic() + 240
    for line in process.stdout:
        if "raygate is up" in line:
            break
        if time.monotonic() > deadline:
            up.stop()
            raise RuntimeError("raygate up did not come up")
    else:
        up.stop()
        raise RuntimeError(f"raygate up exited with {process.wait()}")
    # Keep draining its output so it never blocks on a full pipe.
    import threading

    threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()  # type: ignore[union-attr]
    up.raygate("apply", "-f", "-", stdin=RBAC)
    return up
