"""The audit log keeps every decision: written off the hot path, whole lines only, flushed
within a second and at shutdown, rotated by size, and fail-closed when it cannot write."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from raygate.identity import Attributes, service_account_identity
from raygate.observe.audit import AuditFailurePolicy, AuditLog, AuditRecord
from raygate.observe.logfile import MIN_FREE_BYTES


def record(number: int, decision: str = "allow") -> AuditRecord:
    identity = service_account_identity("default", "ray-user", "uid-1")
    rec = AuditRecord(request_id=f"{number:08d}", method="GET", path="/api/jobs/", remote="::1")
    rec.identity = identity
    rec.attributes = [
        Attributes(
            identity=identity,
            verb="get",
            namespace="default",
            api_group="ray.io",
            resource="rayclusters",
            name="ray-cluster-with-auth",
        )
    ]
    rec.decision = decision  # type: ignore[assignment]
    rec.status = 200
    return rec


def lines_of(path: Path) -> list[str]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path} ends with a partial line"
    return data.decode().splitlines()


def wait_for(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_lines_reach_the_file_within_a_second_without_close(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(path)
    try:
        start = time.monotonic()
        for number in range(100):
            audit.write(record(number))
        wait_for(lambda: len(lines_of(path)) == 100, timeout=1.5)
        assert time.monotonic() - start < 1.5
        ids = [json.loads(line)["requestId"] for line in lines_of(path)]
        assert ids == [f"{n:08d}" for n in range(100)]
    finally:
        audit.close()


def test_write_does_not_block_on_the_disk(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.log")
    try:
        start = time.perf_counter()
        for number in range(2000):
            audit.write(record(number))
        per_write = (time.perf_counter() - start) / 2000
    finally:
        audit.close()
    assert per_write < 0.001, f"write() took {per_write * 1e6:.0f} µs"
    assert len(lines_of(tmp_path / "audit.log")) == 2000


def test_close_writes_everything_queued(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(path)
    for number in range(20_000):
        audit.write(record(number))
    audit.close()
    assert len(lines_of(path)) == 20_000
    # A line written after close (a request that outlived shutdown) is still kept.
    audit.write(record(20_000))
    assert len(lines_of(path)) == 20_001


_WRITER = """
import sys, time
from pathlib import Path
from tests.observe.test_audit_log import record
from raygate.observe.audit import AuditLog
audit = AuditLog(Path(sys.argv[1]))
number = 0
while True:
    audit.write(record(number))
    number += 1
    if number % 50 == 0:
        print(number, flush=True)  # this many write() calls have returned
        time.sleep(0.001)
