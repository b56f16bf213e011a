"""Security review: an ID token must not make its holder a `system:` user (system:admin, a
service account), and usernames from a claim other than email get kube-apiserver's default
prefix `<issuer>#` unless a prefix is configured (`-`: none)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from raygate.authn.oidc import OIDCOptions, identity_from_claims
from raygate.identity import Identity

from .test_kube_oidc import CLIENT_ID, Provider, authenticator, run_with_provider

ISSUER = "https://sso.example.com"
GROUPS = ("system:authenticated",)


def options(**kwargs: Any) -> OIDCOptions:
    return OIDCOptions(ISSUER, CLIENT_ID, **kwargs)


@pytest.mark.parametrize(
    ("opts", "claims", "user"),
    [
        (options(), {"email": "a@x.io"}, "a@x.io"),
        (options(username_claim="sub"), {"sub": "u1"}, f"{ISSUER}#u1"),
        (options(username_claim="preferred_username"), {"preferred_username": "jane"},
         f"{ISSUER}#jane"),
        (options(username_claim="sub", username_prefix="sso:"), {"sub": "u1"}, "sso:u1"),
        (options(username_claim="sub", username_prefix="-"), {"sub": "u1"}, "u1"),
        (options(username_prefix="-"), {"email": "a@x.io"}, "a@x.io"),
        (options(username_prefix="corp:"), {"email": "a@x.io"}, "corp:a@x.io"),
        # Behind the default prefix a `system:` claim is an ordinary, harmless name.
        (options(username_claim="sub"), {"sub": "system:admin"}, f"{ISSUER}#system:admin"),
        (options(username_claim="sub", username_prefix="sso:"), {"sub": "system:admin"},
         "sso:system:admin"),
    ],
    ids=["email-no-prefix", "sub-default-prefix", "other-claim-default-prefix",
         "configured-prefix", "dash-means-none", "dash-with-email", "prefix-with-email",
         "system-behind-default-prefix", "system-behind-configured-prefix"],
)
def test_username_prefix(opts: OIDCOptions, claims: dict[str, Any], user: str) -> None:
    identity = identity_from_claims(opts, claims)
    assert identity is not None and identity.user == user


@pytest.mark.parametrize(
    ("opts", "claims"),
    [
        (options(), {"email": "system:admin"}),
        (options(username_claim="sub", username_prefix="-"), {"sub": "system:admin"}),
        (options(username_claim="sub", username_prefix="-"),
         {"sub": "system:serviceaccount:default:ray-admin"}),
        (options(username_claim="name", username_prefix="-"), {"name": "system:kube-proxy"}),
        (options(username_claim="sub", username_prefix="system:"), {"sub": "admin"}),
        (options(username_claim="sub", username_prefix="sys"), {"sub": "tem:admin"}),
    ],
    ids=["email-claim", "sub-no-prefix", "service-account", "other-claim",
         "prefix-makes-system", "prefix-and-claim-make-system"],
)
def test_system_usernames_are_refused(opts: OIDCOptions, claims: dict[str, Any]) -> None:
    assert identity_from_claims(opts, claims) is None


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


def test_a_system_group_from_the_provider_refuses_the_token() -> None:
    """An IdP group named `system:masters` must not put its members in Kubernetes' group."""
    claims = {"email": "mallory@example.com", "groups": ["ml-team", "system:masters"]}
    assert identity_from_claims(options(), claims) is None
    # Behind a groups prefix it is an ordinary name.
    prefixed = identity_from_claims(options(groups_prefix="oidc:"), claims)
    assert prefixed is not None and "oidc:system:masters" in prefixed.groups
