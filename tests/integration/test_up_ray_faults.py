"""Ray dying under `raygate up`: its dashboard killed under traffic, then its head. Requests get
502 at once (never a hang), open log streams end, /readyz says Ray is down while it is, and
`raygate up` brings Ray back by itself instead of exiting."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import REPO, RaygateUp, free_port, start_raygate_up, stop_raygate_up
from tests.helpers import http
from tests.integration.test_ray_gateway import grant_submitter, submit_no_wait

pytestmark = pytest.mark.slow


def ray_pids(up: RaygateUp, marker: str) -> list[int]:
    """Pids of this head's processes whose command line has `marker` (e.g. dashboard.py)."""
    temp_dir = str(up.ray_info()["tempDir"])
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if temp_dir in cmdline and marker in cmdline:
            found.append(int(entry.name))
    return found


def kill(pids: list[int]) -> None:
    assert pids, "the process to kill was not found"
    for pid in pids:
        try:
            import os

            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def readyz(admin: int) -> tuple[int, str]:
    status, body, _ = http(f"http://127.0.0.1:{admin}/readyz", timeout=10)
    return status, body


def wait_for_readyz(admin: int, expected: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    status, body = readyz(admin)
    while status != expected and time.monotonic() < deadline:
        time.sleep(0.3)
        status, body = readyz(admin)
    assert status == expected, body
    return body


async def open_log_stream(up: RaygateUp, token: str, job: str) -> aiohttp.ClientWebSocketResponse:
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(
        f"{up.address}/api/jobs/{job}/logs/tail", headers={"Authorization": f"Bearer {token}"}
    )
    ws._test_session = session  # type: ignore[attr-defined]
    return ws


async def stream_ends_within(ws: aiohttp.ClientWebSocketResponse, timeout: float) -> float:
    start = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            async for _message in ws:
                pass
    finally:
        await ws._test_session.close()  # type: ignore[attr-defined]
    return time.monotonic() - start


def test_ray_dashboard_then_head_killed_under_traffic(tmp_path: Path) -> None:
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    admin = free_port()
    up = start_raygate_up(tmp_path, "--admin-port", str(admin))
    try:
        token = grant_submitter(up, "ray-user")
        wait_for_readyz(admin, 200, 30)
        job = submit_no_wait(
            up,
            token,
            "python",
            "-c",
            # Ends on its own: killing Ray's head orphans a job's driver, which must not
            # outlive the test.
            "import time\nfor _ in range(600): print('tick', flush=True); time.sleep(0.5)",
        )

        async def dashboard_dies() -> None:
            ws = await open_log_stream(up, token, job)
            await asyncio.wait_for(ws.receive(), 60)  # the stream is flowing
            kill(ray_pids(up, "dashboard/dashboard.py"))
            ended = asyncio.ensure_future(stream_ends_within(ws, 15))
            # Meanwhile, requests are answered at once with 502 (or served by a Ray already back).
            for _ in range(5):
                start = time.monotonic()
                status, body, _ = await asyncio.to_thread(
                    http, f"{up.address}/api/version", token=token, timeout=10
                )
                assert status in (200, 502), (status, body)
                assert time.monotonic() - start < 3, "a request hung while Ray was down"
                await asyncio.sleep(0.2)
            assert await ended < 15

        asyncio.run(dashboard_dies())
        wait_for_readyz(admin, 200, 120)
        assert http(f"{up.address}/api/version", token=token)[0] == 200

        # Now the head itself (its GCS): raygate up says so, reports it down, restarts it.
        kill(ray_pids(up, "gcs_server"))
        body = wait_for_readyz(admin, 503, 30)
        assert "ray head" in body.lower() or "ray" in body.lower(), body
        wait_for_readyz(admin, 200, 120)
        status, body, _ = http(f"{up.address}/api/version", token=token)
        assert status == 200, body
        assert json.loads(body)["ray_version"]
        output = "".join(up.output)
        assert "Ray's head exited unexpectedly" in output, output[-3000:]
        assert "running again" in output
        assert up.process.poll() is None, "raygate up exited instead of restarting Ray"
    finally:
        stop_raygate_up(up)
