"""Serve calls through raygate's Serve door vs straight to Serve's HTTP proxy, on one real head.

Starts `raygate up` with the Serve door, deploys a trivial Serve application through the
gateway (`ray job submit`), then sends the same GET to Serve's proxy directly (no credentials:
Serve checks none) and through the door (a service-account token, embedded authority, audit
on), at 1 and 16 connections, alternating ROUNDS times. Targets (issue 8): at least 0.95x
req/s and at most +0.15 ms p50. Writes benchmarks/results/serve.json.

    .venv/bin/python benchmarks/bench_serve.py [--smoke] [--results-dir DIR]
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))

from doors_common import BIN, Up, median_of, start_up  # noqa: E402
from report import Result, common_arguments  # noqa: E402

FULL = {"rounds": 3, "seconds": 10.0}
SMOKE = {"rounds": 1, "seconds": 1.0}
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


async def load(url: str, token: str | None, connections: int, seconds: float) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(20):  # warm up the connections and the replica
            async with session.get(url, headers=headers) as response:
                await response.read()
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                async with session.get(url, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url} answered {response.status}")
                latencies.append((time.perf_counter() - start) * 1000)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "requests_per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2], 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)], 3),
    }


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
        about="One real Ray head with Serve (`raygate up`), a trivial application deployed "
        "through the gateway; GET straight to Serve's HTTP proxy (no credentials: Serve checks "
        "none) and through the Serve door (service-account token, embedded authority, "
        "per-application RBAC, audit on), alternating; medians of the rounds.",
        smoke=args.smoke,
    )
    table = result.table("Serve calls", ["path", "connections", "req/s", "p50 (ms)", "p99 (ms)"])
    up = start_up(client=False, serve=True, num_cpus=1)
    raw: dict[str, object] = {}
    try:
        token = up.token()
        deploy(up, token)
        direct_url = f"http://127.0.0.1:{up.ray_ports['serve']}/hello"
        door_url = f"http://127.0.0.1:{up.serve_port}/hello"
        for connections in CONNECTIONS:
            direct, through = [], []
            for _ in range(settings["rounds"]):
                seconds = settings["seconds"]
                direct.append(asyncio.run(load(direct_url, None, connections, seconds)))
                through.append(asyncio.run(load(door_url, token, connections, seconds)))
            serve_direct, via_raygate = median_of(direct), median_of(through)
            for label, figures in (
                ("Serve direct", serve_direct),
                ("through raygate", via_raygate),
            ):
                table.add(
                    label,
                    connections,
                    figures["requests_per_second"],
                    figures["p50_ms"],
                    figures["p99_ms"],
                )
            ratio = via_raygate["requests_per_second"] / serve_direct["requests_per_second"]
            added = via_raygate["p50_ms"] - serve_direct["p50_ms"]
            result.target(
                f"req/s ÷ direct, c={connections}", round(ratio, 3), ">= 0.95", ratio >= 0.95
            )
            result.target(
                f"p50 added (ms), c={connections}", round(added, 3), "<= 0.15", added <= 0.15
            )
            raw[str(connections)] = {"serve_direct": serve_direct, "through_raygate": via_raygate}
    finally:
        up.stop()
    result.data.update(settings=settings, measurements=raw)
    result.write(args.results_dir)
    print(json.dumps(raw, indent=2))


if __name__ == "__main__":
    main()
