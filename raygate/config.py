"""raygate's configuration: its own YAML (`raygate serve --config FILE`) and kube-rbac-proxy's
command line and `--config-file`, both turned into one validated `GatewayConfig`.

Keys are camelCase, as in Kubernetes objects and kube-rbac-proxy's config file. Every error is a
one-line `ConfigError` that names the file (or flag) and the field, e.g.
`gateway.yaml: authorization.resourceAttributes.nmespace: unknown field`.

Durations are seconds (a number) or Go durations (`"90s"`, `"2m"`, `"1h30m"`).
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from raygate.authz.attributes import AttributesConfig, ConfigModel
from raygate.authz.paths import PathPolicy, validate_path_pattern
from raygate.errors import ConfigError
from raygate.identity import Attributes

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# Ray takes job packages up to 100 MiB in one PUT; the slack covers the multipart framing.
DEFAULT_MAX_BODY_BYTES = 100 * MIB + MIB
DEFAULT_LISTEN_ADDRESS = "127.0.0.1:8265"
RAY_AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"

# ---------------------------------------------------------------------------------------------
# Small value types


_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(value: object) -> float:
    """Seconds from a number or a Go duration string ("1m30s"); negative durations are refused."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30s' or '2m'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text in ("0", ""):
            return 0.0
        try:
            seconds = float(text)
        except ValueError:
            position, seconds = 0, 0.0
            for match in _GO_DURATION_PART.finditer(text):
                if match.start() != position:
                    break
                seconds += float(match.group(1)) * _GO_DURATION_UNITS[match.group(2)]
                position = match.end()
            if position != len(text) or position == 0:
                raise ValueError(
                    f"{value!r} is not a duration (use e.g. '30s', '2m', '1h')"
                ) from None
    else:
        raise ValueError("a duration is a number of seconds or a string like '30s' or '2m'")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def split_host_port(address: str) -> tuple[str, int]:
    """`host:port`, `[::1]:8443` or `:8443` (all interfaces) -> (host, port); ValueError if not."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"{address!r} is not HOST:PORT")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} is out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{address!r}: write an IPv6 host in brackets, e.g. [::1]:8265")
    return host, port


_HEADER_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def _header_name(value: object) -> object:
    if isinstance(value, str) and not _HEADER_TOKEN.match(value):
        raise ValueError(f"{value!r} is not a valid HTTP header name")
    return value


HeaderName = Annotated[str, BeforeValidator(_header_name)]


def _to_tuple(value: object) -> object:
    """Accept one string where a list is expected (`mode: kubernetes`)."""
    return (value,) if isinstance(value, str) else value


# ---------------------------------------------------------------------------------------------
# The configuration model


TLS_VERSIONS: Mapping[str, ssl.TLSVersion] = {
    "VersionTLS10": ssl.TLSVersion.TLSv1,
    "VersionTLS11": ssl.TLSVersion.TLSv1_1,
    "VersionTLS12": ssl.TLSVersion.TLSv1_2,
    "VersionTLS13": ssl.TLSVersion.TLSv1_3,
}


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
    (default RAY_AUTH_TOKEN, which KubeRay's token mode sets); `tokenEnv: null` sends none."""

    url: str
    token_env: str | None = RAY_AUTH_TOKEN_ENV
    token_file: str | None = None
    forward_client_authorization: bool = False
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
    issuer_url: str = Field(alias="issuerURL")
    client_id: str = Field(alias="clientID", min_length=1)
    ca_file: str | None = Field(default=None, alias="caFile")
    username_claim: str = "email"
    username_prefix: str = ""
    groups_claim: str = "groups"
    groups_prefix: str = ""
    signing_algorithms: tuple[str, ...] = ("RS256",)

    @field_validator("issuer_url")
    @classmethod
    def _https(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"{value!r}: the OIDC issuer must be an https:// URL")
        return value

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

    mode: Annotated[tuple[AuthnMode, ...], BeforeValidator(_to_tuple)] = (AuthnMode.EMBEDDED,)
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


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_RATE_UNITS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
}


