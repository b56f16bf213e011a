"""Properties of the gateway as a black box (`raygate up --upstream` before a raw recorder).

1. For random RBAC objects, identities, methods and raw paths, a request reaches the upstream if
   and only if the reference evaluator (tests/unit/rbac/reference.py) allows it for the identity its
   token proves, on the RayCluster `raygate up` guards (kube-rbac-proxy profile: the method's
   verb on rayclusters.ray.io/ray-cluster-with-auth in namespace default).
2. Any byte string sent as a request, generated to look like HTTP and then damaged, either gets
   a 4xx and leaves no byte at the upstream, or reaches it as exactly one well-formed request
   (an allowed OPTIONS, which the gateway answers 204 itself, aside).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from raygate.identity import Attributes, service_account_identity
from raygate.objects import parse_object
from raygate.store.sqlite import ObjectStore
from raygate.store.tokens import issue_token, load_signing_key
from tests.unit.rbac.reference import reference_allows

from .blackbox import (
    SPOOF_VALUES_FORBIDDEN,
    UPSTREAM_TOKEN,
    Gateway,
    Malformed,
    RecorderThread,
    exchange,
    parse_requests,
    start_gateway,
    statuses,
    stop_gateway,
)

RBAC = "rbac.authorization.k8s.io/v1"
CLUSTER = "ray-cluster-with-auth"
ALLOWED = "ray-user"
ALLOWED_IDENTITY = b"system:serviceaccount:default:" + ALLOWED.encode()
# Methods the gateway answers itself once authorized (OPTIONS) or never forwards (the rest).
ANSWERED_BY_GATEWAY = {"OPTIONS"}
REFUSED_METHODS = {"TRACE", "TRACK", "CONNECT"}
METHOD_VERBS = {"GET": "get", "HEAD": "get", "OPTIONS": "get", "POST": "create",
                "PUT": "update", "PATCH": "patch", "DELETE": "delete"}  # fmt: skip
_counter = itertools.count()
# More examples for a longer hunt: RAYGATE_PROPERTY_EXAMPLES=2000 (the defaults keep it < 30 s).
SCALE = float(os.environ.get("RAYGATE_PROPERTY_EXAMPLES", "150")) / 150


@dataclass
class Rig:
    gateway: Gateway
    upstream: RecorderThread
    allowed_auth: bytes
    applied: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    upstream = RecorderThread()
    gateway = start_gateway(tmp_path_factory.mktemp("props"), upstream.url, {ALLOWED: ["*"]})
    try:
        auth = b"Authorization: Bearer " + gateway.token(ALLOWED).encode() + b"\r\n"
        yield Rig(gateway, upstream, auth)
    finally:
        stop_gateway(gateway)
        upstream.stop()


def send(rig: Rig, data: bytes) -> tuple[bytes, list[bytes]]:
    """Send `data` on a fresh connection: the answer, and what reached the upstream meanwhile."""
    before = rig.upstream.lengths()
    answer = asyncio.run(exchange(rig.gateway.host, rig.gateway.port, data, grace=0.05, limit=3))
    return answer, rig.upstream.new_bytes(before)


# -- 1. forwarded iff allowed -------------------------------------------------------------------

verbs = st.lists(
    st.sampled_from(["get", "create", "update", "patch", "delete", "list", "frob", "*"]),
    min_size=1, max_size=3, unique=True,
)  # fmt: skip
rules = st.fixed_dictionaries(
    {
        "verbs": verbs,
        "apiGroups": st.lists(st.sampled_from(["ray.io", "ray.io", "", "*"]), min_size=1, unique=True),
        "resources": st.lists(
            st.sampled_from(["rayclusters", "rayclusters", "*", "rayclusters/proxy", "*/proxy", "pods"]),
            min_size=1, max_size=2, unique=True,
        ),
    },
    optional={
        "resourceNames": st.lists(
            st.sampled_from([CLUSTER, "other-cluster"]), min_size=1, unique=True
        )
    },
)  # fmt: skip
path_pieces = st.sampled_from(
    ["api", "jobs", "version", "..", ".", "%2e%2e", "%2F", "", "static", "x;y", "a%00b", "~",
     "logs", "serve", "%41", "*", "'", "@", "a+b"]
)  # fmt: skip


@st.composite
def policies(draw: st.DrawFn, tag: str) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """RBAC objects that name only this example's accounts (namespace `tag` and `default`)."""
    accounts = [(ns, f"{tag}-sa{i}") for i, ns in enumerate(draw(
        st.lists(st.sampled_from(["default", tag]), min_size=1, max_size=3)
    ))]  # fmt: skip
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": n, "namespace": ns}}
        for ns, n in accounts
    ]
    subjects = st.one_of(
        st.sampled_from([{"kind": "ServiceAccount", "name": n, "namespace": ns} for ns, n in accounts]),
        st.sampled_from([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io",
                          "name": f"system:serviceaccount:{ns}:{n}"} for ns, n in accounts]),
        st.just({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io",
                 "name": f"system:serviceaccounts:{tag}"}),
    )  # fmt: skip
    for i in range(draw(st.integers(0, 4))):
        cluster_role = draw(st.booleans())
        role_name = f"{tag}-role{i}"
        role_namespace = draw(st.sampled_from(["default", "default", tag]))
        role: dict[str, Any] = {
            "apiVersion": RBAC,
            "kind": "ClusterRole" if cluster_role else "Role",
            "metadata": {"name": role_name} if cluster_role
            else {"name": role_name, "namespace": role_namespace},
            "rules": draw(st.lists(rules, max_size=2)),
        }  # fmt: skip
        docs.append(role)
        cluster_binding = cluster_role and draw(st.booleans())
        binding_namespace = (
            role_namespace if not cluster_role else draw(st.sampled_from(["default", tag]))
        )
        binding: dict[str, Any] = {
            "apiVersion": RBAC,
            "kind": "ClusterRoleBinding" if cluster_binding else "RoleBinding",
            "metadata": {"name": f"{tag}-binding{i}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role["kind"],
                        "name": role_name},
            "subjects": draw(st.lists(subjects, min_size=1, max_size=2)),
        }  # fmt: skip
        if not cluster_binding:
            binding["metadata"]["namespace"] = binding_namespace
        docs.append(binding)
    return docs, accounts


