"""Ray's temp dir: when the state dir path is too long for Ray's Unix sockets, Ray's files go
to a predictable /tmp/raygate-<hash>. Another local user must not be able to prepare that
place for us: its parent is ours alone (0700, a real directory, our uid) and Ray's own temp dir
(which Ray makes 0777) is a child inside it. No Ray is started here."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raygate.errors import UpstreamError
from raygate.ray import launcher
from raygate.ray.launcher import MAX_TEMP_DIR_LEN, prepare_ray_temp_dir, ray_temp_dir


@pytest.fixture
def short_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A temp base short enough for the hashed path (pytest's tmp_path is too long; it is made
    first, since pytest finds its own base through gettempdir too)."""
    base = Path(tempfile.mkdtemp(prefix="rg", dir="/tmp"))
    monkeypatch.setattr(launcher.tempfile, "gettempdir", lambda: str(base))
    yield base
    for root, dirs, _ in os.walk(base):
        for name in dirs:
            path = Path(root) / name
            if not path.is_symlink():
                path.chmod(0o700)
    shutil.rmtree(base)


@pytest.fixture
def long_state(tmp_path: Path) -> Path:
    state = tmp_path / ("state-" + "x" * MAX_TEMP_DIR_LEN)
    state.mkdir(mode=0o700)
    return state


def mode_of(path: Path) -> int:
    return path.lstat().st_mode & 0o777


def test_short_state_dir_keeps_ray_inside_it(short_tmp: Path) -> None:
    state = short_tmp / "st"
    assert ray_temp_dir(state) == state.resolve() / "ray"
    assert prepare_ray_temp_dir(state).is_dir()


def test_long_state_dir_gets_a_child_of_a_hashed_parent(short_tmp: Path, long_state: Path) -> None:
    temp_dir = ray_temp_dir(long_state)
    assert temp_dir.parent.parent == short_tmp
    assert temp_dir.parent.name.startswith("raygate-")
    assert temp_dir.name == "r"
    assert len(str(temp_dir)) <= MAX_TEMP_DIR_LEN
    assert ray_temp_dir(long_state) == temp_dir  # stable for one state dir


def test_parent_is_created_private(short_tmp: Path, long_state: Path) -> None:
    temp_dir = prepare_ray_temp_dir(long_state)
    assert temp_dir == ray_temp_dir(long_state)
    assert temp_dir.is_dir()
    assert mode_of(temp_dir.parent) == 0o700
    assert temp_dir.parent.stat().st_uid == os.getuid()
    assert prepare_ray_temp_dir(long_state) == temp_dir  # a second start reuses it


@pytest.mark.parametrize("mode", [0o777, 0o755, 0o1777, 0o710])
def test_precreated_open_parent_is_refused(short_tmp: Path, long_state: Path, mode: int) -> None:
    parent = ray_temp_dir(long_state).parent
    parent.mkdir()
    parent.chmod(mode)
    with pytest.raises(UpstreamError, match="open to other users"):
        prepare_ray_temp_dir(long_state)
    assert not (parent / "r").exists()


def test_symlinked_parent_is_refused(short_tmp: Path, long_state: Path) -> None:
    elsewhere = short_tmp / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    parent = ray_temp_dir(long_state).parent
    parent.symlink_to(elsewhere)
    with pytest.raises(UpstreamError, match="not a real directory"):
        prepare_ray_temp_dir(long_state)
    assert list(elsewhere.iterdir()) == []


def test_file_in_place_of_parent_is_refused(short_tmp: Path, long_state: Path) -> None:
    ray_temp_dir(long_state).parent.write_text("")
    with pytest.raises(UpstreamError, match="not a real directory"):
        prepare_ray_temp_dir(long_state)


def test_parent_of_another_user_is_refused(
    short_tmp: Path, long_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = ray_temp_dir(long_state).parent
    parent.mkdir(mode=0o700)
    someone_else = os.getuid() + 1
    monkeypatch.setattr(launcher.os, "getuid", lambda: someone_else)
    with pytest.raises(UpstreamError, match="owned by uid"):
        prepare_ray_temp_dir(long_state)


def test_ray_start_runs_in_its_temp_dir_not_the_state_dir(
    short_tmp: Path, long_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    class FakePopen:
        pid = 0

        def __init__(self, cmd: list[str], **kwargs: Any) -> None:
            seen["cmd"], seen["kwargs"] = cmd, kwargs

    monkeypatch.setattr(launcher.subprocess, "Popen", FakePopen)
    monkeypatch.setattr(launcher, "ray_executable", lambda: "ray")
    monkeypatch.setattr(launcher, "_wait_until_ready", lambda *args: None)
    head = launcher.start_ray_head(long_state, "token")
    assert seen["kwargs"]["cwd"] == head.temp_dir == ray_temp_dir(long_state)
    assert seen["cmd"][seen["cmd"].index("--temp-dir") + 1] == str(head.temp_dir)
    assert mode_of(head.temp_dir.parent) == 0o700