def parse_rate(value: object) -> float | None:
    """`10/s`, `600/m`, `1000/h` -> requests per second; None or "" -> no limit."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        rate = float(value)
    elif isinstance(value, str):
        match = _RATE.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a rate (write e.g. '10/s', '600/m' or '1000/h')")
        rate = float(match.group(1)) / _RATE_UNITS[match.group(2)]
    else:
        raise ValueError("a rate is written like '10/s', '600/m' or '1000/h'")
    if rate <= 0:
        raise ValueError("a rate limit must be above zero (leave it out for no limit)")
    return rate


Rate = Annotated[float | None, BeforeValidator(parse_rate)]


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
    kubeconfig: str | None = None
    state_dir: str | None = None
    log_verbosity: int = Field(default=0, ge=0)
    # Ray's dashboard UI may log in with a token and keep it in a cookie (proxy/browser.py).
    browser_login: bool = False
    # Ray's other doors; absent: closed.
    client: ClientDoorConfig | None = None
    serve: ServeDoorConfig | None = None

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


# ---------------------------------------------------------------------------------------------
# Error formatting and loading


def _field_path(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.startswith(("function-", "tagged-union")):
            continue  # pydantic's internal validator names, not a field the user wrote
        else:
            text += f".{part}" if text else part
    return text or "(top level)"


_MESSAGE_REWRITES = (
    ("Extra inputs are not permitted", "unknown field"),
    ("Field required", "required"),
    ("Value error, ", ""),
    ("Assertion failed, ", ""),
)


def describe_validation_error(
    err: ValidationError, rename: Callable[[str], str] | None = None
) -> str:
    """One line for all errors in `err`: `field.path: message; other.field: message`."""
    parts: list[str] = []
    for item in err.errors(include_url=False):
        message = item["msg"]
        for old, new in _MESSAGE_REWRITES:
            message = message.replace(old, new)
        field = _field_path(item["loc"])
        parts.append(f"{rename(field) if rename else field}: {message}")
    return "; ".join(parts)


def _read_yaml(path: str | os.PathLike[str]) -> Any:
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or "cannot parse"
        raise ConfigError(f"{path}: {where}not valid YAML: {problem}") from None


def config_from_mapping(data: Any, source: str = "<config>") -> GatewayConfig:
    """Validate an already-parsed raygate config; errors name `source` and the field."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of settings at the top level")
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: {describe_validation_error(err)}") from None


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """raygate's own YAML (`raygate serve --config FILE`)."""
    return config_from_mapping(_read_yaml(path), str(path))


# ---------------------------------------------------------------------------------------------
# kube-rbac-proxy compatibility: its --config-file and its command line


class _KubeRbacProxyAuthorization(AttributesConfig):
    """kube-rbac-proxy's keys (resourceAttributes, rewrites, static); raygate also reads
    `profile` and `rayCluster` here, so the drop-in can use the ray-k8s profile."""

    static: tuple[StaticAuthorization, ...] = ()


class _KubeRbacProxyFile(ConfigModel):
    authorization: _KubeRbacProxyAuthorization | None = None


def load_kube_rbac_proxy_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """kube-rbac-proxy's `--config-file` -> the `authorization` settings it holds (camelCase)."""
    data = _read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping with an 'authorization' key")
    try:
        parsed = _KubeRbacProxyFile.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{path}: {describe_validation_error(err)}") from None
    if parsed.authorization is None:
        return {}
    return parsed.authorization.model_dump(by_alias=True, exclude_defaults=True)


_FlagKind = Literal["string", "bool", "int", "uint", "float", "duration", "list", "array"]


@dataclass(frozen=True)
class _Flag:
    kind: _FlagKind
    # None: accepted for compatibility and without effect in raygate (a reason is logged).
    no_effect: str | None = None


