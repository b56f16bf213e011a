"""Where audit lines end up: an append-only file rotated by size, or a stream (stdout).

Each `write` appends whole lines with one `os.write` on an O_APPEND descriptor; a write that
fails half-way (disk full) is cut back to the last whole line, and a file left with a torn last
line by a crash is repaired when it is opened again. So a reader never sees a partial line.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol

from raygate.fileid import fd_id, file_id

# Below this much free space the disk counts as full: the lines of requests in flight must
# still fit, so the gateway stops forwarding before a line is lost (fail-closed).
MIN_FREE_BYTES = 64 * 1024
LOG_FILE_MODE = 0o600
_TAIL_SCAN = 1 << 20  # how far back a torn last line is looked for


class LineSink(Protocol):
    can_probe: bool  # whether `check` can tell a failing sink works again without writing

    def write(self, data: bytes) -> None:
        """Append whole lines; raise OSError (nothing of `data` kept) when they cannot be."""

    def check(self) -> None:
        """Raise OSError when the next write would fail (e.g. the disk is full)."""

    def sync(self) -> None: ...

    def close(self) -> None: ...


class StreamSink:
    """Lines to a text stream (stdout in a pod, where the container runtime keeps them)."""

    can_probe = False

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, data: bytes) -> None:
        # One write per line: processes sharing a pipe (--workers) never split each other's
        # lines (a write up to PIPE_BUF bytes is atomic), which one big write would not ensure.
        for line in data.decode().splitlines(keepends=True):
            self._stream.write(line)
            self._stream.flush()

    def check(self) -> None:
        pass

    def sync(self) -> None:
        pass

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()

    def __str__(self) -> str:
        return getattr(self._stream, "name", "stream")


class RotatingFile:
    """An append-only log file, rotated when a write would take it past `max_size` bytes:
    `audit.log` becomes `audit.log.1`, `.1` becomes `.2`, ..., and only `max_backups` are kept."""

    def __init__(self, path: Path, *, max_size: int | None = None, max_backups: int = 0) -> None:
        self.path = path
        self.max_size = max_size
        self.max_backups = max_backups
        self._fd: int | None = None
        self._size = 0
        self._regular = True
        self.repaired = 0  # bytes of a torn last line removed at open
        self._opened_before = False
        self._lock_fd: int | None = None

    def open(self) -> None:
        """Open (creating, mode 0600) the file; raise OSError if it cannot be."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(
            self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, LOG_FILE_MODE
        )
        info = os.fstat(fd)
        self._regular = stat.S_ISREG(info.st_mode)
        self._size = info.st_size if self._regular else 0
        self._fd = fd
        if self._regular and self._size and not self._opened_before:
            # Only at start: later opens follow a file other workers may be appending to.
            self.repaired = self._repair_tail()
        self._opened_before = True

    def _repair_tail(self) -> int:
        """A crash in the middle of a write can leave a last line without its newline: drop it,
        so the file holds only whole lines. Returns how many bytes were removed."""
        with open(self.path, "rb") as reader:
            start = max(0, self._size - _TAIL_SCAN)
            reader.seek(start)
            tail = reader.read()
        if not tail or tail.endswith(b"\n"):
            return 0
        cut = tail.rfind(b"\n")
        keep = start + cut + 1 if cut >= 0 else start
        assert self._fd is not None
        os.ftruncate(self._fd, keep)
        removed = self._size - keep
        self._size = keep
        return removed

    def write(self, data: bytes) -> None:
        if self._fd is None:
            self.open()
        if not self.max_size:
            self._append(data)
            return
        # Other processes (--workers) append to this file and rotate it: the size check, the
        # rotation and the append happen under one lock they all take, on the file the path
        # names now, with the size the file has (not what this process wrote).
        with self._locked():
            assert self._fd is not None
            if file_id(self.path) != fd_id(self._fd):
                self._reopen()
            assert self._fd is not None
            self._size = os.fstat(self._fd).st_size
            self._write_rotating(data)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self._lock_fd is None:
            self._lock_fd = os.open(
                self.path.with_name(f".{self.path.name}.lock"),
                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                LOG_FILE_MODE,
            )
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _write_rotating(self, data: bytes) -> None:
        if self._size + len(data) <= self.max_size:  # type: ignore[operator]
            self._append(data)
            return
        # Split the batch at line ends so that no file grows past max_size (a single line
        # longer than that gets a file of its own).
        assert self.max_size is not None
        chunk: list[bytes] = []
        size = self._size
        for line in data.splitlines(keepends=True):
            if chunk and size + len(line) > self.max_size:
                self._append(b"".join(chunk))
                chunk, size = [], self._size
            if not chunk and size and size + len(line) > self.max_size:
                self._rotate()
                size = 0
            chunk.append(line)
            size += len(line)
        if chunk:
            self._append(b"".join(chunk))

    def _append(self, data: bytes) -> None:
        fd = self._fd
        assert fd is not None
        before = self._size
        written = 0
        try:
            while written < len(data):
                written += os.write(fd, data[written:])
        except OSError:
            if written and self._regular:
                # Never leave a partial line behind: cut the file back to where it was.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, before)
            raise
        self._size = before + written

    def check(self) -> None:
        if self._fd is None:
            self.open()
        assert self._fd is not None
        if not self._regular:
            return
        info = os.fstatvfs(self._fd)
        free = info.f_bavail * info.f_frsize
        if free < MIN_FREE_BYTES:
            raise OSError(28, f"No space left on device (only {free} bytes free)")
        if file_id(self.path) != fd_id(self._fd):
            # Rotated by another worker, moved away (logrotate) or deleted: follow the path.
            self._reopen()

    def sync(self) -> None:
        if self._fd is not None and self._regular:
            os.fdatasync(self._fd)

    def _rotate(self) -> None:
        """`audit.log` -> `.1`, `.1` -> `.2`, ...; called under the lock."""
        self._close_file()
        if self.max_backups <= 0:
            os.unlink(self.path)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._backup(self.max_backups))
            for index in range(self.max_backups - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self._backup(index), self._backup(index + 1))
            os.replace(self.path, self._backup(1))
        self.open()

    def _reopen(self) -> None:
        self._close_file()
        self.open()

    def _backup(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    @property
    def can_probe(self) -> bool:
        return self._regular

    def _close_file(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        self._close_file()
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            with contextlib.suppress(OSError):
                os.close(fd)

    def __str__(self) -> str:
        return str(self.path)
