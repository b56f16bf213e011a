"""What a gateway costs in front of a real Ray head: Ray's dashboard directly, through the naive
aiohttp pass-through, and through raygate, side by side in one run, in two CPU arrangements.

One `raygate up` (a 1-CPU Ray head behind the gateway) is started under `taskset -c SERVER`, so
Ray's whole process tree (`ray start`, GCS, raylet, the dashboard and its module processes, and
whatever they start later) lives on the server core and stays there. The naive pass-through
(naive_proxy.py) is started in front of the same dashboard. Before each measurement, the gateway
being measured (every thread of raygate's own processes, or of the naive proxy's) is moved with
sched_setaffinity (what `taskset -a -p` does) to the core of one of two arrangements:

- sidecar: the gateway on the other core, the one wrk has; Ray keeps its core to itself. This is
  how the gateway runs in Kubernetes: a sidecar container in the Ray head pod with CPU of its
  own, not Ray's (the KubeRay guide's kube-rbac-proxy sidecar; `raygate manifests` gives the
  raygate container its own CPU request and limit). The issue's targets are evaluated here.
- shared: the gateway on Ray's core, as `raygate up` runs on a one-core machine. Every
  microsecond the gateway spends per request is then taken from Ray, so the ratio is about
  Ray's CPU per request ÷ (Ray's + the gateway's); reported, not a target.

Measured: GET /api/version and GET /api/jobs/ at 1 and 16 connections; direct (Ray's own token),
the naive pass-through (Ray's token, forwarded as is), raygate (a service-account token, decision
cached, audit log on).

- One connection (latency): all sides alternate within each round, each run after a warm-up;
  best of the rounds.
- 16 connections (Ray saturated; req/s): Ray's own pace wanders by 10-20% over tens of seconds,
  more than what is measured. Each gateway is measured in blocks of four adjacent 1 s windows,
  direct, gateway, gateway, direct, so that a drift cancels within a block; its ratio is its
  req/s over all its blocks ÷ direct's over the same blocks (24 blocks for raygate as a sidecar,
  which the target reads; 6 for the others).

Reported: req/s and the ratio to direct, the p50 added, the CPU per request of the gateway (all
its threads) and of Ray (all its processes), raygate's peak RSS.

    .venv/bin/python benchmarks/bench_ray_overhead.py [--smoke] [--results-dir DIR]
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness import (
    RAYGATE,
    SHARED,
    SIDECAR,
    UNPINNED,
    Cores,
    Processes,
    Wrk,
    bearer,
    child_map,
    free_port,
    gateway_arrangements,
    naive_proxy,
    pin,
    probe,
    skipped_without,
    stop,
    tempdir,
)
from report import Result, common_arguments

RAY_STARTUP_TIMEOUT = 180.0
ENDPOINTS = ("/api/version", "/api/jobs/")
DIRECT, NAIVE, RAYGATE_SIDE = "Ray direct", "naive pass-through", "raygate"
ARRANGEMENT_TEXT = {
    SIDECAR: "gateway on its own core (sidecar)",
    SHARED: "gateway on Ray's core (shared)",
    UNPINNED: "not pinned",
}

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
    endpoints: tuple[str, ...]
    connections: tuple[int, ...]
    seconds: int  # one connection: each run, after the warm-up
    warmup: int
    rounds: int  # one connection: rounds in which every side alternates
    # Several connections: blocks of direct, gateway, gateway, direct windows of
    # `window` seconds; the target's gateway and arrangement get `target_blocks`.
    window: int
    blocks: int
    target_blocks: int


FULL = Settings(
    endpoints=ENDPOINTS,
    connections=(1, 16),
    seconds=2,
    warmup=1,
    rounds=5,
    window=1,
    blocks=6,
    target_blocks=24,
)
SMOKE = Settings(
    endpoints=ENDPOINTS[:1],
    connections=(1, 16),
    seconds=1,
    warmup=0,
    rounds=1,
    window=1,
    blocks=1,
    target_blocks=1,
)


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
        # On the server core: Ray, started by it, inherits that core; raygate itself is moved
        # before each measurement (pin()).
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

    def ray(self) -> dict[str, object]:
        return json.loads((self.state / "ray.json").read_text())

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
            os.killpg(int(self.ray()["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
        except (OSError, ValueError, KeyError):
            pass


class RayTree:
    """Ray's processes: the head `raygate up` started and everything below it, at each look."""

    def __init__(self, root: int) -> None:
        self.root = root

    def pids(self) -> list[int]:
        tree = child_map()
        pids, todo = [self.root], [self.root]
        while todo:
            for child in tree.get(todo.pop(), []):
                pids.append(child)
                todo.append(child)
        return pids

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pids())

    def idle_cpu_ms_per_second(self, seconds: float = 2.0) -> float:
        before = self.cpu_seconds()
        time.sleep(seconds)
        return round((self.cpu_seconds() - before) / seconds * 1000, 1)


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime+stime of the processes (the kernel scales these to the exact run time)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    """CPU time the machine has spent busy so far, all cores (/proc/stat: all but idle)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_seconds() -> float:
    """CPU time of this process's finished children so far (wrk's runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Side:
    """One way to reach the dashboard: base URL, the headers wrk sends, the gateway's pids."""

    name: str
    base: str
    headers: dict[str, str]
    gateway: Processes | None  # None: straight to Ray