_NO_LOG_FLAG = "kube-rbac-proxy removed this klog flag; it has no effect"
_HTTP2 = "raygate serves HTTP/1.1 (and WebSocket); HTTP/2 tuning has no effect"

# Every flag kube-rbac-proxy (v0.18-v0.21) accepts, with its pflag type.
_KUBE_RBAC_PROXY_FLAGS: Mapping[str, _Flag] = {
    "insecure-listen-address": _Flag("string"),
    "secure-listen-address": _Flag("string"),
    "upstream": _Flag("string"),
    "upstream-force-h2c": _Flag("bool"),
    "upstream-ca-file": _Flag("string"),
    "config-file": _Flag("string"),
    "allow-paths": _Flag("list"),
    "ignore-paths": _Flag("list"),
    "proxy-endpoints-port": _Flag("int"),
    "tls-cert-file": _Flag("string"),
    "tls-private-key-file": _Flag("string"),
    "tls-min-version": _Flag("string"),
    "tls-cipher-suites": _Flag("list"),
    "tls-reload-interval": _Flag("duration", "raygate reloads certificates when the files change"),
    "upstream-client-cert-file": _Flag("string"),
    "upstream-client-key-file": _Flag("string"),
    "client-ca-file": _Flag("string"),
    "auth-header-fields-enabled": _Flag("bool"),
    "auth-header-user-field-name": _Flag("string"),
    "auth-header-groups-field-name": _Flag("string"),
    "auth-header-groups-field-separator": _Flag("string"),
    "auth-token-audiences": _Flag("list"),
    "oidc-issuer": _Flag("string"),
    "oidc-clientID": _Flag("string"),
    "oidc-groups-claim": _Flag("string"),
    "oidc-username-claim": _Flag("string"),
    "oidc-username-prefix": _Flag("string"),
    "oidc-groups-prefix": _Flag("string"),
    "oidc-sign-alg": _Flag("array"),
    "oidc-ca-file": _Flag("string"),
    "kubeconfig": _Flag("string"),
    "kube-api-qps": _Flag("float", "raygate's caches and single flight bound API server calls"),
    "kube-api-burst": _Flag("int", "raygate's caches and single flight bound API server calls"),
    "http2-disable": _Flag("bool", _HTTP2),
    "http2-max-concurrent-streams": _Flag("uint", _HTTP2),
    "http2-max-size": _Flag("uint", _HTTP2),
    "logtostderr": _Flag("bool", _NO_LOG_FLAG),
    "add-dir-header": _Flag("bool", _NO_LOG_FLAG),
    "alsologtostderr": _Flag("bool", _NO_LOG_FLAG),
    "log-backtrace-at": _Flag("string", _NO_LOG_FLAG),
    "log-dir": _Flag("string", _NO_LOG_FLAG),
    "log-file": _Flag("string", _NO_LOG_FLAG),
    "log-file-max-size": _Flag("uint", _NO_LOG_FLAG),
    "one-output": _Flag("bool", _NO_LOG_FLAG),
    "skip-headers": _Flag("bool", _NO_LOG_FLAG),
    "skip-log-headers": _Flag("bool", _NO_LOG_FLAG),
    "stderrthreshold": _Flag("string", _NO_LOG_FLAG),
    "v": _Flag("int"),
    "vmodule": _Flag("string", "raygate logs by level only (-v)"),
}

# kube-rbac-proxy's own defaults where they differ from raygate's config defaults.
_KUBE_RBAC_PROXY_DEFAULT_GROUPS_HEADER = "x-remote-groups"
_KUBE_RBAC_PROXY_DEFAULT_USER_HEADER = "x-remote-user"

