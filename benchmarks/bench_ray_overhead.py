"""What raygate costs in front of a real Ray head: Ray's dashboard directly vs through raygate.

Starts `raygate up` (a 1-CPU Ray head behind the gateway, both pinned to the server core; wrk
on the other), then measures GET /api/version and GET /api/jobs/ at 1 and 16 connections, straight
to Ray's dashboard (with Ray's own token) and through raygate (with a service-account token whose
decision is cached), alternating, in one run. Reports the ratio of req/s, the p50 added, and
raygate's CPU per request and peak RSS.

    .venv/bin/python benchmarks/bench_ray_overhead.py [--smoke] [--results-dir DIR]
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from harness import (
    RAYGATE,
    Cores,
    Processes,
    Wrk,
    bearer,
    ensure_tools,
    free_port,
    probe,
    stop,
    tempdir,
)
from report import Result, common_arguments

RAY_STARTUP_TIMEOUT = 180.0
ENDPOINTS = ("/api/version", "/api/jobs/")

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


@dataclass(frozen=True)
class Settings:
    connections: tuple[int, ...]
    seconds: int
    warmup: int
    rounds: int


FULL = Settings(connections=(1, 16), seconds=4, warmup=1, rounds=2)
SMOKE = Settings(connections=(1, 16), seconds=1, warmup=0, rounds=1)


class RaygateUp:
    """`raygate up` with its own Ray head, in a directory of its own; stopped with SIGINT."""

    def __init__(self, workdir: Path, cores: Cores) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.state = workdir / ".raygate"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "RAYGATE_"))}
        self.env["RAYGATE_STATE"] = str(self.state)
        self.output: list[str] = []
        command = [
            RAYGATE,
            "up",
            "--port",
            str(self.port),
            "--num-cpus",
            "1",
            "--object-store-memory",
            str(100 * 1024 * 1024),
            # The dashboard is what is measured; the doors would take 10001 and 8000.
            "--client-port",
            "0",
            "--serve-port",
            "0",
        ]
        self.process = subprocess.Popen(
            cores.server(command),
            cwd=workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def wait_up(self) -> None:
        deadline = time.monotonic() + RAY_STARTUP_TIMEOUT
        while not any("raygate is up" in line for line in self.output):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("raygate up did not come up:\n" + "".join(self.output)[-3000:])
            time.sleep(0.2)

    def cli(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [RAYGATE, *args], input=stdin, env=self.env, capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    def stop(self) -> None:
        if stop(self.process, signal.SIGINT, timeout=60):
            self._kill_ray_head()  # its own session: a killed `raygate up` leaves it running

    def _kill_ray_head(self) -> None:
        try:
            pid = int(json.loads((self.state / "ray.json").read_text())["pid"])
            os.killpg(pid, signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            pass


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    """Of the rounds, the one with the most req/s: the machine is shared, the ceiling is the
    signal."""
    return max(runs, key=lambda r: r["requests_per_second"])


def main() -> None:
    args = common_arguments(__doc__).parse_args()
    settings = SMOKE if args.smoke else FULL
    result = Result(
        "ray_overhead",
        "Real Ray head: the dashboard directly vs through raygate",
        about=(
            "`raygate up` with a 1-CPU Ray head; Ray and raygate share the server core, wrk "
            f"has the other. {settings.seconds} s per measurement after {settings.warmup} s of "
            f"warm-up, best of {settings.rounds} alternating rounds. Direct: Ray's dashboard "
            "with Ray's own token. Through raygate: a service-account token, decision cached, "
            "audit log on."
        ),
        smoke=args.smoke,
    )
    missing = ensure_tools("wrk")
    if missing:
        result.skip(missing)
        result.write(args.results_dir)
        return
    cores = Cores.detect()
    result.notes.append(cores.describe())
    measured: dict[tuple[str, str, int], dict[str, float]] = {}
    with tempdir("raygate-bench-ray-") as tmp:
        work = Path(tmp)
        up = RaygateUp(work, cores)
        try:
            up.wait_up()
            up.cli("apply", "-f", "-", stdin=RBAC)
            token = up.cli("create", "token", "bench")
            ray_token = (up.state / "ray-auth-token").read_text().strip()
            dashboard = json.loads((up.state / "ray.json").read_text())["dashboard"].rstrip("/")
            gateway = f"http://127.0.0.1:{up.port}"
            raygate = Processes(up.process.pid)
            wrk = Wrk(cores, work)
            idle = raygate.idle_cpu_ms_per_second()
            result.notes.append(
                f"raygate idle (no requests, Ray up): {idle} ms of CPU per second; CPU per "
                "request includes that share of the run."
            )
            sides = {
                "Ray direct": (dashboard, bearer(ray_token), None),
                "through raygate": (gateway, bearer(token), raygate),
            }
            for endpoint in ENDPOINTS:
                for connections in settings.connections:
                    runs: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
                    for _ in range(settings.rounds):
                        for side, (base, headers, processes) in sides.items():
                            url = base + endpoint
                            status = probe(url, headers)
                            if status != 200:
                                raise RuntimeError(f"{side}: GET {endpoint} answered {status}")
                            if settings.warmup:
                                wrk.run(url, connections, settings.warmup, headers=headers)
                            cpu = processes.cpu_seconds() if processes else 0.0
                            figures = wrk.run(url, connections, settings.seconds, headers=headers)
                            if processes:
                                cpu = processes.cpu_seconds() - cpu
                                figures["raygate_cpu_us_per_request"] = round(
                                    cpu / max(figures["requests"], 1) * 1e6, 1
                                )
                            if figures["socket_errors"] or figures["status_4xx_5xx"]:
                                raise RuntimeError(f"{side} {endpoint} c={connections}: {figures}")
                            runs[side].append(figures)
                    for side in sides:
                        measured[side, endpoint, connections] = best(runs[side])
                        print(
                            f"{side:16} {endpoint:13} c={connections:<3} "
                            f"{measured[side, endpoint, connections]}",
                            flush=True,
                        )
            memory = raygate.memory_mib()
        finally:
            up.stop()
    report(result, measured, memory, settings)
    result.write(args.results_dir)


def report(
    result: Result,
    measured: dict[tuple[str, str, int], dict[str, float]],
    memory: dict[int, dict[str, float]],
    settings: Settings,
) -> None:
    table = result.table(
        "Ray's dashboard direct vs through raygate",
        [
            "endpoint",
            "connections",
            "direct req/s",
            "raygate req/s",
            "ratio",
            "direct p50 ms",
            "raygate p50 ms",
            "p50 added ms",
            "raygate p99 ms",
            "raygate CPU µs/req",
        ],
    )
    for endpoint in ENDPOINTS:
        for c in settings.connections:
            d, g = measured["Ray direct", endpoint, c], measured["through raygate", endpoint, c]
            ratio = g["requests_per_second"] / d["requests_per_second"]
            added = g["p50_ms"] - d["p50_ms"]
            table.add(
                endpoint,
                c,
                d["requests_per_second"],
                g["requests_per_second"],
                round(ratio, 3),
                d["p50_ms"],
                g["p50_ms"],
                round(added, 3),
                g["p99_ms"],
                g.get("raygate_cpu_us_per_request"),
            )
            if c == 16:
                result.target(
                    f"Ray dashboard {endpoint}, c=16: raygate req/s ÷ direct",
                    round(ratio, 3),
                    ">= 0.95",
                    ratio >= 0.95,
                )
            if c == 1:
                result.target(
                    f"Ray dashboard {endpoint}, c=1: p50 added by raygate (ms)",
                    round(added, 3),
                    "<= +0.15 ms",
                    added <= 0.15,
                )
    peak = max((m.get("hwm", 0.0) for m in memory.values()), default=0.0)
    limit = 80e6 / 2**20
    result.target(
        "raygate peak RSS per worker in front of Ray (VmHWM, MiB)",
        peak,
        f"< 80 MB ({limit:.1f} MiB)",
        peak < limit,
    )
    result.data = {
        "settings": settings.__dict__,
        "measurements": [
            {"side": side, "endpoint": endpoint, "connections": c, **figures}
            for (side, endpoint, c), figures in measured.items()
        ],
        "raygate_memory_mib": {str(pid): m for pid, m in memory.items()},
    }


if __name__ == "__main__":
    main()
