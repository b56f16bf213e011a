"""The Serve door with a real Ray head, a real Serve app deployed through the gateway by
`ray job submit`, and the real `openai` client."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import RaygateUp, executable, free_port
from tests.helpers import http, listening, wait_until
from tests.integration.test_ray_gateway import ray_job_env

pytestmark = pytest.mark.ray

APP_DIR = Path(__file__).parent / "serve_app"
ALICE = "system:serviceaccount:default:alice"


@pytest.fixture(scope="module")
def deployed(raygate_up: RaygateUp) -> RaygateUp:
    """Applications `chat` and `admin` deployed through the gateway; alice may call `chat`."""
    token = raygate_up.grant_cluster("serve-deployer", "*", cluster=None)
    result = raygate_up.raygate("apply", "-f", "examples/serve-rbac.yaml")
    assert result.returncode == 0, result.stderr
    env = ray_job_env(raygate_up, token)
    submit = raygate_up.run(
        "ray",
        "job",
        "submit",
        "--address",
        raygate_up.address,
        "--working-dir",
        str(APP_DIR),
        "--",
        "python",
        "openai_app.py",
        "chat",
        "admin",
        env=env,
        timeout=300,
    )
    assert submit.returncode == 0, submit.stdout + submit.stderr
    assert "deployed: chat, admin" in submit.stdout
    return raygate_up


def chat_client(up: RaygateUp, app: str, api_key: str, **kwargs: object) -> openai.OpenAI:
    assert up.serve_address is not None
    return openai.OpenAI(base_url=f"{up.serve_address}/{app}/v1", api_key=api_key, **kwargs)


def say(client: openai.OpenAI, text: str) -> str:
    reply = client.chat.completions.create(
        model="test", messages=[{"role": "user", "content": text}]
    )
    return reply.choices[0].message.content or ""


def test_a_raygate_token_is_an_openai_api_key(deployed: RaygateUp) -> None:
    client = chat_client(deployed, "chat", deployed.token("alice"))
    assert say(client, "hello") == f"chat heard hello from {ALICE}"
    assert [m.id for m in client.models.list()] == ["chat"]


def test_streamed_answers_pass_chunk_by_chunk(deployed: RaygateUp) -> None:
    client = chat_client(deployed, "chat", deployed.token("alice"))
    started = time.monotonic()
    arrivals: list[tuple[float, str]] = []
    stream = client.chat.completions.create(
        model="test", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    for event in stream:
        if event.choices and event.choices[0].delta.content:
            arrivals.append((time.monotonic() - started, event.choices[0].delta.content))
    assert "".join(text for _, text in arrivals) == f"chat heard hi from {ALICE}"
    # The app sends a word every 0.2 s: buffered, they would arrive together at the end.
    assert arrivals[-1][0] - arrivals[0][0] > 0.5


def test_the_same_user_is_allowed_one_application_and_refused_another(
    deployed: RaygateUp,
) -> None:
    token = deployed.token("alice")
    assert say(chat_client(deployed, "chat", token), "ok") == f"chat heard ok from {ALICE}"
    with pytest.raises(openai.PermissionDeniedError) as refused:
        say(chat_client(deployed, "admin", token), "let me in")
    assert refused.value.status_code == 403
    message = str(refused.value)
    assert f'User "{ALICE}" cannot create resource "applications"' in message
    assert "serve.ray.io" in message and "admin" in message


def test_bad_and_missing_keys_are_authentication_errors(deployed: RaygateUp) -> None:
    with pytest.raises(openai.AuthenticationError) as bad:
        say(chat_client(deployed, "chat", "not-a-token"), "hi")
    assert bad.value.status_code == 401
    assert "raygate: Unauthorized: the token is not valid" in str(bad.value)
    assert deployed.serve_address is not None
    status, body, headers = http(deployed.serve_address + "/chat/v1/models")
    assert status == 401
    assert headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert json.loads(body)["error"]["type"] == "authentication_error"


def test_a_secret_bound_key_is_revoked_by_deleting_the_secret(deployed: RaygateUp) -> None:
    assert deployed.raygate("create", "secret", "generic", "alice-key").returncode == 0
    result = deployed.raygate(
        "create",
        "token",
        "alice",
        "--bound-object-kind",
        "Secret",
        "--bound-object-name",
        "alice-key",
        "--duration",
        "8760h",
    )
    assert result.returncode == 0, result.stderr
    client = chat_client(deployed, "chat", result.stdout.strip(), max_retries=0)
    assert say(client, "before") == f"chat heard before from {ALICE}"
    assert deployed.raygate("delete", "secret", "alice-key").returncode == 0
    deleted = time.monotonic()

    def refused() -> bool:
        try:
            say(client, "after")
        except openai.AuthenticationError:
            return True
        return False

    assert wait_until(refused, timeout=5, interval=0.05)
    assert time.monotonic() - deleted < 1.5


@pytest.fixture()
def rate_limited_gateway(deployed: RaygateUp, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`raygate serve` in front of the same Ray, with a Serve door limited to 2 calls a second
    per identity and application; (its Serve address, its metrics URL)."""
    info = deployed.ray_info()
    ports = info["ports"]
    assert isinstance(ports, dict)
    listen, serve_port, admin_port = free_port(), free_port(), free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(
        json.dumps(
            {
                "listen": {"address": f"127.0.0.1:{listen}"},
                "upstream": {
                    "url": info["dashboard"],
                    "tokenEnv": None,
                    "tokenFile": str(deployed.state / "ray-auth-token"),
                },
                "authentication": {"mode": ["embedded"]},
                "authorization": {
                    "mode": "embedded",
                    "resourceAttributes": {
                        "namespace": "default",
                        "apiGroup": "ray.io",
                        "resource": "rayclusters",
                        "name": "ray-cluster-with-auth",
                    },
                },
                "authHeader": {"fieldsEnabled": True},
                "proxyEndpoints": {"port": admin_port},
                "stateDir": str(deployed.state),
            }
        )
    )
    process = subprocess.Popen(
        [
            executable("raygate"),
            "serve",
            "--config",
            str(config),
            "--serve-listen",
            f"127.0.0.1:{serve_port}",
            "--serve-upstream",
            f"http://127.0.0.1:{ports['serve']}",
            "--serve-rate-limit",
            "2/s",
        ],
        env=deployed.env(RAYGATE_AUDIT_LOG=str(tmp_path / "audit.log")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        metrics = f"http://127.0.0.1:{admin_port}/metrics"
        assert wait_until(lambda: listening(admin_port) and listening(serve_port), timeout=30)
        yield f"http://localhost:{serve_port}", metrics
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_rate_limit_answers_429_with_retry_after(
    deployed: RaygateUp, rate_limited_gateway: tuple[str, str]
) -> None:
    serve_address, metrics = rate_limited_gateway
    client = openai.OpenAI(
        base_url=f"{serve_address}/chat/v1", api_key=deployed.token("alice"), max_retries=0
    )
    assert say(client, "one") == f"chat heard one from {ALICE}"
    assert say(client, "two") == f"chat heard two from {ALICE}"
    with pytest.raises(openai.RateLimitError) as limited:
        say(client, "three")
    assert limited.value.status_code == 429
    assert int(limited.value.response.headers["Retry-After"]) >= 1
    time.sleep(0.6)
    assert say(client, "later") == f"chat heard later from {ALICE}"
    _, body, _ = http(metrics)
    assert 'raygate_door_calls_total{door="serve",method="chat",outcome="200"} 3.0' in body
    assert 'raygate_door_calls_total{door="serve",method="chat",outcome="rate-limited"} 1.0' in body
