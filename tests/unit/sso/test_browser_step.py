"""Which requests count as a browser, which cookies are accepted from where, where a sign-in
may return to: the pure parts of the browser sign-in step."""

from __future__ import annotations

import pytest

from raygate.pipeline.head import Headers, RequestHead
from raygate.sso.flow import (
    cookie_name,
    is_browser_navigation,
    safe_return_to,
    same_origin,
    wants_token_dialog,
)


def head(
    method: str = "GET",
    target: str = "/",
    scheme: str = "http",
    host: str = "localhost:8265",
    **headers: str,
) -> RequestHead:
    pairs = [(k.replace("_", "-"), v) for k, v in headers.items()]
    return RequestHead(method, target, Headers(pairs), scheme=scheme, host=host)


HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_a_page_load_is_a_browser_and_an_api_call_is_not() -> None:
    assert is_browser_navigation(head(Accept=HTML))
    assert not is_browser_navigation(head(Accept="application/json, text/plain, */*"))
    assert not is_browser_navigation(head(Accept="*/*"))  # curl
    assert not is_browser_navigation(head(Accept=HTML, Authorization="Bearer x"))
    assert not is_browser_navigation(head("POST", Accept=HTML))
    assert not is_browser_navigation(head(Accept=HTML, Upgrade="websocket"))


def test_the_token_dialog_stays_reachable() -> None:
    assert wants_token_dialog(head(target="/?login=token"))
    assert wants_token_dialog(head(Cookie="ray-authentication-token=abc"))
    assert not wants_token_dialog(head(target="/?login=other"))


def test_cookies_are_host_prefixed_and_secure_under_tls_and_on_loopback_only() -> None:
    assert (
        cookie_name("raygate-session", head(scheme="https", host="ray.example.com"))
        == "__Host-raygate-session"
    )
    assert cookie_name("raygate-session", head(host="127.0.0.1:8265")) == "__Host-raygate-session"
    assert cookie_name("raygate-session", head(host="[::1]:8265")) == "__Host-raygate-session"
    # Browsers drop a __Host- cookie that is not Secure, and plain http cannot set Secure.
    assert cookie_name("raygate-session", head(host="ray.internal:8265")) == "raygate-session"


@pytest.mark.parametrize(
    ("method", "headers", "allowed"),
    [
        ("GET", {}, True),  # not a browser being tricked (curl)
        ("GET", {"Sec-Fetch-Site": "same-origin"}, True),
        ("GET", {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate"}, True),  # typed URL
        ("GET", {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}, True),  # a link
        ("GET", {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors"}, False),  # other port
        ("GET", {"Origin": "http://localhost:8888", "Upgrade": "websocket"}, False),
        ("GET", {"Origin": "http://localhost:8265", "Upgrade": "websocket"}, True),
        ("POST", {"Origin": "http://localhost:8265"}, True),
        ("POST", {"Origin": "http://evil.example"}, False),
        ("POST", {"Origin": "null"}, False),
        ("POST", {"Sec-Fetch-Site": "same-origin"}, True),
        ("POST", {}, False),  # a state change must prove where it comes from
        ("DELETE", {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "navigate"}, False),
    ],
)
def test_the_session_cookie_counts_only_from_this_origin(
    method: str, headers: dict[str, str], allowed: bool
) -> None:
    request = RequestHead(
        method, "/api/jobs/", Headers(list(headers.items())), host="localhost:8265"
    )
    assert same_origin(request) is allowed


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/#/jobs", "/#/jobs"),
        ("/api/jobs/?x=1", "/api/jobs/?x=1"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("/ok\r\nSet-Cookie: x", "/"),
    ],
)
def test_a_sign_in_returns_only_to_a_path_here(target: str, expected: str) -> None:
    assert safe_return_to(target) == expected
