"""The state directory (`--state`, `RAYGATE_STATE`, `./.raygate`) and the secret files in it."""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from pathlib import Path

from raygate.errors import StoreError

STATE_ENV = "RAYGATE_STATE"
DEFAULT_STATE_DIR = ".raygate"
STATE_DIR_MODE = 0o700
SECRET_FILE_MODE = 0o600


def resolve_state_dir(
    option: str | os.PathLike[str] | None = None, *, create: bool = False
) -> Path:
    """The state directory: the `--state` option, else `$RAYGATE_STATE`, else `./.raygate`.

    With `create`, the directory is made (mode 0700) if missing; commands that only read leave
    the file system untouched.
    """
    text = os.fspath(option) if option else os.environ.get(STATE_ENV) or DEFAULT_STATE_DIR
    path = Path(text).expanduser()
    if create:
        ensure_state_dir(path)
    return path


def ensure_state_dir(path: Path) -> Path:
    """Create the directory (and parents) with mode 0700 if it does not exist yet.

    An existing directory that others may read or enter (it holds the signing key and tokens)
    is tightened to 0700 when it is ours, with a note on stderr, and refused when it is not.
    """
    try:
        path.mkdir(mode=STATE_DIR_MODE, parents=True, exist_ok=True)
    except OSError as err:
        raise StoreError(f"cannot create state directory {path}: {err.strerror or err}") from None
    if not path.is_dir():
        raise StoreError(f"state directory {path} exists but is not a directory")
    _make_private(path)
    return path


def _make_private(path: Path) -> None:
    try:
        info = path.stat()
    except OSError as err:
        raise StoreError(f"cannot read state directory {path}: {err.strerror or err}") from None
    mode = stat.S_IMODE(info.st_mode)
    if not mode & 0o077:
        return
    if info.st_uid != os.getuid():
        raise StoreError(
            f"state directory {path} is open to other users (mode {mode:o}) and owned by "
            f"uid {info.st_uid}, not by you: use a private directory of your own (--state)"
        )
    try:
        os.chmod(path, STATE_DIR_MODE)
    except OSError as err:
        raise StoreError(
            f"cannot make state directory {path} private (mode {mode:o}): {err.strerror or err}"
        ) from None
    print(
        f"raygate: state directory {path} was open to other users (mode {mode:o}); "
        "changed it to 700",
        file=sys.stderr,
    )


def write_secret(path: Path, data: bytes, *, exclusive: bool = False) -> bool:
    """Write `data` to `path` atomically with mode 0600; readers never see a partial file.

    With `exclusive`, an existing file is kept and False is returned, so two processes creating
    the same secret at once agree on one value. Returns True when this call wrote the file.
    """
    ensure_state_dir(path.parent)
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise StoreError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        # mkstemp already creates the file 0600; chmod guards against unusual umask handling.
        os.fchmod(fd, SECRET_FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            try:
                os.link(tmp_name, path)  # fails if the file exists: create-if-absent, atomically
            except FileExistsError:
                return False
        else:
            os.replace(tmp_name, path)
        _fsync_dir(path.parent)
        return True
    except OSError as err:
        raise StoreError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)


def read_secret(path: Path) -> bytes:
    """The content of a secret file. Raises StoreError if it is missing or unreadable."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise StoreError(f"{path} does not exist") from None
    except OSError as err:
        raise StoreError(f"cannot read {path}: {err.strerror or err}") from None


def _fsync_dir(directory: Path) -> None:
    # The rename/link is durable only once the directory entry is on disk.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