def paired_ratio(side: list[dict[str, float]], direct: list[dict[str, float]]) -> float:
    """The median, over rounds, of the side's req/s ÷ the direct req/s of the same round."""
    return round(
        statistics.median(
            [
                s["requests_per_second"] / d["requests_per_second"]
                for s, d in zip(side, direct, strict=True)
            ]
        ),
        3,
    )


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    """Of the rounds, the one with the most req/s: the machine is shared, the ceiling is the
    signal."""
    return max(runs, key=lambda r: r["requests_per_second"])


Key = tuple[str, str, str, int]  # (side, arrangement, endpoint, connections)


def main() -> None:
    args = common_arguments(__doc__).parse_args()
    settings = SMOKE if args.smoke else FULL
    result = Result(
        "ray_overhead",
        "Real Ray head: the dashboard directly, through the naive pass-through, through raygate",
        about=(
            "One `raygate up` with a 1-CPU Ray head, its whole process tree pinned to the server "
            "core; the naive aiohttp pass-through in front of the same dashboard. Each gateway is "
            "measured in two arrangements: *sidecar* (the gateway on the other core, with wrk: "
            "Ray keeps its core, as with a Kubernetes sidecar that has CPU of its own; the "
            "targets are evaluated here) and *shared* (the gateway on Ray's core). "
            f"One connection: {settings.seconds} s per measurement after {settings.warmup} s "
            f"of warm-up, best of {settings.rounds} rounds in which every side alternates. "
            "16 connections: Ray's own pace wanders by 10-20% over tens of seconds, more than "
            "what is measured, so each gateway is measured in blocks of four adjacent "
            f"{settings.window} s windows (direct, gateway, gateway, direct: a drift cancels "
            "within a block), and its ratio is its req/s over all its blocks ÷ direct's over "
            f"the same blocks ({settings.target_blocks} blocks for raygate as a sidecar, which "
            f"the target reads; {settings.blocks} for the others); its req/s, p50 and p99 are "
            "the mean and medians of its windows. Direct and naive: Ray's own token. raygate: "
            "a service-account token, decision cached, audit log on."
        ),
        smoke=args.smoke,
    )
    if skipped_without(result, args.results_dir, "wrk"):
        return
    cores = Cores.detect()
    arrangements = gateway_arrangements(cores)
    if cores.load is None:
        result.notes.append(cores.describe() + ": only the unpinned arrangement is measured")
    else:
        result.notes.append(
            f"wrk pinned to core {cores.load}; Ray's processes to core {cores.servers}; the "
            f"gateway measured moved to core {cores.load} (sidecar) or {cores.servers} (shared) "
            "before each measurement, every thread (sched_setaffinity, as `taskset -a -p`)"
        )
    measured: dict[Key, dict[str, float]] = {}
    with tempdir("raygate-bench-ray-") as tmp:
        work = Path(tmp)
        up = RaygateUp(work, cores)
        try:
            up.wait_up()
            up.cli("apply", "-f", "-", stdin=RBAC)
            token = up.cli("create", "token", "bench")
            ray_token = (up.state / "ray-auth-token").read_text().strip()
            ray = up.ray()
            dashboard = str(ray["dashboard"]).rstrip("/")
            dashboard_port = int(dashboard.rsplit(":", 1)[1])
            ray_tree = RayTree(int(ray["pid"]))  # type: ignore[call-overload]
            raygate = Processes(up.process.pid)
            wrk = Wrk(cores, work)
            idle = raygate.idle_cpu_ms_per_second()
            ray_idle = ray_tree.idle_cpu_ms_per_second()
            result.notes.append(
                f"Idle (no requests): raygate {idle} ms of CPU per second, Ray's processes "
                f"{ray_idle} ms per second; CPU per request includes that share of the run."
            )
            with naive_proxy(cores, work, dashboard_port) as (naive_port, naive_pid):
                naive = Processes(naive_pid)
                sides = [
                    Side(DIRECT, dashboard, bearer(ray_token), None),
                    Side(RAYGATE_SIDE, f"http://127.0.0.1:{up.port}", bearer(token), raygate),
                    Side(NAIVE, f"http://127.0.0.1:{naive_port}", bearer(ray_token), naive),
                ]
                measured = measure(settings, sides, arrangements, wrk, ray_tree)
            memory = raygate.memory_mib()
        finally:
            up.stop()
    report(result, measured, memory, settings, list(arrangements))
    result.write(args.results_dir)


