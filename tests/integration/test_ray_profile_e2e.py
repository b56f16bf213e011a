"""The `ray` profile end to end: `raygate up --profile ray` in front of the session's real Ray head,
driven with the real `ray job` CLI by users bound to the profile's roles."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import REPO, RaygateUp, start_front_gateway, stop_raygate_up
from tests.integration.test_ray_gateway import ray_job_env

BINDINGS = """
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {name}, namespace: default}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {role}}}
subjects: [{{kind: ServiceAccount, name: {name}, namespace: default}}]
"""
USERS = {"alice": "raygate-submitter", "bob": "raygate-submitter", "boss": "raygate-admin"}


def _start_ray_profile_gateway(raygate_up: RaygateUp, workdir: Path) -> RaygateUp:
    return start_front_gateway(raygate_up, workdir, "--profile", "ray", timeout=30)


def _ray_job(
    gateway: RaygateUp, token: str, command: str, *args: str
) -> subprocess.CompletedProcess[str]:
    env = ray_job_env(gateway, token)
    return gateway.run("ray", "job", command, "--address", gateway.address, *args, env=env)


def _submitted_id(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(
        r"Job '(raysubmit_\w+)' submitted successfully", result.stdout + result.stderr
    )
    assert match, result.stdout + result.stderr
    return match.group(1)


def test_ray_profile_job_ownership_with_the_ray_cli(raygate_up: RaygateUp, tmp_path: Path) -> None:
    gateway = _start_ray_profile_gateway(raygate_up, tmp_path)
    try:
        applied = gateway.raygate("apply", "-f", str(REPO / "examples" / "ray-profile-roles.yaml"))
        assert applied.returncode == 0, applied.stderr
        tokens = {}
        for name, role in USERS.items():
            created = gateway.raygate("create", "serviceaccount", name)
            assert created.returncode == 0, created.stderr
            bound = gateway.raygate("apply", "-f", "-", input=BINDINGS.format(name=name, role=role))
            assert bound.returncode == 0, bound.stderr
            tokens[name] = gateway.token(name)

        alices = _submitted_id(
            _ray_job(gateway, tokens["alice"], "submit", "--no-wait", "--", "sleep", "600")
        )
        bobs = _submitted_id(
            _ray_job(gateway, tokens["bob"], "submit", "--no-wait", "--", "echo", "bob")
        )

        # bob, a submitter, cannot stop alice's job
        refused = _ray_job(gateway, tokens["bob"], "stop", alices)
        assert refused.returncode != 0
        output = refused.stdout + refused.stderr
        assert 'cannot stop resource "rayclusters/alljobs"' in output, output

        # bob's list holds his job, not alice's
        listed = _ray_job(gateway, tokens["bob"], "list")
        assert listed.returncode == 0, listed.stderr
        assert bobs in listed.stdout and alices not in listed.stdout

        # an admin can stop it; alice sees it stopped
        stopped = _ray_job(gateway, tokens["boss"], "stop", alices)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        status = _ray_job(gateway, tokens["alice"], "status", alices)
        assert status.returncode == 0, status.stderr
        assert f"Job '{alices}' was stopped" in status.stdout + status.stderr
    finally:
        stop_raygate_up(gateway)
