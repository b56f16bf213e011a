"""The guide's walkthrough, step by step, with the real `ray` CLI against a real Ray head."""

from __future__ import annotations

import json

from tests.conftest import RaygateUp

SUBMIT = ["ray", "job", "submit", "--address"]
ENTRYPOINT = ["--", "python", "-c", "import ray; ray.init(); print(ray.cluster_resources())"]
SA_USER = "system:serviceaccount:default:ray-user"
CAN_I = ["auth", "can-i", "get", "rayclusters.ray.io/ray-cluster-with-auth", f"--as={SA_USER}"]


def test_guide_walkthrough_on_one_machine(raygate_up: RaygateUp) -> None:
    up = raygate_up

    # 1. Without a token: 401 on /api/version, with a body that says what to do.
    denied = up.run(*SUBMIT, up.address, *ENTRYPOINT)
    assert denied.returncode != 0
    out = denied.stdout + denied.stderr
    assert "Authentication required" in out or "401" in out
    assert "raygate create token" in out
    assert "Job 'raysubmit_" not in out

    # 2. A new service account cannot get rayclusters.
    created = up.raygate("create", "serviceaccount", "ray-user")
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == "serviceaccount/ray-user created"
    no = up.raygate(*CAN_I)
    assert (no.returncode, no.stdout.strip()) == (1, "no")

    # 3. The guide's Role and RoleBinding, unchanged.
    applied = up.raygate("apply", "-f", "examples/ray-cluster-rbac.yaml")
    assert applied.returncode == 0, applied.stderr
    assert "role.rbac.authorization.k8s.io/ray-user created" in applied.stdout
    assert "rolebinding.rbac.authorization.k8s.io/ray-user created" in applied.stdout
    yes = up.raygate(*CAN_I)
    assert (yes.returncode, yes.stdout.strip()) == (0, "yes")

    # 4. With the account's token the job runs.
    token = up.token("ray-user")
    headers = json.dumps({"Authorization": f"Bearer {token}"})
    submitted = up.run(*SUBMIT, up.address, *ENTRYPOINT, env=up.env(RAY_JOB_HEADERS=headers))
    out = submitted.stdout + submitted.stderr
    assert submitted.returncode == 0, out
    assert "submitted successfully" in out
    assert "'CPU': 1.0" in out
    assert "succeeded" in out

    # 5. The audit log names who did it, and never holds the token.
    audit = (up.state / "audit.log").read_text()
    assert SA_USER in audit
    assert token not in audit
    submits = [
        json.loads(line)
        for line in audit.splitlines()
        if '"POST"' in line and '"/api/jobs/"' in line
    ]
    assert submits and submits[-1]["user"] == SA_USER and submits[-1]["decision"] == "allow"