def measure(
    settings: Settings,
    sides: list[Side],
    arrangements: dict[str, int | None],
    wrk: Wrk,
    ray_tree: RayTree,
) -> dict[Key, dict[str, float]]:
    """Every side in every arrangement (direct once: it has no gateway). One connection: the
    sides alternate within each round, best round of each. Several: paired blocks (blocks())."""
    plan = [
        (side, arrangement, core)
        for arrangement, core in arrangements.items()
        for side in sides
        if side.gateway is not None
    ]
    direct = sides[0]
    measured: dict[Key, dict[str, float]] = {}
    for endpoint in settings.endpoints:
        for connections in settings.connections:
            if connections == 1:
                found = rounds(settings, direct, plan, endpoint, wrk, ray_tree)
            else:
                found = blocks(settings, direct, plan, endpoint, connections, wrk, ray_tree)
            for key, figures in found.items():
                measured[key] = figures
                side, arrangement = key[0], key[1] or "-"
                print(
                    f"{side:18} {arrangement:8} {endpoint:13} c={connections:<3} {figures}",
                    flush=True,
                )
    return measured


Plan = list[tuple[Side, str, int | None]]


def rounds(
    settings: Settings, direct: Side, plan: Plan, endpoint: str, wrk: Wrk, ray_tree: RayTree
) -> dict[Key, dict[str, float]]:
    """One connection: latency is what is measured, and it is steady; rounds in which every
    side alternates, each run after its warm-up, the best round of each."""
    runs: dict[Key, list[dict[str, float]]] = {}
    for _ in range(settings.rounds):
        for side, arrangement, core in [(direct, "", None), *plan]:
            key = (side.name, arrangement, endpoint, 1)
            runs.setdefault(key, []).append(
                one_run(side, core, endpoint, 1, settings.seconds, settings.warmup, wrk, ray_tree)
            )
    found: dict[Key, dict[str, float]] = {}
    for key, figures in runs.items():
        found[key] = best(figures)
        if key[0] != direct.name:
            found[key]["paired_ratio"] = paired_ratio(figures, runs[direct.name, "", endpoint, 1])
        found[key]["rounds_rps"] = [f["requests_per_second"] for f in figures]
    return found


