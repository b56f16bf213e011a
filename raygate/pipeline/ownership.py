"""Job ownership for the `ray` profile: who submitted a job, and who may act on it.

- A submission (`POST /api/jobs/`) gets the caller stamped into the job's metadata
  (`raygate.io/submitted-by`), replacing whatever the client put there.
- Acting on one job (get, logs, stop, delete) that someone else submitted needs the same verb
  on `rayclusters/alljobs` as well. The gateway learns the submitter from Ray
  (`GET /api/jobs/{id}`, with Ray's token) and remembers it briefly. A job without the stamp
  (submitted before raygate, or not through it) counts as someone else's.
- The job list shows only the caller's jobs, unless they may `list rayclusters/alljobs`.

The pipeline calls `RayProfile.after_authorization` once the request's own attributes are
allowed; only the `ray` profile does any of this. Transport-free: lookups go through the
pipeline's upstream calls, and stamping/filtering are hooks the data plane runs on the bodies.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from raygate.authz.attributes import AttributesConfig, ray_cluster_attributes, request_attributes
from raygate.identity import Attributes, Identity
from raygate.pipeline import responses
from raygate.pipeline.head import RequestHead
from raygate.pipeline.outcome import Answer, BufferedResponse, Forward
from raygate.pipeline.profiles import HookContext
from raygate.ray.routes import ALL_JOBS, JobOperation, RayRoute, ray_route

SUBMITTED_BY = "raygate.io/submitted-by"
# A submission is a small JSON document (entrypoint, runtime_env, metadata): packages go apart.
MAX_SUBMISSION_BYTES = 1024 * 1024
# One job's details, and the whole list, as Ray answers them (the list is filtered in memory).
MAX_JOB_BYTES = 8 * 1024 * 1024
MAX_JOB_LIST_BYTES = 64 * 1024 * 1024
# The gateway's own calls to Ray are short; a Ray that does not answer them gets 504.
UPSTREAM_TIMEOUT = 60.0
OWNER_CACHE_SIZE = 4096
# A submitter never changes, but a submission id can be deleted and reused (or a Ray restarted
# behind a long-lived gateway): remembered owners expire.
OWNER_TTL = 300.0

_UNKNOWN = object()


# -- pure parts -----------------------------------------------------------------------------------


def stamp_submission(body: bytes, user: str) -> bytes:
    """The submission with `user` as its submitter; ValueError says what is wrong with it."""
    try:
        submission = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"the job submission is not valid JSON ({err})") from None
    if not isinstance(submission, dict):
        raise ValueError("the job submission must be a JSON object")
    metadata = submission.get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        raise ValueError("the job submission's metadata must be an object of strings")
    submission["metadata"] = {**metadata, SUBMITTED_BY: user}
    return json.dumps(submission).encode()


def submitter(job: Any) -> str | None:
    """Who submitted a job, from Ray's job details; None when it carries no stamp."""
    if not isinstance(job, dict):
        return None
    metadata = job.get("metadata")
    if not isinstance(metadata, dict):
        return None
    owner = metadata.get(SUBMITTED_BY)
    return owner if isinstance(owner, str) else None


def jobs_submitted_by(jobs: Sequence[Any], user: str) -> list[Any]:
    return [job for job in jobs if submitter(job) == user]


class OwnerCache:
    """Submitters by job or submission id: bounded (oldest first out), entries expire."""

    def __init__(self, size: int = OWNER_CACHE_SIZE, ttl: float = OWNER_TTL) -> None:
        self._size = size
        self._ttl = ttl
        self._entries: OrderedDict[str, tuple[float, str | None]] = OrderedDict()

    def get(self, job_id: str) -> str | None | object:
        """The submitter (None: unstamped), or `_UNKNOWN` when not remembered."""
        entry = self._entries.get(job_id)
        if entry is None:
            return _UNKNOWN
        expires, owner = entry
        if expires <= time.monotonic():
            del self._entries[job_id]
            return _UNKNOWN
        return owner

    def put(self, job_id: str, owner: str | None) -> None:
        self._entries.pop(job_id, None)
        self._entries[job_id] = (time.monotonic() + self._ttl, owner)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def forget(self, job_id: str) -> None:
        self._entries.pop(job_id, None)

    def __len__(self) -> int:
        return len(self._entries)


