"""Operating `raygate serve` as a sidecar: health, readiness and metrics on the proxy-endpoints
port only, unknown flags refused, and SIGTERM that lets a request in flight finish."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RaygateUp, executable
from tests.kube.fakeapi import SUBJECT_ACCESS_REVIEWS

from .serve_helpers import (
    GUIDE_RBAC,
    NAMESPACE,
    fake_api,
    guide_sidecar,
    http,
    kube_rbac_proxy_args,
    listening,
    load_manifests,
    ports,
    ray_cli_env,
    ray_dashboard,
    ray_job_ids,
    ray_token,
    sample_sidecar,
    serve_env,
    start_serve,
    wait_until,
)

FOLLOWED_JOB = "python -c \"import time; print('following', flush=True); time.sleep(300)\""


def samples(metrics_text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """{sample name: [(labels, value), ...]} from Prometheus text."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def value(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(
        v for sample_labels, v in found.get(name, []) if labels.items() <= sample_labels.items()
    )


def test_health_readiness_and_metrics_on_the_proxy_endpoints_port(
    raygate_up: RaygateUp, tmp_path: Path
) -> None:
    up = raygate_up
    with guide_sidecar(up, tmp_path) as (api, serve):
        fake = api.fake
        assert http(serve.admin + "/healthz")[:2] == (200, "ok\n")
        assert http(serve.admin + "/readyz")[:2] == (200, "ok\n")

        token = fake.add_service_account_token(NAMESPACE, "ray-user")
        assert http(serve.address + "/api/version", token=token)[0] == 200
        assert http(serve.address + "/api/version", token=token)[0] == 200
        assert http(serve.address + "/api/version", token="not-a-token")[0] == 401
        assert http(serve.address + "/api/version")[0] == 401

        status, text, headers = http(serve.admin + "/metrics")
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain")
        found = samples(text)
        assert value(found, "raygate_requests_total", code="200") == 2
        assert value(found, "raygate_requests_total", code="401") == 2
        assert value(found, "raygate_decisions_total", decision="allow") == 2
        assert value(found, "raygate_decisions_total", decision="unauthenticated") == 2
        cache_events = {
            (labels["cache"], labels["result"])
            for labels, v in found["raygate_cache_events_total"]
            if v > 0
        }
        assert {("authn", "miss"), ("authn", "hit"), ("authz", "miss"), ("authz", "hit")} <= (
            cache_events
        )
        # One authority call per token (the valid one, the invalid one); the valid token's
        # second request is decided from the pipeline's cache unless a second passed between.
        assert 2 <= value(found, "raygate_backend_latency_seconds_count", call="authn") <= 3
        assert 1 <= value(found, "raygate_backend_latency_seconds_count", call="authz") <= 2
        assert value(found, "raygate_upstream_latency_seconds_count") == 2

        # The admin port serves those three paths and nothing else: no way around
        # authorization through the probes' port, and no health check that skips it.
        assert http(serve.admin + "/api/version")[0] == 404
        assert http(serve.address + "/healthz")[0] == 401


def test_unknown_flag_is_an_error(raygate_up: RaygateUp, tmp_path: Path) -> None:
    (port,) = ports(1)
    sample = sample_sidecar()
    config_file = tmp_path / "config-file.yaml"
    config_file.write_text(sample.config_file)
    result = subprocess.run(
        [
            executable("raygate"),
            "serve",
            f"--insecure-listen-address=127.0.0.1:{port}",
            "--upstream=http://127.0.0.1:8443/",
            f"--config-file={config_file}",
            "--logtostderr=true",
            "--foo",
        ],
        env=serve_env(raygate_up),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr == "error: unknown flag: --foo\n"
    assert not listening(port)


def test_sigterm_lets_a_request_in_flight_finish_then_exits_0(
    raygate_up: RaygateUp, tmp_path: Path
) -> None:
    up = raygate_up
    (port,) = ports(1)
    with fake_api() as api:
        fake = api.fake
        fake.use_rbac(load_manifests(GUIDE_RBAC))
        args = kube_rbac_proxy_args(up, tmp_path, fake, port=port)
        serve = start_serve(args, serve_env(up), port=port)
        try:
            jobs_before = ray_job_ids(up)
            token = fake.add_service_account_token(NAMESPACE, "ray-user")
            body = json.dumps({"entrypoint": "echo drained"}).encode()
            head = (
                "POST /api/jobs/ HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\n"
                f"Authorization: Bearer {token}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
                # A job submission whose body is still on its way when the pod is told to stop.
                client.sendall(head + body[:8])
                assert wait_until(lambda: fake.calls[SUBJECT_ACCESS_REVIEWS] == 1), serve.logs()
                serve.process.send_signal(signal.SIGTERM)
                # New connections are turned away while the request in flight goes on.
                assert wait_until(lambda: not listening(port), timeout=15), serve.logs()
                client.sendall(body[8:])
                response = b""
                while chunk := client.recv(65536):
                    response += chunk
            status_line = response.split(b"\r\n", 1)[0]
            assert status_line == b"HTTP/1.1 200 OK", response[:500]
            assert b"submission_id" in response
            assert len(ray_job_ids(up) - jobs_before) == 1
            assert serve.process.wait(timeout=40) == 0
        finally:
            serve.stop(signal.SIGKILL)


def test_a_second_sigterm_ends_a_log_follow_that_would_outlive_the_grace_period(
    raygate_up: RaygateUp, tmp_path: Path
) -> None:
    up = raygate_up
    (port,) = ports(1)
    # A job that keeps its log stream open far longer than any shutdown grace period.
    status, body, _ = http(
        ray_dashboard(up) + "api/jobs/",
        method="POST",
        token=ray_token(up),
        data=json.dumps({"entrypoint": FOLLOWED_JOB}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert status == 200, body
    job_id = json.loads(body)["submission_id"]
    follower = None
    with fake_api() as api:
        fake = api.fake
        fake.use_rbac(load_manifests(GUIDE_RBAC))
        args = kube_rbac_proxy_args(up, tmp_path, fake, port=port)
        serve = start_serve(args, serve_env(up), port=port)
        try:
            token = fake.add_service_account_token(NAMESPACE, "ray-user")
            follower = subprocess.Popen(
                [executable("ray"), "job", "logs", "--follow", "--address", serve.address, job_id],
                env=ray_cli_env(up, token),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            output: list[str] = []
            threading.Thread(target=lambda: output.extend(follower.stdout), daemon=True).start()
            assert wait_until(lambda: "following" in "".join(output), timeout=90), (
                "".join(output) + serve.logs()
            )

            serve.process.send_signal(signal.SIGTERM)
            with pytest.raises(subprocess.TimeoutExpired):
                serve.process.wait(timeout=1)  # the stream in flight holds the shutdown
            assert not listening(port)
            serve.process.send_signal(signal.SIGTERM)
            assert serve.process.wait(timeout=15) == 0
            assert "closing 1 request(s) still in flight" in serve.logs()
            # The follower sees its stream end instead of hanging.
            follower.wait(timeout=30)
        finally:
            serve.stop(signal.SIGKILL)
            if follower is not None and follower.poll() is None:
                follower.kill()
            http(ray_dashboard(up) + f"api/jobs/{job_id}/stop", method="POST", token=ray_token(up))