def blocks(
    settings: Settings,
    direct: Side,
    plan: Plan,
    endpoint: str,
    connections: int,
    wrk: Wrk,
    ray_tree: RayTree,
) -> dict[Key, dict[str, float]]:
    """Several connections: Ray is saturated and its req/s is what is measured, but its own
    pace wanders by 10-20% over tens of seconds (its dashboard's periodic work shares its
    process and core), and a window of 1 s is no noisier than one of 4 s. So each gateway is
    measured in blocks of four adjacent short windows, direct, gateway, gateway, direct (a
    drift cancels within a block), and its ratio is its req/s over all its blocks ÷ direct's
    over the same blocks. The gateway and arrangement the target reads get more blocks."""
    targeted = (RAYGATE_SIDE, SIDECAR)
    if settings.warmup:
        wrk.run(direct.base + endpoint, connections, settings.warmup, headers=direct.headers)
    found: dict[Key, dict[str, float]] = {}
    all_direct: list[dict[str, float]] = []
    for side, arrangement, core in plan:
        count = settings.target_blocks if (side.name, arrangement) == targeted else settings.blocks
        if settings.warmup:
            pin(side.gateway.refresh(), core)  # type: ignore[union-attr]
            wrk.run(side.base + endpoint, connections, settings.warmup, headers=side.headers)
        windows: list[dict[str, float]] = []
        directs: list[dict[str, float]] = []
        block_ratios = []
        for _ in range(count):
            block = [
                one_run(who, where, endpoint, connections, settings.window, 0, wrk, ray_tree)
                for who, where in ((direct, None), (side, core), (side, core), (direct, None))
            ]
            block_ratios.append(round(rps_sum(block[1:3]) / rps_sum(block[::3]), 3))
            windows += block[1:3]
            directs += block[::3]
        figures = combine(windows)
        figures["paired_ratio"] = round(rps_sum(windows) / rps_sum(directs), 3)
        figures["block_ratios"] = block_ratios
        found[side.name, arrangement, endpoint, connections] = figures
        all_direct += directs
    found[direct.name, "", endpoint, connections] = combine(all_direct)
    return found


def rps_sum(windows: list[dict[str, float]]) -> float:
    return sum(w["requests_per_second"] for w in windows)


def combine(windows: list[dict[str, float]]) -> dict[str, float]:
    """Windows of equal length as one measurement: mean req/s, median p50 and p99, CPU per
    request over all their requests."""
    requests = sum(w["requests"] for w in windows)
    figures: dict[str, float] = {
        "requests": requests,
        "requests_per_second": round(rps_sum(windows) / len(windows), 1),
        "p50_ms": round(statistics.median([w["p50_ms"] for w in windows]), 3),
        "p99_ms": round(statistics.median([w["p99_ms"] for w in windows]), 3),
        "other_load_cores": max(w["other_load_cores"] for w in windows),
        "windows": len(windows),
    }
    for part in ("ray_cpu_us_per_request", "gateway_cpu_us_per_request"):
        if part in windows[0]:
            spent = sum(w[part] * w["requests"] for w in windows)
            figures[part] = round(spent / max(requests, 1), 1)
    return figures


