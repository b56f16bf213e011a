"""Ray's HTTP API as permissions on subresources of the RayCluster. Pure: no I/O, no state.

`ray_route(method, raw_path)` says what the `ray` profile authorizes for one request:

- `rayclusters` itself (`get`): the version and health probes every `ray job` command sends first;
- `rayclusters/jobs`: the Jobs API (`create` to submit and upload packages, `list`, `get` a job
  and its logs, `stop`, `delete`); a route naming one job carries its id, so the gateway can
  check who submitted it (`rayclusters/alljobs` for someone else's job);
- `rayclusters/dashboard` (`get`): the UI and the read-only APIs behind it (state, logs, nodes,
  metrics); an unknown GET counts as one of these;
- `rayclusters/serve`: Serve's REST API (`get`, `update`, `delete`);
- `rayclusters/proxy`: everything else, with the method's verb. An unknown mutating route is
  denied unless a rule allows `rayclusters/proxy`.

Paths are matched as Ray's aiohttp router matches them (measured with aiohttp 3.14): each
`/`-separated segment is percent-decoded on its own (`%6Aobs` is `jobs`, `a%2Fb` one segment
`a/b`) and dot segments are taken literally, never resolved. A path that another router could
read differently (an encoded `/` in a segment, a `.` or `..` segment, an empty segment, bytes
that are not UTF-8) needs what Ray's reading needs, what the reading of a router that decodes
`%2F` and resolves dot segments needs, the same verb on `rayclusters/alljobs` for either if it
is a job route, and the method's verb on `rayclusters/proxy`: never less than the route Ray
would pick, and no job id for the owner check to trust.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote

from raygate.identity import verb_for_method

CLUSTER = ""  # the RayCluster itself
JOBS = "jobs"
ALL_JOBS = "alljobs"
DASHBOARD = "dashboard"
SERVE = "serve"
PROXY = "proxy"

STOP_VERB = "stop"
LIST_VERB = "list"

_ID = "{}"  # one path segment, any value

# Probes a client sends before anything else: `ray job *` calls /api/version 2-3 times, Serve's
# CLI /api/ray/version; the rest are health checks.
_CLUSTER_PROBES: frozenset[tuple[str, ...]] = frozenset(
    {
        ("api", "version"),
        ("api", "ray", "version"),
        ("api", "authentication_mode"),
        ("api", "healthz"),
        ("api", "gcs_healthz"),
        ("api", "local_raylet_healthz"),
    }
)

# The dashboard UI's shell and the read-only APIs it polls (Ray 2.60's dashboard modules). Every
# GET not named elsewhere gets the same permission; these are the ones known to be reads.
DASHBOARD_READS: frozenset[tuple[str, ...]] = frozenset(
    {
        ("",),  # the UI shell, /
        ("favicon.ico",),
        ("timezone",),
        ("nodes",),
        ("events",),
        ("usage_stats_enabled",),
        ("cluster_id",),
        ("api", "cluster_status"),
        ("api", "profiling_enabled"),
        ("api", "component_activities"),
        ("api", "grafana_health"),
        ("api", "prometheus_health"),
        ("api", "prometheus", "sd"),
    }
)
DASHBOARD_READ_PREFIXES: tuple[tuple[str, ...], ...] = (
    ("static",),
    ("logs",),
    ("nodes",),  # /nodes/{node_id}
    ("logical",),  # /logical/actors[/{actor_id}]
    ("api", "v0"),  # state API: actors, tasks, objects, jobs, logs (also /api/v0/logs/stream)
    ("api", "train"),
    ("api", "data"),
)

# GETs that are not reads: they attach py-spy or memray to a worker process. Deliberately not
# part of `rayclusters/dashboard`.
_PROFILING_PATHS: frozenset[tuple[str, ...]] = frozenset(
    {
        ("task", "traceback"),
        ("task", "cpu_profile"),
        ("worker", "traceback"),
        ("worker", "cpu_profile"),
        ("worker", "gpu_profile"),
        ("worker", "jax_profile"),
        ("memory_profile",),
    }
)

_SERVE_VERBS = {"GET": "get", "PUT": "update", "DELETE": "delete"}
_SERVE_SCALE = ("api", "v1", "applications", _ID, "deployments", _ID, "scale")


class JobOperation(StrEnum):
    """What the gateway does beyond authorizing: the job-ownership part of the `ray` profile."""

    NONE = "none"
    SUBMIT = "submit"  # stamp the submitter into the job's metadata
    LIST = "list"  # show only the caller's jobs unless they may list rayclusters/alljobs
    ONE = "one"  # acting on job `job_id`: someone else's needs rayclusters/alljobs too


@dataclass(frozen=True, slots=True)
class Permission:
    verb: str
    subresource: str  # CLUSTER ("") is the RayCluster itself


@dataclass(frozen=True, slots=True)
class RayRoute:
    """What one request needs: `verb` on `subresource`, and every permission in `also`."""

    verb: str
    subresource: str
    job_id: str | None = None
    operation: JobOperation = JobOperation.NONE
    also: tuple[Permission, ...] = ()

    @property
    def permissions(self) -> tuple[Permission, ...]:
        return (Permission(self.verb, self.subresource), *self.also)


def _segments(raw_path: str) -> tuple[tuple[str, ...], bool]:
    """The path's segments as Ray's router sees them, and whether any other reading exists."""
    if not raw_path.startswith("/"):
        return (), True
    raw = raw_path[1:].split("/")
    try:
        decoded = tuple(unquote(s, errors="strict") for s in raw)
    except UnicodeDecodeError:
        return tuple(raw), True
    ambiguous = any(
        "/" in s or s in (".", "..") or (not s and i < len(decoded) - 1)
        for i, s in enumerate(decoded)
    )
    return decoded, ambiguous


def _resolved(segments: tuple[str, ...]) -> tuple[str, ...]:
    """The segments as a router that decodes `%2F`, merges `//` and resolves `.`/`..` sees them."""
    joined = "/".join(segments)
    resolved = posixpath.normpath("/" + joined).lstrip("/")
    trailing = joined.endswith("/") or (segments and segments[-1] in ("", ".", ".."))
    if trailing and resolved:
        resolved += "/"
    return tuple(resolved.split("/"))


def _matches(segments: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    return len(segments) == len(pattern) and all(
        p == _ID or p == s for s, p in zip(segments, pattern, strict=True)
    )


def _job_route(method: str, segments: tuple[str, ...]) -> RayRoute | None:
    """Ray's Jobs API (dashboard/modules/job/job_head.py), or None for another path."""
    if segments[:2] == ("api", "packages") and len(segments) == 4:
        # Part of a submission with --working-dir: does the package exist, then upload it.
        if method == "PUT":
            return RayRoute("create", JOBS)
        if method in ("GET", "HEAD"):
            return RayRoute("get", JOBS)
        return None
    if segments[:2] != ("api", "jobs") or len(segments) < 3:
        return None
    rest = segments[2:]
    if rest == ("",):
        if method == "POST":
            return RayRoute("create", JOBS, operation=JobOperation.SUBMIT)
        if method == "GET":
            return RayRoute(LIST_VERB, JOBS, operation=JobOperation.LIST)
        if method == "HEAD":
            return RayRoute(LIST_VERB, JOBS)
        return None
    job_id, action = rest[0], rest[1:]
    if not job_id:
        return None
    one = JobOperation.ONE
    if action == () and method == "DELETE":
        return RayRoute("delete", JOBS, job_id, one)
    if action == ("stop",) and method == "POST":
        return RayRoute(STOP_VERB, JOBS, job_id, one)
    if action in ((), ("logs",), ("logs", "tail")) and method in ("GET", "HEAD"):
        return RayRoute("get", JOBS, job_id, one)
    return None


