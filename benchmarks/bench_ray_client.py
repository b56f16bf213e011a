"""Ray Client through raygate's door vs straight to Ray's client server, on one real Ray head.

Starts `raygate up` with the Ray Client door, then runs the same driver twice (alternating,
ROUNDS times): `ray.init("ray://...")` to Ray's own client server (with Ray's token) and to
the door (with a service-account token). The driver measures the round trip of a trivial task
(`ray.get(f.remote())`, sequential) and the throughput of `ray.put` + `ray.get` of 50 MB.
Targets (issue 8): at most +0.5 ms per round trip, at least 0.9x throughput.
Writes benchmarks/results/ray_client.json.

    .venv/bin/python benchmarks/bench_ray_client.py        # BENCH_QUICK=1 for a smoke run
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from doors_common import QUICK, Up, environment, start_up, write_result  # noqa: E402

ROUNDS = 1 if QUICK else 3
TASKS = 50 if QUICK else 500
PUTS = 2 if QUICK else 10
MB = 50

DRIVER = """
import json, sys, time
import numpy as np
import ray

address, tasks, puts, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for attempt in range(2):  # Ray 2.60's client server sometimes fails to start a session
    try:
        ray.init(f"ray://{address}", logging_level="ERROR")
        break
    except ConnectionAbortedError:
        if attempt:
            raise

@ray.remote
def noop():
    return None

for _ in range(20):  # warm up: worker started, code shipped
    ray.get(noop.remote())
latencies = []
for _ in range(tasks):
    start = time.perf_counter()
    ray.get(noop.remote())
    latencies.append((time.perf_counter() - start) * 1000)
latencies.sort()
payload = np.ones(mb * 1024 * 1024, dtype=np.uint8)
ray.get(ray.put(payload))  # warm up
start = time.perf_counter()
for _ in range(puts):
    back = ray.get(ray.put(payload))
    assert back.nbytes == payload.nbytes
elapsed = time.perf_counter() - start
print(json.dumps({
    "task_round_trip_p50_ms": round(latencies[len(latencies) // 2], 3),
    "task_round_trip_mean_ms": round(sum(latencies) / len(latencies), 3),
    "task_round_trip_p99_ms": round(latencies[int(len(latencies) * 0.99)], 3),
    "put_get_mb_per_second": round(2 * puts * mb / elapsed, 1),
}))
ray.shutdown()
"""


def run_driver(up: Up, address: str, token: str) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, address, str(TASKS), str(PUTS), str(MB)],
        env=up.env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        raise RuntimeError(f"driver for {address} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}


def main() -> None:
    up = start_up(client=True, serve=False)
    try:
        direct_address = f"127.0.0.1:{up.ray_ports['client']}"
        door_address = f"127.0.0.1:{up.client_port}"
        token = up.token()
        direct, through = [], []
        for _ in range(ROUNDS):
            direct.append(run_driver(up, direct_address, up.ray_token))
            through.append(run_driver(up, door_address, token))
    finally:
        up.stop()
    ray_direct, via_raygate = median_of(direct), median_of(through)
    added = via_raygate["task_round_trip_p50_ms"] - ray_direct["task_round_trip_p50_ms"]
    ratio = via_raygate["put_get_mb_per_second"] / ray_direct["put_get_mb_per_second"]
    data = {
        "benchmark": "Ray Client: Ray's client server direct (Ray's token) vs through raygate's "
        "Ray Client door (service-account token, embedded authority, audit on)",
        **environment(),
        "rounds": ROUNDS,
        "tasks_per_round": TASKS,
        "put_get_per_round": PUTS,
        "object_mb": MB,
        "results": {
            "ray_direct": ray_direct,
            "through_raygate": via_raygate,
            "added_round_trip_p50_ms": round(added, 3),
            "put_get_throughput_ratio": round(ratio, 3),
        },
        "targets": {
            "added_round_trip_ms_at_most": 0.5,
            "throughput_ratio_at_least": 0.9,
            "met": added <= 0.5 and ratio >= 0.9,
        },
    }
    path = write_result("ray_client.json", data)
    print(json.dumps(data["results"], indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
