"""kube-rbac-proxy compatibility: its command line (a pflag-style parser over every flag it
accepts) and its `--config-file`, turned into a `GatewayConfig`; and `raygate serve`'s arguments,
which are either those flags or `--config FILE`."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from raygate.authz.attributes import AttributesConfig, ConfigModel
from raygate.config.loading import (
    describe_validation_error,
    dump_config,
    load_config,
    read_yaml,
)
from raygate.config.model import GatewayConfig, StaticAuthorization
from raygate.durations import duration_seconds
from raygate.errors import ConfigError

log = logging.getLogger(__name__)


class _KubeRbacProxyAuthorization(AttributesConfig):
    """kube-rbac-proxy's keys (resourceAttributes, rewrites, static); raygate also reads
    `profile` and `rayCluster` here, so the drop-in can use the ray-k8s profile."""

    static: tuple[StaticAuthorization, ...] = ()


class _KubeRbacProxyFile(ConfigModel):
    authorization: _KubeRbacProxyAuthorization | None = None


def load_kube_rbac_proxy_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """kube-rbac-proxy's `--config-file` -> the `authorization` settings it holds (camelCase)."""
    data = read_yaml(path)
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
                return duration_seconds(text)
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
