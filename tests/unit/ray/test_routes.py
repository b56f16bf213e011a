"""The `ray` profile by table: Ray's routes, the attributes they map to, and the pure parts of job
ownership (stamping, reading the submitter, the owner cache)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from raygate.authz.attributes import AttributesConfig, Profile, request_attributes
from raygate.identity import Attributes, service_account_identity
from raygate.pipeline.ownership import (
    SUBMITTED_BY,
    OwnerCache,
    jobs_submitted_by,
    stamp_submission,
    submitter,
)
from raygate.ray.routes import (
    DASHBOARD_READ_PREFIXES,
    DASHBOARD_READS,
    JobOperation,
    Permission,
    ray_route,
)

ALICE = service_account_identity("default", "alice")

RAY = AttributesConfig.model_validate(
    {
        "profile": "ray",
        "resourceAttributes": {
            "namespace": "ml",
            "apiGroup": "ray.io",
            "apiVersion": "v1",
            "resource": "rayclusters",
            "name": "c1",
        },
    }
)


@pytest.mark.parametrize(
    ("method", "path", "verb", "subresource", "job_id"),
    [
        # every `ray job` command first
        ("GET", "/api/version", "get", "", None),
        ("GET", "/api/ray/version", "get", "", None),
        ("GET", "/api/gcs_healthz", "get", "", None),
        ("GET", "/api/healthz", "get", "", None),
        # jobs
        ("POST", "/api/jobs/", "create", "jobs", None),
        ("GET", "/api/jobs/", "list", "jobs", None),
        ("HEAD", "/api/jobs/", "list", "jobs", None),
        ("GET", "/api/jobs/raysubmit_AbC123", "get", "jobs", "raysubmit_AbC123"),
        ("HEAD", "/api/jobs/raysubmit_AbC123", "get", "jobs", "raysubmit_AbC123"),
        ("GET", "/api/jobs/02000000", "get", "jobs", "02000000"),
        ("GET", "/api/jobs/raysubmit_1/logs", "get", "jobs", "raysubmit_1"),
        ("GET", "/api/jobs/raysubmit_1/logs/tail", "get", "jobs", "raysubmit_1"),
        ("POST", "/api/jobs/raysubmit_1/stop", "stop", "jobs", "raysubmit_1"),
        ("DELETE", "/api/jobs/raysubmit_1", "delete", "jobs", "raysubmit_1"),
        ("GET", "/api/packages/gcs/_ray_pkg_0123abcd.zip", "get", "jobs", None),
        ("PUT", "/api/packages/gcs/_ray_pkg_0123abcd.zip", "create", "jobs", None),
        # methods Ray has no job route for are not job operations
        ("PUT", "/api/jobs/raysubmit_1", "update", "proxy", None),
        ("POST", "/api/jobs/raysubmit_1", "create", "proxy", None),
        ("GET", "/api/jobs/raysubmit_1/stop", "get", "dashboard", None),
        ("DELETE", "/api/jobs/", "delete", "proxy", None),
        ("DELETE", "/api/packages/gcs/p.zip", "delete", "proxy", None),
        ("POST", "/api/jobs/raysubmit_1/stop/", "create", "proxy", None),
        # the dashboard and its read-only APIs
        ("GET", "/", "get", "dashboard", None),
        ("GET", "/static/js/main.js", "get", "dashboard", None),
        ("GET", "/nodes?view=summary", "get", "dashboard", None),
        ("GET", "/api/v0/logs/stream?node_id=n&filename=f&follow=true", "get", "dashboard", None),
        ("GET", "/api/v0/tasks", "get", "dashboard", None),
        ("GET", "/api/cluster_status", "get", "dashboard", None),
        ("GET", "/logical/actors", "get", "dashboard", None),
        ("GET", "/a/get/ray/may/add/later", "get", "dashboard", None),
        ("OPTIONS", "/api/v0/tasks", "get", "dashboard", None),
        # profiling attaches to worker processes: not a dashboard read
        ("GET", "/worker/traceback?pid=1", "get", "proxy", None),
        ("GET", "/memory_profile", "get", "proxy", None),
        # Serve
        ("GET", "/api/serve/applications/", "get", "serve", None),
        ("PUT", "/api/serve/applications/", "update", "serve", None),
        ("DELETE", "/api/serve/applications/", "delete", "serve", None),
        ("POST", "/api/serve/applications/", "create", "proxy", None),
        ("POST", "/api/v1/applications/app/deployments/d/scale", "update", "serve", None),
        # anything else that changes something
        ("POST", "/api/task_events/query", "create", "proxy", None),
        ("POST", "/report_events", "create", "proxy", None),
        ("PATCH", "/api/version", "patch", "proxy", None),
        ("PROPFIND", "/", "propfind", "proxy", None),
    ],
)
def test_ray_routes(method: str, path: str, verb: str, subresource: str, job_id) -> None:
    route = ray_route(method, path.partition("?")[0])
    assert (route.verb, route.subresource, route.job_id) == (verb, subresource, job_id)
    assert route.also == ()


@pytest.mark.parametrize(
    ("method", "path", "operation"),
    [
        ("POST", "/api/jobs/", JobOperation.SUBMIT),
        ("GET", "/api/jobs/", JobOperation.LIST),
        ("HEAD", "/api/jobs/", JobOperation.NONE),  # no body to filter
        ("GET", "/api/jobs/j", JobOperation.ONE),
        ("GET", "/api/jobs/j/logs/tail", JobOperation.ONE),
        ("POST", "/api/jobs/j/stop", JobOperation.ONE),
        ("DELETE", "/api/jobs/j", JobOperation.ONE),
        ("PUT", "/api/packages/gcs/p.zip", JobOperation.NONE),
        ("GET", "/api/version", JobOperation.NONE),
    ],
)
def test_job_operations(method: str, path: str, operation: JobOperation) -> None:
    assert ray_route(method, path).operation is operation


@pytest.mark.parametrize(
    "segments", sorted(DASHBOARD_READS) + [(*prefix, "x") for prefix in DASHBOARD_READ_PREFIXES]
)
def test_known_dashboard_reads_need_get_on_dashboard(segments: tuple[str, ...]) -> None:
    path = "/" + "/".join(segments)
    assert ray_route("GET", path).permissions == (Permission("get", "dashboard"),)


@pytest.mark.parametrize(
    ("path", "job_id", "operation"),
    [
        # Ray's router decodes each segment: these are exactly the routes they spell.
        ("/api/%6Aobs/raysubmit_1/stop", "raysubmit_1", JobOperation.ONE),
        ("/api/jobs/raysubmit%5F1/stop", "raysubmit_1", JobOperation.ONE),
        ("/api/job%73/", None, JobOperation.SUBMIT),
        ("/api/jobs/x%3Fy/stop", "x?y", JobOperation.ONE),
    ],
)
def test_percent_encoded_segments_map_as_ray_decodes_them(
    path: str, job_id: str | None, operation: JobOperation
) -> None:
    route = ray_route("POST", path)
    assert (route.job_id, route.operation) == (job_id, operation)
    assert route.also == ()


@pytest.mark.parametrize(
    ("method", "path", "permissions"),
    [
        # an encoded '/' inside a segment: Ray's aiohttp reads job "a/b", others two segments
        (
            "POST",
            "/api/jobs/a%2Fb/stop",
            [("stop", "jobs"), ("stop", "alljobs"), ("create", "proxy")],
        ),
        ("GET", "/api/jobs/x%2flogs", [("get", "jobs"), ("get", "alljobs"), ("get", "proxy")]),
        # dot segments are literal for Ray (job ".."), resolved by other routers
        ("DELETE", "/api/jobs/..", [("delete", "jobs"), ("delete", "alljobs"), ("delete", "proxy")]),
        (
            "GET",
            "/api/jobs/%2E%2E",
            [("get", "jobs"), ("get", "alljobs"), ("get", "dashboard"), ("get", "proxy")],
        ),
        # Ray reads no route here; a router resolving dots reads the job list or a submission
        (
            "GET",
            "/api/jobs/./",
            [("get", "dashboard"), ("list", "jobs"), ("list", "alljobs"), ("get", "proxy")],
        ),
        (
            "POST",
            "/api/jobs/x/../../jobs/",
            [("create", "proxy"), ("create", "jobs"), ("create", "alljobs")],
        ),
        (
            "GET",
            "/api/../api/jobs/",
            [("get", "dashboard"), ("list", "jobs"), ("list", "alljobs"), ("get", "proxy")],
        ),
        # empty segments, bytes that are not UTF-8, a path that is not absolute
        (
            "GET",
            "//api/jobs/",
            [("get", "dashboard"), ("list", "jobs"), ("list", "alljobs"), ("get", "proxy")],
        ),
        ("GET", "/api/jobs/%ff", [("get", "jobs"), ("get", "alljobs"), ("get", "proxy")]),
        ("GET", "*", [("get", "dashboard"), ("get", "proxy")]),
    ],
)
def test_paths_other_routers_may_read_differently_need_more(
    method: str, path: str, permissions: list[tuple[str, str]]
) -> None:
    route = ray_route(method, path)
    assert [(p.verb, p.subresource) for p in route.permissions] == permissions
    # no job id to look an owner up by: the alljobs permission stands in for the check
    assert (route.job_id, route.operation) == (None, JobOperation.NONE)


def test_ray_mapper_names_the_cluster_and_the_subresource() -> None:
    [attributes] = request_attributes(ALICE, "POST", "/api/jobs/x/stop?q=1", {}, {}, RAY)
    assert attributes == Attributes(
        identity=ALICE,
        verb="stop",
        resource_request=True,
        namespace="ml",
        api_group="ray.io",
        api_version="v1",
        resource="rayclusters",
        subresource="jobs",
        name="c1",
    )
    assert attributes.describe() == (
        'User "system:serviceaccount:default:alice" cannot stop resource "rayclusters/jobs" '
        'in API group "ray.io" in the namespace "ml"'
    )


def test_ray_mapper_asks_every_permission_of_an_ambiguous_path() -> None:
    attributes = request_attributes(ALICE, "GET", "/api/jobs/a%2Fb", {}, {}, RAY)
    assert [(a.verb, a.subresource) for a in attributes] == [
        ("get", "jobs"),  # Ray's reading: job "a/b"
        ("get", "alljobs"),
        ("get", "dashboard"),  # /api/jobs/a/b: no route, a read
        ("get", "proxy"),
    ]
    assert {(a.namespace, a.name) for a in attributes} == {("ml", "c1")}


def test_ray_profile_defaults_group_and_resource() -> None:
    config = AttributesConfig.model_validate(
        {"profile": "ray", "resourceAttributes": {"namespace": "ml", "name": "c1"}}
    )
    [attributes] = request_attributes(ALICE, "GET", "/api/version", {}, {}, config)
    assert (attributes.api_group, attributes.resource, attributes.subresource) == (
        "ray.io",
        "rayclusters",
        "",
    )
    assert config.profile is Profile.RAY


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"profile": "ray"}, "profile ray needs resourceAttributes"),
        ({"profile": "ray", "resourceAttributes": {"namespace": "ml"}}, "needs resourceAttributes"),
        (
            {"profile": "ray", "resourceAttributes": {"name": "c", "subresource": "jobs"}},
            "sets the subresource",
        ),
        (
            {"profile": "ray", "resourceAttributes": {"name": "{{.Value}}"}},
            "sets the subresource",
        ),
        (
            {
                "profile": "ray",
                "resourceAttributes": {"name": "c"},
                "rewrites": {"byQueryParameter": {"name": "n"}},
            },
            "remove rewrites",
        ),
    ],
)
def test_inconsistent_ray_profile_configs_are_refused(data: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AttributesConfig.model_validate(data)


# -- job ownership, the pure parts ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("submission", "metadata"),
    [
        ({"entrypoint": "echo hi"}, {SUBMITTED_BY: "alice"}),
        ({"entrypoint": "echo hi", "metadata": None}, {SUBMITTED_BY: "alice"}),
        (
            {"entrypoint": "e", "metadata": {"team": "ml", SUBMITTED_BY: "bob"}},
            {"team": "ml", SUBMITTED_BY: "alice"},
        ),
    ],
)
def test_stamp_sets_the_submitter_over_any_client_value(submission: dict, metadata: dict) -> None:
    stamped = json.loads(stamp_submission(json.dumps(submission).encode(), "alice"))
    assert stamped["metadata"] == metadata
    assert stamped["entrypoint"] == submission["entrypoint"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"entrypoint": "e", "metadata": ["x"]}', "metadata must be an object"),
    ],
)
def test_stamp_refuses_what_ray_could_not_read(body: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stamp_submission(body, "alice")


@pytest.mark.parametrize(
    ("job", "owner"),
    [
        ({"metadata": {SUBMITTED_BY: "alice"}}, "alice"),
        ({"metadata": {}}, None),
        ({"metadata": None}, None),
        ({"metadata": {SUBMITTED_BY: 7}}, None),
        ({}, None),
        ("not a job", None),
    ],
)
def test_submitter_reads_the_stamp(job: object, owner: str | None) -> None:
    assert submitter(job) == owner


def test_job_list_keeps_only_the_callers_jobs() -> None:
    jobs = [
        {"submission_id": "a", "metadata": {SUBMITTED_BY: "alice"}},
        {"submission_id": "b", "metadata": {SUBMITTED_BY: "bob"}},
        {"submission_id": None, "job_id": "01000000", "metadata": {}},
        {"submission_id": "c", "metadata": {SUBMITTED_BY: "alice"}},
    ]
    assert [j["submission_id"] for j in jobs_submitted_by(jobs, "alice")] == ["a", "c"]


def test_owner_cache_is_bounded_and_forgets() -> None:
    cache = OwnerCache(size=2)
    cache.put("a", "alice")
    cache.put("b", None)
    cache.put("c", "carol")
    assert len(cache) == 2
    assert cache.get("b") is None  # remembered: no stamp
    assert cache.get("c") == "carol"
    assert cache.get("a") not in ("alice", None)  # evicted: unknown
    cache.forget("c")
    assert cache.get("c") not in ("carol", None)


def test_owner_cache_entries_expire() -> None:
    cache = OwnerCache(ttl=0.0)
    cache.put("a", "alice")
    assert cache.get("a") != "alice"
