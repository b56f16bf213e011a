"""raygate's memory under a large upload and under many idle WebSockets.

- a 100 MiB upload (PUT, as `ray job submit --working-dir` sends a package), with Content-Length
  and chunked, through `raygate up --upstream`: time, and how far raygate's RSS rises above
  where it was (peak reset through /proc/PID/clear_refs, and sampled every 10 ms);
- 1,000 WebSockets opened through raygate and held idle: raygate's RSS before and after.

The upstream (aiohttp: it counts upload bytes and accepts WebSockets) and raygate run pinned to
the server core; the client runs here.

    .venv/bin/python benchmarks/bench_memory.py [--smoke] [--results-dir DIR]
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from harness import (
    PYTHON,
    Cores,
    Processes,
    bearer,
    free_port,
    prepare_state,
    raise_open_file_limit,
    raygate_up_upstream,
    running,
    tempdir,
)
from report import Result, common_arguments

MIB = 1024 * 1024
CHUNK = b"\x5a" * MIB
UPLOAD_PATH = "/api/packages/gcs/_ray_pkg_bench.zip"
WS_PATH = "/api/bench/ws"


@dataclass(frozen=True)
class Settings:
    upload_mib: int
    websockets: int


FULL = Settings(upload_mib=100, websockets=1000)
SMOKE = Settings(upload_mib=8, websockets=50)


# -- the upstream (a subprocess) ------------------------------------------------------------------


def serve_upstream(port: int) -> None:
    async def upload(request: web.Request) -> web.Response:
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
        return web.json_response({"size": size})

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(message.data)
        return ws

    async def run() -> None:
        app = web.Application(client_max_size=0)
        app.router.add_put(UPLOAD_PATH, upload)
        app.router.add_get(WS_PATH, websocket)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=2048).start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(run())


# -- measurements ---------------------------------------------------------------------------------


class PeakSampler:
    """Samples the processes' RSS every 10 ms in a thread; `peak` is the largest seen."""

    def __init__(self, processes: Processes) -> None:
        self.processes, self.peak, self._stop = processes, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.processes.rss_mib())
            time.sleep(0.01)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def reset_peak(processes: Processes) -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs); False if not allowed."""
    try:
        for pid in processes.refresh():
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


async def _body(total: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        piece = CHUNK[: min(len(CHUNK), total - sent)]
        sent += len(piece)
        yield piece


async def upload(url: str, headers: dict[str, str], size: int, chunked: bool) -> float:
    extra = {} if chunked else {"Content-Length": str(size)}
    start = time.perf_counter()
    async with (
        aiohttp.ClientSession() as session,
        session.put(
            url, data=_body(size), headers={**headers, **extra}, chunked=True if chunked else None
        ) as response,
    ):
        answer = await response.json()
    if response.status != 200 or answer.get("size") != size:
        raise RuntimeError(f"upload answered {response.status} {answer}")
    return time.perf_counter() - start


def measure_upload(
    gateway: str, headers: dict[str, str], processes: Processes, size: int, chunked: bool
) -> dict[str, float | bool]:
    processes_rss = processes.rss_mib()
    exact = reset_peak(processes)
    with PeakSampler(processes) as sampler:
        seconds = asyncio.run(upload(gateway + UPLOAD_PATH, headers, size, chunked))
    hwm = processes.peak_rss_mib() if exact else sampler.peak
    peak = max(hwm, sampler.peak)
    return {
        "seconds": round(seconds, 3),
        "mib_per_second": round(size / MIB / seconds, 1),
        "rss_before_mib": processes_rss,
        "peak_rss_mib": round(peak, 1),
        "growth_mib": round(max(peak - processes_rss, 0.0), 1),
        "peak_from_vmhwm": exact,
    }


async def hold_websockets(
    url: str, headers: dict[str, str], count: int, processes: Processes
) -> dict[str, float]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Warm the WebSocket path up first, so its code and buffers are not counted as per-socket.
        async with session.ws_connect(url, headers=headers, heartbeat=None) as ws:
            await ws.send_str("warm")
            await ws.receive_str()
        await asyncio.sleep(0.5)
        before = processes.rss_mib()
        sockets: list[aiohttp.ClientWebSocketResponse] = []
        try:
            for start in range(0, count, 100):
                batch = [
                    session.ws_connect(url, headers=headers, heartbeat=None)
                    for _ in range(start, min(start + 100, count))
                ]
                sockets += await asyncio.gather(*batch)
            # Each socket answers once, so every one is open end to end, then all fall idle.
            for ws in sockets[:: max(count // 20, 1)]:
                await ws.send_str("ping")
                if await ws.receive_str() != "ping":
                    raise RuntimeError("a WebSocket did not echo")
            await asyncio.sleep(1.0)
            after = processes.rss_mib()
            open_count = sum(1 for ws in sockets if not ws.closed)
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return {
        "websockets": count,
        "open_at_measurement": open_count,
        "rss_before_mib": before,
        "rss_after_mib": after,
        "extra_mib": round(after - before, 1),
        "extra_kib_per_socket": round((after - before) * 1024 / count, 1),
    }


def main() -> None:
    args = common_arguments(__doc__).parse_args()
    settings = SMOKE if args.smoke else FULL
    result = Result(
        "memory",
        "raygate's memory: a large upload, many idle WebSockets",
        about=(
            f"`raygate up --upstream` (one worker, audit log on) in front of an aiohttp upstream; "
            f"a {settings.upload_mib} MiB PUT, and {settings.websockets:,} WebSockets opened "
            "through raygate and held idle. RSS from /proc (VmRSS, VmHWM)."
        ),
        smoke=args.smoke,
    )
    raise_open_file_limit()
    cores = Cores.detect()
    result.notes.append(cores.describe() + "; the client is not pinned")
    with tempdir("raygate-bench-memory-") as tmp:
        work = Path(tmp)
        state = prepare_state(work / "state")
        port = free_port()
        headers = bearer(state.allowed_token)
        with contextlib.ExitStack() as stack:
            stack.enter_context(
                running(
                    cores.server([PYTHON, __file__, "--serve-upstream", str(port)]),
                    port,
                    "upstream",
                    log=work / "upstream.log",
                )
            )
            gate, processes = stack.enter_context(raygate_up_upstream(cores, work, state, port))
            gateway = f"http://127.0.0.1:{gate}"
            size = settings.upload_mib * MIB
            asyncio.run(upload(gateway + UPLOAD_PATH, headers, MIB, False))  # warm up
            uploads = {
                framing: measure_upload(gateway, headers, processes, size, framing == "chunked")
                for framing in ("content-length", "chunked")
            }
            ws_url = gateway.replace("http://", "ws://") + WS_PATH
            sockets = asyncio.run(hold_websockets(ws_url, headers, settings.websockets, processes))
            memory = processes.memory_mib()
    for framing, figures in uploads.items():
        print(f"upload {framing}: {figures}")
    print(f"websockets: {sockets}")

    table = result.table(
        f"{settings.upload_mib} MiB upload through raygate",
        ["framing", "seconds", "MiB/s", "RSS before MiB", "peak RSS MiB", "growth MiB"],
    )
    for framing, f in uploads.items():
        table.add(
            framing,
            f["seconds"],
            f["mib_per_second"],
            f["rss_before_mib"],
            f["peak_rss_mib"],
            f["growth_mib"],
        )
    ws_table = result.table(
        "Idle WebSockets held open through raygate",
        [
            "sockets",
            "open at measurement",
            "RSS before MiB",
            "RSS after MiB",
            "extra MiB",
            "KiB per socket",
        ],
    )
    ws_table.add(
        sockets["websockets"],
        sockets["open_at_measurement"],
        sockets["rss_before_mib"],
        sockets["rss_after_mib"],
        sockets["extra_mib"],
        sockets["extra_kib_per_socket"],
    )
    growth = max(float(f["growth_mib"]) for f in uploads.values())
    result.target(
        f"{settings.upload_mib} MiB upload: raygate RSS growth (MiB, worst framing)",
        growth,
        "< 8 MiB",
        growth < 8,
    )
    extra = float(sockets["extra_mib"])
    limit = 50e6 / MIB
    result.target(
        f"{settings.websockets:,} idle WebSockets: raygate extra RSS (MiB)",
        extra,
        f"< 50 MB ({limit:.1f} MiB)",
        extra < limit,
    )
    if sockets["open_at_measurement"] != settings.websockets:
        result.notes.append(
            f"only {sockets['open_at_measurement']} of {settings.websockets} sockets were open"
        )
    result.data = {
        "settings": settings.__dict__,
        "upload": uploads,
        "websockets": sockets,
        "raygate_memory_mib": {str(pid): m for pid, m in memory.items()},
    }
    result.write(args.results_dir)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve-upstream"]:
        serve_upstream(int(sys.argv[2]))
    else:
        main()
