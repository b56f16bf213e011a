"""Service-account tokens: issuing, durations, and every way a token must fail to authenticate."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from raygate.authn.jwt import (
    CREDENTIAL_ID_EXTRA,
    ServiceAccountTokenAuthenticator,
    jwks,
    openid_configuration,
    verified_token,
)
from raygate.durations import parse_duration
from raygate.errors import ConfigError
from raygate.identity import Identity
from raygate.store.tokens import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    KEY_FILE,
    SigningKey,
    check_token_duration,
    issue_token,
    load_signing_key,
)

NAMESPACE, NAME, UID = "default", "ray-user", "5a4b3c2d-0000-4000-8000-000000000001"


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="module")
def other_key() -> SigningKey:
    return SigningKey.generate()


class Accounts:
    """The service accounts that exist, as the gateway's snapshot answers."""

    def __init__(self) -> None:
        self.uids: dict[tuple[str, str], str] = {(NAMESPACE, NAME): UID}

    def lookup(self, namespace: str, name: str) -> str | None:
        return self.uids.get((namespace, name))


@pytest.fixture
def accounts() -> Accounts:
    return Accounts()


@pytest.fixture
def authenticator(key: SigningKey, accounts: Accounts) -> ServiceAccountTokenAuthenticator:
    return ServiceAccountTokenAuthenticator(
        [key.public_key], DEFAULT_ISSUER, [DEFAULT_AUDIENCE], accounts.lookup
    )


def authenticate(authenticator: ServiceAccountTokenAuthenticator, token: str) -> Identity | None:
    return asyncio.run(authenticator.authenticate_token(token))


def token_for(key: SigningKey, **overrides: object) -> str:
    options: dict[str, object] = {
        "signing_key": key,
        "duration": timedelta(hours=1),
        "audiences": [DEFAULT_AUDIENCE],
        "issuer": DEFAULT_ISSUER,
    }
    options.update(overrides)
    return issue_token(NAMESPACE, NAME, UID, **options)  # type: ignore[arg-type]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_of(token: str) -> dict[str, object]:
    return jwt.decode(token, options={"verify_signature": False})


def resign(
    key: SigningKey, claims: dict[str, object], headers: dict[str, object] | None = None
) -> str:
    return jwt.encode(
        claims, key.private_key, algorithm="RS256", headers={"kid": key.kid, **(headers or {})}
    )


# -- a valid token --------------------------------------------------------------------------


def test_valid_token_authenticates_as_the_service_account_with_its_groups(
    key: SigningKey, authenticator: ServiceAccountTokenAuthenticator
) -> None:
    token = token_for(key)
    identity = authenticate(authenticator, token)
    assert identity is not None
    assert identity.user == "system:serviceaccount:default:ray-user"
    assert identity.uid == UID
    assert identity.groups == (
        "system:serviceaccounts",
        "system:serviceaccounts:default",
        "system:authenticated",
    )
    assert identity.extra[CREDENTIAL_ID_EXTRA] == (f"JTI={claims_of(token)['jti']}",)


def test_token_has_the_kubernetes_bound_token_layout(key: SigningKey) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    token = token_for(key, now=now, duration=timedelta(minutes=30), audiences=["a", "b"])
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "RS256", "kid": key.kid}
    claims = claims_of(token)
    assert set(claims) == {"aud", "exp", "iat", "iss", "jti", "kubernetes.io", "nbf", "sub"}
    assert claims["aud"] == ["a", "b"]
    assert claims["iat"] == claims["nbf"] == int(now.timestamp())
    assert claims["exp"] == int(now.timestamp()) + 1800
    assert claims["sub"] == "system:serviceaccount:default:ray-user"
    assert claims["kubernetes.io"] == {
        "namespace": "default",
        "serviceaccount": {"name": "ray-user", "uid": UID},
    }


def test_every_token_has_its_own_jti(key: SigningKey) -> None:
    assert claims_of(token_for(key))["jti"] != claims_of(token_for(key))["jti"]


def test_kid_is_kubernetes_key_id_of_the_public_key(key: SigningKey) -> None:
    der = key.public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key.kid == b64(hashlib.sha256(der).digest())


