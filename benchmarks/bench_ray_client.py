"""Ray Client through raygate's door vs straight to Ray's client server, on one real Ray head.

Starts `raygate up` with the Ray Client door, then runs the same driver twice (alternating,
ROUNDS times): `ray.init("ray://...")` to Ray's own client server (with Ray's token) and to
the door (with a service-account token). The driver measures the round trip of a trivial task
(`ray.get(f.remote())`, sequential) and the throughput of `ray.put` + `ray.get` of 50 MB.
Targets (issue 8): at most +0.5 ms per round trip, at least 0.9x throughput.
Writes benchmarks/results/ray_client.json.

    .venv/bin/python benchmarks/bench_ray_client.py [--smoke] [--results-dir DIR]
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from doors_common import Up, median_of, start_up  # noqa: E402
from harness import Cores, Processes, pin  # noqa: E402
from report import Result, common_arguments  # noqa: E402

FULL = {"rounds": 3, "tasks": 500, "puts": 10}
SMOKE = {"rounds": 1, "tasks": 30, "puts": 1}
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


def run_driver(
    up: Up, cores: Cores, address: str, token: str, tasks: int, puts: int
) -> dict[str, float]:
    result = subprocess.run(
        cores.loader([sys.executable, "-c", DRIVER, address, str(tasks), str(puts), str(MB)]),
        env=up.env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        raise RuntimeError(f"driver for {address} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    args = common_arguments(__doc__).parse_args()
    settings = SMOKE if args.smoke else FULL
    result = Result(
        "ray_client",
        "Ray Client: direct vs through raygate's Ray Client door",
        about="One real Ray head (`raygate up`); the same driver against Ray's own client "
        "server (Ray's token) and against the door (service-account token, embedded "
        "authority, audit on), alternating; medians of the rounds. Round trip: "
        "`ray.get(f.remote())` of a trivial task, sequential; throughput: `ray.put` + "
        f"`ray.get` of {MB} MB. On two cores, Ray's whole process tree runs on one, and "
        "the driver and raygate on the other (a Kubernetes sidecar has CPU of its own).",
        smoke=args.smoke,
    )
    cores = Cores.detect()
    result.notes.append(
        cores.describe()
        if cores.load is None
        else f"Ray's processes on core {cores.servers}; the driver and raygate on core "
        f"{cores.load} (taskset, sched_setaffinity)"
    )
    up = start_up(client=True, serve=False, cores=cores)
    try:
        # The gateway beside the driver, off Ray's core (bench_ray_overhead's sidecar).
        pin(Processes(up.process.pid).refresh(), cores.load)
        direct_address = f"127.0.0.1:{up.ray_ports['client']}"
        door_address = f"127.0.0.1:{up.client_port}"
        token = up.token()
        direct, through = [], []
        for _ in range(settings["rounds"]):
            tasks, puts = settings["tasks"], settings["puts"]
            direct.append(run_driver(up, cores, direct_address, up.ray_token, tasks, puts))
            through.append(run_driver(up, cores, door_address, token, tasks, puts))
    finally:
        up.stop()
    ray_direct, via_raygate = median_of(direct), median_of(through)
    added = via_raygate["task_round_trip_p50_ms"] - ray_direct["task_round_trip_p50_ms"]
    ratio = via_raygate["put_get_mb_per_second"] / ray_direct["put_get_mb_per_second"]
    table = result.table(
        "Ray Client",
        ["path", "task round trip p50 (ms)", "p99 (ms)", f"put+get {MB} MB (MB/s)"],
    )
    for label, figures in (("Ray direct", ray_direct), ("through raygate", via_raygate)):
        table.add(
            label,
            figures["task_round_trip_p50_ms"],
            figures["task_round_trip_p99_ms"],
            figures["put_get_mb_per_second"],
        )
    result.target("round trip added (ms, p50)", round(added, 3), "<= 0.5", added <= 0.5)
    result.target("put/get throughput ÷ direct", round(ratio, 3), ">= 0.9", ratio >= 0.9)
    result.data.update(
        settings=settings, object_mb=MB, ray_direct=ray_direct, through_raygate=via_raygate
    )
    result.write(args.results_dir)
    print(json.dumps({"ray_direct": ray_direct, "through_raygate": via_raygate}, indent=2))


if __name__ == "__main__":
    main()
