"""The Kubernetes client and the TokenReview / SubjectAccessReview backends, against the fake
API server through the real kubernetes_asyncio client (every body is schema-checked by the fake)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import pytest

from raygate.errors import BackendUnavailable, ConfigError
from raygate.identity import Attributes, Decision, Identity
from raygate.kube.client import KubeClient, TokenFile
from raygate.kube.sar import SubjectAccessReviewAuthorizer
from raygate.kube.tokenreview import TokenReviewAuthenticator

from .fakeapi import (
    API_AUDIENCE,
    SUBJECT_ACCESS_REVIEWS,
    TOKEN_REVIEWS,
    FakeKubeAPI,
    FakeUser,
    running_fake,
)

ALICE = FakeUser(
    "alice", uid="uid-alice", groups=("devs", "system:authenticated"),
    extra={"scopes.example.com": ("read", "write")},
)


def cluster_attributes(identity: Identity, verb: str = "get") -> Attributes:
    return Attributes(
        identity=identity, verb=verb, namespace="default", api_group="ray.io",
        api_version="v1", resource="rayclusters", name="ray-cluster-with-auth",
    )


def only_alice_may_get(attributes: Attributes) -> Decision:
    if attributes.identity.user == "alice" and attributes.verb == "get":
        return Decision(True, reason="alice reads")
    return Decision(False, reason="only alice may get")


async def client_for(fake: FakeKubeAPI, tmp_path: Path, **kwargs: object) -> KubeClient:
    return await KubeClient.from_kubeconfig(
        fake.write_kubeconfig(tmp_path / "kubeconfig"), **kwargs  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_token_review_returns_the_users_identity(tmp_path: Path, tls: bool) -> None:
    async def scenario() -> None:
        async with running_fake(tls=tls, users={"good-token": ALICE}) as fake:
            async with await client_for(fake, tmp_path) as client:
                authn = TokenReviewAuthenticator(client, audiences=[API_AUDIENCE])
                identity = await authn.authenticate_token("good-token")
                assert identity == Identity(
                    "alice", "uid-alice", ("devs", "system:authenticated"),
                    {"scopes.example.com": ("read", "write")},
                )
                assert await authn.authenticate_token("some-other-token") is None
            assert fake.calls[TOKEN_REVIEWS] == 2
            assert fake.received[0]["spec"]["audiences"] == [API_AUDIENCE]

    asyncio.run(scenario())


def test_token_for_another_audience_is_rejected(tmp_path: Path) -> None:
    async def scenario() -> None:
        other = FakeUser("bob", audiences=("https://vault.example.com",))
        async with running_fake(users={"bob-token": other}) as fake:
            async with await client_for(fake, tmp_path) as client:
                authn = TokenReviewAuthenticator(client, audiences=["raygate"])
                assert await authn.authenticate_token("bob-token") is None
                # An API server that ignores spec.audiences answers with the token's own
                # audiences; raygate must still refuse the token.
                fake.ignore_audiences = True
                assert await authn.authenticate_token("bob-token") is None
                assert await TokenReviewAuthenticator(client).authenticate_token("bob-token")

    asyncio.run(scenario())


def test_subject_access_review_carries_the_whole_identity(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_fake(authorize=only_alice_may_get) as fake:
            async with await client_for(fake, tmp_path) as client:
                authz = SubjectAccessReviewAuthorizer(client)
                alice = Identity("alice", "uid-alice", ("devs",), {"scopes.example.com": ("r",)})
                decision = await authz.authorize(cluster_attributes(alice))
                assert decision == Decision(True, reason="alice reads", source="kubernetes")
                denied = await authz.authorize(cluster_attributes(alice, verb="delete"))
                assert denied == Decision(False, reason="only alice may get", source="kubernetes")
            spec = fake.received[0]["spec"]
            assert spec == {
                "user": "alice", "uid": "uid-alice", "groups": ["devs"],
                "extra": {"scopes.example.com": ["r"]},
                "resourceAttributes": {
                    "namespace": "default", "verb": "get", "group": "ray.io", "version": "v1",
                    "resource": "rayclusters", "name": "ray-cluster-with-auth",
                },
            }

    asyncio.run(scenario())


def test_non_resource_request_is_reviewed_by_path(tmp_path: Path) -> None:
    async def scenario() -> None:
        def metrics_only(attributes: Attributes) -> Decision:
            allowed = not attributes.resource_request and attributes.path == "/metrics"
            return Decision(allowed, reason="metrics reader" if allowed else "")

        async with running_fake(authorize=metrics_only) as fake:
            async with await client_for(fake, tmp_path) as client:
                authz = SubjectAccessReviewAuthorizer(client)
                bob = Identity("bob")
                ok = Attributes(bob, "get", resource_request=False, path="/metrics")
                other = Attributes(bob, "get", resource_request=False, path="/api/jobs/")
                assert (await authz.authorize(ok)).allowed
                assert not (await authz.authorize(other)).allowed
            assert fake.received[0]["spec"]["nonResourceAttributes"] == {
                "path": "/metrics", "verb": "get",
            }

    asyncio.run(scenario())


GUIDE_RBAC = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "ray-user", "namespace": "default"},
        "rules": [{"apiGroups": ["ray.io"], "resources": ["rayclusters"],
                   "verbs": ["get", "create"]}],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "ray-user", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ray-user"},
        "subjects": [{"kind": "ServiceAccount", "name": "ray-user", "namespace": "default"}],
    },
]


def test_guide_role_through_token_request_review_and_rbac(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_fake() as fake:
            fake.use_rbac(GUIDE_RBAC)
            async with await client_for(fake, tmp_path) as client:
                token = await client.create_token_request(
                    "default", "ray-user", duration_seconds=600, audiences=["raygate"]
                )
                intruder = await client.create_token_request("default", "intruder")
                authn = TokenReviewAuthenticator(client, audiences=["raygate"])
                authz = SubjectAccessReviewAuthorizer(client)
                user = await authn.authenticate_token(token)
                assert user is not None and user.user == "system:serviceaccount:default:ray-user"
                assert "system:serviceaccounts:default" in user.groups
                assert (await authz.authorize(cluster_attributes(user, "create"))).allowed
                assert not (await authz.authorize(cluster_attributes(user, "delete"))).allowed
                assert await authn.authenticate_token(intruder) is None  # wrong audience
                other = await TokenReviewAuthenticator(client).authenticate_token(intruder)
                assert other is not None
                assert not (await authz.authorize(cluster_attributes(other))).allowed

    asyncio.run(scenario())


def test_unknown_service_account_gets_no_token(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_fake() as fake:
            fake.service_accounts = {("default", "ray-user")}
            async with await client_for(fake, tmp_path) as client:
                with pytest.raises(BackendUnavailable, match="404.*serviceaccounts \"nobody\""):
                    await client.create_token_request("default", "nobody")

    asyncio.run(scenario())


def test_fake_rejects_a_body_that_breaks_the_schema() -> None:
    """The schema check can fail: a misspelled field is refused and recorded."""

    async def scenario() -> None:
        fake = FakeKubeAPI()
        await fake.start()
        try:
            async with aiohttp.ClientSession() as session:
                response = await session.post(
                    f"{fake.url}/apis/authorization.k8s.io/v1/subjectaccessreviews",
                    json={"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                          "spec": {"user": "alice", "resourceAttribute": {"verb": "get"}}},
                    headers={"Authorization": f"Bearer {fake.gateway_token}"},
                )
                assert response.status == 422
        finally:
            await fake.stop()
        assert "resourceAttribute" in fake.schema_errors[0]

    asyncio.run(scenario())


# ----------------------------------------------------------------------------- fail closed


def test_stopped_api_server_is_unavailable_then_recovers(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_fake(users={"good-token": ALICE}) as fake:
            async with await client_for(fake, tmp_path, timeout=2.0) as client:
                authn = TokenReviewAuthenticator(client)
                assert await authn.authenticate_token("good-token") is not None
                assert await client.ping() == "v1.37.0"
                await fake.stop()
                with pytest.raises(BackendUnavailable, match="cannot reach Kubernetes API server"):
                    await authn.authenticate_token("good-token")
                with pytest.raises(BackendUnavailable, match="for a version request"):
                    await client.ping()
                await fake.start()
                assert await authn.authenticate_token("good-token") is not None
                assert await client.ping() == "v1.37.0"

    asyncio.run(scenario())


def test_slow_api_server_times_out_without_leaking_the_token(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_fake(users={"secret-token-value": ALICE}) as fake:
            async with await client_for(fake, tmp_path, timeout=0.2) as client:
                fake.delay = 2.0
                with pytest.raises(BackendUnavailable, match="did not answer a TokenReview") as err:
                    await client.create_token_review("secret-token-value")
                assert "secret-token-value" not in str(err.value)
                fake.delay = 0.0
                review = await client.create_token_review("secret-token-value")
                assert review.authenticated

    asyncio.run(scenario())


@pytest.mark.parametrize("status", [500, 503, 429])
def test_server_errors_are_unavailable(tmp_path: Path, status: int) -> None:
    async def scenario() -> None:
        async with running_fake(authorize=only_alice_may_get) as fake:
            async with await client_for(fake, tmp_path) as client:
                fake.fail_with = status
                with pytest.raises(BackendUnavailable, match=f"answered {status}"):
                    await SubjectAccessReviewAuthorizer(client).authorize(
                        cluster_attributes(Identity("alice"))
                    )

    asyncio.run(scenario())


def test_refused_gateway_credentials_say_what_to_check(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_fake(users={"good-token": ALICE}) as fake:
            kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
            fake.gateway_tokens = {"a-different-gateway-token"}
            async with await KubeClient.from_kubeconfig(kubeconfig) as client:
                with pytest.raises(BackendUnavailable, match="401.*may create tokenreviews"):
                    await client.create_token_review("good-token")
            assert fake.calls[TOKEN_REVIEWS] == 0

    asyncio.run(scenario())


def test_missing_kubeconfig_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot use kubeconfig"):
        asyncio.run(KubeClient.from_kubeconfig(tmp_path / "nope"))


def test_in_cluster_without_service_env_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pass --kubeconfig"):
        asyncio.run(KubeClient.in_cluster(environ={}))


# ----------------------------------------------------------------------------- token rotation


def rotate(token_file: Path, token: str) -> None:
    """Replace the file atomically, as the kubelet does for projected tokens."""
    staged = token_file.with_suffix(".new")
    staged.write_text(token)
    os.replace(staged, token_file)


def test_kubeconfig_token_file_is_reread_after_rotation(tmp_path: Path) -> None:
    async def scenario() -> None:
        token_file = tmp_path / "token"
        async with running_fake(users={"good-token": ALICE}) as fake:
            first = fake.gateway_token
            token_file.write_text(first)
            kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", token_file=token_file)
            async with await KubeClient.from_kubeconfig(kubeconfig) as client:
                authz = SubjectAccessReviewAuthorizer(client)
                await authz.authorize(cluster_attributes(Identity("alice")))
                fake.gateway_tokens = {"rotated-gateway-token"}
                rotate(token_file, "rotated-gateway-token")
                await authz.authorize(cluster_attributes(Identity("alice")))
            assert fake.calls[SUBJECT_ACCESS_REVIEWS] == 2
            assert fake.rejected_credentials == 0

    asyncio.run(scenario())


def test_in_cluster_token_is_reread_after_rotation(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_fake(tls=True, users={"good-token": ALICE}) as fake:
            assert fake.ca is not None
            token_file, ca_file = tmp_path / "token", tmp_path / "ca.crt"
            token_file.write_text(fake.gateway_token)
            ca_file.write_bytes(fake.ca.cert_pem)
            env = {"KUBERNETES_SERVICE_HOST": fake.host, "KUBERNETES_SERVICE_PORT": str(fake.port)}
            client = await KubeClient.in_cluster(
                token_file=str(token_file), ca_file=str(ca_file), environ=env
            )
            async with client:
                authn = TokenReviewAuthenticator(client)
                assert await authn.authenticate_token("good-token") is not None
                fake.gateway_tokens = {"next-projected-token"}
                rotate(token_file, "next-projected-token")
                assert await authn.authenticate_token("good-token") is not None
            assert fake.rejected_credentials == 0

    asyncio.run(scenario())


@pytest.mark.parametrize("k8s_version", ["1.27", "1.32", "1.37"])
def test_bodies_validate_for_older_api_servers(tmp_path: Path, k8s_version: str) -> None:
    async def scenario() -> None:
        async with running_fake(
            k8s_version=k8s_version, users={"good-token": ALICE}, authorize=only_alice_may_get
        ) as fake:
            async with await client_for(fake, tmp_path) as client:
                authn = TokenReviewAuthenticator(client, [API_AUDIENCE])
                identity = await authn.authenticate_token("good-token")
                assert identity is not None
                authz = SubjectAccessReviewAuthorizer(client)
                assert (await authz.authorize(cluster_attributes(identity))).allowed
                await client.create_token_request("default", "ray-user", audiences=["raygate"])
            assert sum(fake.calls.values()) == 3

    asyncio.run(scenario())


def test_token_file_keeps_the_last_token_while_the_file_is_swapped(tmp_path: Path) -> None:
    token_file = TokenFile(tmp_path / "token")
    rotate(tmp_path / "token", "first\n")
    assert token_file.read() == "first"
    (tmp_path / "token").unlink()
    assert token_file.read() == "first"
    rotate(tmp_path / "token", "second")
    assert token_file.read() == "second"


def test_missing_or_empty_token_file_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="cannot read token file"):
        TokenFile(tmp_path / "absent").read()
    (tmp_path / "empty").write_text("")
    with pytest.raises(BackendUnavailable, match="is empty"):
        TokenFile(tmp_path / "empty").read()
