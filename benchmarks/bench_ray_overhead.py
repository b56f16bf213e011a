"""What raygate adds in front of a real Ray head, side by side with Ray's dashboard itself.

Starts `raygate up` (a 1-CPU Ray head behind the gateway) in a temporary directory, then sends
the same requests to Ray's dashboard directly (with Ray's own token) and through the gateway
(with a service-account token): GET /api/version and GET /api/jobs/, N requests at concurrency C.
Writes benchmarks/results/ray_overhead.json. Loopback only; stops Ray when done.

    .venv/bin/python benchmarks/bench_ray_overhead.py
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

BIN = Path(sys.executable).parent
RESULT = Path(__file__).parent / "results" / "ray_overhead.json"
REQUESTS, CONCURRENCY, ROUNDS = 400, 8, 3

RBAC = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: bench, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: bench, namespace: default}
rules: [{apiGroups: ["ray.io"], resources: ["rayclusters"], verbs: ["*"]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: bench, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: bench}
subjects: [{kind: ServiceAccount, name: bench, namespace: default}]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def measure(url: str, token: str) -> dict[str, float]:
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one() -> None:
            async with gate:
                start = time.perf_counter()
                async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"{url} answered {r.status}")
                latencies.append((time.perf_counter() - start) * 1000)

        began = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(REQUESTS)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "requests_per_second": round(REQUESTS / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2], 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)], 3),
    }


def best(samples: list[dict[str, float]]) -> dict[str, float]:
    """The round with the best p50: the machine is shared, the floor is the signal."""
    return min(samples, key=lambda s: s["p50_ms"])


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="raygate-bench-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "RAYGATE_"))}
    env["RAYGATE_STATE"] = str(workdir / ".raygate")
    up = subprocess.Popen(
        [
            str(BIN / "raygate"),
            "up",
            "--port",
            str(port),
            "--num-cpus",
            "1",
            "--object-store-memory",
            str(100 * 1024 * 1024),
        ],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert up.stdout is not None
        for line in up.stdout:
            if "raygate is up" in line:
                break
        else:
            raise RuntimeError("raygate up exited before it was up")
        raygate = [str(BIN / "raygate")]
        subprocess.run(
            [*raygate, "apply", "-f", "-"],
            input=RBAC,
            text=True,
            env=env,
            check=True,
            capture_output=True,
        )
        token = subprocess.run(
            [*raygate, "create", "token", "bench"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        state = workdir / ".raygate"
        ray_token = (state / "ray-auth-token").read_text().strip()
        dashboard = json.loads((state / "ray.json").read_text())["dashboard"]
        gateway = f"http://127.0.0.1:{port}"
        results = {}
        for path in ("/api/version", "/api/jobs/"):
            direct = [asyncio.run(measure(dashboard + path, ray_token)) for _ in range(ROUNDS)]
            through = [asyncio.run(measure(gateway + path, token)) for _ in range(ROUNDS)]
            d, g = best(direct), best(through)
            results[path] = {
                "ray_direct": d,
                "through_raygate": g,
                "added_p50_ms": round(g["p50_ms"] - d["p50_ms"], 3),
            }
        RESULT.write_text(
            json.dumps(
                {
                    "benchmark": "real Ray head: dashboard direct (Ray's token) vs through raygate "
                    "(service-account token, embedded authority, audit on)",
                    "requests": REQUESTS,
                    "concurrency": CONCURRENCY,
                    "rounds": ROUNDS,
                    "python": platform.python_version(),
                    "machine": platform.machine(),
                    "cpus": os.cpu_count(),
                    "results": results,
                },
                indent=2,
            )
            + "\n"
        )
        print(RESULT.read_text())
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
