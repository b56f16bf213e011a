"""Serve calls through raygate's Serve door vs straight to Serve's HTTP proxy, on one real head.

Starts `raygate up` with the Serve door under `taskset -c SERVER` (Ray's whole process tree
inherits the server core), deploys a trivial Serve application through the gateway (`ray job
submit`), then sends the same GET with wrk (one thread, pinned to the load core) to Serve's proxy
directly (no credentials: Serve checks none) and through the door (a service-account token,
embedded authority, audit on), at 1 and 16 connections, alternating ROUNDS times. The gateway is
measured in the two arrangements of bench_ray_overhead.py: *sidecar* (raygate's threads moved to
wrk's core, Ray alone on its own: a Kubernetes sidecar; the targets are read here) and *shared*
(raygate on Ray's core). Targets (issue 8): at least 0.95x req/s and at most +0.15 ms p50.
Writes benchmarks/results/serve.json.

    .venv/bin/python benchmarks/bench_serve.py [--smoke] [--results-dir DIR]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from doors_common import BIN, Up, median_of, start_up  # noqa: E402
from harness import (  # noqa: E402
    SHARED,
    Cores,
    Processes,
    Wrk,
    bearer,
    gateway_arrangements,
    pin,
    probe,
    skipped_without,
)
from report import Result, common_arguments  # noqa: E402

FULL = {"rounds": 3, "seconds": 5, "warmup": 1}
SMOKE = {"rounds": 1, "seconds": 1, "warmup": 0}
CONNECTIONS = (1, 16)

APP = """
from ray import serve

@serve.deployment(ray_actor_options={"num_cpus": 0})
class Hello:
    def __call__(self, request):
        return "ok"

serve.run(Hello.bind(), name="hello", route_prefix="/hello", blocking=False)
print("deployed")
"""


def deploy(up: Up, token: str) -> None:
    with tempfile.TemporaryDirectory() as app_dir:
        (Path(app_dir) / "app.py").write_text(APP)
        result = subprocess.run(
            [
                str(BIN / "ray"),
                "job",
                "submit",
                "--address",
                f"http://127.0.0.1:{up.port}",
                "--working-dir",
                app_dir,
                "--",
                "python",
                "app.py",
            ],
            env=up.env(RAY_JOB_HEADERS=json.dumps({"Authorization": f"Bearer {token}"})),
            capture_output=True,
            text=True,
            timeout=600,
        )
    if "deployed" not in result.stdout:
        raise RuntimeError(f"deploying the app failed:\n{result.stdout[-2000:]}{result.stderr}")


def main() -> None:
    args = common_arguments(__doc__).parse_args()
    settings = SMOKE if args.smoke else FULL
    result = Result(
        "serve",
        "Ray Serve: direct vs through raygate's Serve door",
        about="One real Ray head with Serve (`raygate up`, its process tree pinned to the server "
        "core), a trivial application deployed through the gateway; wrk (one thread, on the "
        "load core) sends GET straight to Serve's HTTP proxy (no credentials: Serve checks "
        "none) and through the Serve door (service-account token, embedded authority, "
        "per-application RBAC, audit on). The gateway is measured on wrk's core (*sidecar*: "
        "Ray keeps its core, as a Kubernetes sidecar has CPU of its own; the targets are read "
        "here) and on Ray's core (*shared*). "
        f"{settings['seconds']} s per measurement after {settings['warmup']} s of warm-up, "
        f"{settings['rounds']} rounds in which every side alternates; medians of the rounds.",
        smoke=args.smoke,
    )
    if skipped_without(result, args.results_dir, "wrk"):
        return
    cores = Cores.detect()
    arrangements = gateway_arrangements(cores)
    result.notes.append(
        cores.describe()
        if cores.load is None
        else f"wrk on core {cores.load}; Ray's processes on core {cores.servers}; raygate moved "
        "to the arrangement's core before each measurement, every thread (sched_setaffinity)"
    )
    table = result.table(
        "Serve calls",
        ["path", "arrangement", "connections", "req/s", "p50 (ms)", "p99 (ms)", "ratio to direct"],
    )
    up = start_up(client=False, serve=True, num_cpus=1, cores=cores)
    raw: dict[str, object] = {}
    try:
        token = up.token()
        deploy(up, token)
        gateway = Processes(up.process.pid)
        wrk = Wrk(cores, up.workdir)
        direct_url = f"http://127.0.0.1:{up.ray_ports['serve']}/hello"
        door_url = f"http://127.0.0.1:{up.serve_port}/hello"
        sides: list[tuple[str, str, dict[str, str], int | None, str]] = [
            ("Serve direct", direct_url, {}, None, "-")
        ] + [
            ("through raygate", door_url, bearer(token), core, arrangement)
            for arrangement, core in arrangements.items()
        ]
        for connections in CONNECTIONS:
            runs: dict[str, list[dict[str, float]]] = {}
            for _ in range(settings["rounds"]):
                for name, url, headers, core, arrangement in sides:
                    if name != "Serve direct":
                        pin(gateway.refresh(), core)
                    runs.setdefault(arrangement, []).append(
                        one_run(wrk, url, headers, connections, settings)
                    )
            direct = median_of(runs["-"])
            raw[str(connections)] = {"serve_direct": direct}
            table.add("Serve direct", "-", connections, *_figures(direct), 1.0)
            for arrangement in arrangements:
                through = median_of(runs[arrangement])
                raw[str(connections)][f"through_raygate_{arrangement}"] = through  # type: ignore[index]
                ratio = through["requests_per_second"] / direct["requests_per_second"]
                added = through["p50_ms"] - direct["p50_ms"]
                table.add(
                    "through raygate", arrangement, connections, *_figures(through), round(ratio, 3)
                )
                if arrangement == SHARED:
                    continue
                result.target(
                    f"req/s ÷ direct, c={connections} ({arrangement})",
                    round(ratio, 3),
                    ">= 0.95",
                    ratio >= 0.95,
                )
                result.target(
                    f"p50 added (ms), c={connections} ({arrangement})",
                    round(added, 3),
                    "<= 0.15",
                    added <= 0.15,
                )
    finally:
        up.stop()
    table.notes.append(
        "Shared: Ray and the gateway take turns on one core (`raygate up` on a one-core "
        "machine); reported, not what the targets are about."
    )
    result.data.update(settings=settings, measurements=raw)
    result.write(args.results_dir)
    print(json.dumps(raw, indent=2))


def one_run(
    wrk: Wrk, url: str, headers: dict[str, str], connections: int, settings: dict[str, int]
) -> dict[str, float]:
    status = probe(url, headers)
    if status != 200:
        raise RuntimeError(f"GET {url} answered {status}")
    if settings["warmup"]:
        wrk.run(url, connections, settings["warmup"], headers=headers)
    figures = wrk.run(url, connections, settings["seconds"], headers=headers)
    if figures["socket_errors"] or figures["status_4xx_5xx"]:
        raise RuntimeError(f"{url} c={connections}: {figures}")
    return {k: figures[k] for k in ("requests_per_second", "p50_ms", "p99_ms")}


def _figures(figures: dict[str, float]) -> tuple[float, float, float]:
    return figures["requests_per_second"], figures["p50_ms"], figures["p99_ms"]


if __name__ == "__main__":
    main()
