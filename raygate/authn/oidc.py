"""OIDC ID tokens (cloud and SSO identities), configured like kube-rbac-proxy's `--oidc-*` flags.

The issuer's keys come from its discovery document and JWKS. A token signed with a key id we do
not know makes us fetch the JWKS again (the issuer rotated its keys), at most once per
`min_refresh_interval`, so a flood of forged key ids cannot turn into a flood of fetches: the
fetch goes through raygate.cache.TTLCache (single flight, the outcome kept for the interval).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt

from raygate.cache import TTLCache
from raygate.config.values import check_issuer_url
from raygate.errors import BackendUnavailable, ConfigError
from raygate.identity import AUTHENTICATED_GROUP, Identity

DISCOVERY_PATH = "/.well-known/openid-configuration"
NO_PREFIX = "-"  # `--oidc-username-prefix=-`: usernames exactly as the claim says
# Kubernetes reserves `system:` names (system:admin, system:serviceaccount:...) for itself.
RESERVED_USERNAME_PREFIX = "system:"
SUPPORTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA"}
)


@dataclass(frozen=True)
class OIDCOptions:
    """kube-rbac-proxy's `--oidc-*` flags (issuer, clientID, username/groups claim and prefix,
    sign-alg, ca-file).

    The username prefix defaults as in kube-apiserver's `--oidc-username-prefix`: when
    `username_prefix` is empty and `username_claim` is not `email`, usernames are prefixed with
    `<issuer_url>#` (so `sub: 1234` becomes `https://sso.example.com#1234` and cannot collide
    with a name from another source); `-` means no prefix at all. Whatever the prefix, a
    username that ends up starting with `system:` is refused (see `identity_from_claims`).
    """

    issuer_url: str
    client_id: str
    username_claim: str = "email"
    username_prefix: str = ""
    groups_claim: str = "groups"
    groups_prefix: str = ""
    signing_algorithms: tuple[str, ...] = ("RS256",)
    ca_file: str | None = None
    leeway: float = 0.0

    def __post_init__(self) -> None:
        problem = check_issuer_url(self.issuer_url)
        if problem is not None:
            raise ConfigError(f"--oidc-issuer: {problem}")
        if not self.client_id:
            raise ConfigError("--oidc-clientID is required with --oidc-issuer")
        unknown = set(self.signing_algorithms) - SUPPORTED_ALGORITHMS
        if unknown or not self.signing_algorithms:
            raise ConfigError(
                f"--oidc-sign-alg: unsupported {sorted(unknown) or 'empty list'}; "
                f"choose from {', '.join(sorted(SUPPORTED_ALGORITHMS))}"
            )

    @property
    def effective_username_prefix(self) -> str:
        """The prefix put before every username (kube-apiserver's defaulting, see above)."""
        if self.username_prefix == NO_PREFIX:
            return ""
        if not self.username_prefix and self.username_claim != "email":
            return f"{self.issuer_url}#"
        return self.username_prefix


def identity_from_claims(options: OIDCOptions, claims: Mapping[str, Any]) -> Identity | None:
    """Map verified claims to an Identity; None when the username claim is missing or unusable,
    or when the username or a group (prefix included) would be a reserved `system:` name: an
    IdP user must not become `system:admin`, a service account, or a member of
    `system:masters`.

    The identity gets `system:authenticated`, as kube-apiserver gives every authenticated user,
    so bindings to that group mean the same behind raygate.
    """
    username = claims.get(options.username_claim)
    if not isinstance(username, str) or not username:
        return None
    # kube-apiserver refuses an email the issuer itself says is unverified.
    if options.username_claim == "email" and claims.get("email_verified", True) is not True:
        return None
    user = options.effective_username_prefix + username
    if user.startswith(RESERVED_USERNAME_PREFIX):
        return None
    raw_groups = claims.get(options.groups_claim, [])
    if isinstance(raw_groups, str):
        raw_groups = [raw_groups]
    if not isinstance(raw_groups, list) or not all(isinstance(g, str) for g in raw_groups):
        return None
    groups = [options.groups_prefix + g for g in raw_groups]
    if any(g.startswith(RESERVED_USERNAME_PREFIX) for g in groups):
        # system:masters, system:serviceaccounts, ... are Kubernetes' to give, not the IdP's.
        return None
    if AUTHENTICATED_GROUP not in groups:
        groups.append(AUTHENTICATED_GROUP)
    subject = claims.get("sub")
    return Identity(
        user=user,
        uid=subject if isinstance(subject, str) else "",
        groups=tuple(groups),
    )


class OIDCAuthenticator:
    """A TokenAuthenticator for ID tokens of one issuer and client id."""

    def __init__(
        self,
        options: OIDCOptions,
        *,
        session: aiohttp.ClientSession | None = None,
        min_refresh_interval: float = 10.0,
        timeout: float = 5.0,
        clock: Any = time.monotonic,
    ) -> None:
        self.options = options
        self.min_refresh_interval = min_refresh_interval
        self.timeout = timeout
        self.clock = clock
        self.jwks_fetches = 0
        self._session = session
        self._owns_session = session is None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._unnamed_keys: list[jwt.PyJWK] = []
        self._jwks_uri: str | None = None
        # The outcome of the last JWKS fetch ("" or why it failed), kept for the interval.
        self._fetches: TTLCache[str] = TTLCache(1, clock=clock)
        self._fetched = False
        self._fetch_error = ""

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def authenticate_token(self, token: str) -> Identity | None:
        claims = await self.verify(token)
        return identity_from_claims(self.options, claims) if claims is not None else None

    async def verify(self, token: str) -> dict[str, Any] | None:
        """The claims of a valid ID token (signature, iss, aud, exp), else None."""
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return None
        # Tokens of other issuers belong to other authenticators: no key fetch on their behalf.
        if unverified.get("iss") != self.options.issuer_url:
            return None
        if header.get("alg") not in self.options.signing_algorithms:
            return None
        keys = await self._keys_for(header.get("kid"))
        for key in keys:
            try:
                claims = jwt.decode(
                    token,
                    key=key,
                    algorithms=list(self.options.signing_algorithms),
                    audience=self.options.client_id,
                    issuer=self.options.issuer_url,
                    leeway=self.options.leeway,
                    options={"require": ["iss", "aud", "exp"]},
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError:
                return None
            return claims
        return None

    async def _keys_for(self, kid: str | None) -> Sequence[jwt.PyJWK]:
        if not self._fetched or (kid is not None and kid not in self._keys):
            self._fetch_error = await self._fetches.get_or_load(
                "jwks", self._fetch_keys, lambda _: self.min_refresh_interval
            )
        if self._fetch_error and not self._keys and not self._unnamed_keys:
            # Never had keys: we cannot tell good tokens from bad ones, so fail closed (503).
            raise BackendUnavailable(self._fetch_error)
        if kid is None:
            return [*self._unnamed_keys, *self._keys.values()]
        key = self._keys.get(kid)
        return [key] if key is not None else []

    async def _fetch_keys(self) -> str:
        """Fetch the key set; "" when it worked, else why not (kept, so failures are paced too)."""
        try:
            await self._fetch_keys_once()
        except BackendUnavailable as err:
            return str(err)
        self._fetched = True
        return ""

    async def _fetch_keys_once(self) -> None:
        if self._jwks_uri is None:
            discovery = await self._get_json(self.options.issuer_url.rstrip("/") + DISCOVERY_PATH)
            if discovery.get("issuer") != self.options.issuer_url:
                raise BackendUnavailable(
                    f"OIDC discovery at {self.options.issuer_url} names issuer "
                    f"{discovery.get('issuer')!r}; --oidc-issuer-url must match it exactly"
                )
            jwks_uri = discovery.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri:
                raise BackendUnavailable(
                    f"OIDC discovery at {self.options.issuer_url} has no jwks_uri"
                )
            self._jwks_uri = jwks_uri
        document = await self._get_json(self._jwks_uri)
        try:
            key_set = jwt.PyJWKSet.from_dict(document)
        except jwt.PyJWTError as err:
            raise BackendUnavailable(f"OIDC JWKS at {self._jwks_uri} is unusable: {err}") from None
        self.jwks_fetches += 1
        self._keys = {k.key_id: k for k in key_set.keys if k.key_id}
        self._unnamed_keys = [k for k in key_set.keys if not k.key_id]

    async def _get_json(self, url: str) -> dict[str, Any]:
        session = self._session_for_requests()
        try:
            async with session.get(
                url, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as response:
                if response.status != 200:
                    raise BackendUnavailable(f"OIDC provider answered {response.status} for {url}")
                document = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            raise BackendUnavailable(
                f"cannot fetch {url} from the OIDC provider: {err or type(err).__name__}"
            ) from None
        if not isinstance(document, dict):
            raise BackendUnavailable(f"OIDC provider sent a non-object document at {url}")
        return document

    def _session_for_requests(self) -> aiohttp.ClientSession:
        if self._session is None:
            ssl_context: ssl.SSLContext | bool = True
            if self.options.ca_file:
                try:
                    ssl_context = ssl.create_default_context(cafile=self.options.ca_file)
                except (OSError, ssl.SSLError) as err:
                    raise ConfigError(f"--oidc-ca-file {self.options.ca_file}: {err}") from None
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context))
        return self._session
