"""Configuring sign-in: `raygate up --oidc-*` and `authentication.oidc` in `raygate serve`'s file."""

from __future__ import annotations

from pathlib import Path

import pytest
from yarl import URL

from raygate.authz.attributes import Profile
from raygate.cli.up import UpOptions, _oidc_settings, gateway_config
from raygate.config import AuthnMode, config_from_mapping
from raygate.config.model import AuditConfig
from raygate.errors import ConfigError


def serve_config(oidc: dict[str, object]) -> dict[str, object]:
    return {
        "upstream": {"url": "http://127.0.0.1:8443"},
        "authentication": {"mode": ["oidc"], "oidc": oidc},
        "authorization": {"mode": "embedded"},
    }


@pytest.mark.parametrize(
    "issuer",
    ["https://sso.example.com", "http://127.0.0.1:5556/dex", "http://localhost:8080/realms/ray"],
)
def test_the_issuer_is_https_or_on_loopback(issuer: str) -> None:
    config = config_from_mapping(serve_config({"issuerURL": issuer, "clientID": "raygate"}))
    assert config.authentication.oidc is not None
    assert config.authentication.oidc.issuer_url == issuer


@pytest.mark.parametrize("issuer", ["http://sso.example.com", "http://10.0.0.5:8080", "ftp://x"])
def test_a_plain_http_issuer_elsewhere_is_refused(issuer: str) -> None:
    with pytest.raises(ConfigError, match="issuerURL"):
        config_from_mapping(serve_config({"issuerURL": issuer, "clientID": "raygate"}))


def test_serve_config_turns_on_browser_sign_in(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    config = config_from_mapping(
        serve_config(
            {
                "issuerURL": "https://sso.example.com",
                "clientID": "raygate",
                "browserSignIn": True,
                "clientSecretFile": str(secret),
                "scopes": ["openid", "email", "groups"],
            }
        )
    )
    oidc = config.authentication.oidc
    assert oidc is not None and oidc.browser_sign_in and oidc.read_client_secret() == "s3cret"
    with pytest.raises(ConfigError, match="scopes must include openid"):
        config_from_mapping(
            serve_config(
                {"issuerURL": "https://sso.example.com", "clientID": "x", "scopes": ["email"]}
            )
        )


def test_up_flags_become_the_same_config(tmp_path: Path) -> None:
    oidc = _oidc_settings(
        "http://127.0.0.1:5556", "raygate", None, "email", "", "groups", "", ("groups",), None
    )
    options = UpOptions(
        state_dir=tmp_path,
        host="127.0.0.1",
        port=18265,
        cluster_name="ray-cluster-with-auth",
        namespace="default",
        num_cpus=1,
        object_store_memory=None,
        upstream=None,
        upstream_token_file=None,
        audit=AuditConfig(log=str(tmp_path / "audit.log")),
        profile=Profile.KUBE_RBAC_PROXY,
        oidc=oidc,
    )
    config = gateway_config(options, URL("http://127.0.0.1:1"), None)
    assert config.authentication.mode == (AuthnMode.EMBEDDED, AuthnMode.OIDC)
    assert config.authentication.oidc is not None
    assert config.authentication.oidc.browser_sign_in
    assert config.authentication.oidc.scopes == ("openid", "email", "profile", "groups")
    assert config.browser_login  # the token dialog stays for service-account tokens


@pytest.mark.parametrize(
    ("issuer", "client_id", "message"),
    [
        ("https://sso.example.com", None, "needs --oidc-client-id"),
        (None, "raygate", "need --oidc-issuer-url"),
        ("http://sso.example.com", "raygate", "must be an https:// URL"),
    ],
)
def test_up_flag_mistakes_are_one_line_errors(
    issuer: str | None, client_id: str | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _oidc_settings(issuer, client_id, None, "email", "", "groups", "", (), None)
