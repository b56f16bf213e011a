"""Which headers cross the gateway. Properties over any header set, then tables for the details."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from raygate.pipeline.headers import (
    HOP_BY_HOP,
    RAY_TOKEN_COOKIE,
    connection_tokens,
    downstream_response_headers,
    strip_cookie,
    upstream_request_headers,
)

IDENTITY_HEADERS = ("X-Remote-User", "X-Remote-Group")
UPSTREAM_TOKEN = "ray-token-only-the-gateway-holds"
# Headers the gateway sets, re-frames or answers itself (Expect: 100-continue), whatever the
# client sent.
GATEWAY_SET = {
    "host",
    "content-length",
    "expect",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    # where the request came from: the gateway's to say, never the client's
    "x-forwarded-port",
    "x-forwarded-prefix",
    "forwarded",
    "x-real-ip",
}
CREDENTIALS = {"authorization", "x-ray-authorization"}
# What the gateway adds after filtering (so a client's Connection header cannot remove it).
GATEWAY_ADDED = {"authorization", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}

SPECIAL_NAMES = sorted(
    HOP_BY_HOP
    | CREDENTIALS
    | GATEWAY_SET
    | {
        "x-remote-user",
        "x-remote-group",
        "x-remote-extra-scopes",
        "x-remote-uid",
        "cookie",
        "set-cookie",
    }
)
_TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"


def _any_case(name: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda upper: "".join(c.upper() if u else c for c, u in zip(name, upper, strict=True))
    )


header_names = st.one_of(
    st.text(_TOKEN_CHARS, min_size=1, max_size=20),
    st.sampled_from(SPECIAL_NAMES).flatmap(_any_case),
)
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


@st.composite
def header_sets(draw: st.DrawFn) -> CIMultiDictProxy[str]:
    pairs = draw(st.lists(st.tuples(header_names, header_values), max_size=12))
    if draw(st.booleans()):  # a Connection header naming some of the others
        named = [name for name, _ in pairs] + ["keep-alive", "close"]
        listed = draw(st.lists(st.sampled_from(named), max_size=3))
        pairs.append(("Connection", ", ".join(listed)))
    if draw(st.booleans()):
        pairs.append(("Cookie", f"theme=dark; {RAY_TOKEN_COOKIE}=stolen; lang=en"))
    return CIMultiDictProxy(CIMultiDict(pairs))


def _is_end_to_end_request_header(name: str, named_by_connection: set[str]) -> bool:
    lname = name.lower()
    return not (
        lname in HOP_BY_HOP
        or lname in named_by_connection
        or lname in CREDENTIALS
        or lname in GATEWAY_SET
        or lname.startswith(("x-remote-", "x-forwarded-"))
        or lname == "cookie"
    )


def _upstream(incoming: CIMultiDictProxy[str], **overrides: object) -> CIMultiDict[str]:
    arguments: dict[str, object] = {
        "identity_headers": IDENTITY_HEADERS,
        "remote": "127.0.0.1",
        "scheme": "http",
        "host": "localhost:8265",
        "upstream_token": UPSTREAM_TOKEN,
    }
    arguments.update(overrides)
    return CIMultiDict(upstream_request_headers(incoming, **arguments))  # type: ignore[arg-type]


# -- properties -----------------------------------------------------------------------------------


@settings(max_examples=300)
@given(header_sets())
def test_upstream_never_gets_hop_by_hop_identity_or_client_credential_headers(
    incoming: CIMultiDictProxy[str],
) -> None:
    out = _upstream(incoming)
    named = connection_tokens(incoming)
    for name in out:
        lname = name.lower()
        assert lname not in HOP_BY_HOP
        assert lname not in named or lname in GATEWAY_ADDED
        assert not lname.startswith("x-remote-")
        assert lname != "x-ray-authorization"
        assert lname not in ("host", "content-length")
    assert out.getall("Authorization") == [f"Bearer {UPSTREAM_TOKEN}"]
    for cookie in out.getall("Cookie", []):
        assert RAY_TOKEN_COOKIE + "=" not in cookie


@settings(max_examples=300)
@given(header_sets())
def test_upstream_keeps_every_end_to_end_header_in_order(
    incoming: CIMultiDictProxy[str],
) -> None:
    out = _upstream(incoming)
    named = connection_tokens(incoming)
    expected = [(n, v) for n, v in incoming.items() if _is_end_to_end_request_header(n, named)]
    kept = [(n, v) for n, v in out.items() if _is_end_to_end_request_header(n, named)]
    assert kept == expected


@settings(max_examples=300)
@given(header_sets())
def test_client_never_gets_hop_by_hop_headers_or_the_ray_token_cookie(
    upstream: CIMultiDictProxy[str],
) -> None:
    out = CIMultiDict(downstream_response_headers(upstream))
    named = connection_tokens(upstream)
    for name, value in out.items():
        lname = name.lower()
        assert lname not in HOP_BY_HOP
        assert lname not in named
        assert lname != "content-length"  # re-framed by the gateway
        if lname == "set-cookie":
            assert not value.lstrip().startswith(RAY_TOKEN_COOKIE + "=")
    expected = [
        (n, v)
        for n, v in upstream.items()
        if n.lower() not in HOP_BY_HOP | named | {"content-length", "set-cookie"}
    ]
    assert [(n, v) for n, v in out.items() if n.lower() != "set-cookie"] == expected


# -- tables ---------------------------------------------------------------------------------------


def _headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


@pytest.mark.parametrize(
    ("cookie", "expected"),
    [
        (f"{RAY_TOKEN_COOKIE}=secret", ""),
        (f"theme=dark; {RAY_TOKEN_COOKIE}=secret; lang=en", "theme=dark; lang=en"),
        (f"{RAY_TOKEN_COOKIE}=secret;theme=dark", "theme=dark"),
        (f"{RAY_TOKEN_COOKIE}-old=1; theme=dark", f"{RAY_TOKEN_COOKIE}-old=1; theme=dark"),
        ("theme=dark", "theme=dark"),
    ],
)
def test_strip_cookie_removes_only_the_named_cookie(cookie: str, expected: str) -> None:
    assert strip_cookie(cookie, RAY_TOKEN_COOKIE) == expected


def test_cookie_header_holding_only_the_ray_token_is_dropped() -> None:
    out = _upstream(_headers(("Cookie", f"{RAY_TOKEN_COOKIE}=stolen")))
    assert "Cookie" not in out


@pytest.mark.parametrize(
    ("prior", "expected"),
    [(None, "127.0.0.1"), ("203.0.113.9", "203.0.113.9, 127.0.0.1")],
)
def test_forwarded_for_appends_the_client_address(prior: str | None, expected: str) -> None:
    incoming = _headers(("X-Forwarded-For", prior)) if prior else _headers()
    out = _upstream(incoming)
    assert out.getall("X-Forwarded-For") == [expected]
    assert out["X-Forwarded-Proto"] == "http"
    assert out["X-Forwarded-Host"] == "localhost:8265"


def test_client_sent_forwarded_proto_and_host_are_replaced() -> None:
    out = _upstream(_headers(("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "evil")))
    assert out.getall("X-Forwarded-Proto") == ["http"]
    assert out.getall("X-Forwarded-Host") == ["localhost:8265"]


@pytest.mark.parametrize(
    "incoming",
    [
        (),
        (("X-Forwarded-For", "203.0.113.9"),),
        (("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "evil"), ("x-forwarded-for", "1.2.3.4")),
    ],
)
def test_without_forwarded_headers_none_reaches_the_upstream_not_even_the_clients(
    incoming: tuple[tuple[str, str], ...],
) -> None:
    out = _upstream(_headers(*incoming, ("X-Request-Id", "1")), forwarded=False)
    assert not [name for name in out if name.lower().startswith("x-forwarded-")]
    assert out["X-Request-Id"] == "1"
    assert out.getall("Authorization") == [f"Bearer {UPSTREAM_TOKEN}"]


@pytest.mark.parametrize(
    ("forward_client_authorization", "upstream_token", "expected"),
    [
        (False, UPSTREAM_TOKEN, [f"Bearer {UPSTREAM_TOKEN}"]),
        (False, None, []),
        (True, None, ["Bearer client-token"]),
        (True, UPSTREAM_TOKEN, [f"Bearer {UPSTREAM_TOKEN}"]),
    ],
)
def test_authorization_upstream_is_the_gateway_token_unless_configured(
    forward_client_authorization: bool, upstream_token: str | None, expected: list[str]
) -> None:
    out = _upstream(
        _headers(("Authorization", "Bearer client-token")),
        upstream_token=upstream_token,
        forward_client_authorization=forward_client_authorization,
    )
    assert out.getall("Authorization", []) == expected


def test_configured_identity_header_names_are_dropped_too() -> None:
    out = _upstream(
        _headers(("X-Forwarded-User", "system:admin"), ("X-Request-Id", "1")),
        identity_headers=("X-Forwarded-User", "X-Forwarded-Groups"),
    )
    assert "X-Forwarded-User" not in out
    assert out["X-Request-Id"] == "1"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["keep-alive, X-Secret"], {"keep-alive", "x-secret"}),
        (["close", "Upgrade"], {"close", "upgrade"}),
        ([" , ,"], set()),
    ],
)
def test_connection_tokens_are_every_listed_name_lowercased(
    values: list[str], expected: set[str]
) -> None:
    assert connection_tokens(_headers(*[("Connection", v) for v in values])) == expected


@pytest.mark.parametrize("forwarded", [True, False])
@pytest.mark.parametrize(
    "name",
    ["X-Forwarded-Port", "X-Forwarded-Prefix", "X-Forwarded-Server", "Forwarded", "X-Real-IP"],
)
def test_a_clients_word_on_where_the_request_came_from_never_reaches_the_upstream(
    name: str, forwarded: bool
) -> None:
    out = _upstream(_headers((name, "evil"), ("X-Request-Id", "1")), forwarded=forwarded)
    assert name not in out
    assert out["X-Request-Id"] == "1"


def test_a_clients_forwarded_host_is_dropped_even_when_the_gateway_has_none() -> None:
    """An HTTP/1.0 request may come without Host: the client's X-Forwarded-Host must not stand
    in for the gateway's."""
    out = _upstream(
        _headers(("X-Forwarded-Host", "evil"), ("X-Forwarded-For", "203.0.113.9")),
        host=None,
        remote=None,
    )
    assert "X-Forwarded-Host" not in out
    assert "X-Forwarded-For" not in out
    assert out["X-Forwarded-Proto"] == "http"
