"""`raygate serve --config FILE` with `authentication.oidc.browserSignIn`: the same browser
sign-in as `raygate up --oidc-*`, against npm's oidc-provider (the full browser flow is in
tests/browser/test_sso.py)."""

from __future__ import annotations

import http.client
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import yaml

from tests.conftest import RaygateUp
from tests.oidc_provider import CLIENT_ID, run_provider

from .serve_helpers import ports, ray_dashboard, serve_env, serving


def _get(port: int, path: str, accept: str) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", path, headers={"Accept": accept})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def test_serve_config_sends_browsers_to_the_provider(raygate_up: RaygateUp, tmp_path: Path) -> None:
    (port,) = ports(1)
    state = tmp_path / "state"
    with run_provider({}) as provider:
        config = {
            "listen": {"address": f"127.0.0.1:{port}"},
            "upstream": {"url": ray_dashboard(raygate_up)},
            "stateDir": str(state),
            "browserLogin": True,
            "authentication": {
                "mode": ["embedded", "oidc"],
                "oidc": {
                    "issuerURL": provider.issuer,
                    "clientID": CLIENT_ID,
                    "browserSignIn": True,
                    "scopes": ["openid", "email", "groups"],
                },
            },
            "authorization": {"mode": "embedded"},
        }
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        with serving(["--config", str(path)], serve_env(raygate_up), port=port):
            page = _get(port, "/", "text/html,*/*;q=0.8")
            assert page.status == 302
            location = urlsplit(page.getheader("Location", ""))
            assert f"{location.scheme}://{location.netloc}" == provider.issuer
            query = parse_qs(location.query)
            assert query["redirect_uri"] == [f"http://127.0.0.1:{port}/oauth2/callback"]
            assert query["scope"] == ["openid email groups"]
            assert "__Host-raygate-signin=" in page.getheader("Set-Cookie", "")
            # An API client is told 401, never sent to a login page.
            assert _get(port, "/api/jobs/", "application/json").status == 401
            assert _get(port, "/raygate/signed-out", "text/html").status == 200
        assert (state / "sessions.db").exists()