_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def _flag_value(name: str, flag: _Flag, text: str) -> Any:
    """Parse one flag value as pflag would; errors name the flag."""
    try:
        match flag.kind:
            case "bool":
                if text in _GO_TRUE:
                    return True
                if text in _GO_FALSE:
                    return False
                raise ValueError("expected true or false")
            case "int":
                return int(text, 0)
            case "uint":
                value = int(text, 0)
                if value < 0:
                    raise ValueError("expected a non-negative integer")
                return value
            case "float":
                return float(text)
            case "duration":
                return parse_duration(text)
            case "list":
                return [item.strip() for item in text.split(",") if item.strip()]
            case _:
                return text
    except ValueError as err:
        expected = {"int": "not an integer", "float": "not a number"}
        reason = expected.get(flag.kind, str(err))
        raise ConfigError(f"invalid value {text!r} for flag --{name}: {reason}") from None


def _parse_flags(argv: Sequence[str]) -> dict[str, Any]:
    """pflag-style parsing into {flag name: value}; repeated list flags accumulate."""
    values: dict[str, Any] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            if i < len(args):
                raise ConfigError(
                    f"unexpected argument {args[i]!r}: kube-rbac-proxy takes flags only"
                )
            break
        if not arg.startswith("-") or arg == "-":
            raise ConfigError(f"unexpected argument {arg!r}: kube-rbac-proxy takes flags only")
        # `--name`, and Go flag style `-name` (e.g. `-v=2`) too.
        body = arg[2:] if arg.startswith("--") else arg[1:]
        name, has_value, inline = body.partition("=")
        flag = _KUBE_RBAC_PROXY_FLAGS.get(name)
        if flag is None:
            raise ConfigError(f"unknown flag: {arg.partition('=')[0]}")
        if has_value:
            text = inline
        elif flag.kind == "bool":
            text = "true"  # pflag: a bare bool flag is true; `--flag false` is not a value
        elif i < len(args):
            text = args[i]
            i += 1
        else:
            raise ConfigError(f"flag needs an argument: --{name}")
        value = _flag_value(name, flag, text)
        if flag.kind == "list" and name in values:
            values[name] = values[name] + value
        elif flag.kind == "array":
            values[name] = [*values.get(name, []), value]
        else:
            values[name] = value
    return values


# Which flag sets which config field, so a validation error can name the flag.
_FIELD_FLAGS: Sequence[tuple[str, str]] = (
    ("listen.tls.certFile", "--tls-cert-file/--tls-private-key-file"),
    ("listen.tls.keyFile", "--tls-private-key-file"),
    ("listen.tls.minVersion", "--tls-min-version"),
    ("listen.tls.clientCAFile", "--client-ca-file"),
    ("listen.tls", "--tls-cert-file/--tls-private-key-file"),
    ("listen.address", "--secure-listen-address/--insecure-listen-address"),
    ("upstream.url", "--upstream"),
    ("upstream", "--upstream-client-cert-file/--upstream-client-key-file"),
    ("authentication.oidc.issuerURL", "--oidc-issuer"),
    ("authentication.oidc.clientID", "--oidc-clientID"),
    ("authentication.oidc.signingAlgorithms", "--oidc-sign-alg"),
    ("authentication.oidc", "--oidc-*"),
    ("authHeader.userFieldName", "--auth-header-user-field-name"),
    ("authHeader.groupsFieldName", "--auth-header-groups-field-name"),
    ("authorization.allowPaths", "--allow-paths"),
    ("authorization.ignorePaths", "--ignore-paths"),
    ("authorization", "--allow-paths/--ignore-paths or --config-file"),
    ("proxyEndpoints.port", "--proxy-endpoints-port"),
    ("logVerbosity", "-v"),
)


def _flag_for_field(field: str) -> str:
    for prefix, flag in _FIELD_FLAGS:
        if field == prefix or field.startswith(prefix + ".") or field.startswith(prefix + "["):
            return f"{flag} ({field})"
    return field