@settings(max_examples=int(25 * SCALE), deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_a_request_reaches_the_upstream_iff_its_identity_is_allowed(
    rig: Rig, data: st.DataObject
) -> None:
    tag = f"p{next(_counter)}-{uuid.uuid4().hex[:6]}"
    docs, accounts = data.draw(policies(tag))
    with ObjectStore.open(rig.gateway.state) as store:
        store.apply([parse_object(doc) for doc in docs])
    rig.applied += docs
    key = load_signing_key(rig.gateway.state)
    for _ in range(6):
        who = data.draw(st.sampled_from(["account", "account", "unknown", "garbage", "none"]))
        namespace, name = data.draw(st.sampled_from(accounts))
        if who == "account":
            with ObjectStore.open(rig.gateway.state) as store:
                uid = store.require("ServiceAccount", name, namespace).metadata.uid or ""
            token = issue_token(namespace, name, uid, signing_key=key, duration=timedelta(hours=1))
        elif who == "unknown":  # signed by the gateway's key, for an account that does not exist
            token = issue_token(namespace, name + "-gone", str(uuid.uuid4()), signing_key=key)
        else:
            token = "not-a-token"
        method = data.draw(
            st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS",
                             "FROB", "TRACE", "CONNECT"])
        )  # fmt: skip
        pieces = data.draw(st.lists(path_pieces, min_size=1, max_size=4))
        marker = f"{tag}-{uuid.uuid4().hex[:8]}"
        # Under /api/: never the dashboard's static shell, which is public.
        target = "/api/" + "/".join(pieces) + f"?m={marker}"
        auth = f"Authorization: Bearer {token}\r\n" if who != "none" else ""
        body = b"hello" if method in ("POST", "PUT", "PATCH") else b""
        request = (
            f"{method} {target} HTTP/1.1\r\nHost: ray\r\n{auth}Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        answer, arrived = send(rig, request)
        got = statuses(answer)

        identity = service_account_identity(namespace, name)
        verb = METHOD_VERBS.get(method, method.lower())
        attributes = Attributes(identity, verb, namespace="default", api_group="ray.io",
                                api_version="v1", resource="rayclusters", name=CLUSTER)  # fmt: skip
        allowed = who == "account" and reference_allows(rig.applied, attributes)
        expect_forward = allowed and method not in REFUSED_METHODS | ANSWERED_BY_GATEWAY
        event(f"forwarded={expect_forward}")
        where = f"{method} {target} as {who} {namespace}/{name}: {answer[:200]!r}"
        if arrived:
            assert expect_forward, f"{where}: reached the upstream, allowed={allowed}"
            [request_seen] = [r for part in arrived for r in parse_requests(part)]
            assert marker.encode() in request_seen.target, where
            assert request_seen.method == method.encode() and request_seen.body == body, where
            assert got[:1] == [200], where
            continue
        if method == "FROB" and got[:1] in ([400], [405], [501]):
            continue  # a method the parser does not know may be refused before anything else
        assert not expect_forward, f"{where}: allowed but not forwarded"
        if method in REFUSED_METHODS:
            assert got[:1] in ([400], [404], [405], [501]), where
        elif who != "account":
            assert got[:1] == [401], where
        elif not allowed:
            assert got[:1] == [403], where
        else:
            assert got[:1] == [204], where  # OPTIONS, answered by the gateway once allowed


# -- 2. any byte string: a 4xx, or exactly one well-formed request ------------------------------

METHODS = [b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE",
           b"CONNECT", b"FROB", b"get", b"", b"G\x00T"]  # fmt: skip
TARGETS = [b"/api/jobs/", b"/api/version?x=1", b"*", b"http://ray/api/jobs/", b"ray:443",
           b"/static/../api/jobs/", b"/api/jobs/%2e%2e/x", b"//api", b"/a b", b"/\x7f", b""]  # fmt: skip
VERSIONS = [b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"HTTP/0.9",
            b"http/1.1", b"", b"HTTP/1.1 "]  # fmt: skip
EOLS = [b"\r\n"] * 8 + [b"\n", b"\r", b" \r\n", b"\r\r\n"]
HEADER_NAMES = [b"Content-Length", b"Transfer-Encoding", b"Connection", b"Expect", b"Upgrade",
                b"X-Remote-User", b"X-Remote-Group", b"x_remote_user", b"X-Ray-Authorization",
                b"Cookie", b"Host", b"Accept", b"Content-Type", b"X Bad", b"X:Bad",
                b"Content-Length ", b"Transfer_Encoding", b"TE", b"Sec-WebSocket-Key", b""]  # fmt: skip
HEADER_VALUES = [b"0", b"5", b"-1", b"+5", b"5, 5", b"0x5", b"chunked", b"chunked, identity",
                 b"identity", b"gzip, chunked", b" chunked", b"close", b"keep-alive",
                 b"Upgrade", b"100-continue", b"websocket", b"h2c", b"admin", b"system:masters",
                 b"Bearer stolen", b"ray-authentication-token=stolen", b"a\x00b", b"a\rb",
                 b"\x01", b"\xff", b"a\r\n b", b"ray", b"*/*"]  # fmt: skip
SPOOF_VALUES = [b"admin", b"system:masters", b"Bearer stolen", b"ray-authentication-token=stolen"]
SPOOF_NAMES = [b"X-Remote-User", b"X-Remote-Group", b"x_remote_user", b"X-Ray-Authorization",
               b"Cookie", b"Accept", b"X-Remote-Extra-Scopes"]  # fmt: skip
BODIES = [b"", b"hello", b"0\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n", b"-1\r\n",
          b"GET /smuggled HTTP/1.1\r\nHost: ray\r\n\r\n"]  # fmt: skip
HEAD_END = re.compile(rb"\n\r?\n")


@st.composite
def http_like(draw: st.DrawFn, auth: bytes) -> bytes:
    """Half of them a well-formed request with a few odd headers; all of them damaged by up to
    two random byte edits (or none)."""
    wellformed = draw(st.booleans())
    eol = b"\r\n" if wellformed else draw(st.sampled_from(EOLS))
    line = b" ".join(
        [draw(st.sampled_from(METHODS[:7] if wellformed else METHODS)),
         draw(st.sampled_from(TARGETS[:3] if wellformed else TARGETS)),
         b"HTTP/1.1" if wellformed else draw(st.sampled_from(VERSIONS))]
    )  # fmt: skip
    headers = [b"Host: ray"] if wellformed or draw(st.integers(0, 5)) else []
    if wellformed or draw(st.integers(0, 4)):
        headers.append(auth.rstrip(b"\r\n"))
    for _ in range(draw(st.integers(0, 4))):
        if wellformed:  # identity spoofing and credentials, in well-formed fields
            name = draw(st.sampled_from(SPOOF_NAMES))
            value = draw(st.sampled_from(SPOOF_VALUES))
        else:
            name = draw(st.sampled_from(HEADER_NAMES))
            value = draw(st.one_of(st.sampled_from(HEADER_VALUES), st.binary(max_size=8)))
        headers.append(name + b":" + draw(st.sampled_from([b" ", b"", b"\t"])) + value)
    draw(st.randoms()).shuffle(headers)
    body = draw(st.one_of(st.sampled_from(BODIES), st.binary(max_size=16)))
    if wellformed or draw(st.booleans()):
        headers.append(b"Content-Length: %d" % len(body))
    data = line + eol + b"".join(h + eol for h in headers) + eol + body
    # A few random edits of the whole string.
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        pos = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = draw(st.binary(min_size=1, max_size=1))
        if edit == "insert":
            data = data[:pos] + byte + data[pos:]
        elif edit == "delete":
            data = data[:pos] + data[pos + 1 :]
        else:
            data = data[:pos] + byte + data[pos + 1 :]
    return data


@settings(max_examples=int(150 * SCALE), deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_any_bytes_get_a_4xx_or_reach_the_upstream_as_one_well_formed_request(
    rig: Rig, data: st.DataObject
) -> None:
    raw = data.draw(http_like(rig.allowed_auth))
    # One request per example: a second head end would make a pipelined second request.
    assume(len(HEAD_END.findall(raw)) <= 1)
    answer, arrived = send(rig, raw)
    got = statuses(answer)
    where = f"{raw!r} -> {answer[:300]!r}"
    if not arrived:
        event("refused" if got else "no answer")
        if got == [204] and raw.startswith(b"OPTIONS "):
            return  # an allowed OPTIONS: the gateway answers it itself
        if got:
            assert 400 <= got[0] < 500 and all(s >= 400 for s in got), where
        else:
            # Silence is only right for a request that never ended (the gateway still waits).
            assert not HEAD_END.search(raw), f"no answer to a whole request: {where}"
        return
    event("forwarded")
    # A request whose body the client never finished (it sent less than its Content-Length)
    # has no answer yet; bodies stream, so the upstream holds that one request with the body
    # cut where the client stopped, and waits for the rest as the gateway does.
    unfinished = not got
    try:
        requests = [
            r for part in arrived for r in parse_requests(part, last_body_may_end_early=unfinished)
        ]
    except Malformed as err:
        pytest.fail(f"malformed request upstream ({err}): {arrived!r} from {where}")
    assert len(requests) == 1, f"{len(requests)} requests upstream from {where}"
    if unfinished:
        [only] = requests
        assert only.body in raw, f"not the client's unfinished body: {where}"
    else:
        assert got[0] in (200, 101) or 400 <= got[0] < 500, where
    [seen] = requests
    # Identity and credentials upstream are the gateway's own, whatever the client sent.
    for name, value in seen.headers:
        key = name.lower().replace(b"_", b"-")
        if key.startswith(b"x-remote-"):
            assert key in (b"x-remote-user", b"x-remote-group") and name.lower() == key, where
            assert not any(forged in value for forged in SPOOF_VALUES_FORBIDDEN), where
    assert seen.values("x-remote-user") in ([], [ALLOWED_IDENTITY]), where
    assert seen.values("authorization") in ([], [b"Bearer " + UPSTREAM_TOKEN.encode()]), where
    assert b"x-ray-authorization" not in seen.names(), where
    assert not any(b"ray-authentication-token" in v for v in seen.values("cookie")), where
