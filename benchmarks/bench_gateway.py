"""The gateway next to the bare upstream it fronts, all on loopback.

- small GETs: requests/second and p50/p99 latency, N requests at a fixed concurrency with a valid
  token, straight to the upstream and through `raygate up --upstream` (embedded authority, audit
  log on), alternating rounds;
- a 100 MiB upload (as `ray job submit --working-dir` sends it): time, and the gateway process's
  peak RSS (VmHWM) before and after, which shows the body is streamed, not buffered.

The upstream and the gateway run in their own processes; the client runs here.

.venv/bin/python benchmarks/bench_gateway.py             # writes benchmarks/results/gateway.json
.venv/bin/python benchmarks/bench_gateway.py --profile   # also prints the gateway's cProfile top
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import pstats
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import aiohttp
from aiohttp import web

from raygate.objects import parse_object
from raygate.store.sqlite import ObjectStore
from raygate.store.tokens import issue_token, load_signing_key

RESULTS = Path(__file__).parent / "results" / "gateway.json"
REQUESTS = 2000
CONCURRENCY = 16
WARMUP = 200
ROUNDS = 3
UPLOAD_BYTES = 100 * 1024 * 1024
CHUNK = b"\x5a" * (1024 * 1024)
STARTUP_TIMEOUT = 30.0
UPSTREAM_TOKEN = "bench-ray-token"
VERSION_BODY = {"version": "4", "ray_version": "2.60.0", "ray_commit": "0" * 40}


# -- the bare upstream (a subprocess) -------------------------------------------------------------


async def _version(_request: web.Request) -> web.Response:
    return web.json_response(VERSION_BODY)


async def _upload(request: web.Request) -> web.Response:
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
    return web.json_response({"size": size})


def serve_upstream() -> None:
    """Answer like Ray's /api/version and accept package uploads; print the port, then serve."""

    async def run() -> None:
        app = web.Application(client_max_size=UPLOAD_BYTES * 2)
        app.router.add_get("/api/version", _version)
        app.router.add_put("/api/packages/{name}", _upload)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(runner.addresses[0][1], flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(run())


# -- processes ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def upstream_process() -> Iterator[tuple[int, int]]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve-upstream"], stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark upstream did not start")
        yield int(line), process.pid
    finally:
        _stop(process)


def prepare_state(state_dir: Path) -> str:
    """A service account allowed everything on the guide's RayCluster; returns its token."""
    documents = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bench"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "bench", "namespace": "default"},
            "rules": [{"apiGroups": ["ray.io"], "resources": ["rayclusters"], "verbs": ["*"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "bench", "namespace": "default"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "bench"},
            "subjects": [{"kind": "ServiceAccount", "name": "bench", "namespace": "default"}],
        },
    ]
    with ObjectStore.open(state_dir) as store:
        store.apply([parse_object(doc) for doc in documents])
        account = store.require("ServiceAccount", "bench", "default")
    (state_dir / "upstream-token").write_text(UPSTREAM_TOKEN)
    return issue_token(
        "default", "bench", account.metadata.uid or "",
        signing_key=load_signing_key(state_dir), duration=timedelta(hours=1),
    )


@contextlib.contextmanager
def gateway_process(state_dir: Path, upstream_port: int, profile: Path | None) -> Iterator[
    tuple[subprocess.Popen[bytes], int]
]:
    port = _free_port()
    command = [sys.executable]
    if profile is not None:
        command += ["-m", "cProfile", "-o", str(profile)]
    command += [
        "-m", "raygate", "up",
        "--state", str(state_dir),
        "--upstream", f"http://127.0.0.1:{upstream_port}",
        "--upstream-token-file", str(state_dir / "upstream-token"),
        "--port", str(port),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        yield process, port
    finally:
        # SIGINT: `raygate up` shuts down cleanly, so cProfile gets to write its file.
        _stop(process, signal.SIGINT)


async def wait_until_serving(session: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        try:
            async with session.get(url) as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {STARTUP_TIMEOUT:g}s")
        await asyncio.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return round(fields["VmRSS"], 1), round(fields["VmHWM"], 1)


# -- the client -----------------------------------------------------------------------------------


async def small_gets(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], count: int, pid: int
) -> dict[str, float]:
    """Send `count` GETs from CONCURRENCY workers; rate, latency, and the CPU `pid` spent."""
    latencies: list[float] = []
    remaining = iter(range(count))

    async def worker() -> None:
        for _ in remaining:  # shared: the workers together send `count` requests
            start = time.perf_counter()
            async with session.get(url, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"GET {url} answered {resp.status}")
            latencies.append(time.perf_counter() - start)

    cpu = cpu_seconds(pid)
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(pid) - cpu
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "requests_per_second": round(count / elapsed, 1),
        "p50_ms": round(cuts[49] * 1000, 3),
        "p99_ms": round(cuts[98] * 1000, 3),
        "server_cpu_us_per_request": round(cpu / count * 1e6, 1),
    }


async def _chunks(total: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        piece = CHUNK[: min(len(CHUNK), total - sent)]
        sent += len(piece)
        yield piece


async def upload(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> float:
    start = time.perf_counter()
    async with session.put(
        url,
        data=_chunks(UPLOAD_BYTES),
        headers={**headers, "Content-Length": str(UPLOAD_BYTES)},
    ) as resp:
        answer = await resp.json()
    seconds = time.perf_counter() - start
    if resp.status != 200 or answer["size"] != UPLOAD_BYTES:
        raise RuntimeError(f"upload answered {resp.status} {answer}")
    return seconds


def _median_round(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(r[key] for r in rounds), 3) for key in rounds[0]}


async def measure(
    upstream: str, gateway: str, token: str, upstream_pid: int, gateway_pid: int
) -> dict[str, object]:
    auth = {"Authorization": f"Bearer {token}"}
    direct_url, gateway_url = f"{upstream}/api/version", f"{gateway}/api/version"
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        await wait_until_serving(session, direct_url)
        await wait_until_serving(session, f"{gateway}/openid/v1/jwks")
        direct_rounds, gateway_rounds = [], []
        for _ in range(ROUNDS):
            await small_gets(session, direct_url, {}, WARMUP, upstream_pid)
            direct_rounds.append(
                await small_gets(session, direct_url, {}, REQUESTS, upstream_pid)
            )
            # The gateway's CPU only: the upstream's share is the direct measurement.
            await small_gets(session, gateway_url, auth, WARMUP, gateway_pid)
            gateway_rounds.append(
                await small_gets(session, gateway_url, auth, REQUESTS, gateway_pid)
            )
        rss_before, hwm_before = peak_rss_mib(gateway_pid)
        direct_upload = await upload(session, f"{upstream}/api/packages/_ray_pkg_bench.zip", {})
        gateway_upload = await upload(session, f"{gateway}/api/packages/_ray_pkg_bench.zip", auth)
        rss_after, hwm_after = peak_rss_mib(gateway_pid)

    direct, through = _median_round(direct_rounds), _median_round(gateway_rounds)
    mib = UPLOAD_BYTES / (1024 * 1024)
    return {
        "small_get": {
            "requests": REQUESTS,
            "concurrency": CONCURRENCY,
            "rounds": ROUNDS,
            "direct": direct,
            "gateway": through,
            "gateway_added_p50_ms": round(through["p50_ms"] - direct["p50_ms"], 3),
            "gateway_throughput_ratio": round(
                through["requests_per_second"] / direct["requests_per_second"], 3
            ),
        },
        "upload_100_mib": {
            "direct_seconds": round(direct_upload, 3),
            "gateway_seconds": round(gateway_upload, 3),
            "gateway_mib_per_second": round(mib / gateway_upload, 1),
            "gateway_rss_mib_before": rss_before,
            "gateway_peak_rss_mib_before": hwm_before,
            "gateway_rss_mib_after": rss_after,
            "gateway_peak_rss_mib_after": hwm_after,
            "gateway_peak_rss_growth_mib": round(hwm_after - hwm_before, 1),
        },
    }


def print_profile(path: Path) -> None:
    """The gateway's own functions by cumulative time, then everything by internal time."""
    stats = pstats.Stats(str(path))
    stats.sort_stats("cumulative").print_stats("raygate", 30)
    stats.sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help="run the gateway under cProfile")
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream()
        return

    with tempfile.TemporaryDirectory(prefix="raygate-bench-") as tmp:
        state_dir = Path(tmp) / "state"
        token = prepare_state(state_dir)
        profile = Path(tmp) / "gateway.prof" if args.profile else None
        with upstream_process() as (upstream_port, upstream_pid), gateway_process(
            state_dir, upstream_port, profile
        ) as (gateway, gateway_port):
            results = asyncio.run(
                measure(
                    f"http://127.0.0.1:{upstream_port}",
                    f"http://127.0.0.1:{gateway_port}",
                    token,
                    upstream_pid,
                    gateway.pid,
                )
            )
        if profile is not None:
            print_profile(profile)
            return  # a profiled run is slower: its numbers are not the results

    try:
        import uvloop  # noqa: F401

        gateway_loop = "uvloop"
    except ImportError:
        gateway_loop = "asyncio"
    report = {
        "benchmark": (
            "raygate up --upstream (embedded authority, audit log on) vs the bare aiohttp "
            "upstream; small GETs with a valid token; one 100 MiB PUT with Content-Length"
        ),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "gateway_event_loop": gateway_loop,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        **results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
