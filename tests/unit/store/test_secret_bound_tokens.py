"""Tokens bound to a Secret, as `kubectl create token --bound-object-kind Secret` makes them:
valid while that Secret exists (with the same uid), revoked by deleting it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import jwt
import pytest

from raygate.authn.jwt import ServiceAccountTokenAuthenticator
from raygate.embedded import EmbeddedAuthority
from raygate.objects import parse_object
from raygate.store.sqlite import ObjectStore
from raygate.store.tokens import DEFAULT_AUDIENCE, DEFAULT_ISSUER, SigningKey, issue_token


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


def authenticator(key: SigningKey, secrets: dict[tuple[str, str], str] | None):  # type: ignore[no-untyped-def]
    accounts = {("default", "alice"): "sa-uid"}
    return ServiceAccountTokenAuthenticator(
        [key.public_key],
        DEFAULT_ISSUER,
        [DEFAULT_AUDIENCE],
        lambda ns, name: accounts.get((ns, name)),
        lookup_secret_uid=None if secrets is None else (lambda ns, n: secrets.get((ns, n))),
    )


def bound_token(key: SigningKey, secret_uid: str = "secret-uid") -> str:
    return issue_token(
        "default",
        "alice",
        "sa-uid",
        signing_key=key,
        duration=timedelta(hours=8760),
        bound_secret=("alice-key", secret_uid),
    )


def test_the_token_carries_the_secret_like_a_kubernetes_bound_token(key: SigningKey) -> None:
    claims = jwt.decode(bound_token(key), options={"verify_signature": False})
    assert claims["kubernetes.io"]["secret"] == {"name": "alice-key", "uid": "secret-uid"}
    assert claims["exp"] - claims["iat"] == 8760 * 3600


def test_valid_while_the_secret_exists_refused_once_it_is_gone(key: SigningKey) -> None:
    secrets = {("default", "alice-key"): "secret-uid"}
    auth = authenticator(key, secrets)
    token = bound_token(key)
    identity = asyncio.run(auth.authenticate_token(token))
    assert identity is not None and identity.user == "system:serviceaccount:default:alice"
    del secrets[("default", "alice-key")]
    assert asyncio.run(auth.authenticate_token(token)) is None


def test_a_recreated_secret_of_the_same_name_does_not_revive_the_token(key: SigningKey) -> None:
    auth = authenticator(key, {("default", "alice-key"): "another-uid"})
    assert asyncio.run(auth.authenticate_token(bound_token(key))) is None


def test_without_a_secret_lookup_bound_tokens_are_refused(key: SigningKey) -> None:
    assert asyncio.run(authenticator(key, None).authenticate_token(bound_token(key))) is None


def test_the_embedded_authority_revokes_when_the_secret_is_deleted(tmp_path: Path) -> None:
    store = ObjectStore.open(tmp_path)
    store.create(
        parse_object({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "alice"}})
    )  # type: ignore[arg-type]
    secret = store.create(
        parse_object({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "alice-key"}})
    )  # type: ignore[arg-type]
    account = store.get("ServiceAccount", "alice", "default")
    assert account is not None
    authority = EmbeddedAuthority(tmp_path)
    from raygate.store.tokens import load_signing_key

    token = issue_token(
        "default",
        "alice",
        account.metadata.uid or "",
        signing_key=load_signing_key(tmp_path),
        bound_secret=("alice-key", secret.metadata.uid or ""),
    )
    assert asyncio.run(authority.authenticator.authenticate_token(token)) is not None
    store.delete("Secret", "alice-key", "default")
    authority.refresh()
    assert asyncio.run(authority.authenticator.authenticate_token(token)) is None


def test_create_token_bound_to_a_secret_from_the_command_line(tmp_path: Path) -> None:
    def raygate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "raygate", *args, "--state", str(tmp_path)],
            capture_output=True,
            text=True,
        )

    assert raygate("create", "serviceaccount", "alice").returncode == 0
    missing = raygate(
        "create", "token", "alice", "--bound-object-kind", "Secret", "--bound-object-name", "k"
    )
    assert missing.returncode != 0
    assert 'secrets "k" not found' in missing.stderr
    assert raygate("create", "secret", "generic", "k", "--from-literal", "a=b").returncode == 0
    made = raygate(
        "create",
        "token",
        "alice",
        "--bound-object-kind",
        "Secret",
        "--bound-object-name",
        "k",
        "--duration",
        "8760h",
    )
    assert made.returncode == 0, made.stderr
    claims = jwt.decode(made.stdout.strip(), options={"verify_signature": False})
    assert claims["kubernetes.io"]["secret"]["name"] == "k"
    unbound = raygate("create", "token", "alice", "--duration", "8760h")
    assert unbound.returncode != 0
    assert "at most 48h" in unbound.stderr
    listed = raygate("get", "secrets")
    assert listed.stdout.split("\n")[0].split() == ["NAME", "TYPE", "DATA", "AGE"]
