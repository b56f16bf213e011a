"""Ray's own dashboard UI logs in through the gateway with a raygate token: no extension."""

from __future__ import annotations

import http.client as httpclient
import json
import re
from urllib.parse import urlsplit

from tests.conftest import RaygateUp
from tests.integration.test_ray_gateway import grant_submitter, http


def raw_request(
    address: str, method: str, raw_path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    """A request whose path goes on the wire exactly as written (no client-side cleaning)."""
    parts = urlsplit(address)
    conn = httpclient.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest(method, raw_path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return (
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            response.read().decode(errors="replace"),
        )
    finally:
        conn.close()


def viewer_token(up: RaygateUp) -> str:
    return up.grant_cluster("dashboard-viewer", "get", cluster=None)


def test_dashboard_shell_loads_without_credentials_but_api_does_not(raygate_up: RaygateUp) -> None:
    status, _headers, page = raw_request(raygate_up.address, "GET", "/")
    assert status == 200 and "<html" in page.lower()
    assert "Ray Dashboard" in page
    assets = re.findall(r'(?:src|href)="\.?(/static/[^"]+)"', page)
    assert assets, "the dashboard page names no static assets"
    for asset in assets:
        assert raw_request(raygate_up.address, "GET", asset)[0] == 200, asset
    status, _headers, body = raw_request(raygate_up.address, "GET", "/api/authentication_mode")
    assert (status, json.loads(body)) == (200, {"authentication_mode": "token"})
    # The API behind the shell stays closed, including through dot segments and encodings.
    for path in ("/api/jobs/", "/static/../api/jobs/", "/static/%2e%2e/api/jobs/", "/api/version"):
        assert raw_request(raygate_up.address, "GET", path)[0] == 401, path


def test_ui_login_sets_a_cookie_with_the_callers_own_token(raygate_up: RaygateUp) -> None:
    token = viewer_token(raygate_up)
    ray_token = (raygate_up.state / "ray-auth-token").read_text().strip()
    login = {"Authorization": f"Bearer {token}", "Content-Length": "0"}
    status, headers, body = raw_request(raygate_up.address, "POST", "/api/authenticate", login)
    assert status == 200, body
    cookie = headers.get("set-cookie", "")
    assert cookie.startswith(f"ray-authentication-token={token};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert ray_token not in json.dumps(headers) + body

    session = {"Cookie": f"ray-authentication-token={token}"}
    status, _headers, jobs = raw_request(raygate_up.address, "GET", "/api/jobs/", session)
    assert status == 200 and isinstance(json.loads(jobs), list)
    # The cookie carries the viewer's rights, no more: submitting is `create`.
    status, _headers, body = raw_request(
        raygate_up.address, "POST", "/api/jobs/", {**session, "Content-Length": "0"}
    )
    assert status == 403 and "cannot create" in body


def test_ui_login_refuses_bad_and_unauthorized_tokens(raygate_up: RaygateUp) -> None:
    def login(token: str) -> tuple[int, dict[str, str]]:
        status, headers, _body = raw_request(
            raygate_up.address,
            "POST",
            "/api/authenticate",
            {"Authorization": f"Bearer {token}", "Content-Length": "0"},
        )
        return status, headers

    status, headers = login("not-a-token")
    assert status == 401 and "set-cookie" not in headers
    assert raygate_up.raygate("create", "serviceaccount", "no-rights").returncode == 0
    status, headers = login(raygate_up.token("no-rights"))
    assert status == 403 and "set-cookie" not in headers
    # A forged cookie is just another invalid token.
    assert (
        http(
            f"{raygate_up.address}/api/jobs/", headers={"Cookie": "ray-authentication-token=forged"}
        )[0]
        == 401
    )


def test_submitter_cookie_does_not_reach_ray(raygate_up: RaygateUp) -> None:
    """Ray would take its cookie as its own credential: the gateway never forwards it."""
    token = grant_submitter(raygate_up, "cookie-holder")
    status, _headers, body = raw_request(
        raygate_up.address, "GET", "/api/version", {"Cookie": f"ray-authentication-token={token}"}
    )
    assert status == 200 and "ray_version" in body
