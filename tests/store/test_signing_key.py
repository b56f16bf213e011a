"""The signing key is never silently replaced: a key that others may read, that cannot be read
or parsed, or that is missing from a state that already issued tokens stops `raygate up` (and
`create token`) with one line that says how to rotate on purpose; `raygate rotate-key` does."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from raygate.store.tokens import KEY_FILE, PUBLIC_KEY_FILE
from tests.conftest import executable, free_port


def raygate(state: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY")}
    env["RAYGATE_STATE"] = str(state)
    return subprocess.run(
        [executable("raygate"), *args],
        env=env,
        cwd=state.parent,
        capture_output=True,
        text=True,
        timeout=60,
        input=input,
    )


def up(state: Path) -> subprocess.CompletedProcess[str]:
    # --upstream: nothing of Ray is started, and the key is checked before anything listens.
    return raygate(
        state, "up", "--port", str(free_port()), "--upstream", f"http://127.0.0.1:{free_port()}"
    )


@pytest.fixture
def state(tmp_path: Path) -> Path:
    state = tmp_path / ".raygate"
    assert raygate(state, "create", "serviceaccount", "ray-user").returncode == 0
    result = raygate(state, "create", "token", "ray-user")
    assert result.returncode == 0, result.stderr
    return state


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_key_readable_by_others_is_refused_with_how_to_fix_it(state: Path) -> None:
    (state / KEY_FILE).chmod(0o644)
    line = one_error_line(up(state))
    assert "open to other users (mode 644)" in line and "chmod 600" in line
    assert "raygate rotate-key" in line
    assert not (state / "ray.json").exists()
    assert "open to other users" in one_error_line(raygate(state, "create", "token", "ray-user"))


def test_garbled_key_is_refused_not_replaced(state: Path) -> None:
    (state / KEY_FILE).write_bytes(b"-----BEGIN PRIVATE KEY-----\ngarbage\n")
    line = one_error_line(up(state))
    assert "is not an unencrypted PEM private key" in line and "raygate rotate-key" in line
    assert (state / KEY_FILE).read_bytes().endswith(b"garbage\n"), "the key was replaced"


def test_unreadable_key_is_refused(state: Path) -> None:
    (state / KEY_FILE).unlink()
    (state / KEY_FILE).mkdir(mode=0o700)  # reads fail (root ignores permission bits)
    line = one_error_line(up(state))
    assert "cannot read" in line and "raygate rotate-key" in line


def test_key_owned_by_someone_else_is_refused(state: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    os.chown(state / KEY_FILE, 65534, 65534)
    line = one_error_line(up(state))
    assert "owned by uid 65534" in line


def test_missing_key_of_a_state_that_issued_tokens_is_refused(state: Path) -> None:
    (state / KEY_FILE).unlink()
    line = one_error_line(up(state))
    assert "is missing" in line and "issued tokens" in line and "raygate rotate-key" in line
    one_error_line(raygate(state, "create", "token", "ray-user"))
    assert not (state / KEY_FILE).exists(), "a new key was minted silently"


def test_another_key_in_place_of_the_one_that_issued_tokens_is_refused(
    state: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    assert raygate(other, "create", "serviceaccount", "x").returncode == 0
    assert raygate(other, "create", "token", "x").returncode == 0
    (state / KEY_FILE).write_bytes((other / KEY_FILE).read_bytes())
    assert "is not the key this state issued its tokens with" in one_error_line(up(state))


def test_rotate_key_on_purpose_makes_a_new_key_and_old_tokens_stop_verifying(
    state: Path,
) -> None:
    old_token = raygate(state, "create", "token", "ray-user").stdout.strip()
    old_public = (state / PUBLIC_KEY_FILE).read_bytes()
    refused = raygate(state, "rotate-key", input="n\n")
    assert refused.returncode != 0 and (state / PUBLIC_KEY_FILE).read_bytes() == old_public
    (state / KEY_FILE).unlink()
    result = raygate(state, "rotate-key", "--yes")
    assert result.returncode == 0, result.stderr
    assert "tokens issued before no longer verify" in result.stdout
    assert (state / PUBLIC_KEY_FILE).read_bytes() != old_public
    assert (state / KEY_FILE).stat().st_mode & 0o777 == 0o600
    new_token = raygate(state, "create", "token", "ray-user")
    assert new_token.returncode == 0, new_token.stderr

    from raygate.embedded import EmbeddedAuthority

    authority = EmbeddedAuthority(state)
    try:
        import asyncio

        authenticate = authority.authenticator.authenticate_token
        assert asyncio.run(authenticate(old_token)) is None
        assert asyncio.run(authenticate(new_token.stdout.strip())) is not None
    finally:
        authority.store.close()