def parse_kube_rbac_proxy_args(argv: Sequence[str]) -> GatewayConfig:
    """kube-rbac-proxy's command line (and the `--config-file` it names) as a GatewayConfig.

    Authentication is TokenReview (or OIDC with `--oidc-issuer`, as in kube-rbac-proxy) plus
    client certificates with `--client-ca-file`; authorization is SubjectAccessReview with the
    kube-rbac-proxy profile; Ray's token (RAY_AUTH_TOKEN, when set) is sent upstream.
    Flags that have no effect in raygate are accepted with a log line; unknown flags are errors.
    """
    flags = _parse_flags(argv)
    for name in flags:
        reason = _KUBE_RBAC_PROXY_FLAGS[name].no_effect
        if reason is not None:
            log.info("--%s has no effect: %s", name, reason)

    secure = flags.get("secure-listen-address")
    insecure = flags.get("insecure-listen-address")
    if secure and insecure:
        raise ConfigError(
            "raygate listens on one address: pass --secure-listen-address or "
            "--insecure-listen-address, not both"
        )
    if not secure and not insecure:
        raise ConfigError(
            "no listen address provided: pass --secure-listen-address or --insecure-listen-address"
        )
    if not flags.get("upstream"):
        raise ConfigError(
            "--upstream is required: the URL of Ray's dashboard, e.g. http://127.0.0.1:8443/"
        )

    tls: dict[str, Any] = {}
    for flag, key in (
        ("tls-cert-file", "certFile"),
        ("tls-private-key-file", "keyFile"),
        ("tls-min-version", "minVersion"),
        ("tls-cipher-suites", "cipherSuites"),
        ("client-ca-file", "clientCAFile"),
    ):
        if flags.get(flag):
            tls[key] = flags[flag]
    if insecure and tls.get("clientCAFile"):
        raise ConfigError("--client-ca-file needs TLS: use --secure-listen-address")
    listen: dict[str, Any] = {"address": secure or insecure}
    if secure:
        listen["tls"] = tls

    upstream: dict[str, Any] = {"url": flags["upstream"]}
    for flag, key in (
        ("upstream-ca-file", "caFile"),
        ("upstream-client-cert-file", "clientCertFile"),
        ("upstream-client-key-file", "clientKeyFile"),
        ("upstream-force-h2c", "forceH2C"),
    ):
        if flags.get(flag):
            upstream[key] = flags[flag]

    authentication: dict[str, Any] = {
        "mode": ["kubernetes"],
        "audiences": flags.get("auth-token-audiences", []),
    }
    if flags.get("oidc-issuer"):
        authentication["mode"] = ["oidc"]
        oidc: dict[str, Any] = {
            "issuerURL": flags["oidc-issuer"],
            "clientID": flags.get("oidc-clientID", ""),
        }
        for flag, key in (
            ("oidc-ca-file", "caFile"),
            ("oidc-username-claim", "usernameClaim"),
            ("oidc-username-prefix", "usernamePrefix"),
            ("oidc-groups-claim", "groupsClaim"),
            ("oidc-groups-prefix", "groupsPrefix"),
            ("oidc-sign-alg", "signingAlgorithms"),
        ):
            if flag in flags:
                oidc[key] = flags[flag]
        authentication["oidc"] = oidc

    authorization: dict[str, Any] = {"mode": "kubernetes", "profile": "kube-rbac-proxy"}
    if flags.get("config-file"):
        authorization.update(load_kube_rbac_proxy_file(flags["config-file"]))
    if flags.get("allow-paths"):
        authorization["allowPaths"] = flags["allow-paths"]
    if flags.get("ignore-paths"):
        authorization["ignorePaths"] = flags["ignore-paths"]

    data: dict[str, Any] = {
        "listen": listen,
        "upstream": upstream,
        "authentication": authentication,
        "authorization": authorization,
        "authHeader": {
            "fieldsEnabled": flags.get("auth-header-fields-enabled", False),
            "userFieldName": flags.get(
                "auth-header-user-field-name", _KUBE_RBAC_PROXY_DEFAULT_USER_HEADER
            ),
            "groupsFieldName": flags.get(
                "auth-header-groups-field-name", _KUBE_RBAC_PROXY_DEFAULT_GROUPS_HEADER
            ),
            "groupSeparator": flags.get("auth-header-groups-field-separator", "|"),
        },
        "logVerbosity": flags.get("v", 0),
    }
    if flags.get("proxy-endpoints-port"):
        data["proxyEndpoints"] = {"port": flags["proxy-endpoints-port"]}
    if flags.get("kubeconfig"):
        data["kubeconfig"] = flags["kubeconfig"]
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, _flag_for_field)) from None


