"""The store under faults: locked by another process, replaced by garbage, missing, then put
back. The gateway keeps serving the last good policy (never an empty one), never blocks its event
loop on the store, says so once in its log and in /readyz, and recovers by itself."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from raygate.store.sqlite import DB_FILE, ObjectStore
from tests.integration.gateway_helpers import bearer, client_session, grant, service_account

from .running_gateway import Running, running_gateway

# Holds SQLite's WAL locks as a process stuck in recovery does: readers wait it out (SQLite
# retries these locks itself for seconds, whatever the busy timeout).
_LOCK_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX, 8, 120)
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


async def timed_get(
    client: aiohttp.ClientSession, url: object, token: str | None = None
) -> tuple[int, float, str]:
    start = time.monotonic()
    async with client.get(url, headers=bearer(token) if token else {}) as resp:  # type: ignore[arg-type]
        body = await resp.text()
        return resp.status, time.monotonic() - start, body


async def readyz(gateway: Running) -> tuple[int, str]:
    async with (
        client_session() as client,
        client.get(gateway.admin / "readyz", params={"verbose": "1"}) as resp,
    ):
        return resp.status, await resp.text()


async def wait_ready(gateway: Running, expected: int, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    status, text = await readyz(gateway)
    while status != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        status, text = await readyz(gateway)
    assert status == expected, text
    return text


def store_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "raygate.embedded" and r.levelno >= logging.ERROR
    ]


def test_store_locked_longer_than_a_request_deadline_blocks_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        accounts = {"ray-user": ["get"], "other": None}
        async with running_gateway(tmp_path, accounts) as gateway, client_session() as client:
            allowed, denied = gateway.token("ray-user"), gateway.token("other")
            assert (await timed_get(client, gateway.url / "api/version", allowed))[0] == 200
            holder = subprocess.Popen(
                [sys.executable, "-c", _LOCK_HOLDER, str(tmp_path / f"{DB_FILE}-shm"), "8"],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
                await asyncio.sleep(0.5)  # the watcher's read is now stuck on the lock
                # Requests are answered from the last good policy, at once; a refusal waits
                # for a reload at most a second; the event loop keeps serving meanwhile.
                results = await asyncio.gather(
                    timed_get(client, gateway.url / "api/jobs/", denied),
                    *(timed_get(client, gateway.url / "api/version", allowed) for _ in range(5)),
                    timed_get(client, gateway.url / "api/version", "not-a-token"),
                )
                (denied_status, denied_time, _), *rest = results
                assert denied_status == 403 and denied_time < 2.0, (denied_status, denied_time)
                for status, elapsed, _ in rest[:5]:
                    assert status == 200 and elapsed < 0.5, (status, elapsed)
                assert rest[5][0] == 401 and rest[5][1] < 0.5
                text = await wait_ready(gateway, 503, timeout=5)
                assert "cannot read the store" in text or "store" in text, text
            finally:
                holder.kill()
                holder.wait()
            await wait_ready(gateway, 200, timeout=15)
            # And the store is read again: a new grant takes effect.
            with ObjectStore.open(tmp_path) as store:
                grant(store, "other", ("get",))
            await asyncio.sleep(1.0)
            assert (await timed_get(client, gateway.url / "api/jobs/", denied))[0] == 200

    asyncio.run(scenario())
    errors = store_errors(caplog)
    assert len(errors) == 1 and "locked" in errors[0], errors
    assert any("store readable again" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("damage", ["garbage", "missing", "directory"])
def test_damaged_store_keeps_the_last_good_policy_and_recovers_when_restored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    caplog.set_level(logging.INFO)
    db = tmp_path / DB_FILE

    async def scenario() -> None:
        accounts = {"ray-user": ["get"], "other": None}
        async with running_gateway(tmp_path, accounts) as gateway, client_session() as client:
            allowed, denied = gateway.token("ray-user"), gateway.token("other")
            assert (await timed_get(client, gateway.url / "api/version", allowed))[0] == 200
            await wait_ready(gateway, 200)
            saved = tmp_path / "saved"
            saved.mkdir()
            for name in (DB_FILE, f"{DB_FILE}-wal", f"{DB_FILE}-shm"):
                if (tmp_path / name).exists():
                    shutil.copy2(tmp_path / name, saved / name)
            db.rename(tmp_path / "moved-away.db")
            if damage == "garbage":
                db.write_bytes(b"this is not a database\n" * 1000)
            elif damage == "directory":
                db.mkdir()
            text = await wait_ready(gateway, 503)
            assert "cannot read the store" in text, text
            # The last good policy, not an empty one: allowed stays allowed, denied denied.
            for _ in range(3):
                status, elapsed, _ = await timed_get(client, gateway.url / "api/version", allowed)
                assert status == 200 and elapsed < 0.5
            status, elapsed, _ = await timed_get(client, gateway.url / "api/jobs/", denied)
            assert status == 403 and elapsed < 2.0
            # Put back (as from a backup).
            if db.is_dir():
                db.rmdir()
            elif db.exists():
                db.unlink()
            for name in (DB_FILE, f"{DB_FILE}-wal", f"{DB_FILE}-shm"):
                if (saved / name).exists():
                    shutil.copy2(saved / name, tmp_path / name)
            await wait_ready(gateway, 200)
            with ObjectStore.open(tmp_path) as store:
                store.apply([service_account("late")])
                grant(store, "late", ("get",))
            assert (await timed_get(client, gateway.url / "api/version", gateway.token("late")))[
                0
            ] == 200

    asyncio.run(scenario())
    errors = store_errors(caplog)
    assert len(errors) == 1, errors
    assert "serving the policy of revision" in errors[0]