def test_token_with_one_of_several_audiences_is_accepted(
    key: SigningKey, accounts: Accounts
) -> None:
    authenticator = ServiceAccountTokenAuthenticator(
        [key.public_key], DEFAULT_ISSUER, ["raygate", "other"], accounts.lookup
    )
    assert authenticate(authenticator, token_for(key, audiences=["unrelated", "other"]))


def test_token_signed_by_a_rotated_out_key_verifies_while_that_key_is_listed(
    key: SigningKey, other_key: SigningKey, accounts: Accounts
) -> None:
    authenticator = ServiceAccountTokenAuthenticator(
        [key.public_key, other_key.public_key], DEFAULT_ISSUER, [DEFAULT_AUDIENCE], accounts.lookup
    )
    assert authenticate(authenticator, token_for(other_key))


# -- tokens that must not authenticate ----------------------------------------------------------


def _expired(key: SigningKey) -> str:
    return token_for(key, now=datetime.now(UTC) - timedelta(hours=2))


def _not_yet_valid(key: SigningKey) -> str:
    return token_for(key, now=datetime.now(UTC) + timedelta(minutes=5))


def _tampered_signature(key: SigningKey) -> str:
    head, body, signature = token_for(key).split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[10] ^= 0x01
    return f"{head}.{body}.{b64(bytes(raw))}"


def _tampered_claims(key: SigningKey) -> str:
    head, body, signature = token_for(key).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["kubernetes.io"]["serviceaccount"]["name"] = "admin"
    return f"{head}.{b64(json.dumps(claims).encode())}.{signature}"


def _alg_none(key: SigningKey) -> str:
    claims = claims_of(token_for(key))
    head = b64(json.dumps({"alg": "none", "kid": key.kid}).encode())
    return f"{head}.{b64(json.dumps(claims).encode())}."


def _hs256_with_public_key_as_secret(key: SigningKey) -> str:
    # The classic confusion attack: an HMAC "signed" with the public key the verifier holds.
    claims = claims_of(token_for(key))
    pem = key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = (
        b64(json.dumps({"alg": "HS256", "kid": key.kid}).encode())
        + "."
        + b64(json.dumps(claims).encode())
    )
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def _wrong_audience(key: SigningKey) -> str:
    return token_for(key, audiences=["https://kubernetes.default.svc"])


def _wrong_issuer(key: SigningKey) -> str:
    return token_for(key, issuer="https://evil.example")


def _other_key(key: SigningKey) -> str:
    return token_for(SigningKey.generate())


def _missing_jti(key: SigningKey) -> str:
    claims = claims_of(token_for(key))
    del claims["jti"]
    return resign(key, claims)


def _sub_disagrees_with_claims(key: SigningKey) -> str:
    claims = claims_of(token_for(key))
    claims["sub"] = "system:serviceaccount:kube-system:admin"
    return resign(key, claims)


def _no_kubernetes_claims(key: SigningKey) -> str:
    claims = claims_of(token_for(key))
    del claims["kubernetes.io"]
    return resign(key, claims)


def _issued_in_the_future(key: SigningKey) -> str:
    claims = claims_of(token_for(key))
    claims["iat"] = int(datetime.now(UTC).timestamp()) + 3600
    return resign(key, claims)


@pytest.mark.parametrize(
    "make_token",
    [
        _expired,
        _not_yet_valid,
        _tampered_signature,
        _tampered_claims,
        _alg_none,
        _hs256_with_public_key_as_secret,
        _wrong_audience,
        _wrong_issuer,
        _other_key,
        _missing_jti,
        _sub_disagrees_with_claims,
        _no_kubernetes_claims,
        _issued_in_the_future,
    ],
)
def test_invalid_token_does_not_authenticate(
    key: SigningKey, authenticator: ServiceAccountTokenAuthenticator, make_token
) -> None:
    assert authenticate(authenticator, make_token(key)) is None


@pytest.mark.parametrize(
    "garbage",
    ["", "x", "a.b.c", "..", "....", "Bearer x", "eyJhbGciOiJSUzI1NiJ9.e30.", "\x00\xff", "é.é.é"],
)
def test_garbage_does_not_authenticate(
    authenticator: ServiceAccountTokenAuthenticator, garbage: str
) -> None:
    assert authenticate(authenticator, garbage) is None


