"""JWT header tricks an attacker controls never make a token verify.

Only the authority's key, named by nothing in the token, may sign: a key offered inside the
header (`jwk`, `jku`, `x5u`, `x5c`), a `kid` aimed at another key, a lowercase or unlisted
algorithm, or a nested JWT must all be refused. Several keys are configured, so the `kid`
lookup path is the one exercised.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import timedelta

import jwt
import pytest
from jwt.algorithms import RSAAlgorithm

from raygate.authn.jwt import ServiceAccountTokenAuthenticator
from raygate.store.tokens import DEFAULT_AUDIENCE, DEFAULT_ISSUER, SigningKey, issue_token

NAMESPACE, NAME, UID = "default", "ray-user", "5a4b3c2d-0000-4000-8000-000000000002"


@pytest.fixture(scope="module")
def keys() -> tuple[SigningKey, SigningKey, SigningKey]:
    """The authority's key, a second trusted key (rotation), and the attacker's key."""
    return SigningKey.generate(), SigningKey.generate(), SigningKey.generate()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(key: SigningKey) -> dict[str, object]:
    token = issue_token(
        NAMESPACE, NAME, UID, signing_key=key, duration=timedelta(hours=1),
        audiences=[DEFAULT_AUDIENCE], issuer=DEFAULT_ISSUER,
    )
    return jwt.decode(token, options={"verify_signature": False})


def _signed_by_attacker(keys: tuple[SigningKey, ...], headers: dict[str, object]) -> str:
    trusted, _, attacker = keys
    return jwt.encode(_claims(trusted), attacker.private_key, algorithm="RS256", headers=headers)


def _attacker_jwk(keys: tuple[SigningKey, ...]) -> dict[str, object]:
    return RSAAlgorithm.to_jwk(keys[2].public_key, as_dict=True)


def _embedded_jwk(keys: tuple[SigningKey, ...]) -> str:
    return _signed_by_attacker(keys, {"kid": keys[2].kid, "jwk": _attacker_jwk(keys)})


def _jku(keys: tuple[SigningKey, ...]) -> str:
    return _signed_by_attacker(keys, {"kid": keys[2].kid, "jku": "https://evil.example/jwks"})


def _x5u(keys: tuple[SigningKey, ...]) -> str:
    return _signed_by_attacker(keys, {"x5u": "https://evil.example/cert.pem"})


def _kid_of_trusted_key(keys: tuple[SigningKey, ...]) -> str:
    return _signed_by_attacker(keys, {"kid": keys[0].kid})


def _kid_path_traversal(keys: tuple[SigningKey, ...]) -> str:
    return _signed_by_attacker(keys, {"kid": "../../../../dev/null"})


def _kid_not_a_string(keys: tuple[SigningKey, ...]) -> str:
    # PyJWT will not write such a header: splice it into a token signed by the trusted key.
    trusted = keys[0]
    _head, body, signature = jwt.encode(
        _claims(trusted), trusted.private_key, algorithm="RS256", headers={"kid": trusted.kid}
    ).split(".")
    head = _b64(json.dumps({"alg": "RS256", "kid": {"$ne": ""}}).encode())
    return f"{head}.{body}.{signature}"


def _lowercase_alg(keys: tuple[SigningKey, ...]) -> str:
    trusted = keys[0]
    valid = jwt.encode(_claims(trusted), trusted.private_key, algorithm="RS256",
                       headers={"kid": trusted.kid})
    _head, body, signature = valid.split(".")
    head = _b64(json.dumps({"alg": "rs256", "kid": trusted.kid}).encode())
    return f"{head}.{body}.{signature}"  # the signature covered the original header anyway


def _ps256_by_trusted_key(keys: tuple[SigningKey, ...]) -> str:
    trusted = keys[0]
    return jwt.encode(_claims(trusted), trusted.private_key, algorithm="PS256",
                      headers={"kid": trusted.kid})


def _nested_jwt(keys: tuple[SigningKey, ...]) -> str:
    trusted = keys[0]
    inner = jwt.encode(_claims(trusted), keys[2].private_key, algorithm="RS256")
    return jwt.encode({"jwt": inner}, keys[2].private_key, algorithm="RS256",
                      headers={"cty": "JWT", "kid": trusted.kid})


def _huge_header(keys: tuple[SigningKey, ...]) -> str:
    return _signed_by_attacker(keys, {"kid": keys[0].kid, "pad": "x" * 100_000})


def _non_ascii_kid(keys: tuple[SigningKey, ...]) -> str:
    return _signed_by_attacker(keys, {"kid": "ключ\u0000\udbff".encode("utf-8", "surrogatepass")
                                      .decode("utf-8", "replace")})


@pytest.mark.parametrize(
    "make_token",
    [
        _embedded_jwk,
        _jku,
        _x5u,
        _kid_of_trusted_key,
        _kid_path_traversal,
        _kid_not_a_string,
        _lowercase_alg,
        _ps256_by_trusted_key,
        _nested_jwt,
        _huge_header,
        _non_ascii_kid,
    ],
)
def test_header_tricks_never_authenticate(keys: tuple[SigningKey, ...], make_token) -> None:  # type: ignore[no-untyped-def]
    trusted, rotated, _attacker = keys
    authenticator = ServiceAccountTokenAuthenticator(
        [trusted.public_key, rotated.public_key], DEFAULT_ISSUER, [DEFAULT_AUDIENCE],
        lambda namespace, name: UID if (namespace, name) == (NAMESPACE, NAME) else None,
    )
    assert asyncio.run(authenticator.authenticate_token(make_token(keys))) is None
    # The same authenticator still accepts a genuine token afterwards (nothing was poisoned).
    genuine = issue_token(NAMESPACE, NAME, UID, signing_key=trusted, duration=timedelta(hours=1))
    identity = asyncio.run(authenticator.authenticate_token(genuine))
    assert identity is not None and identity.user == f"system:serviceaccount:{NAMESPACE}:{NAME}"
