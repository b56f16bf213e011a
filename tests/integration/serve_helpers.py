"""`raygate serve` as a real subprocess in front of the session's Ray head, with the fake
Kubernetes API server (tests/kube/fakeapi.py) as its authority.

The fake runs in the test process, on an event loop of its own in a background thread, so the
subprocess reaches it on loopback while the test stays synchronous: `FakeThread` starts it and
lets a test stop, restart and slow it. `start_serve` runs `raygate serve ARGS` and waits for its
"serving on" line; `Serve.stop` sends SIGTERM and returns the exit status.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raygate.objects import parse_object
from tests.conftest import REPO, RaygateUp, executable, free_port
from tests.helpers import http, listening, wait_until  # noqa: F401 - re-exported for the serve tests
from tests.kube.fakeapi import FakeKubeAPI, SchemaViolation

DATA = REPO / "tests" / "data"
KUBE_RBAC_PROXY_SAMPLE = DATA / "ray-cluster.auth.kube-rbac-proxy.yaml"
K8S_AUTH_SAMPLE = DATA / "ray-cluster.kubernetes.auth.yaml"
GUIDE_RBAC = REPO / "examples" / "ray-cluster-rbac.yaml"
CLUSTER_NAME = "ray-cluster-with-auth"
NAMESPACE = "default"
ENTRYPOINT = ["--", "python", "-c", "import ray; ray.init(); print(ray.cluster_resources())"]
SERVE_READY_TIMEOUT = 60.0

# -- the fake API server on a thread --------------------------------------------------------------


class FakeThread:
    """A FakeKubeAPI served by its own event loop on a daemon thread.

    Plain attributes of `fake` (users, authorize, delay, fail_with, calls) are read by its
    handlers on each request, so a test may set them from its own thread.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fake = FakeKubeAPI(**kwargs)
        self.run(self.fake.start())

    def run(self, coroutine: Any, timeout: float = 15) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self.run(self.fake.stop())

    def start(self) -> None:
        """Listen again on the same port."""
        self.run(self.fake.start())

    def close(self) -> None:
        try:
            self.run(self.fake.stop())
            self.run(_cancel_pending())  # e.g. a review the fake was told to delay
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()


async def _cancel_pending() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@contextmanager
def fake_api(**kwargs: Any) -> Iterator[FakeThread]:
    """A running fake (in a thread); fails the test on exit if any body broke the schemas."""
    runner = FakeThread(**kwargs)
    try:
        yield runner
    finally:
        runner.close()
    if runner.fake.schema_errors:
        raise SchemaViolation("; ".join(runner.fake.schema_errors))


def reviews(fake: FakeKubeAPI, kind: str) -> list[dict[str, Any]]:
    """The bodies of kind `kind` (TokenReview, SubjectAccessReview) the fake received."""
    return [body for body in list(fake.received) if body.get("kind") == kind]


def load_manifests(path: Path, **only: str) -> list[Any]:
    """The objects of a YAML file, parsed with raygate.objects; `kind=`/`name=` pick some."""
    objects = []
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc:
            continue
        if "kind" in only and doc.get("kind") != only["kind"]:
            continue
        if "name" in only and doc.get("metadata", {}).get("name") != only["name"]:
            continue
        objects.append(parse_object(doc))
    return objects


# -- the sample's sidecar --------------------------------------------------------------------------


@dataclass(frozen=True)
class SidecarSample:
    args: list[str]
    config_file: str  # the ConfigMap's config-file.yaml, as written


def sample_sidecar(path: Path = KUBE_RBAC_PROXY_SAMPLE) -> SidecarSample:
    """The kube-rbac-proxy container's args and the ConfigMap's config-file.yaml."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    cluster = next(d for d in docs if d["kind"] == "RayCluster")
    containers = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    sidecar = next(c for c in containers if c["name"] == "kube-rbac-proxy")
    return SidecarSample(list(sidecar["args"]), config_map["data"]["config-file.yaml"])


def replace_flag(args: Sequence[str], name: str, value: str) -> list[str]:
    """`args` with `--name=...` replaced by `--name=value` (it must be there)."""
    prefix = f"--{name}="
    assert any(a.startswith(prefix) for a in args), f"the sample has no {prefix}"
    return [prefix + value if a.startswith(prefix) else a for a in args]


# -- Ray ---------------------------------------------------------------------------------------------


def ray_dashboard(up: RaygateUp) -> str:
    ports = up.ray_info()["ports"]
    assert isinstance(ports, dict)
    return f"http://127.0.0.1:{ports['dashboard']}/"


def ray_token(up: RaygateUp) -> str:
    return (up.state / "ray-auth-token").read_text().strip()


def ray_job_ids(up: RaygateUp) -> set[str]:
    """Every job Ray knows, asked of Ray directly with its own token."""
    status, body, _ = http(ray_dashboard(up) + "api/jobs/", token=ray_token(up))
    assert status == 200, body
    return {job["submission_id"] for job in json.loads(body) if job.get("submission_id")}


def serve_env(up: RaygateUp, *, with_ray_token: bool = True, **extra: str) -> dict[str, str]:
    """The sidecar's environment: Ray's token as KubeRay's token mode sets it."""
    env = up.env(**extra)
    env.pop("RAYGATE_STATE", None)
    if with_ray_token:
        env["RAY_AUTH_TOKEN"] = ray_token(up)
    return env


