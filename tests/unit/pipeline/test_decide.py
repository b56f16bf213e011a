"""The decision pipeline on its own: request heads in, Forward or Answer out, no transport."""

from __future__ import annotations

import asyncio
from pathlib import Path

from raygate.embedded import EmbeddedAuthority
from raygate.pipeline import (
    Answer,
    AuditDecision,
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
