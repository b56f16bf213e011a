"""kube-rbac-proxy's command line and --config-file as a drop-in for `raygate serve`."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raygate.authz.attributes import Profile, request_attributes
from raygate.config import (
    AuthnMode,
    AuthzMode,
    config_from_serve_args,
    parse_kube_rbac_proxy_args,
)
from raygate.errors import ConfigError
from raygate.identity import service_account_identity

# Verbatim from KubeRay's ray-cluster.auth.kube-rbac-proxy.yaml (the guide's sample).
GUIDE_CONFIG_FILE = """\
authorization:
  resourceAttributes:
    namespace: default
    apiVersion: v1
    apiGroup: ray.io
    resource: rayclusters
    name: ray-cluster-with-auth
"""
GUIDE_MOUNT = "/etc/kube-rbac-proxy/config-file.yaml"
GUIDE_ARGS = [
    "--insecure-listen-address=0.0.0.0:8265",
    "--upstream=http://127.0.0.1:8443/",
    f"--config-file={GUIDE_MOUNT}",
    "--logtostderr=true",
]


@pytest.fixture
def guide_args(tmp_path: Path) -> list[str]:
    """The sample's args with the ConfigMap mounted under tmp_path instead of /etc."""
    config_file = tmp_path / "config-file.yaml"
    config_file.write_text(GUIDE_CONFIG_FILE)
    return [arg.replace(GUIDE_MOUNT, str(config_file)) for arg in GUIDE_ARGS]


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "krp.yaml"
    path.write_text(text)
    return str(path)


def test_guide_sidecar_args_work_unchanged(guide_args: list[str]) -> None:
    config = parse_kube_rbac_proxy_args(guide_args)
    assert config.listen.address == "0.0.0.0:8265"
    assert config.listen.tls is None
    assert config.upstream.url == "http://127.0.0.1:8443/"
    assert config.authentication.mode == (AuthnMode.KUBERNETES,)
    assert config.authorization.mode is AuthzMode.KUBERNETES
    assert config.authorization.profile is Profile.KUBE_RBAC_PROXY
    resource = config.authorization.resource_attributes
    assert resource is not None
    assert (resource.namespace, resource.api_group, resource.resource, resource.name) == (
        "default",
        "ray.io",
        "rayclusters",
        "ray-cluster-with-auth",
    )
    # Ray's token (KubeRay token mode) goes upstream when the pod has one.
    assert config.upstream.read_token({"RAY_AUTH_TOKEN": "t"}) == "t"


def test_guide_role_request_maps_to_the_guide_attributes(guide_args: list[str]) -> None:
    config = parse_kube_rbac_proxy_args(guide_args)
    user = service_account_identity("default", "ray-user")
    [attributes] = request_attributes(user, "POST", "/api/jobs/", {}, {}, config.authorization)
    assert attributes.describe() == (
        'User "system:serviceaccount:default:ray-user" cannot create resource "rayclusters" '
        'in API group "ray.io" in the namespace "default"'
    )


def test_serve_passes_kube_rbac_proxy_flags_through(guide_args: list[str]) -> None:
    assert config_from_serve_args(guide_args) == parse_kube_rbac_proxy_args(guide_args)


@pytest.mark.parametrize(
    "style",
    [
        lambda name, value: [f"--{name}={value}"],
        lambda name, value: [f"--{name}", value],
        lambda name, value: [f"-{name}={value}"],
        lambda name, value: [f"-{name}", value],
    ],
    ids=["--flag=value", "--flag value", "-flag=value", "-flag value"],
)
def test_flag_spellings(style) -> None:
    argv = [
        *style("insecure-listen-address", "127.0.0.1:9000"),
        *style("upstream", "http://127.0.0.1:8443/"),
        *style("v", "4"),
    ]
    config = parse_kube_rbac_proxy_args(argv)
    assert config.listen.address == "127.0.0.1:9000"
    assert config.log_verbosity == 4