def one_run(
    side: Side,
    core: int | None,
    endpoint: str,
    connections: int,
    seconds: int,
    warmup: int,
    wrk: Wrk,
    ray_tree: RayTree,
) -> dict[str, float]:
    gateway = side.gateway
    if gateway is not None:
        pin(gateway.refresh(), core)
    url = side.base + endpoint
    status = probe(url, side.headers)
    if status != 200:
        raise RuntimeError(f"{side.name}: GET {endpoint} answered {status}")
    if warmup:
        wrk.run(url, connections, warmup, headers=side.headers)
    ray_pids = ray_tree.pids()
    ray_cpu = cpu_seconds(ray_pids)
    gateway_cpu = gateway.cpu_seconds() if gateway else 0.0
    machine, wrk_cpu, began = busy_seconds(), children_seconds(), time.monotonic()
    figures = wrk.run(url, connections, seconds, headers=side.headers)
    elapsed = time.monotonic() - began
    requests = max(figures["requests"], 1)
    ray_cpu = cpu_seconds(ray_pids) - ray_cpu
    gateway_cpu = gateway.cpu_seconds() - gateway_cpu if gateway else 0.0
    figures["ray_cpu_us_per_request"] = round(ray_cpu / requests * 1e6, 1)
    if gateway is not None:
        figures["gateway_cpu_us_per_request"] = round(gateway_cpu / requests * 1e6, 1)
    # What the rest of the machine was doing meanwhile (other users' processes, the kernel's
    # own threads, the hypervisor's steal): a busy neighbour explains a figure off the trend.
    others = busy_seconds() - machine - ray_cpu - gateway_cpu - (children_seconds() - wrk_cpu)
    figures["other_load_cores"] = round(max(others, 0.0) / elapsed, 2)
    if figures["socket_errors"] or figures["status_4xx_5xx"]:
        raise RuntimeError(f"{side.name} {endpoint} c={connections}: {figures}")
    return figures