def test_token_of_a_deleted_service_account_does_not_authenticate(
    key: SigningKey, authenticator: ServiceAccountTokenAuthenticator, accounts: Accounts
) -> None:
    token = token_for(key)
    del accounts.uids[(NAMESPACE, NAME)]
    assert authenticate(authenticator, token) is None


def test_token_of_a_deleted_and_recreated_service_account_does_not_authenticate(
    key: SigningKey, authenticator: ServiceAccountTokenAuthenticator, accounts: Accounts
) -> None:
    token = token_for(key)
    accounts.uids[(NAMESPACE, NAME)] = "a-new-uid"
    assert authenticate(authenticator, token) is None


def test_expiry_within_the_leeway_is_tolerated(
    key: SigningKey, authenticator: ServiceAccountTokenAuthenticator
) -> None:
    claims = claims_of(token_for(key))
    claims["exp"] = int(datetime.now(UTC).timestamp()) - 2
    assert authenticate(authenticator, resign(key, claims)) is not None


@settings(max_examples=200, deadline=None)
@given(token=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_random_strings_never_raise_and_never_authenticate(token: str) -> None:
    authenticator = _SHARED_AUTHENTICATOR
    assert asyncio.run(authenticator.authenticate_token(token)) is None


@settings(max_examples=200, deadline=None)
@given(
    header=st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "crit"]), st.text(max_size=10) | st.integers()
    ),
    body=st.dictionaries(st.text(max_size=12), st.text(max_size=12) | st.integers() | st.none()),
    signature=st.binary(max_size=300),
)
def test_random_well_formed_jwts_never_raise_and_never_authenticate(
    header: dict[str, object], body: dict[str, object], signature: bytes
) -> None:
    token = ".".join(
        [b64(json.dumps(header).encode()), b64(json.dumps(body).encode()), b64(signature)]
    )
    assert asyncio.run(_SHARED_AUTHENTICATOR.authenticate_token(token)) is None


_SHARED_KEY = SigningKey.generate()
_SHARED_AUTHENTICATOR = ServiceAccountTokenAuthenticator(
    [_SHARED_KEY.public_key], DEFAULT_ISSUER, [DEFAULT_AUDIENCE], lambda ns, name: UID
)


# -- the key file -------------------------------------------------------------------------------


def test_signing_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    first = load_signing_key(tmp_path / "state")
    path = tmp_path / "state" / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_signing_key(tmp_path / "state").kid == first.kid


def test_token_from_the_stored_key_verifies_with_a_fresh_load(
    tmp_path: Path, accounts: Accounts
) -> None:
    token = token_for(load_signing_key(tmp_path))
    authenticator = ServiceAccountTokenAuthenticator(
        [load_signing_key(tmp_path, create=False).public_key],
        DEFAULT_ISSUER,
        [DEFAULT_AUDIENCE],
        accounts.lookup,
    )
    assert authenticate(authenticator, token) is not None


# -- discovery documents --------------------------------------------------------------------------


def test_jwks_publishes_the_key_so_others_can_verify(key: SigningKey) -> None:
    document = jwks([key.public_key])
    [published] = document["keys"]
    assert published["kid"] == key.kid
    assert published["alg"] == "RS256" and published["use"] == "sig"
    public = jwt.PyJWK(published).key
    claims = jwt.decode(token_for(key), public, algorithms=["RS256"], audience=DEFAULT_AUDIENCE)
    assert claims["sub"] == "system:serviceaccount:default:ray-user"


def test_openid_configuration_points_at_the_jwks() -> None:
    config = openid_configuration("https://raygate.local")
    assert config["issuer"] == "https://raygate.local"
    assert config["jwks_uri"] == "https://raygate.local/openid/v1/jwks"
    assert config["id_token_signing_alg_values_supported"] == ["RS256"]


# -- durations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5m", r"--duration 5m is too short: a token must be valid for at least 10m"),
        ("0", r"--duration 0s is too short"),
        ("-1h", r"too short"),
        ("49h", r"--duration 49h is too long: at most 48h is allowed"),
    ],
)
def test_token_lifetimes_outside_10m_to_48h_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_token_duration(parse_duration(text))


def test_token_lifetime_bounds_are_inclusive() -> None:
    assert check_token_duration(timedelta(minutes=10)) == timedelta(minutes=10)
    assert check_token_duration(timedelta(hours=48)) == timedelta(hours=48)
    assert check_token_duration(timedelta(hours=72), maximum=timedelta(hours=72))


