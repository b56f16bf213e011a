"""`raygate env`: exports each shell reads back exactly, and the token files' permissions."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import jwt
import pytest
from click.testing import CliRunner

from raygate.cli.login import env, env_lines
from raygate.sso import cli_tokens

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.sig-with-'quote"


def test_bash_reads_back_what_env_prints(tmp_path: Path) -> None:
    script = "\n".join(env_lines("bash", TOKEN, str(tmp_path / "it's"))) + (
        '\nprintf "%s\\n%s\\n%s" "$RAY_JOB_HEADERS" "$RAY_AUTH_MODE" "$RAY_AUTH_TOKEN_PATH"'
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    headers, mode, path = out.stdout.split("\n")
    assert json.loads(headers) == {"Authorization": f"Bearer {TOKEN}"}
    assert mode == "token" and path == str(tmp_path / "it's")


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_reads_back_what_env_prints(tmp_path: Path) -> None:
    script = "\n".join(env_lines("fish", TOKEN, "/x")) + "\necho $RAY_JOB_HEADERS"
    out = subprocess.run(["fish", "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {"Authorization": f"Bearer {TOKEN}"}


def test_powershell_and_fish_syntax() -> None:
    assert env_lines("powershell", "t'x", "/p")[1] == "$Env:RAY_AUTH_MODE = 'token'"
    assert env_lines("powershell", "a", "/p'q")[2] == "$Env:RAY_AUTH_TOKEN_PATH = '/p''q'"
    assert env_lines("fish", "a", "/p'q")[2] == "set -gx RAY_AUTH_TOKEN_PATH '/p\\'q';"


def test_env_without_a_login_says_how_to_log_in(tmp_path: Path) -> None:
    result = CliRunner().invoke(env, [], env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert result.exit_code == 1
    assert "not logged in: run `raygate login --issuer URL --client-id ID` first" in result.output


def test_env_prints_a_valid_login_and_keeps_its_files_private(tmp_path: Path) -> None:
    token = jwt.encode({"sub": "a", "exp": int(time.time()) + 3600}, "k" * 32, algorithm="HS256")
    directory = tmp_path / "raygate"
    cli_tokens.save(
        cli_tokens.StoredLogin("https://sso.example.com", "raygate", token, None), directory
    )
    result = CliRunner().invoke(env, ["--shell", "bash"], env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert f"export RAY_AUTH_TOKEN_PATH='{directory / 'id-token'}'" in result.output
    assert (directory / "id-token").read_text() == token
    for name in ("login.json", "id-token"):
        assert (directory / name).stat().st_mode & 0o777 == 0o600
    assert directory.stat().st_mode & 0o777 == 0o700


def test_an_expired_login_without_refresh_token_asks_for_a_new_login(tmp_path: Path) -> None:
    token = jwt.encode({"sub": "a", "exp": int(time.time()) - 10}, "k" * 32, algorithm="HS256")
    cli_tokens.save(
        cli_tokens.StoredLogin("https://sso.example.com", "raygate", token, None),
        tmp_path / "raygate",
    )
    result = CliRunner().invoke(env, [], env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert result.exit_code == 1 and "run `raygate login` again" in result.output
