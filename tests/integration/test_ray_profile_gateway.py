"""The `ray` profile's job ownership through a real gateway, in front of a fake Ray Jobs API.

The fake keeps jobs in memory and records what reached it, so each test can say what Ray saw:
the stamped submission, a stop that never arrived, the gateway's own owner look-ups.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from raygate.authz.attributes import AttributesConfig
from raygate.deploy.kuberay import ray_profile_cluster_roles
from raygate.errors import BackendUnavailable
from raygate.objects import parse_object
from raygate.pipeline import profile_for
from raygate.pipeline.ownership import MAX_SUBMISSION_BYTES, SUBMITTED_BY
from raygate.store.sqlite import ObjectStore
from tests.integration.gateway_helpers import (
    NAMESPACE,
    UPSTREAM_TOKEN,
    Stack,
    bearer,
    client_session,
    gateway_stack,
    serve,
)

RAY_PROFILE = AttributesConfig.model_validate(
    {
        "profile": "ray",
        "resourceAttributes": {
            "namespace": NAMESPACE,
            "apiGroup": "ray.io",
            "apiVersion": "v1",
            "resource": "rayclusters",
            "name": "ray-cluster-with-auth",
        },
    }
)
ROLES = {
    "alice": "raygate-submitter",
    "bob": "raygate-submitter",
    "viewer": "raygate-viewer",
    "admin": "raygate-admin",
}


def user(name: str) -> str:
    return f"system:serviceaccount:{NAMESPACE}:{name}"


@dataclass
class Received:
    method: str
    path: str
    authorization: str | None
    body: bytes
    content_length: int | None


@dataclass
class FakeRayJobs:
    """Ray's Jobs API (job_head.py) in memory."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/jobs/", self._submit)
        app.router.add_get("/api/jobs/", self._list)
        app.router.add_get("/api/jobs/{id}", self._get)
        app.router.add_get("/api/jobs/{id}/logs", self._logs)
        app.router.add_post("/api/jobs/{id}/stop", self._stop)
        app.router.add_delete("/api/jobs/{id}", self._delete)
        return app

    def seen(self, method: str, path: str) -> list[Received]:
        return [r for r in self.received if (r.method, r.path) == (method, path)]

    def add(self, submission_id: str, metadata: dict[str, str] | None) -> None:
        self.jobs[submission_id] = {
            "type": "SUBMISSION",
            "submission_id": submission_id,
            "job_id": None,
            "status": "RUNNING",
            "entrypoint": "sleep 600",
            "metadata": metadata,
        }

    async def _record(self, request: web.Request) -> bytes:
        body = await request.read()
        self.received.append(
            Received(
                request.method,
                request.raw_path,
                request.headers.get("Authorization"),
                body,
                request.content_length,
            )
        )
        return body

    async def _submit(self, request: web.Request) -> web.Response:
        submission = json.loads(await self._record(request))
        submission_id = submission.get("submission_id") or f"raysubmit_{len(self.received)}"
        if submission_id in self.jobs:
            return web.Response(status=400, text=f"Job with submission_id {submission_id} exists")
        self.add(submission_id, submission.get("metadata"))
        return web.json_response({"job_id": submission_id, "submission_id": submission_id})

    async def _list(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response(list(self.jobs.values()))

    def _job(self, request: web.Request) -> dict[str, Any] | None:
        return self.jobs.get(request.match_info["id"])

    async def _get(self, request: web.Request) -> web.Response:
        await self._record(request)
        job = self._job(request)
        if job is None:
            return web.Response(status=404, text="Job does not exist")
        return web.json_response(job)

    async def _logs(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"logs": "hello\n"})

    async def _stop(self, request: web.Request) -> web.Response:
        await self._record(request)
        job = self._job(request)
        if job is None:
            return web.Response(status=404, text="Job does not exist")
        job["status"] = "STOPPED"
        return web.json_response({"stopped": True})

    async def _delete(self, request: web.Request) -> web.Response:
        await self._record(request)
        if self.jobs.pop(request.match_info["id"], None) is None:
            return web.Response(status=404, text="Job does not exist")
        return web.json_response({"deleted": True})


def _binding(account: str, role: str) -> Any:
    return parse_object(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"{account}-{role}", "namespace": NAMESPACE},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}],
        }
    )


@dataclass
class RayStack:
    stack: Stack
    ray: FakeRayJobs
    client: aiohttp.ClientSession

    async def call(
        self, account: str, method: str, path: str, **kwargs: Any
    ) -> tuple[int, str]:
        headers = {**bearer(self.stack.token(account)), **kwargs.pop("headers", {})}
        async with self.client.request(
            method, self.stack.url.with_path(path, encoded=True), headers=headers, **kwargs
        ) as response:
            return response.status, await response.text()

    async def submit(self, account: str, **submission: Any) -> str:
        status, body = await self.call(
            account, "POST", "/api/jobs/", json={"entrypoint": "sleep 600", **submission}
        )
        assert status == 200, body
        return json.loads(body)["submission_id"]


