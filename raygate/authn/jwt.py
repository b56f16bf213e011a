"""Service-account tokens of the embedded authority, verified as kube-apiserver verifies them.

Only RS256 is accepted (no `none`, no HMAC: a public key used as an HMAC secret proves nothing),
then signature, issuer, audience, time window with a small leeway, the Kubernetes claims, and that
the service account still exists with the uid the token names (deleting the account revokes it).
"""

from __future__ import annotations

import base64
import functools
import json
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from raygate.cache import TTLCache, token_key
from raygate.identity import Identity, service_account_identity, service_account_username
from raygate.store.tokens import SIGNING_ALGORITHM, key_id

CREDENTIAL_ID_EXTRA = "authentication.kubernetes.io/credential-id"
_REQUIRED_CLAIMS = ["iss", "sub", "aud", "exp", "iat", "nbf", "jti"]

LookupUid = Callable[[str, str], str | None]


def _as_public_key(key: rsa.RSAPublicKey | bytes | str) -> rsa.RSAPublicKey:
    if isinstance(key, rsa.RSAPublicKey):
        return key
    loaded = serialization.load_pem_public_key(key.encode() if isinstance(key, str) else key)
    if not isinstance(loaded, rsa.RSAPublicKey):
        raise ValueError("service-account tokens are verified with RSA public keys")
    return loaded


class ServiceAccountTokenAuthenticator:
    """TokenAuthenticator for the embedded authority's tokens.

    `lookup_uid(namespace, name)` answers from memory (the gateway's current store snapshot)
    with the account's uid, or None when it does not exist.

    The RSA check is the whole cost of a verification (PyJWT: ~70 us), so up to `cache_size`
    tokens that passed it are remembered (by hash) until they expire; the account lookup still
    runs on every call. Only tokens that verified are cached, so garbage cannot push good tokens
    out; and only from their second verification on (the pipeline remembers an identity for a
    second, so this is a token coming back): a flood of tokens each used once fills nothing.
    """

    def __init__(
        self,
        public_keys: Iterable[rsa.RSAPublicKey | bytes | str],
        issuer: str,
        audiences: Sequence[str],
        lookup_uid: LookupUid,
        leeway_seconds: int = 5,
        cache_size: int = 4096,
        recheck: Callable[[], Awaitable[bool]] | None = None,
        lookup_secret_uid: LookupUid | None = None,
    ) -> None:
        keys = [_as_public_key(k) for k in public_keys]
        if not keys:
            raise ValueError("at least one public key is needed to verify tokens")
        if not audiences:
            raise ValueError("at least one audience is needed to verify tokens")
        self._keys: Mapping[str, rsa.RSAPublicKey] = {key_id(k): k for k in keys}
        self._key_list = list(self._keys.values())
        self._issuer = issuer
        self._audiences = list(audiences)
        self._lookup_uid = lookup_uid
        # Read-your-writes: before refusing a valid token whose account is unknown (or has
        # another uid), `recheck()` reloads the accounts (True when something changed).
        self._recheck = recheck
        # Tokens bound to a Secret are valid while it exists with that uid; without a lookup
        # they are refused (fail closed).
        self._lookup_secret_uid = lookup_secret_uid
        self._leeway = leeway_seconds
        self._decoder = jwt.PyJWT(options={"require": _REQUIRED_CLAIMS})
        self._cache: TTLCache[_VerifiedToken] = TTLCache(cache_size)
        self._verified_once = _Doorkeeper()

    @property
    def issuer(self) -> str:
        return self._issuer

    def jwks(self) -> dict[str, Any]:
        return jwks(self._keys.values())

    def _candidate_keys(self, token: str) -> list[rsa.RSAPublicKey]:
        # Only picks the key; PyJWT checks the header again, alg allow-list included.
        if len(self._key_list) == 1:
            return self._key_list
        kid = _unverified_kid(token)
        if kid is not None and kid in self._keys:
            return [self._keys[kid]]
        # Kubernetes tries every key when the kid is absent or unknown.
        return self._key_list

    def _verified_claims(self, token: str) -> dict[str, Any] | None:
        for key in self._candidate_keys(token):
            try:
                return self._decoder.decode(
                    token,
                    key,
                    algorithms=[SIGNING_ALGORITHM],
                    audience=self._audiences,
                    issuer=self._issuer,
                    leeway=self._leeway,
                )
            except jwt.InvalidSignatureError:
                continue
        return None

    def _verify(self, token: str, now: float) -> _VerifiedToken | None:
        key = token_key(token)
        cached = self._cache.lookup(key)
        if isinstance(cached, _VerifiedToken):
            # Checked against `now` too: the cache's TTL runs on its own (monotonic) clock.
            if now <= cached.expires + self._leeway:
                return cached
            self._cache.forget(key)
            return None
        try:
            claims = self._verified_claims(token)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError, AttributeError):
            return None
        verified = None if claims is None else verified_token(claims, now, self._leeway)
        if verified is not None and self._verified_once.seen_before(key):
            self._cache.put(key, verified, verified.expires + self._leeway - now)
        return verified

    async def authenticate_token(self, token: str) -> Identity | None:
        verified = self._verify(token, time.time())
        if verified is None:
            return None
        # Checked on every call, cached or not: deleting the account revokes at once.
        uid = self._lookup_uid(verified.namespace, verified.name)
        if uid != verified.uid and self._recheck is not None:
            # Looked up again after the reload, whatever it found: the watcher thread may have
            # swapped a newer table in meanwhile.
            await self._recheck()
            uid = self._lookup_uid(verified.namespace, verified.name)
        if uid != verified.uid:
            return None
        if verified.secret is not None:
            lookup = self._lookup_secret_uid
            if lookup is None:
                return None
            secret, secret_uid = verified.secret
            found = lookup(verified.namespace, secret)
            if found != secret_uid and self._recheck is not None:
                await self._recheck()  # a Secret created just now (read-your-writes)
                found = lookup(verified.namespace, secret)
            if found != secret_uid:
                return None
        return verified.identity


