"""raygate's YAML config: defaults, validation errors that name the file and field."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raygate.config import (
    DEFAULT_MAX_BODY_BYTES,
    AuthnMode,
    AuthzMode,
    GatewayConfig,
    config_from_mapping,
    config_from_serve_args,
    dump_config,
    load_config,
    split_host_port,
)
from raygate.errors import ConfigError
from raygate.identity import Attributes, Identity

MINIMAL = {"upstream": {"url": "http://127.0.0.1:8443/"}}
U = "upstream: {url: http://x/}\n"  # the one required setting, as YAML


def write(tmp_path: Path, text: str, name: str = "gateway.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_minimal_config_has_safe_defaults() -> None:
    config = config_from_mapping(MINIMAL)
    assert config.listen.address == "127.0.0.1:8265"
    assert config.listen.tls is None
    assert config.authentication.mode == (AuthnMode.EMBEDDED,)
    assert config.authorization.mode is AuthzMode.EMBEDDED
    assert (config.cache.authentication_ttl, config.cache.allow_ttl, config.cache.deny_ttl) == (
        120.0,
        300.0,
        30.0,
    )
    assert config.limits.max_body_bytes == DEFAULT_MAX_BODY_BYTES > 100 * 1024 * 1024
    assert config.auth_header.user_field_name == "X-Remote-User"
    assert config.auth_header.groups_field_name == "X-Remote-Group"
    assert config.auth_header.group_separator == "|"
    assert config.upstream.token_env == "RAY_AUTH_TOKEN"
    assert config.proxy_endpoints_address is None


def test_full_config_file_loads(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
listen:
  address: "[::]:8443"
  tls:
    certFile: /tls/tls.crt
    keyFile: /tls/tls.key
    minVersion: VersionTLS13
    clientCAFile: /tls/ca.crt
upstream:
  url: http://127.0.0.1:8443/
  tokenFile: /var/run/ray/token
authentication:
  mode: [kubernetes, oidc]
  audiences: [raygate]
  oidc:
    issuerURL: https://accounts.example.com
    clientID: raygate
    usernamePrefix: "oidc:"
authorization:
  mode: kubernetes
  profile: ray-k8s
  rayCluster: {name: c1, namespace: ml}
  ignorePaths: [/healthz]
  static:
  - user: {name: system:serviceaccount:monitoring:prometheus}
    verb: get
    resourceRequest: false
    path: /metrics
cache: {authenticationTTL: 1m, allowTTL: 10m, denyTTL: 5s, maxEntries: 100}
proxyEndpoints: {port: 8266}
limits: {maxBodyBytes: 1048576, upstreamTimeout: 1m30s, idleTimeout: 60, backendTimeout: 500ms}
authHeader: {fieldsEnabled: true, groupsFieldName: X-Remote-Groups, groupSeparator: ","}
kubeconfig: /home/me/.kube/config
stateDir: /var/lib/raygate
""",
    )
    config = load_config(path)
    assert (config.listen.host, config.listen.port) == ("::", 8443)
    assert config.listen.tls is not None
    assert config.listen.tls.ssl_min_version is ssl.TLSVersion.TLSv1_3
    assert config.authentication.mode == (AuthnMode.KUBERNETES, AuthnMode.OIDC)
    assert config.authentication.oidc is not None
    assert config.authentication.oidc.username_claim == "email"
    assert config.cache.allow_ttl == 600.0
    assert config.limits.upstream_timeout == 90.0
    assert config.limits.backend_timeout == 0.5
    assert config.proxy_endpoints_address == ("::", 8266)
    assert config.uses_kubernetes
    assert config.authorization.path_policy.ignore


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            U + "listen: {adress: 1.2.3.4:80}\n",
            "listen.adress: unknown field",
        ),
        ("listen: {address: 0.0.0.0:8265}\n", "upstream: required"),
        ("upstream: {url: 'ftp://x'}\n", "upstream.url: 'ftp://x' is not an http"),
        ("upstream: {url: 'http://x:99999/'}\n", "upstream.url:"),
        (
            U + "listen: {address: '8265'}\n",
            "listen.address: '8265' is not HOST:PORT",
        ),
        (
            U + "listen: {address: ':8443', tls: {certFile: /c}}\n",
            "listen.tls: certFile and keyFile go together",
        ),
        (
            U + "listen: {address: ':1', tls: {minVersion: TLS1.2}}\n",
            "listen.tls.minVersion:",
        ),
        (
            U + "authorization:\n  resourceAttributes: {nmespace: default}\n",
            "authorization.resourceAttributes.nmespace: unknown field",
        ),
        (
            U + "authorization: {profile: ray-k8s}\n",
            "authorization: profile ray-k8s needs rayCluster",
        ),
        (
            U + "authorization: {static: [{verb: get, resourceRequest: true, path: /x}]}\n",
            "authorization.static[0]: a resource entry (resourceRequest: true) takes no path",
        ),
        (
            U + "authorization: {static: [{verb: get}]}\n",
            "authorization.static[0]: a non-resource entry (resourceRequest: false) needs a path",
        ),
        (
            U + "authorization: {allowPaths: ['/a['] }\n",
            "authorization.allowPaths: bad path pattern '/a['",
        ),
        (
            U + "authorization: {allowPaths: [/a], ignorePaths: [/b]}\n",
            "allowPaths and ignorePaths cannot be used together",
        ),
        (U + "authentication: {mode: oidc}\n", "mode oidc needs oidc"),
        (U + "authentication: {mode: ldap}\n", "authentication.mode[0]:"),
        (
            U + "authentication: {mode: oidc, oidc: {issuerURL: 'http://i', clientID: c}}\n",
            "authentication.oidc.issuerURL: 'http://i': the OIDC issuer must be an https:// URL",
        ),
        (
            U + "cache: {denyTTL: soon}\n",
            'cache.denyTTL: invalid duration "soon": use numbers with units',
        ),
        (
            U + "cache: {denyTTL: -1}\n",
            "cache.denyTTL: a duration cannot be negative",
        ),
        (
            U + "authHeader: {userFieldName: 'X User'}\n",
            "authHeader.userFieldName:",
        ),
        (U + "proxyEndpoints: {port: 70000}\n", "proxyEndpoints.port:"),
        ("- a\n- b\n", "expected a mapping"),
        ("upstream: {url: [\n", "line 2: not valid YAML"),
    ],
)
def test_errors_name_the_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text_of_error = str(caught.value)
    assert text_of_error.startswith(f"{path}: ")
    assert message in text_of_error
    assert "\n" not in text_of_error