def _route(method: str, segments: tuple[str, ...]) -> RayRoute:
    # HEAD and OPTIONS read what a GET reads (the gateway answers OPTIONS itself).
    reading = method in ("GET", "HEAD", "OPTIONS")
    job = _job_route("GET" if method == "OPTIONS" else method, segments)
    if job is not None:
        return job
    if segments[:2] == ("api", "serve"):
        verb = _SERVE_VERBS.get("GET" if reading else method)
        if verb is not None:
            return RayRoute(verb, SERVE)
    elif method == "POST" and _matches(segments, _SERVE_SCALE):
        return RayRoute("update", SERVE)
    if not reading:
        return RayRoute(verb_for_method(method), PROXY)
    if segments in _CLUSTER_PROBES:
        return RayRoute("get", CLUSTER)
    if segments in _PROFILING_PATHS:
        return RayRoute("get", PROXY)
    # DASHBOARD_READS, DASHBOARD_READ_PREFIXES, and any GET this table does not know: Ray's GET
    # routes only read, but for the profiling ones above.
    return RayRoute("get", DASHBOARD)


def ray_route(method: str, raw_path: str) -> RayRoute:
    """What `method raw_path` needs. `raw_path` is the path as sent (percent-encoded, no query)."""
    segments, ambiguous = _segments(raw_path)
    route = _route(method, segments)
    if not ambiguous:
        return route
    needed: list[Permission] = []
    for reading in (route, _route(method, _resolved(segments))):
        needed.append(Permission(reading.verb, reading.subresource))
        if reading.subresource == JOBS:
            needed.append(Permission(reading.verb, ALL_JOBS))
    needed.append(Permission(verb_for_method(method), PROXY))
    first, *also = dict.fromkeys(needed)  # without repeats, in order
    return RayRoute(first.verb, first.subresource, also=tuple(also))