def report(
    result: Result,
    measured: dict[Key, dict[str, float]],
    memory: dict[int, dict[str, float]],
    settings: Settings,
    arrangements: list[str],
) -> None:
    for arrangement in arrangements:
        table = result.table(
            f"Ray's dashboard: direct vs through a gateway, {ARRANGEMENT_TEXT[arrangement]}",
            [
                "endpoint",
                "connections",
                "direct req/s",
                "naive req/s",
                "naive ÷ direct",
                "raygate req/s",
                "raygate ÷ direct",
                "raygate ÷ direct, paired",
                "direct p50 ms",
                "naive p50 added ms",
                "raygate p50 added ms",
                "raygate p99 ms",
                "naive CPU µs/req",
                "raygate CPU µs/req",
            ],
        )
        for endpoint in settings.endpoints:
            for c in settings.connections:
                d = measured[DIRECT, "", endpoint, c]
                n = measured[NAIVE, arrangement, endpoint, c]
                g = measured[RAYGATE_SIDE, arrangement, endpoint, c]
                table.add(
                    endpoint,
                    c,
                    d["requests_per_second"],
                    n["requests_per_second"],
                    _ratio(n, d),
                    g["requests_per_second"],
                    _ratio(g, d),
                    g["paired_ratio"],
                    d["p50_ms"],
                    _added(n, d),
                    _added(g, d),
                    g["p99_ms"],
                    n["gateway_cpu_us_per_request"],
                    g["gateway_cpu_us_per_request"],
                )
        if arrangement == SHARED:
            table.notes.append(
                "Shared: Ray and the gateway take turns on one core, so the ratio is about "
                "Ray's CPU per request ÷ (Ray's + the gateway's), whatever the gateway does "
                "with it; the CPU table below shows both. Reported for `raygate up` on a "
                "one-core machine; not what the targets are about."
            )
        elif arrangement == SIDECAR:
            table.notes.append(
                "Sidecar: Ray alone on its core, the gateway on the other with wrk (which "
                "spends some of that core too), as a Kubernetes sidecar container has CPU of "
                "its own. The issue's targets are evaluated here."
            )
        table.notes.append(
            "Paired: at one connection, the median of each round's ratio to that round's "
            "direct run; at 16, the blocks of adjacent windows (above). The unpaired ratio at "
            "16 divides by the mean of every direct window of the run, taken at other times "
            "(for the other gateways too): the paired one compares like with like. raygate's "
            "ratio in each block, sorted: "
            + "; ".join(
                f"{endpoint} c={c}: {sorted(g['block_ratios'])}"
                for (side, where, endpoint, c), g in measured.items()
                if side == RAYGATE_SIDE and where == arrangement and "block_ratios" in g
            )
            + "."
        )
    others = sorted(f["other_load_cores"] for f in measured.values())
    if others:
        result.notes.append(
            "Everything else on the machine (other users' processes, kernel threads, the "
            "hypervisor's steal) during the measurements kept: median "
            f"{others[len(others) // 2]} cores busy, at most {others[-1]} (of "
            f"{os.cpu_count()}); figures taken beside a busy neighbour are suspect."
        )
    cpu = result.table(
        "CPU per request: Ray's processes and the gateway's (µs)",
        ["endpoint", "connections", "Ray, direct"]
        + [
            f"{who}, {arrangement}: {part}"
            for arrangement in arrangements
            for who in ("naive", "raygate")
            for part in ("Ray", "gateway")
        ]
        + ["shared ratio foreseen for raygate"],
    )
    for endpoint in settings.endpoints:
        for c in settings.connections:
            d = measured[DIRECT, "", endpoint, c]
            row: list[float | int | str | None] = [endpoint, c, d["ray_cpu_us_per_request"]]
            for arrangement in arrangements:
                for side in (NAIVE, RAYGATE_SIDE):
                    m = measured[side, arrangement, endpoint, c]
                    row += [m["ray_cpu_us_per_request"], m["gateway_cpu_us_per_request"]]
            g = measured[RAYGATE_SIDE, arrangements[-1], endpoint, c]
            ray_us, gateway_us = d["ray_cpu_us_per_request"], g["gateway_cpu_us_per_request"]
            row.append(round(ray_us / (ray_us + gateway_us), 3) if ray_us + gateway_us else None)
            cpu.add(*row)
    cpu.notes.append(
        "Ray: every process of the Ray head (GCS, raylet, dashboard and its module processes, "
        "agents), utime+stime over the measurement ÷ requests. Gateway: every thread of its "
        "processes (raygate: the event loop, the audit writer). Foreseen shared ratio: Ray "
        "direct ÷ (Ray direct + raygate in the last arrangement), what one core shared by the "
        "two allows."
    )
    targeted = SIDECAR if SIDECAR in arrangements else None
    for endpoint in settings.endpoints:
        for c in settings.connections:
            label = f"Ray dashboard {endpoint}, c={c}, gateway on its own core (sidecar)"
            if targeted is None:
                measured_text = "not measured: fewer than two usable cores"
                if c == 16:
                    result.target(
                        f"{label}: raygate req/s ÷ direct", measured_text, ">= 0.95", None
                    )
                if c == 1:
                    result.target(
                        f"{label}: p50 added by raygate (ms)", measured_text, "<= +0.15 ms", None
                    )
                continue
            d = measured[DIRECT, "", endpoint, c]
            g = measured[RAYGATE_SIDE, targeted, endpoint, c]
            if c == 16:
                ratio = g["paired_ratio"]
                result.target(
                    f"{label}: raygate req/s ÷ direct (adjacent windows, "
                    f"{len(g['block_ratios'])} blocks)",
                    ratio,
                    ">= 0.95",
                    ratio >= 0.95,
                )
            if c == 1:
                added = _added(g, d)
                result.target(
                    f"{label}: p50 added by raygate (ms)", added, "<= +0.15 ms", added <= 0.15
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
        "arrangements": arrangements,
        "measurements": [
            {
                "side": side,
                "arrangement": arrangement or None,
                "endpoint": endpoint,
                "connections": c,
                **figures,
            }
            for (side, arrangement, endpoint, c), figures in measured.items()
        ],
        "raygate_memory_mib": {str(pid): m for pid, m in memory.items()},
    }


def _ratio(side: dict[str, float], direct: dict[str, float]) -> float:
    return round(side["requests_per_second"] / direct["requests_per_second"], 3)


def _added(side: dict[str, float], direct: dict[str, float]) -> float:
    return round(side["p50_ms"] - direct["p50_ms"], 3)


if __name__ == "__main__":
    main()
