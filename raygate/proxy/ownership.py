"""Job ownership for the `ray` profile: who submitted a job, and who may act on it.

- A submission (`POST /api/jobs/`) gets the caller stamped into the job's metadata
  (`raygate.io/submitted-by`), replacing whatever the client put there.
- Acting on one job (get, logs, stop, delete) that someone else submitted needs the same verb
  on `rayclusters/alljobs` as well. The gateway learns the submitter from Ray
  (`GET /api/jobs/{id}`, with Ray's token) and remembers it briefly. A job without the stamp
  (submitted before raygate, or not through it) counts as someone else's.
- The job list shows only the caller's jobs, unless they may `list rayclusters/alljobs`.

The pipeline calls `JobOwnership.handle` once the request's own attributes are allowed; only the
`ray` profile has a JobOwnership, so the other profiles do none of this.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from raygate.authz.attributes import AttributesConfig, ray_cluster_attributes, request_attributes
from raygate.errors import BackendUnavailable
from raygate.identity import Attributes, Decision, Identity
from raygate.observe.audit import AuditRecord
from raygate.proxy import responses
from raygate.proxy.headers import downstream_response_headers
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


class GatewayAccess(Protocol):
    """What ownership needs from the gateway (raygate.proxy.app.Gateway)."""

    @property
    def session(self) -> aiohttp.ClientSession: ...

    def upstream_url(self, raw_path_qs: str) -> URL: ...

    def upstream_headers(self, request: web.Request, identity: Identity) -> CIMultiDict[str]: ...

    async def decide(self, attributes: Attributes) -> Decision: ...

    async def authorize_attributes(
        self, attributes: Sequence[Attributes], record: AuditRecord
    ) -> web.StreamResponse | None: ...


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


# -- the gateway's part ---------------------------------------------------------------------------


async def _read_bounded(stream: aiohttp.StreamReader, limit: int) -> bytes | None:
    """The whole body, or None once it passes `limit` bytes."""
    data = bytearray()
    async for chunk in stream.iter_any():
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


def _text(status: int, body: str) -> web.Response:
    return web.Response(status=status, text=body, content_type="text/plain")


class JobOwnership:
    """The `ray` profile's job ownership, for one gateway."""

    def __init__(self, config: AttributesConfig, cache: OwnerCache | None = None) -> None:
        self._config = config
        self.owners = cache if cache is not None else OwnerCache()

    async def handle(
        self,
        request: web.Request,
        identity: Identity,
        record: AuditRecord,
        gateway: GatewayAccess,
    ) -> web.StreamResponse | None:
        """A response, or None when the gateway should forward the request as it is."""
        route = ray_route(request.method, request.rel_url.raw_path)
        try:
            if route.operation is JobOperation.ONE:
                return await self._check_owner(request, route, identity, record, gateway)
            if route.operation is JobOperation.LIST:
                return await self._list(request, identity, record, gateway)
            if route.operation is JobOperation.SUBMIT:
                return await self._submit(request, identity, record, gateway)
        except BackendUnavailable as err:
            record.decision = "unavailable"
            record.reason = str(err)
            return responses.unavailable(str(err))
        return None

    def _attributes(self, identity: Identity, verb: str) -> Attributes:
        return ray_cluster_attributes(identity, verb, ALL_JOBS, self._config)

    # -- one job ------------------------------------------------------------------------------
    async def _check_owner(
        self,
        request: web.Request,
        route: RayRoute,
        identity: Identity,
        record: AuditRecord,
        gateway: GatewayAccess,
    ) -> web.StreamResponse | None:
        job_id = route.job_id
        assert job_id is not None
        owner = self.owners.get(job_id)
        if owner is _UNKNOWN:
            looked_up = await self._look_up_owner(request, job_id, identity, gateway)
            if isinstance(looked_up, web.StreamResponse):
                record.reason += f"; owner of job {job_id} unknown"
                return looked_up
            owner = looked_up
        if request.method == "DELETE":
            self.owners.forget(job_id)
        if owner == identity.user:
            return None
        attributes = self._attributes(identity, route.verb)
        record.attributes.append(attributes)
        prior = record.reason
        denied = await gateway.authorize_attributes([attributes], record)
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
        self, request: web.Request, job_id: str, identity: Identity, gateway: GatewayAccess
    ) -> str | None | web.StreamResponse:
        headers = self._own_headers(request, identity, gateway)
        url = gateway.upstream_url("/api/jobs/" + quote(job_id, safe=""))
        async with asyncio.timeout(UPSTREAM_TIMEOUT):
            async with gateway.session.get(url, headers=headers, allow_redirects=False) as upstream:
                body = await _read_bounded(upstream.content, MAX_JOB_BYTES)
                status = upstream.status
        if status == 404:
            # Nothing forwarded: the job may appear before Ray would see the request.
            return _text(404, f"Job {job_id} does not exist\n")
        try:
            job = json.loads(body) if status == 200 and body is not None else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            job = None
        if not isinstance(job, dict):
            return _text(
                502,
                f"Bad Gateway: could not tell who submitted job {job_id}: the Ray dashboard "
                f"answered {status} to GET /api/jobs/{job_id}.\n",
            )
        owner = submitter(job)
        self.owners.put(job_id, owner)
        return owner

    # -- the job list -------------------------------------------------------------------------
    async def _list(
        self, request: web.Request, identity: Identity, record: AuditRecord, gateway: GatewayAccess
    ) -> web.StreamResponse | None:
        every_job = self._attributes(identity, "list")
        decision = await gateway.decide(every_job)
        if decision.allowed:
            record.reason += f"; every job listed: {decision.reason}"
            return None
        record.reason += f"; only jobs submitted by {identity.user} listed"
        headers = self._own_headers(request, identity, gateway)
        url = gateway.upstream_url(request.rel_url.raw_path_qs)
        async with asyncio.timeout(UPSTREAM_TIMEOUT):
            async with gateway.session.get(url, headers=headers, allow_redirects=False) as upstream:
                body = await _read_bounded(upstream.content, MAX_JOB_LIST_BYTES)
                status, reason = upstream.status, upstream.reason
                response_headers = downstream_response_headers(upstream.headers)
        if body is None:
            return _text(
                502,
                f"Bad Gateway: the job list is larger than the {MAX_JOB_LIST_BYTES} bytes raygate "
                f"filters; users who may list rayclusters/{ALL_JOBS} get it unfiltered.\n",
            )
        if status != 200:
            return web.Response(status=status, reason=reason, body=body, headers=response_headers)
        try:
            jobs = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            jobs = None
        if not isinstance(jobs, list) or "Content-Encoding" in response_headers:
            return _text(502, "Bad Gateway: the Ray dashboard's job list is not a JSON list.\n")
        mine = json.dumps(jobs_submitted_by(jobs, identity.user)).encode()
        return web.Response(status=200, body=mine, headers=response_headers)

    # -- a submission -------------------------------------------------------------------------
    async def _submit(
        self, request: web.Request, identity: Identity, record: AuditRecord, gateway: GatewayAccess
    ) -> web.StreamResponse:
        too_large = f"a job submission is at most {MAX_SUBMISSION_BYTES} bytes of JSON"
        if request.content_length is not None and request.content_length > MAX_SUBMISSION_BYTES:
            return responses.too_large(too_large)
        if request.headers.get("Expect", "").lower() == "100-continue":
            # Authorized by now: invite the body (the gateway withheld `100 Continue` so far).
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await _read_bounded(request.content, MAX_SUBMISSION_BYTES)
        if body is None:
            return responses.too_large(too_large)
        try:
            stamped = stamp_submission(body, identity.user)
        except ValueError as err:
            record.reason += f"; {err}"
            return responses.bad_request(str(err))
        headers = gateway.upstream_headers(request, identity)
        headers["Content-Type"] = "application/json"
        headers["Content-Length"] = str(len(stamped))
        headers["Accept-Encoding"] = "identity"
        url = gateway.upstream_url(request.rel_url.raw_path_qs)
        async with asyncio.timeout(UPSTREAM_TIMEOUT):
            async with gateway.session.post(
                url, headers=headers, data=stamped, allow_redirects=False
            ) as upstream:
                answer = await _read_bounded(upstream.content, MAX_JOB_BYTES)
                status, reason = upstream.status, upstream.reason
                response_headers = downstream_response_headers(upstream.headers)
        if answer is None:
            return _text(
                502, "Bad Gateway: the Ray dashboard's answer to a submission is too large.\n"
            )
        if status == 200:
            self._remember_submission(answer, identity.user)
        return web.Response(status=status, reason=reason, body=answer, headers=response_headers)

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

    @staticmethod
    def _own_headers(
        request: web.Request, identity: Identity, gateway: GatewayAccess
    ) -> CIMultiDict[str]:
        """Headers for a request the gateway reads itself: uncompressed, without a body."""
        headers = gateway.upstream_headers(request, identity)
        for name in ("Content-Type", "Content-Encoding"):
            headers.popall(name, None)
        headers["Accept-Encoding"] = "identity"
        return headers


class RayAttributesMapper:
    """The gateway's request mapping for the `ray` profile, with the profile's job ownership.

    The gateway looks for `job_ownership` on its mapper, so wiring the profile needs nothing but
    `attributes_mapper(config)`.
    """

    def __init__(self, config: AttributesConfig) -> None:
        self._config = config
        self.job_ownership = JobOwnership(config)

    def __call__(self, identity: Identity, request: web.Request) -> list[Attributes]:
        # The ray profile reads neither the query nor rewrite headers.
        return request_attributes(
            identity, request.method, request.rel_url.raw_path, {}, request.headers, self._config
        )