@pytest.fixture
def ray_stack(tmp_path: Path):
    """An async context: the gateway in the ray profile, users bound to the profile's roles."""

    @contextlib.asynccontextmanager
    async def start() -> AsyncIterator[RayStack]:
        ray = FakeRayJobs()
        async with serve(ray.app()) as ray_url:
            async with gateway_stack(
                tmp_path,
                accounts=dict.fromkeys(ROLES),
                upstream_url=ray_url,
                profile=profile_for(RAY_PROFILE),
            ) as stack:
                with ObjectStore.open(tmp_path) as store:
                    objects = [parse_object(role) for role in ray_profile_cluster_roles()]
                    store.apply(objects + [_binding(a, r) for a, r in ROLES.items()])
                async with client_session() as client:
                    yield RayStack(stack, ray, client)

    return start


# -- submissions ----------------------------------------------------------------------------------


def test_submission_is_stamped_with_the_caller_over_what_the_client_sent(ray_stack) -> None:
    async def run() -> None:
        async with ray_stack() as s:
            submission_id = await s.submit(
                "alice", metadata={SUBMITTED_BY: user("bob"), "team": "ml"}
            )
            [seen] = s.ray.seen("POST", "/api/jobs/")
            submitted = json.loads(seen.body)
            assert submitted["metadata"] == {"team": "ml", SUBMITTED_BY: user("alice")}
            assert submitted["entrypoint"] == "sleep 600"
            assert seen.content_length == len(seen.body)
            assert seen.authorization == f"Bearer {UPSTREAM_TOKEN}"
            assert s.ray.jobs[submission_id]["metadata"][SUBMITTED_BY] == user("alice")

    asyncio.run(run())


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        (b'{"entrypoint": ', 400, "not valid JSON"),
        (b'["echo"]', 400, "must be a JSON object"),
        (b'{"entrypoint": "e", "metadata": "x"}', 400, "metadata must be an object"),
        (
            b'{"entrypoint": "' + b"x" * MAX_SUBMISSION_BYTES + b'"}',
            413,
            f"at most {MAX_SUBMISSION_BYTES} bytes",
        ),
    ],
)
def test_submissions_ray_could_not_read_are_refused_and_not_forwarded(
    ray_stack, body: bytes, status: int, text: str
) -> None:
    async def run() -> None:
        async with ray_stack() as s:
            got, answer = await s.call(
                "alice", "POST", "/api/jobs/", data=body,
                headers={"Content-Type": "application/json"},
            )
            assert (got, text in answer) == (status, True), answer
            assert s.ray.received == []

    asyncio.run(run())