class _Doorkeeper:
    """Which token digests were verified before, in a fixed 128 KiB whatever their number: one
    bit per digest (a one-hash Bloom filter, TinyLFU's doorkeeper), all cleared after every
    65,536 new ones. A wrong "seen" (at most 1 in 16) only caches a token at its first
    verification, as if there were no doorkeeper."""

    BITS = 1 << 20
    MARKS_BEFORE_CLEARING = 1 << 16

    def __init__(self) -> None:
        self._bits = bytearray(self.BITS // 8)
        self._marks = 0

    def seen_before(self, digest: bytes) -> bool:
        """Whether `digest` was (probably) seen before; it is from now on."""
        index = int.from_bytes(digest[:4], "little") & (self.BITS - 1)
        byte, bit = index >> 3, 1 << (index & 7)
        if self._bits[byte] & bit:
            return True
        if self._marks >= self.MARKS_BEFORE_CLEARING:
            self._bits = bytearray(self.BITS // 8)
            self._marks = 0
        self._bits[byte] |= bit
        self._marks += 1
        return False


@dataclass(frozen=True, slots=True)
class _VerifiedToken:
    """What a verified token says, kept small: up to `cache_size` of these are cached for the
    tokens' whole lifetime. The account's strings are interned (shared by all of its tokens);
    the Identity is built when asked for, not kept with each entry."""

    namespace: str
    name: str
    uid: str
    expires: float
    jti: str
    secret: tuple[str, str] | None = None  # (name, uid) of the Secret it is bound to

    @property
    def identity(self) -> Identity:
        account = _account_identity(self.namespace, self.name, self.uid)
        return Identity(account.user, account.uid, account.groups, _CredentialId(self.jti))


class _CredentialId(Mapping[str, tuple[str, ...]]):
    """A token's Identity.extra, {CREDENTIAL_ID_EXTRA: ("JTI=...",)}, read only, in one slot
    (a dict and its proxy take six times that, in every identity the gateway caches)."""

    __slots__ = ("_jti",)

    def __init__(self, jti: str) -> None:
        self._jti = jti

    def __getitem__(self, key: str) -> tuple[str, ...]:
        if key != CREDENTIAL_ID_EXTRA:
            raise KeyError(key)
        return (f"JTI={self._jti}",)

    def __iter__(self) -> Iterator[str]:
        return iter((CREDENTIAL_ID_EXTRA,))

    def __len__(self) -> int:
        return 1

    def __repr__(self) -> str:
        return repr(dict(self))


@functools.lru_cache(maxsize=1024)
def _account_identity(namespace: str, name: str, uid: str) -> Identity:
    # Shared by every token of the account: its user name and groups are made once.
    return service_account_identity(namespace, name, uid)


def verified_token(
    claims: Mapping[str, Any], now: float, leeway: float = 0
) -> _VerifiedToken | None:
    """The service account named by signature-checked claims, or None if the Kubernetes claims
    are missing, malformed or disagree with `sub`, or the token claims to be issued later."""
    private = claims.get("kubernetes.io")
    if not isinstance(private, Mapping):
        return None
    namespace = private.get("namespace")
    account = private.get("serviceaccount")
    if not isinstance(account, Mapping):
        return None
    name, uid = account.get("name"), account.get("uid")
    jti = claims.get("jti")
    if not all(isinstance(v, str) and v for v in (namespace, name, uid, jti)):
        return None
    if claims.get("sub") != service_account_username(namespace, name):
        return None
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, int | float) or iat > now + leeway:
        return None
    if not isinstance(exp, int | float):
        return None
    secret = None
    if "secret" in private:
        bound = private.get("secret")
        if not isinstance(bound, Mapping):
            return None
        secret_name, secret_uid = bound.get("name"), bound.get("uid")
        if not (isinstance(secret_name, str) and secret_name):
            return None
        if not (isinstance(secret_uid, str) and secret_uid):
            return None
        secret = (secret_name, secret_uid)
    # Signed claims only (an attacker cannot make up names to fill the interned table).
    return _VerifiedToken(
        sys.intern(namespace), sys.intern(name), sys.intern(uid), float(exp), jti, secret
    )


def _unverified_kid(token: str) -> str | None:
    """The header's `kid`, read without PyJWT's full-token scan (half the cost of a check)."""
    segment = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except ValueError:
        return None
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) else None


def jwks(public_keys: Iterable[rsa.RSAPublicKey]) -> dict[str, Any]:
    """The JSON Web Key Set kube-apiserver serves at /openid/v1/jwks."""
    keys = []
    for key in public_keys:
        jwk = RSAAlgorithm.to_jwk(key, as_dict=True)
        jwk.pop("key_ops", None)  # kube-apiserver's keys carry `use` only
        jwk.update(use="sig", alg=SIGNING_ALGORITHM, kid=key_id(key))
        keys.append(jwk)
    return {"keys": keys}


def openid_configuration(issuer: str, jwks_uri: str | None = None) -> dict[str, Any]:
    """The discovery document kube-apiserver serves at /.well-known/openid-configuration."""
    return {
        "issuer": issuer,
        "jwks_uri": jwks_uri or f"{issuer.rstrip('/')}/openid/v1/jwks",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [SIGNING_ALGORITHM],
    }