def test_several_errors_are_reported_on_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "upstream: {url: 'x'}\nlimits: {maxBodyBytes: -1}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "upstream.url:" in str(caught.value)
    assert "limits.maxBodyBytes:" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [
        ("0.0.0.0:8265", "0.0.0.0", 8265),
        (":8443", "", 8443),
        ("[::1]:80", "::1", 80),
        ("localhost:0", "localhost", 0),
    ],
)
def test_listen_addresses(address: str, host: str, port: int) -> None:
    assert split_host_port(address) == (host, port)


@pytest.mark.parametrize("address", ["8265", "::1:80", "host:port", "h:65536"])
def test_bad_listen_addresses(address: str) -> None:
    with pytest.raises(ValueError):
        split_host_port(address)


def test_upstream_token_from_file_then_env(tmp_path: Path) -> None:
    token_file = write(tmp_path, "file-token\n", "token")
    from_file = config_from_mapping(
        {"upstream": {"url": "http://x/", "tokenFile": str(token_file)}}
    )
    assert from_file.upstream.read_token({"RAY_AUTH_TOKEN": "env-token"}) == "file-token"
    from_env = config_from_mapping(MINIMAL)
    assert from_env.upstream.read_token({"RAY_AUTH_TOKEN": "env-token"}) == "env-token"
    assert from_env.upstream.read_token({}) is None
    none = config_from_mapping({"upstream": {"url": "http://x/", "tokenEnv": None}})
    assert none.upstream.read_token({"RAY_AUTH_TOKEN": "env-token"}) is None


