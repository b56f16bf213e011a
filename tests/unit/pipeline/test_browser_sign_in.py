"""The pipeline's browser-session step, on its own (no transport), with a real OpenID provider
(npm's oidc-provider) for the redirects: who a session cookie is, where a browser without one
goes, and what API clients get."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from raygate.config import OIDCConfig
from raygate.embedded import EmbeddedAuthority
from raygate.identity import Identity
from raygate.objects import parse_object
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
from raygate.sso.assemble import browser_sign_in
from raygate.sso.flow import BrowserSignIn
from raygate.sso.store import SessionTokens
from raygate.store.sqlite import ObjectStore
from tests.conftest import free_port
from tests.integration.gateway_helpers import UPSTREAM_TOKEN, guide_attributes, prepare_state
from tests.oidc_provider import CLIENT_ID, Provider, run_provider

HTML = "text/html,application/xhtml+xml,*/*;q=0.8"
ALICE = Identity("alice@example.com", "alice", ("ml-team", "system:authenticated"))
ML_TEAM_CAN_GET = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "ml-get", "namespace": "default"},
        "rules": [{"apiGroups": ["ray.io"], "resources": ["rayclusters"], "verbs": ["get"]}],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "ml-get", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ml-get"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "ml-team"}],
    },
]


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    with run_provider({"alice@example.com": ["ml-team"]}) as running:
        yield running


def _pipeline(state_dir: Path, issuer: str) -> tuple[Pipeline, BrowserSignIn, EmbeddedAuthority]:
    prepare_state(state_dir)
    with ObjectStore.open(state_dir) as store:
        store.apply([parse_object(doc) for doc in ML_TEAM_CAN_GET])
    authority = EmbeddedAuthority(state_dir)
    oidc = OIDCConfig.model_validate(
        {"issuerURL": issuer, "clientID": CLIENT_ID, "browserSignIn": True}
    )
    sign_in = browser_sign_in(oidc, state_dir)
    settings = PipelineSettings(
        authority=authority,
        profile=profile_for(guide_attributes()),
        upstream_token=UPSTREAM_TOKEN,
        browser_login=True,
        browser_sign_in=sign_in,
    )
    return Pipeline(settings), sign_in, authority


def _head(method: str, target: str, *headers: tuple[str, str]) -> RequestHead:
    return RequestHead(
        method, target, Headers(list(headers)), peer="10.0.0.7", host="127.0.0.1:8265"
    )


def _decide(pipeline: Pipeline, head: RequestHead) -> Forward | Answer:
    async def run() -> Forward | Answer:
        return await pipeline.decide(head)

    return asyncio.run(run())


def test_a_browser_without_a_session_goes_to_the_provider_with_pkce(
    provider: Provider, tmp_path: Path
) -> None:
    pipeline, sign_in, authority = _pipeline(tmp_path, provider.issuer)
    outcome = _decide(pipeline, _head("GET", "/jobs?x=1", ("Accept", HTML)))
    assert isinstance(outcome, Answer) and outcome.status == 302
    headers = dict(outcome.headers)
    location = urlsplit(headers["Location"])
    assert f"{location.scheme}://{location.netloc}" == provider.issuer
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert query["response_type"] == "code" and query["client_id"] == CLIENT_ID
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["state"] and query["nonce"] and query["state"] != query["nonce"]
    assert query["redirect_uri"] == "http://127.0.0.1:8265/oauth2/callback"
    cookie = headers["Set-Cookie"]
    assert cookie.startswith("__Host-raygate-signin=")
    assert all(part in cookie for part in ("HttpOnly", "SameSite=Lax", "Secure", "Path=/"))
    assert outcome.record is not None and outcome.record.decision is AuditDecision.SIGN_IN
    authority.store.close()


def test_api_clients_get_401_never_a_redirect(provider: Provider, tmp_path: Path) -> None:
    pipeline, _, authority = _pipeline(tmp_path, provider.issuer)
    for accept in ("application/json, text/plain, */*", "*/*"):
        outcome = _decide(pipeline, _head("GET", "/api/jobs/", ("Accept", accept)))
        assert isinstance(outcome, Answer) and outcome.status == 401
    authority.store.close()


def test_a_session_is_the_person_with_their_groups(provider: Provider, tmp_path: Path) -> None:
    pipeline, sign_in, authority = _pipeline(tmp_path, provider.issuer)
    secret, session = sign_in.store.create(
        ALICE, time.time() + 3600, SessionTokens("id.token.x", None)
    )
    cookie = ("Cookie", f"other=1; __Host-raygate-session={secret}")
    outcome = _decide(pipeline, _head("GET", "/api/jobs/", cookie, ("Accept", "application/json")))
    assert isinstance(outcome, Forward), outcome
    assert outcome.identity == ALICE
    headers = dict(outcome.upstream_headers)
    assert headers["X-Remote-User"] == "alice@example.com"
    assert headers["Authorization"] == f"Bearer {UPSTREAM_TOKEN}"
    assert secret not in str(outcome.upstream_headers)  # the session cookie is not Ray's
    assert outcome.record.identity == ALICE and outcome.record.decision is AuditDecision.ALLOW

    whoami = _decide(pipeline, _head("GET", "/raygate/whoami", cookie))
    assert isinstance(whoami, Answer) and whoami.status == 200
    assert b'"username": "alice@example.com"' in whoami.body and b"ml-team" in whoami.body

    # Only get is granted: a state change is refused, and without same-origin proof first.
    no_origin = _decide(pipeline, _head("POST", "/api/jobs/", cookie))
    assert isinstance(no_origin, Answer) and no_origin.status == 403
    assert b"another site or port" in no_origin.body
    same_origin = _decide(
        pipeline, _head("POST", "/api/jobs/", cookie, ("Origin", "http://127.0.0.1:8265"))
    )
    assert isinstance(same_origin, Answer) and same_origin.status == 403
    assert b'User "alice@example.com" cannot create' in same_origin.body

    sign_in.store.delete_named(session.name)
    revoked = _decide(pipeline, _head("GET", "/api/jobs/", cookie, ("Accept", "application/json")))
    assert isinstance(revoked, Answer) and revoked.status == 401
    authority.store.close()


def test_an_unreachable_provider_answers_503_and_forwards_nothing(tmp_path: Path) -> None:
    pipeline, _, authority = _pipeline(tmp_path, f"http://127.0.0.1:{free_port()}")
    outcome = _decide(pipeline, _head("GET", "/", ("Accept", HTML)))
    assert isinstance(outcome, Answer) and outcome.status == 503
    assert outcome.record is not None and outcome.record.decision is AuditDecision.UNAVAILABLE
    authority.store.close()
