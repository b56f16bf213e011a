"""Who gets through the gateway: 401, 403, fail-closed 503, live policy, OIDC discovery.

Every refusal is checked from both sides: what the client reads, and that the recording upstream
(Ray's stand-in) saw nothing at all.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import jwt
import pytest

from raygate.errors import BackendUnavailable
from raygate.identity import Attributes, Decision, Identity
from raygate.pipeline import MAX_TOKEN_BYTES
from raygate.store.sqlite import ObjectStore
from raygate.store.tokens import DEFAULT_AUDIENCE, DEFAULT_ISSUER

from .gateway_helpers import (
    bearer,
    client_session,
    gateway_stack,
    grant,
    raw_exchange,
    service_account,
    status_of,
)

# Live policy changes must show within one second; the tests give them a little more.
POLICY_DEADLINE = 1.5

METHOD_VERBS = [
    ("GET", "get"),
    ("HEAD", "get"),
    ("POST", "create"),
    ("PUT", "update"),
    ("PATCH", "patch"),
    ("DELETE", "delete"),
]


def test_request_without_token_gets_401_bearer_challenge_and_how_to_get_a_token(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            async with client_session() as client, client.get(stack.url / "api/version") as resp:
                body = await resp.text()
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"] == 'Bearer realm="raygate"'
            assert "requires a bearer token" in body
            assert "raygate create token" in body
            assert "RAY_JOB_HEADERS" in body and "Authorization: Bearer <token>" in body
            assert stack.upstream.requests == []

    asyncio.run(scenario())


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
def test_no_method_passes_without_token(tmp_path: Path, method: str) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            async with client_session() as client, client.request(
                method, stack.url / "api/jobs/", data=b'{"entrypoint": "echo hi"}'
            ) as resp:
                assert resp.status == 401
            assert stack.upstream.requests == []

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Bearer not-a-jwt", id="garbage"),
        pytest.param("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", id="alg-none"),
        pytest.param("Bearer " + "a" * (MAX_TOKEN_BYTES + 1), id="too-large"),
        pytest.param("Bearer ", id="empty"),
        pytest.param("Basic cmF5LXVzZXI6cGFzc3dvcmQ=", id="basic-scheme"),
    ],
)
def test_invalid_credentials_get_401_and_reach_nothing(tmp_path: Path, authorization: str) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            async with client_session() as client, client.get(
                stack.url / "api/jobs/", headers={"Authorization": authorization}
            ) as resp:
                body = await resp.text()
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Bearer realm=")
            assert "raygate create token" in body
            assert stack.upstream.requests == []

    asyncio.run(scenario())


def test_token_of_deleted_service_account_gets_401(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            token = stack.token("ray-user")
            with ObjectStore.open(stack.state_dir) as store:
                store.delete("ServiceAccount", "ray-user", "default")
            stack.authority.refresh()
            async with client_session() as client, client.get(
                stack.url / "api/version", headers=bearer(token)
            ) as resp:
                body = await resp.text()
            assert resp.status == 401
            assert "service account was deleted" in body
            assert stack.upstream.requests == []

    asyncio.run(scenario())


def test_token_of_recreated_service_account_gets_401(tmp_path: Path) -> None:
    # Same name, new uid: the old account's tokens must not come back to life.
    async def scenario() -> None:
        state = tmp_path / "state"
        async with gateway_stack(state, accounts={"ray-user": ["*"]}) as stack:
            token = stack.token("ray-user")
            with ObjectStore.open(state) as store:
                store.delete("ServiceAccount", "ray-user", "default")
                store.apply([service_account("ray-user")])
            stack.authority.refresh()
            async with client_session() as client:
                async with client.get(stack.url / "api/version", headers=bearer(token)) as resp:
                    assert resp.status == 401
                fresh = stack.token("ray-user")
                async with client.get(stack.url / "api/version", headers=bearer(fresh)) as resp:
                    assert resp.status == 200

    asyncio.run(scenario())


def test_account_without_binding_gets_403_in_kubernetes_wording(tmp_path: Path) -> None:
    async def scenario() -> None:
        accounts = {"ray-user": ["*"], "other": None}
        async with gateway_stack(tmp_path / "state", accounts=accounts) as stack:
            async with client_session() as client, client.get(
                stack.url / "api/jobs/", headers=bearer(stack.token("other"))
            ) as resp:
                body = await resp.text()
            assert resp.status == 403
            assert (
                'User "system:serviceaccount:default:other" cannot get resource "rayclusters" '
                'in API group "ray.io" in the namespace "default"'
            ) in body
            assert stack.upstream.requests == []

    asyncio.run(scenario())


def test_role_granting_only_get_allows_get_and_refuses_post_as_create(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"viewer": ["get"]}) as stack:
            token = bearer(stack.token("viewer"))
            async with client_session() as client:
                async with client.get(stack.url / "api/jobs/", headers=token) as resp:
                    assert resp.status == 200
                async with client.post(
                    stack.url / "api/jobs/", headers=token, json={"entrypoint": "echo hi"}
                ) as resp:
                    body = await resp.text()
            assert resp.status == 403
            assert 'User "system:serviceaccount:default:viewer" cannot create resource' in body
            assert [seen.method for seen in stack.upstream.requests] == ["GET"]

    asyncio.run(scenario())


@pytest.mark.parametrize(("method", "verb"), METHOD_VERBS)
def test_verb_follows_the_http_method(tmp_path: Path, method: str, verb: str) -> None:
    async def scenario() -> None:
        accounts = {"granted": [verb], "lister": ["list"]}
        async with gateway_stack(tmp_path / "state", accounts=accounts) as stack:
            async with client_session() as client:
                async with client.request(
                    method, stack.url / "api/jobs/x", headers=bearer(stack.token("granted"))
                ) as resp:
                    assert resp.status == 200
                async with client.request(
                    method, stack.url / "api/jobs/x", headers=bearer(stack.token("lister"))
                ) as resp:
                    body = await resp.text()
            assert resp.status == 403
            if method != "HEAD":  # a HEAD answer has no body
                assert f'cannot {verb} resource "rayclusters"' in body
            assert [seen.method for seen in stack.upstream.requests] == [method]

    asyncio.run(scenario())


def test_options_is_authorized_and_answered_by_the_gateway(tmp_path: Path) -> None:
    async def scenario() -> None:
        accounts = {"viewer": ["get"], "other": None}
        async with gateway_stack(tmp_path / "state", accounts=accounts) as stack:
            async with client_session() as client:
                async with client.options(stack.url / "api/jobs/") as resp:
                    assert resp.status == 401
                headers = bearer(stack.token("other"))
                async with client.options(stack.url / "api/jobs/", headers=headers) as resp:
                    assert resp.status == 403
                headers = bearer(stack.token("viewer"))
                async with client.options(stack.url / "api/jobs/", headers=headers) as resp:
                    assert resp.status == 204
                    assert "POST" in resp.headers["Allow"]
            assert stack.upstream.requests == []

    asyncio.run(scenario())


# -- fail closed ----------------------------------------------------------------------------------


class UnavailableAuthenticator:
    async def authenticate_token(self, token: str) -> Identity | None:
        raise BackendUnavailable("TokenReview: connection refused")


class HangingAuthenticator:
    async def authenticate_token(self, token: str) -> Identity | None:
        await asyncio.Event().wait()  # never answers
        return None


class UnavailableAuthorizer:
    async def authorize(self, attributes: Attributes) -> Decision:
        raise BackendUnavailable("SubjectAccessReview: 500 from the API server")


class HangingAuthorizer:
    async def authorize(self, attributes: Attributes) -> Decision:
        await asyncio.Event().wait()
        return Decision(allowed=True)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"authenticator": UnavailableAuthenticator()}, id="authn-unavailable"),
        pytest.param({"authorizer": UnavailableAuthorizer()}, id="authz-unavailable"),
        pytest.param(
            {"authenticator": HangingAuthenticator(), "backend_timeout": 0.2}, id="authn-hangs"
        ),
        pytest.param(
            {"authorizer": HangingAuthorizer(), "backend_timeout": 0.2}, id="authz-hangs"
        ),
    ],
)
def test_backend_that_fails_or_hangs_gets_503_and_nothing_is_forwarded(
    tmp_path: Path, overrides: dict[str, object]
) -> None:
    async def scenario() -> None:
        async with gateway_stack(
            tmp_path / "state", accounts={"ray-user": ["*"]}, **overrides
        ) as stack:
            async with client_session() as client, client.post(
                stack.url / "api/jobs/",
                headers=bearer(stack.token("ray-user")),
                json={"entrypoint": "echo hi"},
            ) as resp:
                body = await resp.text()
            assert resp.status == 503
            assert int(resp.headers["Retry-After"]) > 0
            assert "nothing was forwarded" in body
            assert stack.upstream.requests == []

    asyncio.run(scenario())


# -- live policy ----------------------------------------------------------------------------------


async def _poll_status(client: object, url: object, headers: dict[str, str], want: int) -> int:
    """GET until the status is `want` or POLICY_DEADLINE passes; the last status seen."""
    deadline = time.monotonic() + POLICY_DEADLINE
    while True:
        async with client.get(url, headers=headers) as resp:  # type: ignore[attr-defined]
            status = resp.status
        if status == want or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.05)


def test_role_binding_applied_elsewhere_takes_effect_without_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": None}) as stack:
            headers = bearer(stack.token("ray-user"))
            url = stack.url / "api/version"
            async with client_session() as client:
                async with client.get(url, headers=headers) as resp:
                    assert resp.status == 403
                with ObjectStore.open(stack.state_dir) as cli_store:  # as `raygate apply` does
                    grant(cli_store, "ray-user", ["*"])
                assert await _poll_status(client, url, headers, want=200) == 200

    asyncio.run(scenario())


def test_deleting_the_service_account_revokes_its_token_without_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            headers = bearer(stack.token("ray-user"))
            url = stack.url / "api/version"
            async with client_session() as client:
                async with client.get(url, headers=headers) as resp:
                    assert resp.status == 200
                with ObjectStore.open(stack.state_dir) as cli_store:  # as `raygate delete` does
                    cli_store.delete("ServiceAccount", "ray-user", "default")
                assert await _poll_status(client, url, headers, want=401) == 401

    asyncio.run(scenario())


# -- OIDC discovery -------------------------------------------------------------------------------


def test_oidc_discovery_and_jwks_are_public_and_verify_issued_tokens(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            token = stack.token("ray-user")
            async with client_session() as client:
                async with client.get(stack.url / ".well-known/openid-configuration") as resp:
                    assert resp.status == 200
                    discovery = await resp.json()
                async with client.get(stack.url / "openid/v1/jwks") as resp:
                    assert resp.status == 200
                    keys = await resp.json(content_type=None)
            assert discovery["issuer"] == DEFAULT_ISSUER
            assert discovery["jwks_uri"].endswith("/openid/v1/jwks")
            assert "RS256" in discovery["id_token_signing_alg_values_supported"]
            kid = jwt.get_unverified_header(token)["kid"]
            [jwk] = [k for k in keys["keys"] if k["kid"] == kid]
            claims = jwt.decode(
                token,
                jwt.PyJWK(jwk).key,
                algorithms=["RS256"],
                audience=DEFAULT_AUDIENCE,
                issuer=DEFAULT_ISSUER,
            )
            assert claims["sub"] == "system:serviceaccount:default:ray-user"
            assert stack.upstream.requests == []

    asyncio.run(scenario())


def test_a_failed_reload_does_not_stop_later_revocations(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            headers = bearer(stack.token("ray-user"))
            url = stack.url / "api/version"
            store = stack.authority.store
            healthy_snapshot = store.snapshot
            failures = 0

            def unreadable_snapshot() -> object:
                nonlocal failures
                failures += 1
                raise ValueError("a stored object no longer parses")

            store.snapshot = unreadable_snapshot  # type: ignore[method-assign]
            with ObjectStore.open(stack.state_dir) as cli_store:
                grant(cli_store, "ray-user", ["get"])  # a change the watcher fails to load
                deadline = time.monotonic() + POLICY_DEADLINE
                while failures == 0 and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert failures > 0
                store.snapshot = healthy_snapshot  # type: ignore[method-assign]
                cli_store.delete("ServiceAccount", "ray-user", "default")
            async with client_session() as client:
                assert await _poll_status(client, url, headers, want=401) == 401

    asyncio.run(scenario())


def test_a_token_that_is_not_ascii_is_refused_before_any_backend(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            request = (
                b"GET /api/version HTTP/1.1\r\nHost: ray\r\n"
                + b"Authorization: Bearer \xff\xfe\xfdtoken\r\nConnection: close\r\n\r\n"
            )
            answer = await raw_exchange(stack.url, request)
            assert answer.startswith(b"HTTP/1.1 401"), answer[:80]
            assert stack.upstream.requests == []

    asyncio.run(scenario())


def test_a_bearer_token_that_is_not_utf8_gets_401(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway_stack(tmp_path / "state", accounts={"ray-user": ["*"]}) as stack:
            request = (
                b"GET /api/jobs/ HTTP/1.1\r\nHost: ray\r\nAuthorization: Bearer \xff\xfe.\xc3(\r\n"
                b"Connection: close\r\n\r\n"
            )
            answer = await raw_exchange(stack.url, request)
            assert status_of(answer) == 401
            assert stack.upstream.requests == []

    asyncio.run(scenario())
