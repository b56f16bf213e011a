"""`raygate create token NAME --kubeconfig K` asks the cluster (TokenRequest), like kubectl."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import jwt
import pytest

from raygate.kube.client import KubeClient
from tests.conftest import executable
from tests.integration.serve_helpers import fake_api


def test_create_token_through_the_api_server(tmp_path: Path) -> None:
    with fake_api() as runner:
        fake = runner.fake
        fake.service_accounts = {("team-a", "ray-user")}
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        made = subprocess.run(
            [
                executable("raygate"),
                "create",
                "token",
                "ray-user",
                "-n",
                "team-a",
                "--duration=2h",
                "--audience",
                "https://ray.example",
                "--kubeconfig",
                str(kubeconfig),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip()
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["sub"] == "system:serviceaccount:team-a:ray-user"
        assert claims["aud"] == ["https://ray.example"]
        assert 7100 <= claims["exp"] - claims["iat"] <= 7300
        assert fake.users[token].user == "system:serviceaccount:team-a:ray-user"
        assert not (tmp_path / ".raygate").exists(), "the embedded authority was used"

        missing = subprocess.run(
            [executable("raygate"), "create", "token", "nobody", "--kubeconfig", str(kubeconfig)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert missing.returncode == 1
        assert missing.stderr.strip() == (
            'error: failed to create token: serviceaccounts "nobody" not found'
        )


def test_kubeconfig_comes_from_the_environment_like_kubectl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside a pod and without --kubeconfig, $KUBECONFIG names the cluster."""
    with fake_api() as runner:
        kubeconfig = runner.fake.write_kubeconfig(tmp_path / "kubeconfig")
        monkeypatch.setenv("KUBECONFIG", f"{kubeconfig}{os.pathsep}/nonexistent/second")
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

        async def version() -> str:
            async with await KubeClient.connect() as client:
                return await client.ping()

        assert asyncio.run(version())
