"""The configuration model: one validated, immutable `GatewayConfig`.

Keys are camelCase, as in Kubernetes objects and kube-rbac-proxy's config file; unknown keys are
refused. Durations are seconds (a number) or Go durations (`"90s"`, `"2m"`, `"1h30m"`).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, field_validator, model_validator

from raygate.authz.attributes import AttributesConfig, ConfigModel
from raygate.authz.paths import PathPolicy, validate_path_pattern
from raygate.config.values import (
    TLS_VERSIONS,
    ByteSize,
    Duration,
    HeaderName,
    Rate,
    check_issuer_url,
    one_or_many,
    split_host_port,
)
from raygate.errors import ConfigError
from raygate.identity import Attributes

MIB = 1024 * 1024
# Ray takes job packages up to 100 MiB in one PUT; the slack covers the multipart framing.
DEFAULT_MAX_BODY_BYTES = 100 * MIB + MIB
DEFAULT_LISTEN_ADDRESS = "127.0.0.1:8265"
RAY_AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"


class TLSConfig(ConfigModel):
    """TLS on the listener. Without certFile/keyFile a self-signed certificate is made at start,
    as kube-rbac-proxy does for `--secure-listen-address` alone. With clientCAFile, client
    certificates signed by that CA authenticate as user CN, groups O."""

    cert_file: str | None = None
    key_file: str | None = None
    min_version: Literal["VersionTLS10", "VersionTLS11", "VersionTLS12", "VersionTLS13"] = (
        "VersionTLS12"
    )
    cipher_suites: tuple[str, ...] = ()
    client_ca_file: str | None = Field(default=None, alias="clientCAFile")

    @model_validator(mode="after")
    def _cert_and_key(self) -> TLSConfig:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("certFile and keyFile go together")
        return self

    @property
    def ssl_min_version(self) -> ssl.TLSVersion:
        return TLS_VERSIONS[self.min_version]

    @property
    def self_signed(self) -> bool:
        return not self.cert_file


class ListenConfig(ConfigModel):
    address: str = DEFAULT_LISTEN_ADDRESS
    tls: TLSConfig | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        split_host_port(value)
        return value

    @property
    def host(self) -> str:
        return split_host_port(self.address)[0]

    @property
    def port(self) -> int:
        return split_host_port(self.address)[1]


class UpstreamConfig(ConfigModel):
    """Ray's dashboard. When Ray runs in token mode the gateway sends Ray's token upstream in
    place of the caller's: read from `tokenFile` when set, else from the `tokenEnv` variable
    (default RAY_AUTH_TOKEN, which KubeRay's token mode sets); `tokenEnv: null` sends none.
    `forwardedHeaders` (default on) adds X-Forwarded-For, -Proto and -Host; off, none is sent.
    A client's own X-Forwarded-*, Forwarded and X-Real-IP are never passed on."""

    url: str
    token_env: str | None = RAY_AUTH_TOKEN_ENV
    token_file: str | None = None
    forward_client_authorization: bool = False
    forwarded_headers: bool = True
    ca_file: str | None = Field(default=None, alias="caFile")
    client_cert_file: str | None = None
    client_key_file: str | None = None
    force_h2c: bool = Field(default=False, alias="forceH2C")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http:// or https:// URL with a host")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as err:
            raise ValueError(f"{value!r}: {err}") from None
        return value

    @model_validator(mode="after")
    def _client_cert_and_key(self) -> UpstreamConfig:
        if bool(self.client_cert_file) != bool(self.client_key_file):
            raise ValueError("clientCertFile and clientKeyFile go together")
        return self

    def read_token(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The token to send upstream, or None. Reads the file each call so rotation is seen."""
        if self.token_file:
            try:
                token = Path(self.token_file).read_text().strip()
            except OSError as err:
                raise ConfigError(
                    f"upstream.tokenFile {self.token_file}: cannot read: {err.strerror}"
                ) from None
            if not token:
                raise ConfigError(f"upstream.tokenFile {self.token_file} is empty")
            return token
        if self.token_env:
            token = (os.environ if environ is None else environ).get(self.token_env, "").strip()
            return token or None
        return None


class AuthnMode(StrEnum):
    EMBEDDED = "embedded"  # tokens issued by raygate's own authority (state directory)
    KUBERNETES = "kubernetes"  # TokenReview against the cluster's API server
    OIDC = "oidc"  # ID tokens from an OpenID Connect issuer


class AuthzMode(StrEnum):
    EMBEDDED = "embedded"  # RBAC objects in the state directory
    KUBERNETES = "kubernetes"  # SubjectAccessReview against the cluster's API server


class OIDCConfig(ConfigModel):
    """An OpenID Connect issuer: its ID tokens as bearer tokens (authentication mode `oidc`)
    and, with `browserSignIn`, people signing in to the dashboard with it (raygate.sso)."""

    issuer_url: str = Field(alias="issuerURL")
    client_id: str = Field(alias="clientID", min_length=1)
    ca_file: str | None = Field(default=None, alias="caFile")
    username_claim: str = "email"
    username_prefix: str = ""
    groups_claim: str = "groups"
    groups_prefix: str = ""
    signing_algorithms: tuple[str, ...] = ("RS256",)
    # Browser sign-in (authorization code + PKCE); sessions are kept in stateDir.
    browser_sign_in: bool = False
    # A confidential client's secret (one line); none for a public client.
    client_secret_file: str | None = None
    scopes: tuple[str, ...] = ("openid", "email", "profile")

    @field_validator("issuer_url")
    @classmethod
    def _https(cls, value: str) -> str:
        problem = check_issuer_url(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("scopes")
    @classmethod
    def _openid_scope(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "openid" not in value:
            raise ValueError("the scopes must include openid (no ID token without it)")
        return value

    def read_client_secret(self) -> str | None:
        if not self.client_secret_file:
            return None
        try:
            secret = Path(self.client_secret_file).read_text().strip()
        except OSError as err:
            raise ConfigError(
                f"cannot read the OIDC client secret file {self.client_secret_file}: "
                f"{err.strerror or err}"
            ) from None
        if not secret:
            raise ConfigError(f"the OIDC client secret file {self.client_secret_file} is empty")
        return secret

    @field_validator("signing_algorithms")
    @classmethod
    def _algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        allowed = {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"}
        for alg in value:
            if alg not in allowed:
                raise ValueError(f"signing algorithm {alg!r} is not one of {sorted(allowed)}")
        if not value:
            raise ValueError("name at least one signing algorithm")
        return value


class AuthenticationConfig(ConfigModel):
    """Who is calling. Client certificates (when listen.tls.clientCAFile is set) come first; then
    bearer tokens go through `mode`, one authenticator or a list tried in order."""

    mode: Annotated[tuple[AuthnMode, ...], BeforeValidator(one_or_many)] = (AuthnMode.EMBEDDED,)
    audiences: tuple[str, ...] = ()
    oidc: OIDCConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> AuthenticationConfig:
        if not self.mode:
            raise ValueError("mode: name at least one of embedded, kubernetes, oidc")
        if len(set(self.mode)) != len(self.mode):
            raise ValueError("mode: an authenticator is listed twice")
        if AuthnMode.OIDC in self.mode and self.oidc is None:
            raise ValueError("mode oidc needs oidc: {issuerURL, clientID, ...}")
        return self


class StaticUser(ConfigModel):
    name: str = ""
    groups: tuple[str, ...] = ()


class StaticAuthorization(ConfigModel):
    """kube-rbac-proxy's `authorization.static` entry: allows what it matches, before any other
    authorizer. An empty field matches anything; `resourceRequest` must equal the request's.
    As in kube-rbac-proxy, `user.groups` is informational: only `user.name` is compared."""

    user: StaticUser = StaticUser()
    verb: str = ""
    namespace: str = ""
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    resource_request: bool = False
    path: str = ""

    @model_validator(mode="after")
    def _path_xor_resource(self) -> StaticAuthorization:
        if self.resource_request and self.path:
            raise ValueError("a resource entry (resourceRequest: true) takes no path")
        if not self.resource_request and not self.path:
            raise ValueError("a non-resource entry (resourceRequest: false) needs a path")
        return self

    def matches(self, attributes: Attributes) -> bool:
        def same(configured: str, requested: str) -> bool:
            return not configured or configured == requested

        return (
            self.resource_request == attributes.resource_request
            and same(self.user.name, attributes.identity.user)
            and same(self.verb, attributes.verb)
            and same(self.namespace, attributes.namespace)
            and same(self.api_group, attributes.api_group)
            and same(self.resource, attributes.resource)
            and same(self.subresource, attributes.subresource)
            and same(self.name, attributes.name)
            and same(self.path, attributes.path)
        )


class AuthorizationConfig(AttributesConfig):
    """May they: the request mapping (profile, resourceAttributes, rewrites, rayCluster), the
    authorizer, static allows and path rules."""

    mode: AuthzMode = AuthzMode.EMBEDDED
    static: tuple[StaticAuthorization, ...] = ()
    allow_paths: tuple[str, ...] = ()
    ignore_paths: tuple[str, ...] = ()

    @field_validator("allow_paths", "ignore_paths")
    @classmethod
    def _patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(validate_path_pattern(p) for p in value)

    @model_validator(mode="after")
    def _one_path_list(self) -> AuthorizationConfig:
        if self.allow_paths and self.ignore_paths:
            raise ValueError("allowPaths and ignorePaths cannot be used together")
        return self

    @cached_property
    def path_policy(self) -> PathPolicy:
        return PathPolicy.compile(self.allow_paths, self.ignore_paths)

    def statically_allowed(self, attributes: Attributes) -> bool:
        return any(entry.matches(attributes) for entry in self.static)


class CacheConfig(ConfigModel):
    """Decision caches in front of the authority (defaults as kube-rbac-proxy's)."""

    authentication_ttl: Duration = Field(default=120.0, alias="authenticationTTL")
    allow_ttl: Duration = Field(default=300.0, alias="allowTTL")
    deny_ttl: Duration = Field(default=30.0, alias="denyTTL")
    max_entries: int = Field(default=10_000, ge=0)


class ProxyEndpointsConfig(ConfigModel):
    """/healthz, /readyz and /metrics on their own port (host: listen's unless given)."""

    port: int | None = Field(default=None, ge=0, le=65535)
    host: str | None = None


class LimitsConfig(ConfigModel):
    max_header_bytes: int = Field(default=20 * 1024, ge=1024)  # per header line
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=0)
    upstream_timeout: Duration = 300.0  # waiting for Ray's response headers
    # A connection with no request in flight, including one still sending its headers.
    idle_timeout: Duration = 30.0
    backend_timeout: Duration = 5.0  # waiting for the authority before answering 503


class AuthHeaderConfig(ConfigModel):
    """Identity headers sent upstream (kube-rbac-proxy's --auth-header-*)."""

    fields_enabled: bool = False
    user_field_name: HeaderName = "X-Remote-User"
    groups_field_name: HeaderName = "X-Remote-Group"
    group_separator: str = "|"


class AuditFormat(StrEnum):
    """`--audit-format`: raygate's own JSON line, or Kubernetes' audit Event."""

    JSON = "json"
    KUBERNETES = "kubernetes"


class AuditFailurePolicy(StrEnum):
    """`--audit-failure-policy`: what the gateway does while audit lines cannot be written."""

    FAIL_CLOSED = "fail-closed"  # answer 503, forward nothing
    FAIL_OPEN = "fail-open"  # keep serving, and say how many lines were lost


DEFAULT_AUDIT_MAX_SIZE = 100 * MIB  # bytes: the audit file is rotated before it grows past it
DEFAULT_AUDIT_MAX_BACKUPS = 5


class AuditConfig(ConfigModel):
    """Audit lines: where (`log`: a path; `-` or unset: stdout), rotation by size with a kept
    count, the format, and what happens while they cannot be written."""

    log: str | None = None
    max_size: ByteSize = DEFAULT_AUDIT_MAX_SIZE  # 0: never rotate
    max_backups: int = Field(default=DEFAULT_AUDIT_MAX_BACKUPS, ge=0)
    format: AuditFormat = AuditFormat.JSON
    failure_policy: AuditFailurePolicy = AuditFailurePolicy.FAIL_CLOSED
class ClientDoorConfig(ConfigModel):
    """The Ray Client door (gRPC): where it listens and where Ray's client server is."""

    listen: str
    upstream: str
    # Long-lived streams are re-authorized this often, and when their token expires.
    recheck_interval: Duration = 30.0

    @field_validator("listen", "upstream")
    @classmethod
    def _address(cls, value: str) -> str:
        split_host_port(value)
        return value

    @field_validator("recheck_interval")
    @classmethod
    def _recheck(cls, value: float) -> float:
        if not 0 < value <= 30:
            raise ValueError("recheckInterval must be above 0 and at most 30s")
        return value


class ServeDoorConfig(ConfigModel):
    """The Serve door (HTTP): where it listens and where Serve's HTTP proxy is."""

    listen: str
    upstream: str
    # Per identity and Serve application; None: no limit.
    rate_limit: Rate = None
    rate_burst: int | None = Field(default=None, ge=1)
    # How long Serve's application list (routes) is reused.
    applications_ttl: Duration = Field(default=2.0, alias="applicationsTTL")
    # X-Remote-User/-Group (authHeader's names) for Serve's applications; None: as
    # authHeader.fieldsEnabled. X-Forwarded-* are always sent to Serve.
    identity_headers: bool | None = None

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str) -> str:
        split_host_port(value)
        return value

    @field_validator("upstream")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{value!r} is not an http:// URL with a host")
        return value


class GatewayConfig(ConfigModel):
    listen: ListenConfig = ListenConfig()
    upstream: UpstreamConfig
    authentication: AuthenticationConfig = AuthenticationConfig()
    authorization: AuthorizationConfig = AuthorizationConfig()
    cache: CacheConfig = CacheConfig()
    proxy_endpoints: ProxyEndpointsConfig = ProxyEndpointsConfig()
    limits: LimitsConfig = LimitsConfig()
    auth_header: AuthHeaderConfig = AuthHeaderConfig()
    audit: AuditConfig = AuditConfig()
    kubeconfig: str | None = None
    state_dir: str | None = None
    log_verbosity: int = Field(default=0, ge=0)
    # Ray's dashboard UI may log in with a token and keep it in a cookie (pipeline/browser.py).
    browser_login: bool = False
    # Gateway processes sharing the listen address (SO_REUSEPORT); "auto": one per usable core.
    workers: int | Literal["auto"] = 1
    # Ray's other doors; absent: closed.
    client: ClientDoorConfig | None = None
    serve: ServeDoorConfig | None = None

    @field_validator("workers")
    @classmethod
    def _workers_positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("workers must be at least 1 (or auto)")
        return value

    @property
    def proxy_endpoints_address(self) -> tuple[str, int] | None:
        """(host, port) of the health/metrics listener, or None when it is off."""
        if not self.proxy_endpoints.port:
            return None
        return (self.proxy_endpoints.host or self.listen.host, self.proxy_endpoints.port)

    @property
    def uses_kubernetes(self) -> bool:
        return (
            AuthnMode.KUBERNETES in self.authentication.mode
            or self.authorization.mode is AuthzMode.KUBERNETES
        )