# -- the cache of verified tokens -----------------------------------------------------------------


def test_a_cached_token_is_still_revoked_by_deleting_the_account(
    key: SigningKey, authenticator: ServiceAccountTokenAuthenticator, accounts: Accounts
) -> None:
    token = token_for(key)
    assert authenticate(authenticator, token) is not None
    accounts.uids[(NAMESPACE, NAME)] = "recreated-uid"
    assert authenticate(authenticator, token) is None
    del accounts.uids[(NAMESPACE, NAME)]
    assert authenticate(authenticator, token) is None


def test_a_cached_token_stops_working_when_it_expires(
    key: SigningKey,
    authenticator: ServiceAccountTokenAuthenticator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = token_for(key, duration=timedelta(minutes=10))
    assert authenticate(authenticator, token) is not None
    assert authenticate(authenticator, token) is not None  # cached from its second use
    later = time.time() + 11 * 60
    monkeypatch.setattr(time, "time", lambda: later)
    assert authenticate(authenticator, token) is None


def test_a_token_is_cached_from_its_second_verification_on(
    key: SigningKey,
    authenticator: ServiceAccountTokenAuthenticator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A token used once (a flood of new ones) fills nothing; one that comes back is kept."""
    signature_checks: list[str] = []
    decode = jwt.PyJWT.decode

    def counting_decode(self: jwt.PyJWT, token: str, *args: object, **kwargs: object) -> object:
        signature_checks.append(token)
        return decode(self, token, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jwt.PyJWT, "decode", counting_decode)
    once, twice = token_for(key), token_for(key)
    assert authenticate(authenticator, once) is not None
    for _ in range(4):
        assert authenticate(authenticator, twice) is not None
    assert signature_checks.count(once) == 1
    assert signature_checks.count(twice) == 2


def test_cache_never_holds_more_than_its_size(key: SigningKey, accounts: Accounts) -> None:
    authenticator = ServiceAccountTokenAuthenticator(
        [key.public_key], DEFAULT_ISSUER, [DEFAULT_AUDIENCE], accounts.lookup, cache_size=2
    )
    tokens = [token_for(key) for _ in range(3)]
    for token in tokens:
        assert authenticate(authenticator, token) is not None
    assert all(authenticate(authenticator, token) is not None for token in tokens)


# -- claims to service account, by table ----------------------------------------------------------

GOOD_CLAIMS: dict[str, object] = {
    "sub": "system:serviceaccount:team:builder",
    "jti": "j-1",
    "iat": 1000,
    "exp": 2000,
    "kubernetes.io": {"namespace": "team", "serviceaccount": {"name": "builder", "uid": "u-1"}},
}


def _claims(**changes: object) -> dict[str, object]:
    claims = json.loads(json.dumps(GOOD_CLAIMS))
    for key, value in changes.items():
        if value is None:
            claims.pop(key, None)
        else:
            claims[key] = value
    return claims


@pytest.mark.parametrize(
    "claims",
    [
        _claims(sub="system:serviceaccount:team:other"),
        _claims(sub=None),
        _claims(jti=None),
        _claims(jti=""),
        _claims(iat=1500),  # issued after "now"
        _claims(exp="2000"),
        _claims(**{"kubernetes.io": None}),
        _claims(**{"kubernetes.io": "team"}),
        _claims(**{"kubernetes.io": {"namespace": "team"}}),
        _claims(**{"kubernetes.io": {"namespace": "team", "serviceaccount": {"name": "builder"}}}),
        _claims(**{"kubernetes.io": {"namespace": 7, "serviceaccount": {"name": "b", "uid": "u"}}}),
    ],
)
def test_incomplete_or_inconsistent_claims_name_no_account(claims: dict[str, object]) -> None:
    assert verified_token(claims, now=1200) is None


def test_complete_claims_name_the_account() -> None:
    verified = verified_token(GOOD_CLAIMS, now=1200)
    assert verified is not None
    assert (verified.namespace, verified.name, verified.uid) == ("team", "builder", "u-1")
    assert verified.identity.user == "system:serviceaccount:team:builder"
    assert verified.identity.extra[CREDENTIAL_ID_EXTRA] == ("JTI=j-1",)