# -- the profile -----------------------------------------------------------------------------------


def _own_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers for a request whose answer the gateway reads itself: uncompressed, no body."""
    dropped = {"content-type", "content-encoding", "accept-encoding"}
    kept = [(n, v) for n, v in headers if n.lower() not in dropped]
    kept.append(("Accept-Encoding", "identity"))
    return kept


def _replaced(status: int, body: str) -> BufferedResponse:
    return BufferedResponse(
        status, "", [("Content-Type", "text/plain; charset=utf-8")], body.encode()
    )


class RayProfile:
    """The `ray` profile: one subresource of the RayCluster per Ray route, and job ownership."""

    name = "ray"
    # The attributes depend on the method and the path alone.
    cacheable = True

    def __init__(self, config: AttributesConfig, cache: OwnerCache | None = None) -> None:
        self._config = config
        self.owners = cache if cache is not None else OwnerCache()

    def attributes(self, identity: Identity, head: RequestHead) -> Sequence[Attributes]:
        # The ray profile reads neither the query nor rewrite headers.
        return request_attributes(identity, head.method, head.path, {}, head.headers, self._config)

    async def after_authorization(
        self, forward: Forward, head: RequestHead, context: HookContext
    ) -> Answer | None:
        """None to forward (possibly with hooks set on `forward`), or the answer to give."""
        route = ray_route(head.method, head.path)
        operation = route.operation
        if operation is JobOperation.ONE:
            return await self._check_owner(forward, head, route, context)
        if operation is JobOperation.LIST:
            return await self._list(forward, context)
        if operation is JobOperation.SUBMIT:
            return self._submit(forward, head)
        return None

    def hooks_for(self, head: RequestHead) -> bool:
        return ray_route(head.method, head.path).operation is not JobOperation.NONE

    def _attributes(self, identity: Identity, verb: str) -> Attributes:
        return ray_cluster_attributes(identity, verb, ALL_JOBS, self._config)

    # -- one job ------------------------------------------------------------------------------
    async def _check_owner(
        self, forward: Forward, head: RequestHead, route: RayRoute, context: HookContext
    ) -> Answer | None:
        job_id = route.job_id
        identity = forward.identity
        record = forward.record
        assert job_id is not None and identity is not None
        owner = self.owners.get(job_id)
        if owner is _UNKNOWN:
            looked_up = await self._look_up_owner(forward, job_id, context)
            if isinstance(looked_up, Answer):
                record.reason += f"; owner of job {job_id} unknown"
                return looked_up
            owner = looked_up
        if head.method == "DELETE":
            self.owners.forget(job_id)
        if owner == identity.user:
            return None
        attributes = self._attributes(identity, route.verb)
        record.attributes.append(attributes)
        prior = record.reason
        denied = await context.authorize_all([attributes], record)
        whose = "by another user" if owner is not None else "without raygate's submitter stamp"
        record.reason = f"{prior}; job {job_id} was submitted {whose}: {record.reason}"
        if denied is not None and denied.status == 403:
            return responses.forbidden(
                attributes.describe(),
                f"job {job_id} was submitted {whose}; acting on it needs {route.verb} on "
                f"{attributes.resource}/{ALL_JOBS} as well",
            )
        return denied  # None, or 503 when the authority did not answer

    async def _look_up_owner(
        self, forward: Forward, job_id: str, context: HookContext
    ) -> str | None | Answer:
        reply = await context.fetch(
            "GET",
            "/api/jobs/" + quote(job_id, safe=""),
            _own_headers(forward.upstream_headers),
            MAX_JOB_BYTES,
        )
        if reply.status == 404:
            # Nothing forwarded: the job may appear before Ray would see the request.
            return responses.not_found(f"Job {job_id} does not exist")
        try:
            job = json.loads(reply.body) if reply.status == 200 and reply.body else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            job = None
        if not isinstance(job, dict):
            return responses.bad_gateway(
                f"could not tell who submitted job {job_id}: the Ray dashboard "
                f"answered {reply.status} to GET /api/jobs/{job_id}."
            )
        owner = submitter(job)
        self.owners.put(job_id, owner)
        return owner

    # -- the job list -------------------------------------------------------------------------
    async def _list(self, forward: Forward, context: HookContext) -> Answer | None:
        identity = forward.identity
        assert identity is not None
        decision = await context.decide_attributes(self._attributes(identity, "list"))
        if decision.allowed:
            forward.record.reason += f"; every job listed: {decision.reason}"
            return None
        forward.record.reason += f"; only jobs submitted by {identity.user} listed"
        user = identity.user

        async def only_own_jobs(reply: BufferedResponse) -> BufferedResponse:
            if reply.body is None:
                return _replaced(
                    502,
                    f"Bad Gateway: the job list is larger than the {MAX_JOB_LIST_BYTES} bytes "
                    f"raygate filters; users who may list rayclusters/{ALL_JOBS} get it "
                    "unfiltered.\n",
                )
            if reply.status != 200:
                return reply
            try:
                jobs = json.loads(reply.body)
            except (UnicodeDecodeError, json.JSONDecodeError):
                jobs = None
            encoded = any(n.lower() == "content-encoding" for n, _ in reply.headers)
            if not isinstance(jobs, list) or encoded:
                return _replaced(
                    502, "Bad Gateway: the Ray dashboard's job list is not a JSON list.\n"
                )
            mine = json.dumps(jobs_submitted_by(jobs, user)).encode()
            return BufferedResponse(200, reply.reason, reply.headers, mine)

        forward.upstream_headers = _own_headers(forward.upstream_headers)
        forward.response_hook = only_own_jobs
        forward.response_limit = MAX_JOB_LIST_BYTES
        return None

    # -- a submission -------------------------------------------------------------------------
    def _submit(self, forward: Forward, head: RequestHead) -> Answer | None:
        identity = forward.identity
        assert identity is not None
        too_large = f"a job submission is at most {MAX_SUBMISSION_BYTES} bytes of JSON"
        declared = head.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_SUBMISSION_BYTES:
            return responses.too_large(too_large)
        user = identity.user
        record = forward.record

        def stamp(body: bytes) -> bytes:
            try:
                return stamp_submission(body, user)
            except ValueError as err:
                record.reason += f"; {err}"
                raise

        async def remember(reply: BufferedResponse) -> BufferedResponse:
            if reply.body is None:
                return _replaced(
                    502, "Bad Gateway: the Ray dashboard's answer to a submission is too large.\n"
                )
            if reply.status == 200:
                self._remember_submission(reply.body, user)
            return reply

        headers = [
            (n, v)
            for n, v in forward.upstream_headers
            if n.lower() not in ("content-type", "accept-encoding")
        ]
        headers += [("Content-Type", "application/json"), ("Accept-Encoding", "identity")]
        forward.upstream_headers = headers
        forward.request_body_hook = stamp
        forward.request_limit = MAX_SUBMISSION_BYTES
        forward.request_limit_message = too_large
        forward.response_hook = remember
        forward.response_limit = MAX_JOB_BYTES
        return None

    def _remember_submission(self, answer: bytes, user: str) -> None:
        """Ray's `{"submission_id": ..., "job_id": ...}`: the new job is the caller's, even if
        its id was used before (it can be, once the old job is deleted)."""
        try:
            submitted = json.loads(answer)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return
        if not isinstance(submitted, Mapping):
            return
        for key in ("submission_id", "job_id"):
            job_id = submitted.get(key)
            if isinstance(job_id, str) and job_id:
                self.owners.put(job_id, user)
