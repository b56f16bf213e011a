"""The embedded authority's signing key and the service-account tokens it issues.

Tokens have the layout of Kubernetes bound service-account tokens (RS256, `kid` computed as
kube-apiserver does), so tools that read those read these.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from raygate.durations import format_duration
from raygate.errors import ConfigError, StoreError, TokenError
from raygate.identity import service_account_username
from raygate.store.state import read_secret, write_secret

DEFAULT_ISSUER = "https://raygate.local"
DEFAULT_AUDIENCE = DEFAULT_ISSUER
SIGNING_ALGORITHM = "RS256"
KEY_FILE = "sa.key"
KEY_BITS = 2048
DEFAULT_TOKEN_DURATION = timedelta(hours=1)
MIN_TOKEN_DURATION = timedelta(minutes=10)  # kube-apiserver refuses shorter TokenRequests
MAX_TOKEN_DURATION = timedelta(hours=48)
# A token bound to a Secret is revoked by deleting the Secret, so it may live long (an API key).
MAX_BOUND_TOKEN_DURATION = timedelta(hours=8760)


def key_id(public_key: rsa.RSAPublicKey) -> str:
    """kube-apiserver's `kid`: unpadded base64url of SHA-256 over the DER (PKIX) public key."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKey:
    private_key: rsa.RSAPrivateKey
    kid: str

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self.private_key.public_key()

    @classmethod
    def from_pem(cls, pem: bytes, source: str = "signing key") -> SigningKey:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as err:
            raise StoreError(f"{source} is not an unencrypted PEM private key: {err}") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise StoreError(f"{source} is not an RSA key (RS256 needs one)")
        return cls(key, key_id(key.public_key()))

    @classmethod
    def generate(cls) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
        return cls(key, key_id(key.public_key()))

    def to_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


PUBLIC_KEY_FILE = "sa.pub"
ROTATE_HINT = (
    "to start over with a new key on purpose, run `raygate rotate-key` "
    "(every token issued so far stops working)"
)


def load_signing_key(state_dir: Path, *, create: bool = True) -> SigningKey:
    """The key in `STATE/sa.key`; with `create`, generated (mode 0600) on first use.

    Two processes creating it at once end up with the same key: the first write wins. The
    public half is kept in `STATE/sa.pub`: a state whose tokens were signed by a key that is
    now missing or different is refused, never silently given a new key. So is a key file
    that others may read, or that cannot be read or parsed.
    """
    path = Path(state_dir) / KEY_FILE
    public_path = Path(state_dir) / PUBLIC_KEY_FILE
    if not path.exists() and not path.is_symlink():
        if public_path.exists():
            raise StoreError(
                f"the signing key {path} is missing, but this state has issued tokens signed "
                f"by it (see {public_path}): restore it from a backup, or {ROTATE_HINT}"
            )
        if not create:
            raise StoreError(f"the signing key {path} does not exist yet")
        write_secret(path, SigningKey.generate().to_pem(), exclusive=True)
    key = _read_signing_key(path)
    _check_public_key(public_path, key, path)
    return key


def _read_signing_key(path: Path) -> SigningKey:
    try:
        info = os.stat(path)
    except OSError as err:
        raise StoreError(
            f"cannot read the signing key {path}: {err.strerror}; {ROTATE_HINT}"
        ) from None
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise StoreError(
            f"the signing key {path} is open to other users (mode {mode:o}): run "
            f"`chmod 600 {path}`; if someone else may have read it, {ROTATE_HINT}"
        )
    if info.st_uid != os.geteuid():
        raise StoreError(
            f"the signing key {path} is owned by uid {info.st_uid}, not by this user: "
            f"`chown` it back, or {ROTATE_HINT}"
        )
    try:
        pem = read_secret(path)
    except StoreError as err:
        raise StoreError(f"{err}; {ROTATE_HINT}") from None
    try:
        return SigningKey.from_pem(pem, f"the signing key {path}")
    except StoreError as err:
        raise StoreError(f"{err}; restore it from a backup, or {ROTATE_HINT}") from None


def _public_pem(key: SigningKey) -> bytes:
    return key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _check_public_key(public_path: Path, key: SigningKey, path: Path) -> None:
    try:
        recorded = public_path.read_bytes()
    except FileNotFoundError:
        write_secret(public_path, _public_pem(key), exclusive=True)
        return
    except OSError as err:
        raise StoreError(f"cannot read {public_path}: {err.strerror}") from None
    if recorded != _public_pem(key):
        raise StoreError(
            f"the signing key {path} is not the key this state issued its tokens with (see "
            f"{public_path}): restore the original from a backup, or {ROTATE_HINT}"
        )


def rotate_signing_key(state_dir: Path) -> SigningKey:
    """A new signing key, replacing the old one (and its record) for good: tokens it signed
    no longer verify. Running gateways use the new key once restarted."""
    key = SigningKey.generate()
    write_secret(Path(state_dir) / KEY_FILE, key.to_pem())
    write_secret(Path(state_dir) / PUBLIC_KEY_FILE, _public_pem(key))
    return key


# -- token lifetimes ----------------------------------------------------------------------------


def check_token_duration(
    duration: timedelta, *, maximum: timedelta = MAX_TOKEN_DURATION
) -> timedelta:
    """Refuse lifetimes the API server would refuse (under 10m) or above `maximum`."""
    if duration < MIN_TOKEN_DURATION:
        raise ConfigError(
            f"--duration {format_duration(duration)} is too short: a token must be valid for at "
            f"least {format_duration(MIN_TOKEN_DURATION)}"
        )
    if duration > maximum:
        raise ConfigError(
            f"--duration {format_duration(duration)} is too long: at most "
            f"{format_duration(maximum)} is allowed"
        )
    return duration


# -- issuing ------------------------------------------------------------------------------------


def issue_token(
    namespace: str,
    name: str,
    uid: str,
    *,
    signing_key: SigningKey,
    duration: timedelta = DEFAULT_TOKEN_DURATION,
    audiences: Sequence[str] = (DEFAULT_AUDIENCE,),
    issuer: str = DEFAULT_ISSUER,
    now: datetime | None = None,
    bound_secret: tuple[str, str] | None = None,
) -> str:
    """A signed token for service account NAMESPACE/NAME, shaped like a Kubernetes bound token.

    `bound_secret` (name, uid): the token is bound to that Secret of the namespace and stops
    being valid when it is deleted (`kubernetes.io.secret`, as kube-apiserver writes it).
    """
    if not audiences:
        raise TokenError("a token needs at least one audience")
    issued = int((now or datetime.now(UTC)).timestamp())
    claims = {
        "aud": list(audiences),
        "exp": issued + int(duration.total_seconds()),
        "iat": issued,
        "iss": issuer,
        "jti": str(uuid.uuid4()),
        "kubernetes.io": {
            "namespace": namespace,
            "serviceaccount": {"name": name, "uid": uid},
            **(
                {"secret": {"name": bound_secret[0], "uid": bound_secret[1]}}
                if bound_secret is not None
                else {}
            ),
        },
        "nbf": issued,
        "sub": service_account_username(namespace, name),
    }
    # Kubernetes' header is exactly {"alg", "kid"}: no "typ".
    return jwt.encode(
        claims,
        signing_key.private_key,
        algorithm=SIGNING_ALGORITHM,
        headers={"kid": signing_key.kid, "typ": None},
    )
