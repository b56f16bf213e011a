"""`raygate serve` keeps the API server safe and fails closed: caches and single flight measured
at the fake, 503 with nothing forwarded while the API server is down or slow, recovery without a
restart, and Ray's token as the only upstream credential."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

import aiohttp
import yaml

from tests.conftest import RaygateUp
from tests.kube.fakeapi import SUBJECT_ACCESS_REVIEWS, TOKEN_REVIEWS

from .serve_helpers import (
    GUIDE_RBAC,
    NAMESPACE,
    fake_api,
    guide_sidecar,
    http,
    kube_rbac_proxy_args,
    load_manifests,
    ports,
    ray_dashboard,
    ray_job_ids,
    sample_sidecar,
    serve_env,
    serving,
    wait_until,
)

JOB = json.dumps({"entrypoint": "echo must-not-run"}).encode()
JSON = {"Content-Type": "application/json"}


async def _flood(url: str, tokens: list[str], concurrency: int) -> list[int]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(token: str) -> int:
            headers = {"Authorization": f"Bearer {token}"}
            async with session.get(url, headers=headers) as response:
                await response.read()
                return response.status

        return await asyncio.gather(*(one(t) for t in tokens))


def flood(url: str, tokens: list[str], concurrency: int = 50) -> list[int]:
    return asyncio.run(_flood(url, tokens, concurrency))


def test_bad_token_flood_and_concurrent_new_token_cost_one_review_each(
    raygate_up: RaygateUp, tmp_path: Path
) -> None:
    up = raygate_up
    with guide_sidecar(up, tmp_path) as (api, serve):
        fake = api.fake
        url = serve.address + "/api/version"

        # 500 requests, 20 distinct tokens the API server does not know.
        bad = [f"bad-{i}-{secrets.token_hex(8)}" for i in range(20)]
        statuses = flood(url, [bad[i % 20] for i in range(500)])
        assert statuses == [401] * 500
        assert fake.calls[TOKEN_REVIEWS] <= 20
        assert fake.calls[SUBJECT_ACCESS_REVIEWS] == 0

        # 50 concurrent requests with one new valid token, while the API server takes its
        # time: one TokenReview and one SubjectAccessReview between them.
        reviews_before = fake.calls[TOKEN_REVIEWS]
        token = fake.add_service_account_token(NAMESPACE, "ray-user")
        fake.delay = 0.5
        statuses = flood(url, [token] * 50)
        fake.delay = 0
        assert statuses == [200] * 50
        assert fake.calls[TOKEN_REVIEWS] - reviews_before == 1
        assert fake.calls[SUBJECT_ACCESS_REVIEWS] == 1

        status, metrics, _ = http(serve.admin + "/metrics")
        assert status == 200
        assert 'raygate_requests_total{code="401"} 500.0' in metrics
        assert 'raygate_requests_total{code="200"} 50.0' in metrics


def test_api_server_down_means_503_nothing_forwarded_and_recovery_without_restart(
    raygate_up: RaygateUp, tmp_path: Path
) -> None:
    up = raygate_up
    with guide_sidecar(up, tmp_path) as (api, serve):
        fake = api.fake
        assert http(serve.admin + "/readyz")[0] == 200
        jobs_before = ray_job_ids(up)
        api.stop()

        # A token raygate has not seen before: nobody can say who it is.
        token = fake.add_service_account_token(NAMESPACE, "ray-user")
        status, body, headers = http(serve.address + "/api/version", token=token)
        assert status == 503, body
        assert int(headers["Retry-After"]) > 0
        assert "nothing was forwarded" in body
        status, _, headers = http(
            serve.address + "/api/jobs/", method="POST", token=token, data=JOB, headers=JSON
        )
        assert status == 503 and "Retry-After" in headers
        assert ray_job_ids(up) == jobs_before

        status, body, _ = http(serve.admin + "/readyz")
        assert status == 503
        assert "kubernetes API server" in body
        assert "authentication backend unavailable" in serve.logs()
        assert token not in serve.logs()

        # The API server comes back on the same address: raygate recovers by itself.
        api.start()
        assert wait_until(
            lambda: http(serve.address + "/api/version", token=token)[0] == 200, timeout=15
        ), serve.logs()
        assert http(serve.admin + "/readyz")[0] == 200
        assert serve.process.poll() is None


def test_raygates_own_token_file_is_followed_when_it_rotates(
    raygate_up: RaygateUp, tmp_path: Path
) -> None:
    # A projected service-account token (kubeconfig tokenFile, or the in-cluster token) is
    # rewritten by the kubelet; the API server stops taking the old one.
    up = raygate_up
    (port,) = ports(1)
    with fake_api() as api:
        fake = api.fake
        fake.use_rbac(load_manifests(GUIDE_RBAC))
        token_file = tmp_path / "token"
        token_file.write_text(fake.gateway_token)
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", token_file=token_file)
        args = kube_rbac_proxy_args(up, tmp_path, fake, port=port, kubeconfig=kubeconfig)
        with serving(args, serve_env(up), port=port) as serve:
            first = fake.add_service_account_token(NAMESPACE, "ray-user")
            assert http(serve.address + "/api/version", token=first)[0] == 200

            rotated = secrets.token_urlsafe(24)
            fake.gateway_tokens = {rotated}
            scratch = tmp_path / "token.new"
            scratch.write_text(rotated)
            scratch.replace(token_file)

            second = fake.add_service_account_token(NAMESPACE, "ray-user")
            status, body, _ = http(serve.address + "/api/version", token=second)
            assert status == 200, body + serve.logs()
            assert fake.rejected_credentials == 0


def test_api_server_slower_than_the_backend_timeout_or_failing_means_503(
    raygate_up: RaygateUp, tmp_path: Path
) -> None:
    up = raygate_up
    (port,) = ports(1)
    resource_attributes = yaml.safe_load(sample_sidecar().config_file)["authorization"]
    with fake_api() as api:
        fake = api.fake
        fake.use_rbac(load_manifests(GUIDE_RBAC))
        config = tmp_path / "gateway.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "listen": {"address": f"127.0.0.1:{port}"},
                    "upstream": {"url": ray_dashboard(up)},
                    "authentication": {"mode": "kubernetes"},
                    "authorization": {"mode": "kubernetes", **resource_attributes},
                    "kubeconfig": str(fake.write_kubeconfig(tmp_path / "kubeconfig")),
                    "limits": {"backendTimeout": "1s"},
                }
            )
        )
        with serving(["--config", str(config)], serve_env(up), port=port) as serve:
            jobs_before = ray_job_ids(up)
            token = fake.add_service_account_token(NAMESPACE, "ray-user")
            fake.delay = 4
            status, body, headers = http(
                serve.address + "/api/jobs/", method="POST", token=token, data=JOB, headers=JSON
            )
            assert status == 503, body
            assert "Retry-After" in headers
            fake.delay = 0
            # An API server answering errors is no better.
            fake.fail_with = 500
            status, body, headers = http(
                serve.address + "/api/jobs/", method="POST", token=token, data=JOB, headers=JSON
            )
            assert status == 503, body
            assert "Retry-After" in headers
            # The reason is in raygate's log, not in the body (it names the API server).
            assert "answered 500" not in body
            assert wait_until(lambda: "answered 500" in serve.logs(), timeout=5)
            fake.fail_with = None
            assert ray_job_ids(up) == jobs_before
            # Neither the timeout nor the error was remembered as an answer.
            status, body, _ = http(serve.address + "/api/version", token=token)
            assert status == 200, body


def test_without_rays_token_ray_refuses_and_raygate_is_not_ready(
    raygate_up: RaygateUp, tmp_path: Path
) -> None:
    # The dashboard only takes Ray's token, so every success in these tests already shows that
    # raygate sends it. Without it, the caller's allowed request still cannot get through.
    up = raygate_up
    port, admin = ports(2)
    with fake_api() as api:
        fake = api.fake
        fake.use_rbac(load_manifests(GUIDE_RBAC))
        args = kube_rbac_proxy_args(up, tmp_path, fake, port=port, admin_port=admin)
        env = serve_env(up, with_ray_token=False)
        with serving(args, env, port=port, admin_port=admin) as serve:
            jobs_before = ray_job_ids(up)
            token = fake.add_service_account_token(NAMESPACE, "ray-user")
            status, _, _ = http(serve.address + "/api/version", token=token)
            assert status in (401, 403)
            status, _, _ = http(
                serve.address + "/api/jobs/", method="POST", token=token, data=JOB, headers=JSON
            )
            assert status in (401, 403)
            assert ray_job_ids(up) == jobs_before
            # The probe says why, so the pod is not ready instead of failing every request.
            status, body, _ = http(serve.admin + "/readyz")
            assert status == 503
            assert "RAY_AUTH_TOKEN" in body
            # stderr is read by a thread: give the line a moment to arrive.
            assert wait_until(
                lambda: "not ready: upstream: Ray answered 401" in serve.logs(), timeout=5
            ), serve.logs()
