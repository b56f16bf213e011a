"""`raygate up` starts, refuses and stops the way a user expects."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.conftest import (
    REPO,
    RaygateUp,
    executable,
    free_port,
    start_front_gateway,
    start_raygate_up,
    stop_raygate_up,
)
from tests.helpers import http as http_with_headers
from tests.integration.test_ray_gateway import grant_submitter, http


def _pids_mentioning(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def test_busy_port_is_one_line_error_and_nonzero_exit(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [executable("raygate"), "up", "--port", str(port)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "already in use" in lines[0], result.stderr
    assert not (tmp_path / ".raygate" / "ray.json").exists(), "Ray was started anyway"


def test_ray_that_fails_to_start_is_one_line_error(tmp_path: Path) -> None:
    # An object store larger than the machine makes the raylet fail after the dashboard is up.
    result = subprocess.run(
        [
            executable("raygate"),
            "up",
            "--port",
            str(free_port()),
            "--num-cpus",
            "1",
            "--object-store-memory",
            str(10**15),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Ray failed to start" in errors[0], result.stderr
    assert "raygate is up" not in result.stdout


def test_sigterm_stops_gateway_and_ray_leaving_no_process(tmp_path: Path) -> None:
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    up = start_raygate_up(tmp_path)
    temp_dir = str(up.ray_info()["tempDir"])
    ray_pid = int(up.ray_info()["pid"])  # type: ignore[arg-type]
    assert _pids_mentioning(temp_dir), "Ray's processes were not found while running"
    assert stop_raygate_up(up, signal.SIGTERM) == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _pids_mentioning(temp_dir):
        time.sleep(0.2)
    assert _pids_mentioning(temp_dir) == []
    assert not Path(f"/proc/{ray_pid}").exists() or "Z" in Path(f"/proc/{ray_pid}/stat").read_text()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", int(up.address.rsplit(":", 1)[1]))) != 0


def test_up_with_upstream_fronts_an_existing_dashboard(
    raygate_up: RaygateUp, tmp_path: Path
) -> None:
    """`raygate up --upstream URL` puts a second gateway, with its own authority, in front."""
    second = start_front_gateway(raygate_up, tmp_path, timeout=30)
    try:
        token = grant_submitter(second, "front-user")
        status, body = http(f"{second.address}/api/version", token=token)
        assert status == 200 and "ray_version" in body
        # The first gateway's authority knows nothing of this account.
        assert http(f"{raygate_up.address}/api/version", token=token)[0] == 401
        # Nothing was started: --upstream fronts, it does not launch Ray.
        assert not (tmp_path / ".raygate" / "ray.json").exists()
    finally:
        stop_raygate_up(second)


def _front_gateway(raygate_up: RaygateUp, workdir: Path, port: int) -> RaygateUp:
    """`raygate up --upstream` in front of the session's Ray head, ready to serve."""
    return start_front_gateway(raygate_up, workdir, port=port, timeout=30)


def test_gateway_killed_with_sigkill_restarts_with_its_state_tokens_and_sessions(
    raygate_up: RaygateUp, tmp_path: Path
) -> None:
    port = free_port()
    front = _front_gateway(raygate_up, tmp_path, port)
    try:
        token = grant_submitter(front, "survivor")
        assert http(f"{front.address}/api/version", token=token)[0] == 200
        # A browser session: the dashboard's login sets the session cookie.
        status, _, headers = http_with_headers(
            f"{front.address}/api/authenticate", method="POST", token=token
        )
        assert status == 200
        cookie = headers["Set-Cookie"].split(";", 1)[0]
        for _ in range(50):
            http(f"{front.address}/api/version", token=token)
        time.sleep(1.2)  # the audit lines of those requests are at most a second behind
        os.killpg(front.process.pid, signal.SIGKILL)
        front.process.wait()
    finally:
        if front.process.poll() is None:
            os.killpg(front.process.pid, signal.SIGKILL)
    audit = (tmp_path / ".raygate" / "audit.log").read_bytes()
    assert audit.endswith(b"\n"), "a partial audit line after SIGKILL"
    assert len(audit.splitlines()) >= 52

    again = _front_gateway(raygate_up, tmp_path, port)
    try:
        assert http(f"{again.address}/api/version", token=token)[0] == 200
        status, body = http(f"{again.address}/api/version", headers={"Cookie": cookie})
        assert status == 200, body
        listed = again.raygate("get", "serviceaccounts", "-o", "name")
        assert "serviceaccount/survivor" in listed.stdout
    finally:
        stop_raygate_up(again)


def test_audit_events_to_stdout_in_kubernetes_format(raygate_up: RaygateUp, tmp_path: Path) -> None:
    """`--audit-log - --audit-format kubernetes`: audit.k8s.io/v1 Events on stdout, as a pod's
    log collector reads kube-apiserver's; all written by the time raygate up has stopped."""
    import json

    import jsonschema

    from tests.observe.test_kube_event import EVENT

    shutil.copytree(REPO / "examples", tmp_path / "examples")
    front = start_front_gateway(
        raygate_up,
        tmp_path,
        "--audit-log",
        "-",
        "--audit-format",
        "kubernetes",
    )
    try:
        token = grant_submitter(front, "event-user")
        assert http(f"{front.address}/api/version")[0] == 401
        assert http(f"{front.address}/api/version", token=token)[0] == 200
    finally:
        assert stop_raygate_up(front) == 0
    events = [json.loads(line) for line in front.output if line.startswith('{"kind":"Event"')]
    for event in events:
        jsonschema.validate(event, EVENT)
    codes = [event["responseStatus"]["code"] for event in events]
    assert codes == [401, 200], codes
    allowed = events[1]
    assert allowed["user"]["username"] == "system:serviceaccount:default:event-user"
    assert allowed["annotations"]["authorization.k8s.io/decision"] == "allow"
    assert allowed["userAgent"].startswith("Python-urllib")
    assert not (tmp_path / ".raygate" / "audit.log").exists()


def test_ctrl_c_stops_everything_within_30s_once_serve_has_started(tmp_path: Path) -> None:
    # Ray alone takes about 37 s to stop with Serve running; raygate shuts Serve down first.
    up = start_raygate_up(tmp_path, doors=True)
    info = up.ray_info()
    temp_dir = str(info["tempDir"])
    ports = info["ports"]
    assert isinstance(ports, dict) and "serve" in ports, "raygate up did not start Serve"
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", int(ports["serve"]))) == 0
    started = time.monotonic()
    assert stop_raygate_up(up, signal.SIGINT) == 0
    assert time.monotonic() - started < 30
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _pids_mentioning(temp_dir):
        time.sleep(0.2)
    assert _pids_mentioning(temp_dir) == []
    for address in (up.address, up.serve_address):
        assert address is not None
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", int(address.rsplit(":", 1)[1]))) != 0