"""


def test_sigkill_loses_at_most_the_last_second_and_never_leaves_a_partial_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.log"
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert writer.stdout is not None
    progress: list[tuple[float, int]] = []
    reader = threading.Thread(
        target=lambda: progress.extend((time.monotonic(), int(n)) for n in writer.stdout),
        daemon=True,
    )
    reader.start()
    time.sleep(3.0)
    killed_at = time.monotonic()
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    reader.join(timeout=5)
    written_a_second_before = max(n for t, n in progress if t <= killed_at - 1.0)
    lines = lines_of(path)
    ids = [int(json.loads(line)["requestId"]) for line in lines]
    assert ids == list(range(len(ids))), "lines missing or out of order"
    assert len(ids) >= written_a_second_before > 0


def test_a_torn_last_line_is_removed_when_the_log_is_opened_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.log"
    path.write_text('{"requestId":"1"}\n{"requestId":"2","dec')
    with caplog.at_level(logging.WARNING, "raygate.audit"):
        audit = AuditLog(path)
    audit.write(record(3))
    audit.close()
    assert [json.loads(line)["requestId"] for line in lines_of(path)] == ["1", "00000003"]
    assert "partial line" in caplog.text


def test_rotation_by_size_keeps_the_newest_lines_and_the_given_number_of_backups(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(path, max_size=4096, max_backups=2)
    for number in range(200):
        audit.write(record(number))
        if number % 20 == 0:
            time.sleep(0.02)  # several batches, as under real traffic
    audit.close()
    files = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert files == ["audit.log", "audit.log.1", "audit.log.2"]
    kept: list[int] = []
    for name in ("audit.log.2", "audit.log.1", "audit.log"):
        assert (tmp_path / name).stat().st_size <= 4096
        kept += [int(json.loads(line)["requestId"]) for line in lines_of(tmp_path / name)]
    assert kept == list(range(200 - len(kept), 200)), "rotation lost or reordered lines"


def test_stream_output_for_kubernetes_is_one_json_object_per_line() -> None:
    stream = io.StringIO()
    audit = AuditLog(stream=stream)
    audit.write(record(1))
    audit.write(record(2))
    audit.close()
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["requestId"] for line in lines] == ["00000001", "00000002"]


def fill(disk: Path, leave: int) -> Path:
    """Fill the disk until only `leave` bytes are free; returns the filler to delete."""
    info = os.statvfs(disk)
    free = info.f_bavail * info.f_frsize
    filler = disk / "filler"
    with open(filler, "wb") as handle:
        handle.write(b"\0" * max(0, free - leave))
    return filler


def test_full_disk_refuses_before_a_line_is_lost_then_recovers(
    tiny_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tiny_disk / "audit.log"
    with caplog.at_level(logging.WARNING, "raygate.audit"):
        audit = AuditLog(path)
        audit.write(record(0))
        wait_for(lambda: len(lines_of(path)) == 1)
        assert audit.refusal() is None
        filler = fill(tiny_disk, leave=MIN_FREE_BYTES // 2)
        audit.write(record(1))  # the decision of a request already answered: still kept
        wait_for(lambda: audit.refusal() is not None)
        assert "No space left" in (audit.refusal() or "")
        for number in range(2, 50):
            audit.write(record(number, "unavailable"))  # the 503s while full
        time.sleep(1.5)
        assert audit.refusal() is not None
        filler.unlink()
        wait_for(lambda: audit.refusal() is None, timeout=3)
        audit.close()
    ids = [int(json.loads(line)["requestId"]) for line in lines_of(path)]
    assert ids == list(range(50)), "a line was lost while the disk was full"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "cannot be written" in errors[0].getMessage()
    assert errors[0].exc_info is None, "a traceback instead of one line"
    assert "writable again" in caplog.text


def test_disk_full_in_the_middle_of_a_write_leaves_no_partial_line(tiny_disk: Path) -> None:
    path = tiny_disk / "audit.log"
    audit = AuditLog(path)
    fill(tiny_disk, leave=3000)  # room for a few lines of a batch, not for all of them
    for number in range(200):
        audit.write(record(number))
    wait_for(lambda: audit.refusal() is not None)
    audit.close()
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n")


def test_unwritable_device_fails_closed_with_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "raygate.audit"):
        audit = AuditLog(Path("/dev/full"))
        for number in range(20):
            audit.write(record(number))
        wait_for(lambda: audit.refusal() is not None)
        time.sleep(1.2)  # retries happen; they do not log again
        audit.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2, [r.getMessage() for r in errors]  # the failure, and the loss at exit
    assert "answering 503" in errors[0].getMessage()


def test_fail_open_keeps_serving_but_reports_the_failure() -> None:
    audit = AuditLog(Path("/dev/full"), failure_policy=AuditFailurePolicy.FAIL_OPEN)
    audit.write(record(1))
    wait_for(lambda: audit.failure is not None)
    assert audit.refusal() is None
    audit.close()


def test_path_that_cannot_be_opened_refuses_from_the_start(tmp_path: Path) -> None:
    (tmp_path / "audit.log").mkdir()  # a directory where the file should be
    audit = AuditLog(tmp_path / "audit.log")
    assert audit.refusal() is not None
    audit.close()


_WORKER = """
import sys, time
from pathlib import Path
from tests.observe.test_audit_log import record
from raygate.observe.audit import AuditLog
audit = AuditLog(Path(sys.argv[1]), max_size=20_000, max_backups=500)
base = int(sys.argv[2])
for number in range(base, base + 1000):
    audit.write(record(number))
    if number % 25 == 0:
        time.sleep(0.002)
audit.close()
"""


def test_processes_sharing_one_rotated_file_lose_and_split_no_line(tmp_path: Path) -> None:
    """`--workers N` appends to one file from N processes; rotation is done once, under a lock."""
    path = tmp_path / "audit.log"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(path), str(base)],
            cwd=Path(__file__).resolve().parents[2],
        )
        for base in (0, 10_000, 20_000)
    ]
    for worker in workers:
        assert worker.wait(timeout=120) == 0
    ids = []
    for file in tmp_path.glob("audit.log*"):
        assert file.stat().st_size <= 20_000, f"{file.name} grew past the limit"
        ids += [int(json.loads(line)["requestId"]) for line in lines_of(file)]
    assert sorted(ids) == [b + n for b in (0, 10_000, 20_000) for n in range(1000)]