# raygate's own flags for the other doors, accepted next to `--config FILE` and next to
# kube-rbac-proxy's flags: (flag, section, key).
_DOOR_FLAGS: Mapping[str, tuple[str, str]] = {
    "client-listen": ("client", "listen"),
    "client-upstream": ("client", "upstream"),
    "client-recheck-interval": ("client", "recheckInterval"),
    "serve-listen": ("serve", "listen"),
    "serve-upstream": ("serve", "upstream"),
    "serve-rate-limit": ("serve", "rateLimit"),
}


def _door_flags(argv: Sequence[str]) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Split the door flags off `argv`: (the other arguments, {section: {key: value}})."""
    rest: list[str] = []
    doors: dict[str, dict[str, str]] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        name, has_value, value = arg.lstrip("-").partition("=")
        if not arg.startswith("--") or name not in _DOOR_FLAGS:
            rest.append(arg)
            continue
        if not has_value:
            if i >= len(args):
                raise ConfigError(f"flag needs an argument: --{name}")
            value = args[i]
            i += 1
        section, key = _DOOR_FLAGS[name]
        doors.setdefault(section, {})[key] = value
    for section, values in doors.items():
        for required in ("listen", "upstream"):
            if required not in values:
                raise ConfigError(
                    f"--{section}-{required} is needed with --{section}-listen/--{section}-upstream"
                )
    return rest, doors


def config_from_serve_args(argv: Sequence[str]) -> GatewayConfig:
    """`raygate serve` arguments: `--config FILE` (raygate's YAML, alone) or kube-rbac-proxy's
    flags; either with raygate's door flags (--client-listen/--client-upstream,
    --serve-listen/--serve-upstream, ...)."""
    args, doors = _door_flags(argv)
    config = _config_from_serve_args(args)
    if not doors:
        return config
    data = dump_config(config)
    for section, values in doors.items():
        data[section] = {**(data.get(section) or {}), **values}
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as err:
        flags = {f"{section}.{key}": f"--{flag}" for flag, (section, key) in _DOOR_FLAGS.items()}
        raise ConfigError(
            describe_validation_error(err, lambda field: flags.get(field, field))
        ) from None


def _config_from_serve_args(argv: Sequence[str]) -> GatewayConfig:
    args = list(argv)
    if args and (args[0] == "--config" or args[0].startswith("--config=")):
        if args[0] == "--config":
            if len(args) < 2:
                raise ConfigError("flag needs an argument: --config")
            path, rest = args[1], args[2:]
        else:
            path, rest = args[0].partition("=")[2], args[1:]
        if rest:
            raise ConfigError(
                f"--config FILE takes no other flags (got {rest[0]!r}); put settings in the file"
            )
        return load_config(path)
    if any(a == "--config" or a.startswith("--config=") for a in args):
        raise ConfigError("--config FILE takes no other flags; put settings in the file")
    return parse_kube_rbac_proxy_args(args)


def dump_config(config: GatewayConfig) -> dict[str, Any]:
    """The config as raygate YAML would spell it (camelCase, defaults left out)."""
    return config.model_dump(mode="json", by_alias=True, exclude_defaults=True)