BASE = ["--insecure-listen-address=127.0.0.1:8265", "--upstream=http://127.0.0.1:8443/"]
SECURE_BASE = ["--secure-listen-address=0.0.0.0:8443", "--upstream=http://127.0.0.1:8443/"]


@pytest.mark.parametrize(
    ("argv", "field", "expected"),
    [
        (BASE, "auth_header.fields_enabled", False),
        (BASE, "auth_header.user_field_name", "x-remote-user"),
        (BASE, "auth_header.groups_field_name", "x-remote-groups"),
        (BASE, "auth_header.group_separator", "|"),
        ([*BASE, "--auth-header-fields-enabled"], "auth_header.fields_enabled", True),
        ([*BASE, "--auth-header-fields-enabled=false"], "auth_header.fields_enabled", False),
        ([*BASE, "--auth-header-fields-enabled=1"], "auth_header.fields_enabled", True),
        ([*BASE, "--auth-header-user-field-name=X-User"], "auth_header.user_field_name", "X-User"),
        ([*BASE, "--auth-header-groups-field-name", "X-G"], "auth_header.groups_field_name", "X-G"),
        ([*BASE, "--auth-header-groups-field-separator=,"], "auth_header.group_separator", ","),
        ([*BASE, "--auth-token-audiences=a,b"], "authentication.audiences", ("a", "b")),
        (
            [*BASE, "--auth-token-audiences=a", "--auth-token-audiences=b,c"],
            "authentication.audiences",
            ("a", "b", "c"),
        ),
        (
            [*BASE, "--allow-paths=/api/*,/healthz"],
            "authorization.allow_paths",
            ("/api/*", "/healthz"),
        ),
        ([*BASE, "--ignore-paths=/metrics"], "authorization.ignore_paths", ("/metrics",)),
        ([*BASE, "--kubeconfig=/k/config"], "kubeconfig", "/k/config"),
        ([*BASE, "--proxy-endpoints-port=8266"], "proxy_endpoints.port", 8266),
        ([*BASE, "--upstream-ca-file=/ca.crt"], "upstream.ca_file", "/ca.crt"),
        ([*BASE, "--upstream-force-h2c"], "upstream.force_h2c", True),
        ([*BASE, "--v=3"], "log_verbosity", 3),
        ([*BASE, "-v", "2"], "log_verbosity", 2),
        (SECURE_BASE, "listen.tls.self_signed", True),
        (SECURE_BASE, "listen.tls.min_version", "VersionTLS12"),
        (
            [*SECURE_BASE, "--tls-cert-file=/c.crt", "--tls-private-key-file=/c.key"],
            "listen.tls.cert_file",
            "/c.crt",
        ),
        (
            [*SECURE_BASE, "--tls-min-version=VersionTLS13"],
            "listen.tls.min_version",
            "VersionTLS13",
        ),
        (
            [*SECURE_BASE, "--tls-cipher-suites=TLS_AES_128_GCM_SHA256,TLS_AES_256_GCM_SHA384"],
            "listen.tls.cipher_suites",
            ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"),
        ),
        ([*SECURE_BASE, "--client-ca-file=/ca.crt"], "listen.tls.client_ca_file", "/ca.crt"),
    ],
)
def test_flags_set_config(argv: list[str], field: str, expected: object) -> None:
    value: object = parse_kube_rbac_proxy_args(argv)
    for part in field.split("."):
        value = getattr(value, part)
    assert value == expected


def test_oidc_flags_replace_token_review() -> None:
    config = parse_kube_rbac_proxy_args(
        [
            *BASE,
            "--oidc-issuer=https://issuer.example.com",
            "--oidc-clientID=raygate",
            "--oidc-username-claim=sub",
            "--oidc-groups-claim=roles",
            "--oidc-username-prefix=oidc:",
            "--oidc-groups-prefix=oidc:",
            "--oidc-ca-file=/oidc-ca.crt",
            "--oidc-sign-alg=RS256",
            "--oidc-sign-alg=ES256",
        ]
    )
    assert config.authentication.mode == (AuthnMode.OIDC,)
    oidc = config.authentication.oidc
    assert oidc is not None
    assert (oidc.issuer_url, oidc.client_id, oidc.username_claim, oidc.groups_claim) == (
        "https://issuer.example.com",
        "raygate",
        "sub",
        "roles",
    )
    assert (oidc.username_prefix, oidc.groups_prefix, oidc.ca_file) == (
        "oidc:",
        "oidc:",
        "/oidc-ca.crt",
    )
    assert oidc.signing_algorithms == ("RS256", "ES256")