def test_unreadable_token_file_names_the_field(tmp_path: Path) -> None:
    config = config_from_mapping(
        {"upstream": {"url": "http://x/", "tokenFile": str(tmp_path / "missing")}}
    )
    with pytest.raises(ConfigError, match="upstream.tokenFile"):
        config.upstream.read_token({})


ALICE = Identity(user="alice", groups=("devs",))


def _non_resource(user: Identity, verb: str, path: str) -> Attributes:
    return Attributes(identity=user, verb=verb, resource_request=False, path=path)


def _resource(user: Identity, verb: str, **fields: str) -> Attributes:
    return Attributes(identity=user, verb=verb, resource_request=True, **fields)


STATIC = config_from_mapping(
    {
        **MINIMAL,
        "authorization": {
            "static": [
                {
                    "user": {"name": "alice", "groups": ["ignored"]},
                    "verb": "get",
                    "path": "/metrics",
                },
                {"resourceRequest": True, "resource": "namespace", "subresource": "metrics"},
            ]
        },
    }
).authorization


@pytest.mark.parametrize(
    ("attributes", "allowed"),
    [
        (_non_resource(ALICE, "get", "/metrics"), True),
        (_non_resource(ALICE, "create", "/metrics"), False),
        (_non_resource(ALICE, "get", "/metrics/x"), False),
        (_non_resource(Identity(user="bob", groups=("ignored",)), "get", "/metrics"), False),
        # empty fields match anything, for any user
        (
            _resource(
                Identity(user="bob"),
                "delete",
                namespace="ns1",
                resource="namespace",
                subresource="metrics",
            ),
            True,
        ),
        (_resource(ALICE, "get", resource="namespace"), False),
        # resourceRequest must be the same kind of request
        (_non_resource(ALICE, "get", "/anything"), False),
    ],
)
def test_static_entries_match_like_kube_rbac_proxy(attributes: Attributes, allowed: bool) -> None:
    assert STATIC.statically_allowed(attributes) is allowed


def test_dump_round_trips() -> None:
    config = config_from_mapping(
        {**MINIMAL, "authorization": {"resourceAttributes": {"name": "c"}, "mode": "kubernetes"}}
    )
    assert GatewayConfig.model_validate(dump_config(config)) == config


def test_serve_args_with_own_config(tmp_path: Path) -> None:
    path = write(tmp_path, "upstream: {url: http://127.0.0.1:9/}\n")
    assert config_from_serve_args(["--config", str(path)]).upstream.url == "http://127.0.0.1:9/"
    assert config_from_serve_args([f"--config={path}"]).upstream.url == "http://127.0.0.1:9/"
    with pytest.raises(ConfigError, match="takes no other flags"):
        config_from_serve_args(["--config", str(path), "--upstream=http://x/"])
    with pytest.raises(ConfigError, match="takes no other flags"):
        config_from_serve_args(["--upstream=http://x/", "--config", str(path)])


_KEYS = [
    "listen",
    "address",
    "tls",
    "certFile",
    "keyFile",
    "minVersion",
    "clientCAFile",
    "upstream",
    "url",
    "tokenEnv",
    "tokenFile",
    "authentication",
    "mode",
    "audiences",
    "oidc",
    "issuerURL",
    "clientID",
    "authorization",
    "profile",
    "resourceAttributes",
    "namespace",
    "name",
    "rewrites",
    "byQueryParameter",
    "byHttpHeader",
    "rayCluster",
    "static",
    "user",
    "resourceRequest",
    "path",
    "allowPaths",
    "ignorePaths",
    "cache",
    "allowTTL",
    "limits",
    "maxBodyBytes",
    "authHeader",
    "userFieldName",
    "proxyEndpoints",
    "port",
    "bogus",
]
_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-2, 70000)
    | st.text(max_size=6)
    | st.sampled_from(["http://x/", ":8265", "ray-k8s", "kubernetes", "oidc", "2m", "/a*"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(_KEYS), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=5))
def test_any_config_document_loads_or_is_one_config_error(data: dict) -> None:
    try:
        config_from_mapping(data, "fuzz.yaml")
    except ConfigError as err:
        assert str(err).startswith("fuzz.yaml: ")
        assert "\n" not in str(err)