def test_a_chunked_submission_over_the_limit_is_413(ray_stack) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"entrypoint": "'
        for _ in range(5):
            yield b"x" * (MAX_SUBMISSION_BYTES // 4)
        yield b'"}'

    async def run() -> None:
        async with ray_stack() as s:
            status, _ = await s.call("alice", "POST", "/api/jobs/", data=chunks())
            assert status == 413
            assert s.ray.received == []

    asyncio.run(run())


def test_a_viewer_cannot_submit(ray_stack) -> None:
    async def run() -> None:
        async with ray_stack() as s:
            status, body = await s.call("viewer", "POST", "/api/jobs/", json={"entrypoint": "e"})
            assert status == 403
            assert 'cannot create resource "rayclusters/jobs"' in body
            assert s.ray.received == []

    asyncio.run(run())


# -- acting on one job ----------------------------------------------------------------------------


def test_someone_elses_job_needs_alljobs(ray_stack) -> None:
    async def run() -> None:
        async with ray_stack() as s:
            bobs = await s.submit("bob")
            status, body = await s.call("alice", "POST", f"/api/jobs/{bobs}/stop")
            assert status == 403
            assert (
                f'User "{user("alice")}" cannot stop resource "rayclusters/alljobs" '
                'in API group "ray.io" in the namespace "default"'
            ) in body
            for method, path in [
                ("GET", f"/api/jobs/{bobs}"),
                ("GET", f"/api/jobs/{bobs}/logs"),
                ("DELETE", f"/api/jobs/{bobs}"),
            ]:
                assert (await s.call("alice", method, path))[0] == 403
            assert s.ray.seen("POST", f"/api/jobs/{bobs}/stop") == []
            assert bobs in s.ray.jobs

            # the admin may act on everyone's jobs, the submitter on their own
            assert (await s.call("admin", "GET", f"/api/jobs/{bobs}/logs"))[0] == 200
            assert (await s.call("bob", "GET", f"/api/jobs/{bobs}"))[0] == 200
            assert (await s.call("admin", "POST", f"/api/jobs/{bobs}/stop"))[0] == 200
            assert s.ray.jobs[bobs]["status"] == "STOPPED"
            assert (await s.call("bob", "DELETE", f"/api/jobs/{bobs}"))[0] == 200
            assert bobs not in s.ray.jobs

    asyncio.run(run())


def test_the_owner_is_asked_of_ray_with_rays_token(ray_stack) -> None:
    async def run() -> None:
        async with ray_stack() as s:
            # submitted through another gateway: this one learns the owner from Ray
            s.ray.add("raysubmit_elsewhere", {SUBMITTED_BY: user("alice")})
            status, body = await s.call("alice", "POST", "/api/jobs/raysubmit_elsewhere/stop")
            assert status == 200, body
            [lookup] = s.ray.seen("GET", "/api/jobs/raysubmit_elsewhere")
            assert lookup.authorization == f"Bearer {UPSTREAM_TOKEN}"
            assert (await s.call("bob", "POST", "/api/jobs/raysubmit_elsewhere/stop"))[0] == 403

    asyncio.run(run())


@pytest.mark.parametrize("metadata", [None, {}, {"owner": "alice"}])
def test_a_job_without_the_stamp_is_someone_elses(ray_stack, metadata) -> None:
    async def run() -> None:
        async with ray_stack() as s:
            s.ray.add("raysubmit_before", metadata)
            status, body = await s.call("alice", "GET", "/api/jobs/raysubmit_before")
            assert status == 403 and "rayclusters/alljobs" in body
            assert "without raygate's submitter stamp" in body
            assert (await s.call("admin", "GET", "/api/jobs/raysubmit_before"))[0] == 200

    asyncio.run(run())


def test_an_unknown_job_is_404_and_nothing_is_forwarded(ray_stack) -> None:
    async def run() -> None:
        async with ray_stack() as s:
            status, body = await s.call("alice", "POST", "/api/jobs/raysubmit_nope/stop")
            assert status == 404 and "raysubmit_nope" in body
            assert s.ray.seen("POST", "/api/jobs/raysubmit_nope/stop") == []

    asyncio.run(run())


def test_a_reused_submission_id_belongs_to_its_new_submitter(ray_stack) -> None:
    async def run() -> None:
        async with ray_stack() as s:
            await s.submit("alice", submission_id="nightly")
            assert (await s.call("alice", "DELETE", "/api/jobs/nightly"))[0] == 200
            await s.submit("bob", submission_id="nightly")
            assert (await s.call("alice", "POST", "/api/jobs/nightly/stop"))[0] == 403
            assert (await s.call("bob", "POST", "/api/jobs/nightly/stop"))[0] == 200

    asyncio.run(run())


def test_an_encoded_job_path_needs_alljobs_and_proxy(ray_stack) -> None:
    async def run() -> None:
        async with ray_stack() as s:
            alices = await s.submit("alice")
            # Ray's router would read job "x/.." here; raygate cannot trust a job id in it
            status, body = await s.call("alice", "POST", f"/api/jobs/{alices}%2F../stop")
            assert status == 403 and "rayclusters/alljobs" in body
            assert [r.method for r in s.ray.received] == ["POST"]  # the submission only

    asyncio.run(run())


# -- the job list ---------------------------------------------------------------------------------


def test_the_job_list_shows_only_the_callers_jobs(ray_stack) -> None:
    async def run() -> None:
        async with ray_stack() as s:
            alices = await s.submit("alice")
            bobs = await s.submit("bob")
            s.ray.add("raysubmit_before", None)

            def ids(body: str) -> set[str]:
                return {job["submission_id"] for job in json.loads(body)}

            status, body = await s.call("alice", "GET", "/api/jobs/")
            assert (status, ids(body)) == (200, {alices})
            status, body = await s.call("viewer", "GET", "/api/jobs/")
            assert (status, ids(body)) == (200, set())
            status, body = await s.call("admin", "GET", "/api/jobs/")
            assert (status, ids(body)) == (200, {alices, bobs, "raysubmit_before"})

    asyncio.run(run())


def test_unknown_mutating_routes_need_proxy(ray_stack) -> None:
    async def run() -> None:
        async with ray_stack() as s:
            status, body = await s.call("alice", "POST", "/api/task_events/query", json={})
            assert status == 403
            assert 'cannot create resource "rayclusters/proxy"' in body
            assert s.ray.received == []

    asyncio.run(run())


class _NoAnswerOnAllJobs:
    """The authority, except that it never answers about rayclusters/alljobs."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def authorize(self, attributes: Any) -> Any:
        if attributes.subresource == "alljobs":
            raise BackendUnavailable("the authority did not answer")
        return await self._inner.authorize(attributes)


def test_an_authority_that_cannot_answer_the_ownership_check_gives_503(ray_stack) -> None:
    async def run() -> None:
        async with ray_stack() as s:
            bobs = await s.submit("bob")
            s.stack.use(authorizer=_NoAnswerOnAllJobs(s.stack.authority.authorizer))
            for method, path in [("POST", f"/api/jobs/{bobs}/stop"), ("GET", "/api/jobs/")]:
                status, body = await s.call("alice", method, path)
                assert status == 503, body
            assert s.ray.seen("POST", f"/api/jobs/{bobs}/stop") == []
            assert s.ray.seen("GET", "/api/jobs/") == []

    asyncio.run(run())
