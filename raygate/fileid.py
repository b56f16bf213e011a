"""Which file a path names now: a file replaced or rotated under an open handle shows as a new id."""

from __future__ import annotations

import os
from pathlib import Path


def file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of what `path` names now; None when nothing is there."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def fd_id(fd: int) -> tuple[int, int]:
    """(device, inode) of the file open on `fd`."""
    info = os.fstat(fd)
    return info.st_dev, info.st_ino
