"""The decision pipeline on its own: request heads in, Forward or Answer out, no transport."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from raygate.authz.attributes import Profile as ProfileName
from raygate.embedded import EmbeddedAuthority
from raygate.objects import parse_object
from raygate.pipeline import (
    Answer,
    AuditDecision,
    DecisionMemo,
    Forward,
    Headers,
    Pipeline,
    PipelineSettings,
    RequestHead,
    profile_for,
)
from raygate.store.sqlite import ObjectStore
from tests.integration.gateway_helpers import (
    UPSTREAM_TOKEN,
    grant,
    guide_attributes,
    prepare_state,
    role_binding,
    service_account,
    token_for,
)


def _pipeline(state_dir: Path) -> tuple[Pipeline, EmbeddedAuthority]:
    prepare_state(state_dir)
    with ObjectStore.open(state_dir) as store:
        store.apply([service_account("reader"), service_account("nobody")])
        grant(store, "reader", ["get"])
    authority = EmbeddedAuthority(state_dir)
    settings = PipelineSettings(
        authority=authority,
        profile=profile_for(guide_attributes()),
        upstream_token=UPSTREAM_TOKEN,
        public_routes=authority.public_routes(),
    )
    return Pipeline(settings), authority


def _head(method: str, target: str, *headers: tuple[str, str]) -> RequestHead:
    return RequestHead(method, target, Headers(list(headers)), peer="10.0.0.7", host="ray:8265")


def test_an_allowed_request_is_forwarded_as_the_caller_with_rays_token(tmp_path: Path) -> None:
    pipeline, authority = _pipeline(tmp_path)
    token = token_for(tmp_path, "reader")
    head = _head(
        "GET",
        "/api/jobs/?x=1",
        ("Authorization", f"Bearer {token}"),
        ("X-Remote-User", "admin"),
        ("Accept", "application/json"),
    )
    for _ in range(2):  # the second time from the decision cache: the same outcome
        outcome = asyncio.run(pipeline.decide(head))
        assert isinstance(outcome, Forward)
        assert outcome.identity is not None
        assert outcome.identity.user == "system:serviceaccount:default:reader"
        headers = dict(outcome.upstream_headers)
        assert headers["Authorization"] == f"Bearer {UPSTREAM_TOKEN}"
        assert headers["X-Remote-User"] == "system:serviceaccount:default:reader"
        assert [v for n, v in outcome.upstream_headers if n == "X-Remote-User"] == [
            "system:serviceaccount:default:reader"
        ]
        assert headers["X-Forwarded-For"] == "10.0.0.7"
        assert outcome.record.decision is AuditDecision.ALLOW
        assert outcome.record.attributes[0].verb == "get"
    authority.store.close()


def test_refusals_are_answers_with_their_audit_decision(tmp_path: Path) -> None:
    pipeline, authority = _pipeline(tmp_path)
    reader = token_for(tmp_path, "reader")
    nobody = token_for(tmp_path, "nobody")
    cases = [
        (_head("GET", "/api/version"), 401, AuditDecision.UNAUTHENTICATED),
        (
            _head("GET", "/", ("Authorization", "Bearer not-a-token")),
            401,
            AuditDecision.UNAUTHENTICATED,
        ),
        (_head("GET", "/", ("Authorization", f"Bearer {nobody}")), 403, AuditDecision.DENY),
        (
            _head("POST", "/api/jobs/", ("Authorization", f"Bearer {reader}")),
            403,
            AuditDecision.DENY,
        ),
        (_head("TRACE", "/"), 405, AuditDecision.NONE),
        (_head("GET", "/openid/v1/jwks"), 200, AuditDecision.PUBLIC),
    ]
    for head, status, decision in cases:
        outcome = asyncio.run(pipeline.decide(head))
        assert isinstance(outcome, Answer), head
        assert (outcome.status, outcome.record and outcome.record.decision) == (status, decision)
    authority.store.close()


def test_a_store_change_drops_cached_decisions(tmp_path: Path) -> None:
    pipeline, authority = _pipeline(tmp_path)
    token = token_for(tmp_path, "reader")
    head = _head("GET", "/api/version", ("Authorization", f"Bearer {token}"))
    assert isinstance(asyncio.run(pipeline.decide(head)), Forward)
    with ObjectStore.open(tmp_path) as store:
        store.delete("RoleBinding", "reader", "default")
    assert authority.refresh()
    outcome = asyncio.run(pipeline.decide(head))
    assert isinstance(outcome, Answer) and outcome.status == 403
    authority.store.close()


def test_two_credentials_of_one_kind_are_refused_whichever_is_valid(tmp_path: Path) -> None:
    """Any door (not only the HTTP data plane) refuses a request naming two credentials."""
    pipeline, authority = _pipeline(tmp_path)
    reader = token_for(tmp_path, "reader")
    valid = ("Authorization", f"Bearer {reader}")
    stolen = ("Authorization", "Bearer stolen")
    cases = [
        (valid, stolen),
        (stolen, valid),
        (valid, valid),
        (("Authorization", f"Bearer {reader}, Bearer stolen"),),
        (valid, ("Cookie", f"ray-authentication-token={reader}; ray-authentication-token=x")),
        (valid, ("Cookie", "raygate-session=a"), ("Cookie", "b=1; raygate-session=c")),
    ]
    for headers in cases:
        outcome = asyncio.run(pipeline.decide(_head("GET", "/api/version", *headers)))
        assert isinstance(outcome, Answer), headers
        assert outcome.status == 400 and outcome.record is not None
        assert outcome.record.decision is AuditDecision.DENY
        assert reader not in outcome.record.reason
    # One of each kind is no ambiguity: the bearer token decides, the cookie is stripped.
    single = _head("GET", "/api/version", valid, ("Cookie", "ray-authentication-token=x; a=1"))
    assert isinstance(asyncio.run(pipeline.decide(single)), Forward)
    authority.store.close()


# -- a connection's repeated request (DecisionMemo) -------------------------------------------


def _memo_pipeline(tmp_path: Path) -> tuple[Pipeline, EmbeddedAuthority, str]:
    pipeline, authority = _pipeline(tmp_path)
    return pipeline, authority, token_for(tmp_path, "reader")


def test_a_repeated_request_on_a_connection_gets_the_same_decision_from_its_memo(
    tmp_path: Path,
) -> None:
    pipeline, authority, token = _memo_pipeline(tmp_path)
    memo = DecisionMemo()
    head = _head("GET", "/api/version", ("Authorization", f"Bearer {token}"))
    outcomes = [asyncio.run(pipeline.decide(head, memo)) for _ in range(4)]
    assert all(isinstance(o, Forward) for o in outcomes)
    assert memo.key is not None  # the cached decision was kept for the connection
    first, *rest = outcomes
    for outcome in rest:
        assert outcome.upstream_headers == first.upstream_headers
        assert outcome.identity == first.identity
        # Each request still has its own audit record, with the decision and attributes.
        assert outcome.record is not first.record
        assert outcome.record.decision is AuditDecision.ALLOW
        assert [a.verb for a in outcome.record.attributes] == ["get"]
    authority.store.close()


def test_a_memo_is_used_only_for_the_very_same_request(tmp_path: Path) -> None:
    """Any change (method, target, a header line, the credential) walks the steps again."""
    pipeline, authority, token = _memo_pipeline(tmp_path)
    nobody = token_for(tmp_path, "nobody")
    memo = DecisionMemo()
    allowed = _head("GET", "/api/version", ("Authorization", f"Bearer {token}"))
    assert isinstance(asyncio.run(pipeline.decide(allowed, memo)), Forward)
    cases = [
        (_head("POST", "/api/version", ("Authorization", f"Bearer {token}")), 403),
        (_head("GET", "/api/version", ("Authorization", f"Bearer {nobody}")), 403),
        (
            _head(
                "GET",
                "/api/version",
                ("Authorization", f"Bearer {token}"),
                ("Authorization", f"Bearer {nobody}"),
            ),
            400,
        ),
        (_head("GET", "/api/version"), 401),
        (_head("TRACE", "/api/version", ("Authorization", f"Bearer {token}")), 405),
    ]
    for head, status in cases:
        outcome = asyncio.run(pipeline.decide(head, memo))
        assert isinstance(outcome, Answer) and outcome.status == status, head
        # The allowed request's memo is still there, and still used for that request only.
        assert isinstance(asyncio.run(pipeline.decide(allowed, memo)), Forward)
    # A forged identity header is a different request, and is stripped as always.
    forged = _head(
        "GET", "/api/version", ("Authorization", f"Bearer {token}"), ("X-Remote-User", "admin")
    )
    outcome = asyncio.run(pipeline.decide(forged, memo))
    assert isinstance(outcome, Forward)
    assert [v for n, v in outcome.upstream_headers if n == "X-Remote-User"] == [
        "system:serviceaccount:default:reader"
    ]
    authority.store.close()


def test_a_store_change_ends_a_connections_memo(tmp_path: Path) -> None:
    pipeline, authority, token = _memo_pipeline(tmp_path)
    memo = DecisionMemo()
    head = _head("GET", "/api/version", ("Authorization", f"Bearer {token}"))
    for _ in range(2):
        assert isinstance(asyncio.run(pipeline.decide(head, memo)), Forward)
    with ObjectStore.open(tmp_path) as store:
        store.delete("RoleBinding", "reader", "default")
    assert authority.refresh()
    outcome = asyncio.run(pipeline.decide(head, memo))
    assert isinstance(outcome, Answer) and outcome.status == 403
    authority.store.close()


def test_a_memo_lasts_no_longer_than_the_cached_decision(tmp_path: Path) -> None:
    pipeline, authority, token = _memo_pipeline(tmp_path)
    pipeline.settings.decision_ttl = 0.05
    memo = DecisionMemo()
    head = _head("GET", "/api/version", ("Authorization", f"Bearer {token}"))
    for _ in range(2):
        assert isinstance(asyncio.run(pipeline.decide(head, memo)), Forward)
    kept = memo.allowed
    time.sleep(0.1)
    # Expired: decided afresh (verified again), and a new decision is kept.
    assert isinstance(asyncio.run(pipeline.decide(head, memo)), Forward)
    assert memo.allowed is not None and memo.allowed is not kept
    authority.store.close()


def test_requests_a_profile_hook_acts_on_are_never_memorized(tmp_path: Path) -> None:
    """The ray profile's job ownership runs on every request it concerns."""
    prepare_state(tmp_path)
    role = parse_object(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "reader", "namespace": "default"},
            "rules": [{"apiGroups": ["ray.io"], "resources": ["rayclusters/jobs"], "verbs": ["*"]}],
        }
    )
    with ObjectStore.open(tmp_path) as store:
        store.apply([service_account("reader"), role, role_binding("reader", "reader")])
    authority = EmbeddedAuthority(tmp_path)
    profile = profile_for(guide_attributes().model_copy(update={"profile": ProfileName.RAY}))
    pipeline = Pipeline(
        PipelineSettings(authority=authority, profile=profile, upstream_token=UPSTREAM_TOKEN)
    )
    token = token_for(tmp_path, "reader")
    memo = DecisionMemo()
    submit = _head(
        "POST",
        "/api/jobs/",
        ("Authorization", f"Bearer {token}"),
        ("Content-Type", "application/json"),
    )
    for _ in range(2):
        outcome = asyncio.run(pipeline.decide(submit, memo))
        assert isinstance(outcome, Forward), outcome
        assert outcome.request_body_hook is not None  # the submitter stamp, every time
    assert memo.key is None
    authority.store.close()
