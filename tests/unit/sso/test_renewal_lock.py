"""Per-session renewal locks shared by the worker processes of one state directory (the other
processes here are real ones, as the gateway's workers are)."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from raygate.sso.renewal_lock import LOCK_FILE, RenewalLocks
from raygate.sso.store import session_key
from tests.conftest import REPO

KEY = session_key("one browser's cookie")
OTHER_KEY = session_key("another browser's cookie")
TRY_LOCK = """
import sys
from pathlib import Path
from raygate.sso.renewal_lock import RenewalLocks
print(RenewalLocks(Path(sys.argv[1])).try_acquire(sys.argv[2]))
"""
HOLD_LOCK = """
import sys, time
from pathlib import Path
from raygate.sso.renewal_lock import RenewalLocks
assert RenewalLocks(Path(sys.argv[1])).try_acquire(sys.argv[2])
print("holding", flush=True)
time.sleep(600)
"""
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def another_process_takes(state: Path, key: str) -> bool:
    done = subprocess.run(
        [sys.executable, "-c", TRY_LOCK, str(state), key],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip() == "True"


def test_a_session_being_renewed_is_locked_for_other_processes_until_released(
    tmp_path: Path,
) -> None:
    locks = RenewalLocks(tmp_path)
    assert locks.try_acquire(KEY)
    assert not another_process_takes(tmp_path, KEY)
    assert another_process_takes(tmp_path, OTHER_KEY)  # other sessions are not held up
    locks.release(KEY)
    assert another_process_takes(tmp_path, KEY)
    assert stat.S_IMODE((tmp_path / LOCK_FILE).stat().st_mode) == 0o600
    locks.close()


def test_waiting_for_a_held_lock_gives_up_at_the_deadline_and_a_dead_holder_frees_it(
    tmp_path: Path,
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path), KEY],
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    locks = RenewalLocks(tmp_path)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        started = time.monotonic()
        assert not asyncio.run(locks.acquire(KEY, 0.3))
        assert 0.3 <= time.monotonic() - started < 2.0
        holder.kill()  # a crash: the kernel drops its locks
        holder.wait()
        assert asyncio.run(locks.acquire(KEY, 5.0))
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        locks.close()
