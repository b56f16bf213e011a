"""raygate's configuration: its own YAML (`raygate serve --config FILE`) and kube-rbac-proxy's
command line and `--config-file`, both turned into one validated `GatewayConfig`.

values.py           durations, host:port, header names, TLS versions (text -> value)
model.py            the pydantic model, `GatewayConfig` and its parts
loading.py          reading YAML, one-line validation errors naming file and field
kube_rbac_proxy.py  kube-rbac-proxy's flags and --config-file; `raygate serve`'s arguments
"""

from raygate.config.kube_rbac_proxy import (
    config_from_serve_args,
    load_kube_rbac_proxy_file,
    parse_kube_rbac_proxy_args,
)
from raygate.config.loading import (
    config_from_mapping,
    describe_validation_error,
    dump_config,
    load_config,
)
from raygate.config.model import (
    DEFAULT_LISTEN_ADDRESS,
    DEFAULT_MAX_BODY_BYTES,
    RAY_AUTH_TOKEN_ENV,
    AuthenticationConfig,
    AuthHeaderConfig,
    AuthnMode,
    AuthorizationConfig,
    AuthzMode,
    CacheConfig,
    ClientDoorConfig,
    GatewayConfig,
    LimitsConfig,
    ListenConfig,
    OIDCConfig,
    ProxyEndpointsConfig,
    ServeDoorConfig,
    StaticAuthorization,
    StaticUser,
    TLSConfig,
    UpstreamConfig,
)
from raygate.config.values import (
    TLS_VERSIONS,
    Duration,
    HeaderName,
    Rate,
    parse_rate,
    split_host_port,
)

__all__ = [
    "DEFAULT_LISTEN_ADDRESS",
    "DEFAULT_MAX_BODY_BYTES",
    "RAY_AUTH_TOKEN_ENV",
    "TLS_VERSIONS",
    "AuthHeaderConfig",
    "AuthenticationConfig",
    "AuthnMode",
    "AuthorizationConfig",
    "AuthzMode",
    "CacheConfig",
    "ClientDoorConfig",
    "Duration",
    "GatewayConfig",
    "HeaderName",
    "LimitsConfig",
    "ListenConfig",
    "OIDCConfig",
    "ProxyEndpointsConfig",
    "Rate",
    "ServeDoorConfig",
    "StaticAuthorization",
    "StaticUser",
    "TLSConfig",
    "UpstreamConfig",
    "config_from_mapping",
    "config_from_serve_args",
    "describe_validation_error",
    "dump_config",
    "load_config",
    "load_kube_rbac_proxy_file",
    "parse_kube_rbac_proxy_args",
    "parse_rate",
    "split_host_port",
]
