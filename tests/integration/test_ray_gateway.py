"""The gateway in front of a real Ray head: who gets in, what streams through, what stays shut."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from raygate.store.tokens import load_signing_key
from tests import helpers
from tests.conftest import RaygateUp, executable
from tests.helpers import listening, wait_until


def http(url: str, **kwargs: Any) -> tuple[int, str]:
    """(status, body) of one request; see tests.helpers.http for the keywords."""
    status, body, _headers = helpers.http(url, **kwargs)
    return status, body


def grant_submitter(up: RaygateUp, name: str) -> str:
    return up.grant_cluster(name, "*")


def job_ids(up: RaygateUp, token: str) -> list[str]:
    status, body = http(f"{up.address}/api/jobs/", token=token)
    assert status == 200, body
    return sorted(job["submission_id"] for job in json.loads(body) if job.get("submission_id"))


def ray_job_env(up: RaygateUp, token: str) -> dict[str, str]:
    return up.env(RAY_JOB_HEADERS=json.dumps({"Authorization": f"Bearer {token}"}))


def submit_no_wait(up: RaygateUp, token: str, *entrypoint: str, submission_id: str = "") -> str:
    """`ray job submit --no-wait` as `token`'s account; the job's submission id."""
    extra = ["--submission-id", submission_id] if submission_id else []
    submitted = up.run(
        "ray",
        "job",
        "submit",
        "--address",
        up.address,
        "--no-wait",
        *extra,
        "--",
        *entrypoint,
        env=ray_job_env(up, token),
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    if submission_id:
        return submission_id
    return next(w.strip("'") for w in submitted.stdout.split() if w.startswith("'raysubmit_"))


# -- nothing reaches Ray except through the gateway --------------------------------------------


def test_ray_dashboard_and_agent_refuse_requests_that_bypass_the_gateway(
    raygate_up: RaygateUp,
) -> None:
    info = raygate_up.ray_info()
    ports = info["ports"]
    assert isinstance(ports, dict)
    dashboard = f"http://127.0.0.1:{ports['dashboard']}"
    assert http(f"{dashboard}/api/version")[0] == 401
    assert (
        http(
            f"{dashboard}/api/jobs/",
            method="POST",
            data=b'{"entrypoint": "echo hi"}',
            headers={"Content-Type": "application/json"},
        )[0]
        == 401
    )
    agent = f"http://127.0.0.1:{ports['agent']}"
    # The agent starts a few seconds after the dashboard answers.
    assert wait_until(lambda: listening(int(ports["agent"])), timeout=60), "agent never listened"
    status, _ = http(
        f"{agent}/api/job_agent/jobs/",
        method="POST",
        data=b'{"entrypoint": "echo pwned"}',
        headers={"Content-Type": "application/json"},
    )
    assert status == 401
    # A guessed token is no better than none.
    assert http(f"{dashboard}/api/version", token="guess")[0] == 403


def test_gcs_refuses_a_client_without_ray_token(raygate_up: RaygateUp) -> None:
    gcs = raygate_up.ray_info()["ports"]["gcs"]  # type: ignore[index]
    result = raygate_up.run("ray", "status", "--address", f"127.0.0.1:{gcs}", timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Node status" not in out


def test_ray_token_file_is_private(raygate_up: RaygateUp) -> None:
    token_file = raygate_up.state / "ray-auth-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert token_file.read_text().strip() not in (raygate_up.state / "ray.json").read_text()


# -- who gets in ------------------------------------------------------------------------------


def test_account_without_binding_gets_403_and_job_list_is_unchanged(raygate_up: RaygateUp) -> None:
    owner = grant_submitter(raygate_up, "list-owner")
    before = job_ids(raygate_up, owner)

    assert raygate_up.raygate("create", "serviceaccount", "stranger").returncode == 0
    stranger = raygate_up.token("stranger")
    status, body = http(
        f"{raygate_up.address}/api/jobs/",
        method="POST",
        token=stranger,
        data=b'{"entrypoint": "echo should-not-run"}',
        headers={"Content-Type": "application/json"},
    )
    assert status == 403
    assert (
        'User "system:serviceaccount:default:stranger" cannot create resource "rayclusters" '
        'in API group "ray.io" in the namespace "default"'
    ) in body

    submitted = raygate_up.run(
        "ray",
        "job",
        "submit",
        "--address",
        raygate_up.address,
        "--",
        "echo",
        "should-not-run",
        env=ray_job_env(raygate_up, stranger),
    )
    assert submitted.returncode != 0
    assert (
        "Authentication failed" in submitted.stdout + submitted.stderr or "403" in submitted.stderr
    )
    assert job_ids(raygate_up, owner) == before


def _resign(
    token: str, private_pem: bytes, header: dict[str, object] | None = None, **claims: object
) -> str:
    payload = jwt.decode(token, options={"verify_signature": False})
    payload.update(claims)
    kid = jwt.get_unverified_header(token)["kid"]
    return jwt.encode(payload, private_pem, algorithm="RS256", headers=header or {"kid": kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_bad_tokens_get_401(raygate_up: RaygateUp) -> None:
    good = grant_submitter(raygate_up, "token-checker")
    url = f"{raygate_up.address}/api/version"
    assert http(url, token=good)[0] == 200

    key = load_signing_key(raygate_up.state, create=False)
    pem = key.to_pem()
    now = int(time.time())
    payload = jwt.decode(good, options={"verify_signature": False})
    public_pem = key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header_b64, payload_b64, signature = good.split(".")
    flipped = payload_b64[:-2] + ("A" if payload_b64[-2] != "A" else "B") + payload_b64[-1]
    unsigned = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode()) + "." + payload_b64 + "."
    hs_header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    hs_signing_input = f"{hs_header}.{payload_b64}".encode()
    hs256 = f"{hs_header}.{payload_b64}." + _b64(
        hmac.new(public_pem, hs_signing_input, hashlib.sha256).digest()
    )
    other_key_token = jwt.encode(
        payload,
        serialization.load_pem_private_key(
            __import__("cryptography.hazmat.primitives.asymmetric.rsa", fromlist=["rsa"])
            .generate_private_key(public_exponent=65537, key_size=2048)
            .private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            password=None,
        ),
        algorithm="RS256",
        headers={"kid": key.kid},
    )
    bad = {
        "expired": _resign(good, pem, exp=now - 3600, iat=now - 7200, nbf=now - 7200),
        "not yet valid": _resign(good, pem, nbf=now + 3600, iat=now, exp=now + 7200),
        "wrong audience": _resign(good, pem, aud=["https://somewhere.else"]),
        "wrong issuer": _resign(good, pem, iss="https://evil.example"),
        "tampered payload": f"{header_b64}.{flipped}.{signature}",
        "alg none": unsigned,
        "HS256 with the public key": hs256,
        "signed by another key": other_key_token,
        "garbage": "not-a-jwt",
    }
    for what, token in bad.items():
        status, body = http(url, token=token)
        assert status == 401, f"{what}: got {status}"
        assert "raygate create token" in body


def test_token_of_deleted_service_account_gets_401(raygate_up: RaygateUp) -> None:
    token = grant_submitter(raygate_up, "short-lived")
    url = f"{raygate_up.address}/api/version"
    assert http(url, token=token)[0] == 200
    deleted = raygate_up.raygate("delete", "serviceaccount", "short-lived")
    assert deleted.returncode == 0, deleted.stderr
    assert wait_until(lambda: http(url, token=token)[0] == 401, timeout=1.5)
    # Recreating the account under the same name does not bring old tokens back.
    assert raygate_up.raygate("create", "serviceaccount", "short-lived").returncode == 0
    time.sleep(1.0)
    assert http(url, token=token)[0] == 401


def test_new_binding_takes_effect_within_a_second(raygate_up: RaygateUp) -> None:
    assert raygate_up.raygate("create", "serviceaccount", "late-binder").returncode == 0
    token = raygate_up.token("late-binder")
    url = f"{raygate_up.address}/api/version"
    assert http(url, token=token)[0] == 403
    grant_submitter(raygate_up, "late-binder")
    assert wait_until(lambda: http(url, token=token)[0] == 200, timeout=1.5)


# -- what streams through ------------------------------------------------------------------------


def test_job_logs_follow_streams_through_the_gateway(raygate_up: RaygateUp) -> None:
    token = grant_submitter(raygate_up, "log-follower")
    env = ray_job_env(raygate_up, token)
    script = "import time; print('first line', flush=True); time.sleep(6); print('second line', flush=True)"
    job_id = submit_no_wait(raygate_up, token, "python", "-c", script)

    follower = subprocess.Popen(
        [executable("ray"), "job", "logs", "--address", raygate_up.address, "--follow", job_id],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert follower.stdout is not None
    seen_first_while_running = False
    lines = []
    deadline = time.monotonic() + 120
    for line in follower.stdout:
        lines.append(line)
        if "first line" in line:
            status, body = http(f"{raygate_up.address}/api/jobs/{job_id}", token=token)
            seen_first_while_running = status == 200 and json.loads(body)["status"] == "RUNNING"
        if time.monotonic() > deadline:
            break
    follower.wait(timeout=60)
    output = "".join(lines)
    assert "first line" in output and "second line" in output, output
    assert seen_first_while_running, "the first line only arrived after the job had finished"


def test_working_dir_job_uploads_through_the_gateway(raygate_up: RaygateUp, tmp_path: Path) -> None:
    token = grant_submitter(raygate_up, "packager")
    workdir = tmp_path / "job"
    workdir.mkdir()
    (workdir / "helper.py").write_text("MESSAGE = 'hello from the working dir'\n")
    # Incompressible bytes make the package a real upload, not a few hundred bytes.
    (workdir / "blob.bin").write_bytes(__import__("os").urandom(8 * 1024 * 1024))
    result = raygate_up.run(
        "ray",
        "job",
        "submit",
        "--address",
        raygate_up.address,
        "--working-dir",
        str(workdir),
        "--",
        "python",
        "-c",
        "import helper, os; print(helper.MESSAGE, os.path.getsize('blob.bin'))",
        env=ray_job_env(raygate_up, token),
        timeout=300,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert f"hello from the working dir {8 * 1024 * 1024}" in out
    audit = (raygate_up.state / "audit.log").read_text()
    assert any(
        '"PUT"' in line and "/api/packages/" in line and '"allow"' in line
        for line in audit.splitlines()
    )


@pytest.mark.parametrize("header", ["X-Remote-User", "X-Remote-Group"])
def test_forged_identity_headers_do_not_grant_access(raygate_up: RaygateUp, header: str) -> None:
    value = "system:masters" if header == "X-Remote-Group" else "admin"
    status, _ = http(f"{raygate_up.address}/api/version", headers={header: value})
    assert status == 401


def test_log_stream_follows_through_the_gateway(raygate_up: RaygateUp) -> None:
    """`ray logs --follow` reads Ray's chunked /api/v0/logs/stream; lines must arrive as written."""
    token = grant_submitter(raygate_up, "log-streamer")
    script = (
        "import time\nfor i in range(8):\n    print(f'tick {i}', flush=True)\n    time.sleep(1)\n"
    )
    job_id = submit_no_wait(raygate_up, token, "python", "-c", script)

    def job_status() -> str:
        return json.loads(http(f"{raygate_up.address}/api/jobs/{job_id}", token=token)[1])["status"]

    assert wait_until(lambda: job_status() == "RUNNING", timeout=60)
    nodes = json.loads(http(f"{raygate_up.address}/nodes?view=summary", token=token)[1])
    node_id = nodes["data"]["summary"][0]["raylet"]["nodeId"]
    url = (
        f"{raygate_up.address}/api/v0/logs/stream?node_id={node_id}"
        f"&filename=job-driver-{job_id}.log&lines=-1&interval=0.2"
    )
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    received = ""
    first_tick_while_running = None
    deadline = time.monotonic() + 60
    # Ray's own stream can break off under load (it relays the node agent); like `ray logs
    # --follow`, start over once: `lines=-1` sends the whole file again.
    for _attempt in range(2):
        received = ""
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.status == 200
                assert response.headers.get("Transfer-Encoding", "").lower() == "chunked"
                while "tick 7" not in received and time.monotonic() < deadline:
                    chunk = response.read1(65536).decode(errors="replace")
                    if not chunk:
                        break
                    received += chunk
                    if first_tick_while_running is None and "tick 0" in received:
                        first_tick_while_running = job_status() == "RUNNING"
            break
        except ConnectionError:
            continue
    assert "tick 0" in received and "tick 7" in received, received[-500:]
    assert first_tick_while_running, "lines only arrived once the job had finished"