# -- raygate serve ---------------------------------------------------------------------------------


@dataclass
class Serve:
    process: subprocess.Popen[str]
    port: int
    admin_port: int | None
    scheme: str = "http"
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        assert self.admin_port is not None
        return f"http://127.0.0.1:{self.admin_port}"

    def logs(self) -> str:
        return "".join(self.stderr)

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.stdout) if line.startswith("{")]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 45) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(
                    f"raygate serve ignored signal {sig}:\n{self.logs()}"
                ) from None
        return self.process.returncode


def _drain(stream: Any, sink: list[str]) -> None:
    for line in stream:
        sink.append(line)


def start_serve(
    args: Sequence[str],
    env: dict[str, str],
    *,
    port: int,
    admin_port: int | None = None,
    scheme: str = "http",
    cwd: Path | None = None,
) -> Serve:
    """`raygate serve ARGS`, once it logged that it serves (it then listens on `port`)."""
    process = subprocess.Popen(
        [executable("raygate"), "serve", *args],
        env=env,
        cwd=cwd or REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    serve = Serve(process, port, admin_port, scheme)
    for stream, sink in ((process.stdout, serve.stdout), (process.stderr, serve.stderr)):
        threading.Thread(target=_drain, args=(stream, sink), daemon=True).start()
    deadline = time.monotonic() + SERVE_READY_TIMEOUT
    while time.monotonic() < deadline:
        if "serving on" in serve.logs():
            return serve
        if process.poll() is not None:
            time.sleep(0.2)  # let the reader threads take the last lines
            raise AssertionError(f"raygate serve exited with {process.returncode}:\n{serve.logs()}")
        time.sleep(0.05)
    serve.stop(signal.SIGKILL)
    raise AssertionError(f"raygate serve did not start:\n{serve.logs()}")


@contextmanager
def serving(args: Sequence[str], env: dict[str, str], **kwargs: Any) -> Iterator[Serve]:
    serve = start_serve(args, env, **kwargs)
    try:
        yield serve
    finally:
        serve.stop()


@contextmanager
def guide_sidecar(up: RaygateUp, tmp: Path) -> Iterator[tuple[FakeThread, Serve]]:
    """The guide's setup: a fake API server with the guide's RBAC, and `raygate serve` with
    the sample's sidecar args (plus a proxy-endpoints port) in front of the session's Ray."""
    port, admin = ports(2)
    with fake_api() as api:
        api.fake.use_rbac(load_manifests(GUIDE_RBAC))
        args = kube_rbac_proxy_args(up, tmp, api.fake, port=port, admin_port=admin)
        with serving(args, serve_env(up), port=port, admin_port=admin) as serve:
            yield api, serve


def kube_rbac_proxy_args(
    up: RaygateUp,
    tmp: Path,
    fake: FakeKubeAPI,
    *,
    port: int,
    admin_port: int | None = None,
    config_file: str | None = None,
    kubeconfig: Path | None = None,
) -> list[str]:
    """The sample's sidecar args with only what a test must change: listen address, upstream,
    config file path (same content unless given), plus --kubeconfig (and the admin port)."""
    sample = sample_sidecar()
    path = tmp / "config-file.yaml"
    path.write_text(sample.config_file if config_file is None else config_file)
    args = replace_flag(sample.args, "insecure-listen-address", f"127.0.0.1:{port}")
    args = replace_flag(args, "upstream", ray_dashboard(up))
    args = replace_flag(args, "config-file", str(path))
    kubeconfig = kubeconfig or fake.write_kubeconfig(tmp / "kubeconfig")
    args.append(f"--kubeconfig={kubeconfig}")
    if admin_port is not None:
        args.append(f"--proxy-endpoints-port={admin_port}")
    return args


# -- HTTP --------------------------------------------------------------------------------------------


def ports(count: int) -> list[int]:
    """`count` distinct free ports."""
    chosen: set[int] = set()
    while len(chosen) < count:
        chosen.add(free_port())
    return sorted(chosen)


def ray_cli_env(up: RaygateUp, token: str | None) -> dict[str, str]:
    env = up.env()
    if token is not None:
        env["RAY_JOB_HEADERS"] = json.dumps({"Authorization": f"Bearer {token}"})
    return env