@pytest.mark.parametrize(
    "flag",
    [
        "--logtostderr=false",
        "--alsologtostderr",
        "--log-dir=/tmp",
        "--stderrthreshold=ERROR",
        "--vmodule=proxy=4",
        "--tls-reload-interval=2m",
        "--kube-api-qps=50",
        "--kube-api-burst=100",
        "--http2-disable",
        "--http2-max-size=262144",
        "--http2-max-concurrent-streams=100",
        "--upstream-client-cert-file=/c",
    ],
)
def test_flags_without_effect_are_accepted(flag: str) -> None:
    extra = ["--upstream-client-key-file=/k"] if "client-cert" in flag else []
    parse_kube_rbac_proxy_args([*BASE, flag, *extra])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*BASE, "--secure-port=8443"], "unknown flag: --secure-port"),
        ([*BASE, "--foo"], "unknown flag: --foo"),
        ([*BASE, "-x=1"], "unknown flag: -x"),
        ([*BASE, "--Upstream=http://x/"], "unknown flag: --Upstream"),
        ([*BASE, "--upstream-force-h2"], "unknown flag: --upstream-force-h2"),
        ([*BASE, "serve"], "unexpected argument 'serve'"),
        ([*BASE, "--auth-header-fields-enabled", "false"], "unexpected argument 'false'"),
        ([*BASE, "--", "x"], "unexpected argument 'x'"),
        ([*BASE, "--kubeconfig"], "flag needs an argument: --kubeconfig"),
        ([*BASE, "--proxy-endpoints-port=http"], "--proxy-endpoints-port: not an integer"),
        ([*BASE, "--auth-header-fields-enabled=yes"], "--auth-header-fields-enabled"),
        ([*BASE, "--tls-reload-interval=often"], "--tls-reload-interval"),
        (["--upstream=http://x/"], "no listen address provided"),
        ([*SECURE_BASE, "--insecure-listen-address=:1"], "not both"),
        (["--insecure-listen-address=:8265"], "--upstream is required"),
        ([*BASE[:1], "--upstream=127.0.0.1:8443"], "--upstream (upstream.url)"),
        (["--insecure-listen-address=8265", BASE[1]], "--insecure-listen-address (listen.address)"),
        ([*BASE, "--allow-paths=/a", "--ignore-paths=/b"], "cannot be used together"),
        ([*BASE, "--allow-paths=/a["], "--allow-paths (authorization.allowPaths)"),
        ([*BASE, "--client-ca-file=/ca"], "--client-ca-file needs TLS"),
        ([*SECURE_BASE, "--tls-cert-file=/c"], "--tls-cert-file/--tls-private-key-file"),
        ([*SECURE_BASE, "--tls-min-version=1.2"], "--tls-min-version"),
        ([*BASE, "--oidc-issuer=http://plain"], "--oidc-issuer"),
        ([*BASE, "--oidc-issuer=https://i"], "--oidc-clientID"),
        ([*BASE, "--auth-header-user-field-name=bad name"], "--auth-header-user-field-name"),
    ],
)
def test_bad_command_lines_are_clear_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_kube_rbac_proxy_args(argv)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_config_file_rewrites_and_static(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
authorization:
  rewrites:
    byQueryParameter:
      name: "namespace"
    byHttpHeader:
      name: "X-Namespace"
  resourceAttributes:
    apiVersion: v1
    resource: namespace
    subresource: metrics
    namespace: "{{ .Value }}"
  static:
    - user:
        name: UserName
        groups:
          - group1
      verb: get
      namespace: default
      apiGroup: apps
      resourceRequest: true
      resource: namespace
      subresource: metrics
""",
    )
    config = parse_kube_rbac_proxy_args([*BASE, f"--config-file={path}"])
    authz = config.authorization
    assert authz.rewrites is not None and authz.rewrites.by_http_header is not None
    assert authz.rewrites.by_http_header.name == "X-Namespace"
    [entry] = authz.static
    assert (entry.user.name, entry.api_group, entry.resource_request) == ("UserName", "apps", True)
    user = service_account_identity("default", "u")
    results = request_attributes(
        user, "GET", "/metrics", {"namespace": ["a", "b"]}, {"x-namespace": "c"}, authz
    )
    assert [a.namespace for a in results] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "authorization:\n  resourceAtributes: {name: x}\n",
            "authorization.resourceAtributes: unknown field",
        ),
        ("authorization:\n  rewrites: {byQueryParameter: {name: n}}\n", "set resourceAttributes"),
        (
            "authorization:\n  static: [{verb: get}]\n",
            "authorization.static[0]: a non-resource entry",
        ),
        ("authorization:\n  resourceAttributes: {name: '{{.Foo}}'}\n", "unsupported template"),
        ("authorization: [\n", "not valid YAML"),
        ("- authorization\n", "expected a mapping"),
    ],
)
def test_config_file_errors_name_the_file_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        parse_kube_rbac_proxy_args([*BASE, f"--config-file={path}"])
    assert str(caught.value).startswith(path)
    assert message in str(caught.value)


def test_config_file_may_choose_the_ray_k8s_profile(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "authorization:\n  profile: ray-k8s\n  rayCluster: {name: c1, namespace: ml}\n",
    )
    config = parse_kube_rbac_proxy_args([*BASE, f"--config-file={path}"])
    user = service_account_identity("ml", "u")
    [attributes] = request_attributes(user, "GET", "/", {}, {}, config.authorization)
    assert (attributes.verb, attributes.namespace, attributes.name) == ("ray:write", "ml", "c1")


def test_empty_config_file_means_non_resource_checks(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    config = parse_kube_rbac_proxy_args([*BASE, f"--config-file={path}"])
    assert config.authorization.resource_attributes is None


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        parse_kube_rbac_proxy_args([*BASE, f"--config-file={tmp_path / 'missing.yaml'}"])


_FLAG_NAMES = [
    "insecure-listen-address",
    "secure-listen-address",
    "upstream",
    "config-file",
    "allow-paths",
    "ignore-paths",
    "proxy-endpoints-port",
    "tls-cert-file",
    "tls-private-key-file",
    "tls-min-version",
    "client-ca-file",
    "auth-header-fields-enabled",
    "auth-token-audiences",
    "oidc-issuer",
    "oidc-clientID",
    "oidc-sign-alg",
    "v",
    "logtostderr",
    "nope",
]
_FLAG_VALUES = st.sampled_from(
    [
        "",
        "0.0.0.0:8265",
        ":8443",
        "http://127.0.0.1:8443/",
        "true",
        "x",
        "3",
        "/a*,/b",
        "https://issuer.example.com",
        "VersionTLS13",
        "/does/not/exist",
    ]
)
_ARG = st.one_of(
    st.builds(lambda n, v: f"--{n}={v}", st.sampled_from(_FLAG_NAMES), _FLAG_VALUES),
    st.builds(lambda n: f"--{n}", st.sampled_from(_FLAG_NAMES)),
    st.builds(lambda n: f"-{n}", st.sampled_from(_FLAG_NAMES)),
    _FLAG_VALUES,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_ARG, max_size=8))
def test_any_command_line_parses_or_is_one_config_error(argv: list[str]) -> None:
    try:
        parse_kube_rbac_proxy_args(argv)
    except ConfigError as err:
        assert "\n" not in str(err)
