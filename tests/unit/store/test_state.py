"""The state directory: where it is, and that it and its secrets are private.

The directory holds the signing key, tokens and the object store. An existing one with
group/other bits is tightened to 0700 when it is ours (said once on stderr) and refused when
someone else owns it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from raygate.errors import StoreError
from raygate.store import state
from raygate.store.state import ensure_state_dir, read_secret, resolve_state_dir, write_secret


def mode_of(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_new_state_dir_is_private(tmp_path: Path) -> None:
    target = tmp_path / "new" / "state"
    ensure_state_dir(target)
    assert mode_of(target) == 0o700


@pytest.mark.parametrize("loose", [0o755, 0o750, 0o701, 0o777, 0o707])
def test_our_open_state_dir_is_tightened_and_said_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], loose: int
) -> None:
    target = tmp_path / "state"
    target.mkdir()
    target.chmod(loose)
    ensure_state_dir(target)
    assert mode_of(target) == 0o700
    write_secret(target / "key", b"secret")  # ensures the dir again: nothing more to say
    err = capsys.readouterr().err
    assert err.count(str(target)) == 1
    assert f"mode {loose:o}" in err and "700" in err
    assert "secret" not in err


def test_private_state_dir_is_left_alone_quietly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "state"
    target.mkdir(mode=0o700)
    target.chmod(0o700)
    ensure_state_dir(target)
    assert mode_of(target) == 0o700
    assert capsys.readouterr().err == ""


def test_open_state_dir_of_someone_else_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state"
    target.mkdir()
    target.chmod(0o755)
    someone_else = os.getuid() + 1
    monkeypatch.setattr(state.os, "getuid", lambda: someone_else)
    with pytest.raises(StoreError, match="owned by uid .* not by you"):
        ensure_state_dir(target)
    assert mode_of(target) == 0o755


def test_state_dir_option_beats_environment_beats_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAYGATE_STATE", str(tmp_path / "from-env"))
    assert resolve_state_dir(str(tmp_path / "opt")) == tmp_path / "opt"
    assert resolve_state_dir(None) == tmp_path / "from-env"
    monkeypatch.delenv("RAYGATE_STATE")
    assert resolve_state_dir(None) == Path(".raygate")


def test_state_dir_is_created_private_only_when_writing(tmp_path: Path) -> None:
    target = tmp_path / "state"
    resolve_state_dir(str(target))
    assert not target.exists()
    resolve_state_dir(str(target), create=True)
    assert stat.S_IMODE(target.stat().st_mode) == 0o700


def test_secret_file_is_written_with_mode_0600_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "state" / "token"
    assert write_secret(path, b"s3cret")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_secret(path) == b"s3cret"
    assert [p.name for p in path.parent.iterdir()] == ["token"]  # no temporary file left


def test_exclusive_secret_write_keeps_the_first_value(tmp_path: Path) -> None:
    path = tmp_path / "key"
    assert write_secret(path, b"first", exclusive=True)
    assert not write_secret(path, b"second", exclusive=True)
    assert read_secret(path) == b"first"


def test_missing_secret_is_a_store_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="nothing-here does not exist"):
        read_secret(tmp_path / "nothing-here")
