"""OIDC ID tokens: keys the tests make, served over TLS by a tiny discovery + JWKS app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from raygate.authn.oidc import OIDCAuthenticator, OIDCOptions, identity_from_claims
from raygate.errors import BackendUnavailable, ConfigError
from raygate.identity import Identity

from .fakeapi import issue_cert, make_ca

CLIENT_ID = "raygate"


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


class Provider:
    """An OIDC provider: discovery document and JWKS over HTTPS, keys swappable by the test."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {"key-1": rsa_key()}
        self.discovery_issuer: str | None = None  # None: the provider's real URL
        self.jwks_requests = 0
        self.jwks_down = False  # answer 503 for the key set
        self.issuer = ""

    def id_token(self, kid: str = "key-1", *, key: rsa.RSAPrivateKey | None = None,
                 **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": self.issuer, "aud": CLIENT_ID, "sub": "user-42", "iat": now,
            "exp": now + 600, "email": "jane@example.com", "email_verified": True,
            "groups": ["data-science"], **claims,
        }
        payload = {k: v for k, v in payload.items() if v is not None}
        signing_key = key or self.keys[kid]
        return jwt.encode(payload, signing_key, algorithm="RS256", headers={"kid": kid})

    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response({
            "issuer": self.discovery_issuer or self.issuer,
            "jwks_uri": f"{self.issuer}/keys",
            "id_token_signing_alg_values_supported": ["RS256"],
        })

    async def _jwks(self, request: web.Request) -> web.Response:
        self.jwks_requests += 1
        if self.jwks_down:
            return web.Response(status=503)
        return web.json_response(
            {"keys": [public_jwk(k, kid) for kid, k in self.keys.items()]}
        )

    @asynccontextmanager
    async def serve(self, tmp_path: Path) -> AsyncIterator[Path]:
        """Run over TLS; yields the CA file raygate needs to trust the provider."""
        import ssl

        ca = make_ca("oidc-test-ca")
        cert_file, key_file = issue_cert(ca, "oidc", server_ips=["127.0.0.1"]).write(
            tmp_path, "oidc"
        )
        ca_file = tmp_path / "oidc-ca.crt"
        ca_file.write_bytes(ca.cert_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/keys", self._jwks)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
        self.issuer = f"https://127.0.0.1:{runner.addresses[0][1]}"
        try:
            yield ca_file
        finally:
            await runner.cleanup()


def authenticator(provider: Provider, ca_file: Path, **options: Any) -> OIDCAuthenticator:
    clock = options.pop("clock", time.monotonic)
    return OIDCAuthenticator(
        OIDCOptions(provider.issuer, CLIENT_ID, ca_file=str(ca_file), **options), clock=clock
    )


def run_with_provider(tmp_path: Path, body: Any) -> None:
    async def scenario() -> None:
        provider = Provider()
        async with provider.serve(tmp_path) as ca_file:
            await body(provider, ca_file)

    asyncio.run(scenario())


def test_id_token_maps_to_email_and_groups(tmp_path: Path) -> None:
    async def body(provider: Provider, ca_file: Path) -> None:
        authn = authenticator(provider, ca_file)
        try:
            identity = await authn.authenticate_token(provider.id_token())
        finally:
            await authn.close()
        assert identity == Identity(
            "jane@example.com", uid="user-42",
            groups=("data-science", "system:authenticated"),
        )

    run_with_provider(tmp_path, body)


def test_rotated_key_verifies_after_one_refetch(tmp_path: Path) -> None:
    async def body(provider: Provider, ca_file: Path) -> None:
        now = [0.0]
        authn = authenticator(provider, ca_file, clock=lambda: now[0])
        try:
            assert await authn.authenticate_token(provider.id_token("key-1"))
            provider.keys = {"key-2": rsa_key()}  # the provider rotates and drops key-1
            now[0] = 3600.0
            identity = await authn.authenticate_token(provider.id_token("key-2"))
            assert identity is not None and identity.user == "jane@example.com"
            assert await authn.authenticate_token(provider.id_token("key-2"))
        finally:
            await authn.close()
        assert provider.jwks_requests == 2

    run_with_provider(tmp_path, body)


def test_unknown_key_ids_refetch_at_most_once_per_interval(tmp_path: Path) -> None:
    async def body(provider: Provider, ca_file: Path) -> None:
        now = [0.0]
        authn = authenticator(provider, ca_file, clock=lambda: now[0])
        forger = rsa_key()
        try:
            assert await authn.authenticate_token(provider.id_token())
            now[0] = 60.0
            forged = [provider.id_token(f"forged-{i}", key=forger) for i in range(50)]
            results = await asyncio.gather(*map(authn.authenticate_token, forged))
        finally:
            await authn.close()
        assert results == [None] * 50
        assert provider.jwks_requests == 2

    run_with_provider(tmp_path, body)


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"aud": "another-client"}, "audience"),
        ({"exp": int(time.time()) - 60}, "expired"),
        ({"nbf": int(time.time()) + 3600}, "not yet valid"),
        ({"exp": None}, "no exp"),
        ({"email": None}, "no username claim"),
        ({"email_verified": False}, "unverified email"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_invalid_id_tokens_are_rejected(
    tmp_path: Path, claims: dict[str, Any], why: str
) -> None:
    async def body(provider: Provider, ca_file: Path) -> None:
        authn = authenticator(provider, ca_file)
        try:
            assert await authn.authenticate_token(provider.id_token(**claims)) is None, why
        finally:
            await authn.close()

    run_with_provider(tmp_path, body)


def test_token_signed_by_another_key_under_a_known_kid_is_rejected(tmp_path: Path) -> None:
    async def body(provider: Provider, ca_file: Path) -> None:
        authn = authenticator(provider, ca_file)
        try:
            forged = provider.id_token("key-1", key=rsa_key())
            assert await authn.authenticate_token(forged) is None
        finally:
            await authn.close()

    run_with_provider(tmp_path, body)


def test_tokens_of_other_issuers_cause_no_fetch(tmp_path: Path) -> None:
    async def body(provider: Provider, ca_file: Path) -> None:
        authn = authenticator(provider, ca_file)
        try:
            other = provider.id_token(iss="https://accounts.example.com")
            assert await authn.authenticate_token(other) is None
            assert await authn.authenticate_token("not-a-jwt") is None
            hs256 = jwt.encode(
                {"iss": provider.issuer, "aud": CLIENT_ID, "exp": int(time.time()) + 60},
                "a-shared-secret-an-attacker-might-try-to-use", algorithm="HS256",
            )
            assert await authn.authenticate_token(hs256) is None
        finally:
            await authn.close()
        assert provider.jwks_requests == 0

    run_with_provider(tmp_path, body)


def test_discovery_naming_another_issuer_is_unavailable(tmp_path: Path) -> None:
    async def body(provider: Provider, ca_file: Path) -> None:
        provider.discovery_issuer = "https://impostor.example.com"
        authn = authenticator(provider, ca_file)
        try:
            with pytest.raises(BackendUnavailable, match="must match it exactly"):
                await authn.authenticate_token(provider.id_token())
        finally:
            await authn.close()

    run_with_provider(tmp_path, body)


def test_key_set_outage_is_paced_and_recovers_for_tokens_without_a_kid(tmp_path: Path) -> None:
    async def body(provider: Provider, ca_file: Path) -> None:
        now = [0.0]
        authn = authenticator(provider, ca_file, clock=lambda: now[0])
        claims = jwt.decode(provider.id_token(), options={"verify_signature": False})
        no_kid = jwt.encode(claims, provider.keys["key-1"], algorithm="RS256")
        provider.jwks_down = True
        try:
            for _ in range(5):
                with pytest.raises(BackendUnavailable, match="answered 503"):
                    await authn.authenticate_token(no_kid)
            assert provider.jwks_requests == 1  # failures are paced by the interval too
            provider.jwks_down = False
            now[0] = 11.0
            identity = await authn.authenticate_token(no_kid)
        finally:
            await authn.close()
        assert identity is not None and identity.user == "jane@example.com"
        assert provider.jwks_requests == 2

    run_with_provider(tmp_path, body)


def test_unreachable_provider_is_unavailable(tmp_path: Path) -> None:
    async def scenario() -> None:
        provider = Provider()
        async with provider.serve(tmp_path) as ca_file:
            token = provider.id_token()
            authn = authenticator(provider, ca_file)
        try:
            with pytest.raises(BackendUnavailable, match="cannot fetch"):
                await authn.authenticate_token(token)
            with pytest.raises(BackendUnavailable, match="cannot fetch"):
                await authn.authenticate_token(token)  # no keys yet: still fail closed
        finally:
            await authn.close()

    asyncio.run(scenario())


OPTIONS = OIDCOptions("https://sso.example.com", CLIENT_ID)


@pytest.mark.parametrize(
    ("options", "claims", "expected"),
    [
        (OPTIONS, {"email": "a@x.io"}, Identity("a@x.io", groups=("system:authenticated",))),
        (
            OIDCOptions("https://sso.example.com", CLIENT_ID, username_claim="sub",
                        username_prefix="sso:", groups_prefix="sso:"),
            {"sub": "u1", "groups": ["admins", "devs"]},
            Identity("sso:u1", uid="u1",
                     groups=("sso:admins", "sso:devs", "system:authenticated")),
        ),
        (
            OIDCOptions("https://sso.example.com", CLIENT_ID, groups_claim="roles"),
            {"email": "a@x.io", "roles": "single-role", "groups": ["ignored"]},
            Identity("a@x.io", groups=("single-role", "system:authenticated")),
        ),
        (OPTIONS, {"email": "a@x.io", "email_verified": False}, None),
        (OPTIONS, {"email": "a@x.io", "groups": [1, 2]}, None),
        (OPTIONS, {"sub": "u1"}, None),
    ],
    ids=["email", "sub-with-prefixes", "string-groups-claim", "unverified-email",
         "non-string-groups", "missing-username"],
)
def test_identity_from_claims(
    options: OIDCOptions, claims: dict[str, Any], expected: Identity | None
) -> None:
    assert identity_from_claims(options, claims) == expected


# An ID token must not make its holder a `system:` user (system:admin, a service account), and
# usernames from a claim other than email get kube-apiserver's default prefix `<issuer>#` unless a
# prefix is configured (`-`: none).
ISSUER = "https://sso.example.com"
GROUPS = ("system:authenticated",)


def oidc_options(**kwargs: Any) -> OIDCOptions:
    return OIDCOptions(ISSUER, CLIENT_ID, **kwargs)


@pytest.mark.parametrize(
    ("opts", "claims", "user"),
    [
        (oidc_options(), {"email": "a@x.io"}, "a@x.io"),
        (oidc_options(username_claim="sub"), {"sub": "u1"}, f"{ISSUER}#u1"),
        (oidc_options(username_claim="preferred_username"), {"preferred_username": "jane"},
         f"{ISSUER}#jane"),
        (oidc_options(username_claim="sub", username_prefix="sso:"), {"sub": "u1"}, "sso:u1"),
        (oidc_options(username_claim="sub", username_prefix="-"), {"sub": "u1"}, "u1"),
        (oidc_options(username_prefix="-"), {"email": "a@x.io"}, "a@x.io"),
        (oidc_options(username_prefix="corp:"), {"email": "a@x.io"}, "corp:a@x.io"),
        # Behind the default prefix a `system:` claim is an ordinary, harmless name.
        (oidc_options(username_claim="sub"), {"sub": "system:admin"}, f"{ISSUER}#system:admin"),
        (oidc_options(username_claim="sub", username_prefix="sso:"), {"sub": "system:admin"},
         "sso:system:admin"),
    ],
    ids=["email-no-prefix", "sub-default-prefix", "other-claim-default-prefix",
         "configured-prefix", "dash-means-none", "dash-with-email", "prefix-with-email",
         "system-behind-default-prefix", "system-behind-configured-prefix"],
)
def test_username_prefix_follows_kube_apiserver(opts: OIDCOptions, claims: dict[str, Any], user: str) -> None:
    identity = identity_from_claims(opts, claims)
    assert identity is not None and identity.user == user



@pytest.mark.parametrize(
    ("opts", "claims"),
    [
        (oidc_options(), {"email": "system:admin"}),
        (oidc_options(username_claim="sub", username_prefix="-"), {"sub": "system:admin"}),
        (oidc_options(username_claim="sub", username_prefix="-"),
         {"sub": "system:serviceaccount:default:ray-admin"}),
        (oidc_options(username_claim="name", username_prefix="-"), {"name": "system:kube-proxy"}),
        (oidc_options(username_claim="sub", username_prefix="system:"), {"sub": "admin"}),
        (oidc_options(username_claim="sub", username_prefix="sys"), {"sub": "tem:admin"}),
    ],
    ids=["email-claim", "sub-no-prefix", "service-account", "other-claim",
         "prefix-makes-system", "prefix-and-claim-make-system"],
)
def test_id_tokens_never_name_a_system_user(opts: OIDCOptions, claims: dict[str, Any]) -> None:
    assert identity_from_claims(opts, claims) is None


def test_a_system_group_from_the_provider_refuses_the_token() -> None:
    """An IdP group named `system:masters` must not put its members in Kubernetes' group."""
    claims = {"email": "mallory@example.com", "groups": ["ml-team", "system:masters"]}
    assert identity_from_claims(oidc_options(), claims) is None
    # Behind a groups prefix it is an ordinary name.
    prefixed = identity_from_claims(oidc_options(groups_prefix="oidc:"), claims)
    assert prefixed is not None and "oidc:system:masters" in prefixed.groups



def test_signed_id_token_claiming_a_service_account_gets_no_identity(tmp_path: Path) -> None:
    async def body(provider: Provider, ca_file: Path) -> None:
        authn = authenticator(provider, ca_file, username_claim="sub", username_prefix="-")
        try:
            forged = provider.id_token(sub="system:serviceaccount:default:ray-admin")
            assert await authn.authenticate_token(forged) is None
            ordinary = await authn.authenticate_token(provider.id_token(sub="user-42"))
            assert ordinary == Identity(
                "user-42", uid="user-42", groups=("data-science", *GROUPS)
            )
        finally:
            await authn.close()

    run_with_provider(tmp_path, body)



def test_sub_claim_without_prefix_is_namespaced_by_the_issuer(tmp_path: Path) -> None:
    async def body(provider: Provider, ca_file: Path) -> None:
        authn = authenticator(provider, ca_file, username_claim="sub")
        try:
            identity = await authn.authenticate_token(provider.id_token(sub="system:admin"))
        finally:
            await authn.close()
        assert identity is not None and identity.user == f"{provider.issuer}#system:admin"

    run_with_provider(tmp_path, body)



@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"issuer_url": "http://sso.example.com"}, "must be an https:// URL"),
        ({"client_id": ""}, "--oidc-clientID is required"),
        ({"signing_algorithms": ("HS256",)}, "--oidc-sign-alg: unsupported"),
    ],
)
def test_bad_oidc_options_name_the_flag(kwargs: dict[str, Any], message: str) -> None:
    settings = {"issuer_url": "https://sso.example.com", "client_id": CLIENT_ID, **kwargs}
    with pytest.raises(ConfigError, match=message):
        OIDCOptions(**settings)
