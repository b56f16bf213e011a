"""Malformed and smuggling requests, each with the answer a safe gateway gives it.

Templates are raw bytes with three placeholders, filled per replay:
- `{auth}`: an `Authorization: Bearer ...\r\n` line (valid, denied or bad token) or nothing;
- `{m}`: a marker unique to the replay, so its bytes can be found at the upstream;
- `{tok}`: the bare valid token (for cases that place it themselves);
- `{slen}`, `{shex}`: the length of the filled-in SMUGGLED request, in decimal and hex.

Kinds:
- REFUSE: never forwarded; the first answer is one of `statuses` (with no token, 401 is also
  right: refusing before or after reading the credential both keep the upstream untouched).
- FORWARD: a well-formed request; with the allowed token exactly one well-formed request reaches
  the upstream, without a token 401, with a token of an account without rights 403, with a
  garbage token 401 (and then nothing reaches the upstream).
- EITHER: a request RFC 9112 lets a recipient accept or refuse; with the allowed token it is
  refused with one of `statuses` and nothing forwarded, or forwarded as exactly one well-formed
  request. Without a token it is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    REFUSE = "refuse"
    FORWARD = "forward"
    EITHER = "either"


@dataclass(frozen=True)
class Case:
    name: str
    raw: bytes
    kind: Kind
    statuses: frozenset[int] = frozenset()
    # For requests that reach the upstream: the target and body it must see, when they are known.
    target: bytes | None = None
    body: bytes | None = None


BAD = frozenset({400})
BAD_OR_501 = frozenset({400, 501})
TOO_BIG_HEAD = frozenset({400, 413, 414, 431})
# aiohttp answers CONNECT with an authority-form target 404 (no route): refused all the same.
METHOD = frozenset({400, 404, 405, 501})
VERSION = frozenset({400, 505})

HOST = b"Host: ray\r\n"
T = b"/api/jobs/?c={m}"  # the target most cases use
# A request hidden in a body; it carries the valid token, so if it were ever taken for a
# request it would be forwarded and show at the upstream.
SMUGGLED = b"GET /smuggled?c={m} HTTP/1.1\r\nHost: ray\r\n{auth}Connection: close\r\n\r\n"


def get(headers: bytes = b"", target: bytes = T, method: bytes = b"GET") -> bytes:
    return method + b" " + target + b" HTTP/1.1\r\n" + HOST + b"{auth}" + headers + b"\r\n"


def post(headers: bytes, body: bytes, target: bytes = T) -> bytes:
    return b"POST " + target + b" HTTP/1.1\r\n" + HOST + b"{auth}" + headers + b"\r\n" + body


def refuse(name: str, raw: bytes, statuses: frozenset[int] = BAD) -> Case:
    return Case(name, raw, Kind.REFUSE, statuses)


def forward(name: str, raw: bytes, *, target: bytes = T, body: bytes | None = b"") -> Case:
    return Case(name, raw, Kind.FORWARD, target=target, body=body)


def either(
    name: str,
    raw: bytes,
    statuses: frozenset[int] = BAD_OR_501,
    *,
    target: bytes | None = T,
    body: bytes | None = None,
) -> Case:
    return Case(name, raw, Kind.EITHER, statuses, target=target, body=body)


def chunked(payload: bytes) -> bytes:
    return post(b"Transfer-Encoding: chunked\r\n", payload)


def te(value: bytes, payload: bytes = b"5\r\nhello\r\n0\r\n\r\n") -> bytes:
    return post(b"Transfer-Encoding: " + value + b"\r\n", payload)


def cl(value: bytes, payload: bytes = b"hello") -> bytes:
    return post(b"Content-Length: " + value + b"\r\n", payload)


def header(line: bytes) -> bytes:
    return get(line + b"\r\n")


WS = (
    b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)

CASES: list[Case] = [
    # -- Content-Length and Transfer-Encoding together ------------------------------------------
    refuse("cl-then-te", post(b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED)),
    refuse("te-then-cl", post(b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", b"0\r\n\r\n" + SMUGGLED)),
    refuse("cl-te-classic-prefix", post(b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\nG" + SMUGGLED)),
    refuse("te-chunked-cl-zero", post(b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n", b"5\r\nhello\r\n0\r\n\r\n")),
    refuse("cl-te-identity", post(b"Content-Length: 5\r\nTransfer-Encoding: identity\r\n", b"hello"), BAD_OR_501),
    refuse("cl-te-obs-folded", post(b"Content-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n")),
    # -- Content-Length values ---------------------------------------------------------------------
    refuse("cl-duplicate-same", post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello")),
    refuse("cl-duplicate-conflicting", post(b"Content-Length: 5\r\nContent-Length: 50\r\n", b"hello" + SMUGGLED)),
    refuse("cl-list-same", cl(b"5, 5")),
    refuse("cl-list-conflicting", cl(b"5, 6")),
    refuse("cl-plus-sign", cl(b"+5")),
    refuse("cl-minus-sign", cl(b"-5")),
    refuse("cl-internal-space", cl(b"5 5")),
    refuse("cl-hex", cl(b"0x5")),
    refuse("cl-decimal-point", cl(b"5.0")),
    refuse("cl-trailing-garbage", cl(b"5abc")),
    refuse("cl-empty", cl(b"")),
    refuse("cl-overflow", cl(b"99999999999999999999999999")),
    refuse("cl-nul", cl(b"5\x00")),
    refuse("cl-vertical-tab", cl(b"\x0b5")),
    refuse("cl-space-before-colon", post(b"Content-Length : 5\r\n", b"hello" + SMUGGLED)),
    refuse("cl-tab-before-colon", post(b"Content-Length\t: 5\r\n", b"hello")),
    refuse("cl-over-body-limit", cl(b"209715200", b""), frozenset({413})),
    either("cl-leading-zeros", cl(b"0005"), body=b"hello"),
    # -- Transfer-Encoding variants ----------------------------------------------------------------
    refuse("te-chunked-then-identity", te(b"chunked, identity"), BAD_OR_501),
    either("te-identity-then-chunked", te(b"identity, chunked"), body=b"hello"),
    refuse("te-xchunked", te(b"xchunked"), BAD_OR_501),
    refuse("te-chunkedx", te(b"chunkedx"), BAD_OR_501),
    either("te-chunked-trailing-space", te(b"chunked "), body=b"hello"),
    either("te-tab-before-value", post(b"Transfer-Encoding:\tchunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"), body=b"hello"),
    either("te-uppercase", te(b"CHUNKED"), body=b"hello"),
    refuse("te-two-headers", post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"), BAD_OR_501),
    refuse("te-chunked-twice", te(b"chunked, chunked"), BAD_OR_501),
    refuse("te-identity-header-then-chunked-header", post(b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"), BAD_OR_501),
    refuse("te-on-http10", b"POST " + T + b" HTTP/1.0\r\n" + HOST + b"{auth}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + SMUGGLED, BAD_OR_501),
    refuse("te-space-before-colon", post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n" + SMUGGLED)),
    refuse("te-vertical-tab", te(b"\x0bchunked")),
    refuse("te-obs-fold", post(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n" + SMUGGLED)),
    refuse("te-empty", te(b""), BAD_OR_501),
    refuse("te-gzip-alone", te(b"gzip", b"hello"), BAD_OR_501),
    either("te-gzip-then-chunked", te(b"gzip, chunked"), BAD_OR_501),
    refuse("te-quoted", te(b'"chunked"'), BAD_OR_501),
    refuse("te-nul", te(b"chunked\x00")),
    refuse("te-chunked-with-parameter", te(b"chunked;q=1"), BAD_OR_501),
    either("te-underscore-name", post(b"Transfer_Encoding: chunked\r\nContent-Length: 5\r\n", b"hello"), body=b"hello"),
    # -- chunk framing -----------------------------------------------------------------------------
    refuse("chunk-size-overflow", chunked(b"FFFFFFFFFFFFFFFFFFFFFFFF1\r\nhello\r\n0\r\n\r\n")),
    refuse("chunk-size-negative", chunked(b"-5\r\nhello\r\n0\r\n\r\n")),
    refuse("chunk-size-plus", chunked(b"+5\r\nhello\r\n0\r\n\r\n")),
    refuse("chunk-size-not-hex", chunked(b"zz\r\nhello\r\n0\r\n\r\n")),
    refuse("chunk-size-0x", chunked(b"0x5\r\nhello\r\n0\r\n\r\n")),
    refuse("chunk-size-empty", chunked(b"\r\nhello\r\n0\r\n\r\n")),
    refuse("chunk-data-longer-than-size", chunked(b"3\r\nhello\r\n0\r\n\r\n" + SMUGGLED)),
    refuse("chunk-missing-crlf-after-data", chunked(b"5\r\nhelloXX0\r\n\r\n")),
    refuse("chunk-bare-lf-everywhere", chunked(b"5\nhello\n0\n\n" + SMUGGLED)),
    refuse("chunk-bare-lf-after-size", chunked(b"5\nhello\r\n0\r\n\r\n")),
    refuse("chunk-bare-cr-after-size", chunked(b"5\rhello\r\n0\r\n\r\n")),
    refuse("chunk-extension-control-byte", chunked(b"5;\x01\r\nhello\r\n0\r\n\r\n")),
    refuse("chunk-extension-bare-lf", chunked(b"5;a=b\nhello\r\n0\r\n\r\n")),
    either("chunk-size-space-before-crlf", chunked(b"5 \r\nhello\r\n0\r\n\r\n"), body=b"hello"),
    either("chunk-size-leading-zeros", chunked(b"0000000000000000005\r\nhello\r\n0\r\n\r\n"), body=b"hello"),
    either("chunk-extension", chunked(b"5;name=value\r\nhello\r\n0\r\n\r\n"), body=b"hello"),
    either("chunk-trailer-content-length", chunked(b"5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n"), body=b"hello"),
    refuse("chunk-trailer-obs-fold", chunked(b"5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n" + SMUGGLED)),
    # -- header syntax -----------------------------------------------------------------------------
    refuse("obs-fold", header(b"X-Note: a\r\n b")),
    refuse("obs-fold-tab", header(b"X-Note: a\r\n\tb")),
    refuse("obs-fold-first-line", b"GET " + T + b" HTTP/1.1\r\n X-Note: a\r\n" + HOST + b"{auth}\r\n"),
    refuse("bare-cr-in-value", header(b"X-Note: a\rb")),
    refuse("bare-cr-line-end", get(b"X-Note: a\r\r\n")),
    refuse("nul-in-value", header(b"X-Note: a\x00b")),
    refuse("nul-in-name", header(b"X-No\x00te: a")),
    refuse("control-byte-in-value", header(b"X-Note: a\x01b")),
    refuse("del-in-value", header(b"X-Note: a\x7fb")),
    refuse("escape-in-value", header(b"X-Note: \x1b[31mred")),
    refuse("control-byte-in-name", header(b"X-No\x01te: a")),
    refuse("space-before-colon", header(b"X-Note : a")),
    refuse("tab-before-colon", header(b"X-Note\t: a")),
    refuse("parenthesis-in-name", header(b"X(Note): a")),
    refuse("slash-in-name", header(b"X/Note: a")),
    refuse("empty-name", header(b": a")),
    refuse("no-colon", header(b"X-Note a")),
    refuse("space-in-name", header(b"X Note: a")),
    refuse("non-ascii-in-name", header(b"X-N\xc3\xb6te: a")),
    refuse("duplicate-host", get(b"Host: other\r\n")),
    refuse("host-userinfo", b"GET " + T + b" HTTP/1.1\r\nHost: admin@ray\r\n{auth}\r\n"),
    refuse("host-userinfo-password", b"GET " + T + b" HTTP/1.1\r\nHost: a:b@evil.example\r\n{auth}\r\n"),
    refuse("host-inner-space", b"GET " + T + b" HTTP/1.1\r\nHost: ray evil.example\r\n{auth}\r\n"),
    refuse("host-inner-tab", b"GET " + T + b" HTTP/1.1\r\nHost: ray\tevil\r\n{auth}\r\n"),
    refuse("host-with-path", b"GET " + T + b" HTTP/1.1\r\nHost: ray/evil\r\n{auth}\r\n"),
    refuse("host-empty", b"GET " + T + b" HTTP/1.1\r\nHost: \r\n{auth}\r\n"),
    refuse("host-name-trailing-space", b"GET " + T + b" HTTP/1.1\r\nHost : ray\r\n{auth}\r\n"),
    refuse("host-non-ascii", b"GET " + T + b" HTTP/1.1\r\nHost: r\xc3\xa4y\r\n{auth}\r\n"),
    forward("host-with-port", b"GET " + T + b" HTTP/1.1\r\nHost: ray:8265\r\n{auth}\r\n"),
    forward("host-ipv6-literal", b"GET " + T + b" HTTP/1.1\r\nHost: [::1]:8265\r\n{auth}\r\n"),
    refuse("content-length-name-trailing-space", post(b"Content-Length  : 5\r\n", b"hello" + SMUGGLED)),
    refuse("missing-host", b"GET " + T + b" HTTP/1.1\r\n{auth}\r\n"),
    either("host-list", b"GET " + T + b" HTTP/1.1\r\nHost: ray, other\r\n{auth}\r\n", BAD),
    either("bare-lf-line-ends", b"GET " + T + b" HTTP/1.1\nHost: ray\n{auth}\n", BAD),
    either("non-ascii-value", header(b"X-Note: caf\xc3\xa9"), BAD),
    # -- request line ------------------------------------------------------------------------------
    either("absolute-form", get(target=b"http://ray/api/jobs/?c={m}"), BAD, target=None),
    either("absolute-form-other-host", get(target=b"http://evil.example/api/jobs/?c={m}"), BAD, target=None),
    refuse("asterisk-form-get", get(target=b"*")),
    refuse("authority-form-get", get(target=b"ray:8265")),
    refuse("connect", b"CONNECT ray:443 HTTP/1.1\r\nHost: ray:443\r\n{auth}\r\n", METHOD),
    refuse("connect-origin-form", get(method=b"CONNECT"), METHOD),
    refuse("trace", get(method=b"TRACE"), METHOD),
    refuse("trace-with-body", post(b"Content-Length: {slen}\r\n", SMUGGLED).replace(b"POST", b"TRACE", 1), METHOD),
    refuse("track", get(method=b"TRACK"), METHOD),
    either("unknown-method", get(method=b"FROB"), METHOD),
    either("lowercase-method", get(method=b"get"), METHOD),
    refuse("method-with-parenthesis", get(method=b"GE(T")),
    # HTTP/0.9 has no headers, so no token either: 401 is as good a refusal.
    refuse("http-0.9", b"GET /api/jobs/?c={m}\r\n\r\n", VERSION | {401}),
    refuse("http-0.9-then-request", b"GET /api/jobs/?c={m}\r\n" + SMUGGLED, VERSION),
    refuse("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SMUGGLED, VERSION),
    either("http-2.0-version", b"GET " + T + b" HTTP/2.0\r\n" + HOST + b"{auth}\r\n", VERSION),
    refuse("http-version-lowercase", b"GET " + T + b" http/1.1\r\n" + HOST + b"{auth}\r\n", VERSION),
    refuse("http-version-1.10", b"GET " + T + b" HTTP/1.10\r\n" + HOST + b"{auth}\r\n", VERSION),
    refuse("http-version-garbage", b"GET " + T + b" HTTQ/1.1\r\n" + HOST + b"{auth}\r\n", VERSION),
    either("http-version-1.2", b"GET " + T + b" HTTP/1.2\r\n" + HOST + b"{auth}\r\n", VERSION),
    either("double-space-in-request-line", b"GET  " + T + b" HTTP/1.1\r\n" + HOST + b"{auth}\r\n"),
    refuse("tab-in-request-line", b"GET\t" + T + b" HTTP/1.1\r\n" + HOST + b"{auth}\r\n"),
    refuse("space-in-target", get(target=T + b" x")),
    refuse("nul-in-target", get(target=T + b"\x00x")),
    refuse("control-byte-in-target", get(target=T + b"\x01x")),
    refuse("non-ascii-in-target", get(target=T + b"\xff")),
    refuse("fragment-in-target", get(target=T + b"#frag")),
    refuse("fragment-hides-path", get(target=b"/public#/../api/jobs/?c={m}")),
    refuse("utf8-in-target", get(target=T + b"&n=caf\xc3\xa9")),
    refuse("target-just-over-limit", get(target=T + b"&x=" + b"a" * 20_480), TOO_BIG_HEAD),
    refuse("target-without-slash", get(target=b"api/jobs/?c={m}")),
    refuse("leading-empty-line-garbage", b"\x00\x01\x02" + get()),
    # -- size limits -------------------------------------------------------------------------------
    refuse("long-request-line", get(target=T + b"&x=" + b"a" * 100_000), TOO_BIG_HEAD),
    refuse("long-header-value", header(b"X-Note: " + b"a" * 100_000), TOO_BIG_HEAD),
    refuse("long-header-name", header(b"X-" + b"n" * 30_000 + b": a"), TOO_BIG_HEAD),
    refuse("too-many-headers", get(b"".join(b"X-N%d: v\r\n" % i for i in range(200))), TOO_BIG_HEAD),
    either("many-large-headers", get(b"".join(b"X-N%d: %s\r\n" % (i, b"v" * 8000) for i in range(60))), TOO_BIG_HEAD),
    # -- pipelining after a refusal ----------------------------------------------------------------
    refuse("pipelined-after-cl-te", post(b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n") + SMUGGLED),
    refuse("pipelined-after-obs-fold", header(b"X-Note: a\r\n b") + SMUGGLED),
    refuse("pipelined-after-bad-chunk", chunked(b"zz\r\n") + SMUGGLED),
    refuse("pipelined-after-oversized-body", cl(b"209715200", b"") + SMUGGLED, frozenset({413})),
    refuse("pipelined-after-bad-version", b"GET " + T + b" HTTP/1.10\r\n" + HOST + b"{auth}\r\n" + SMUGGLED, VERSION),
    refuse("pipelined-after-long-header", header(b"X-Note: " + b"a" * 100_000) + SMUGGLED, TOO_BIG_HEAD),
    refuse("pipelined-after-nul", header(b"X-Note: \x00") + SMUGGLED),
    # A whole request, then bytes that cannot start another, in the same write: the whole one
    # is answered, or both refused with one 400 (aiohttp's way) - never silence.
    either("pipelined-garbage-after-whole-request", get() + b"hello", BAD),
    either("pipelined-nul-after-whole-request", get() + b"\x00\x00\r\n", BAD),
    forward("pipelined-partial-request-after-whole-request", get() + b"GET /x HT"),
    # -- Expect ------------------------------------------------------------------------------------
    forward("expect-100-continue-with-body", post(b"Expect: 100-continue\r\nContent-Length: 5\r\n", b"hello"), body=b"hello"),
    either("expect-unknown", post(b"Expect: something-else\r\nContent-Length: 5\r\n", b"hello"), frozenset({400, 417}), body=b"hello"),
    either("expect-100-continue-http10", b"POST " + T + b" HTTP/1.0\r\n" + HOST + b"{auth}Expect: 100-continue\r\nContent-Length: 5\r\n\r\nhello", BAD, body=b"hello"),
    refuse("expect-100-continue-cl-te", post(b"Expect: 100-continue\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n")),
    # -- upgrades ----------------------------------------------------------------------------------
    either("upgrade-h2c", get(b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"), BAD),
    forward("websocket", get(WS)),
    either("websocket-bad-key", get(WS.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"not base64!"))),
    either("websocket-no-version", get(WS.replace(b"Sec-WebSocket-Version: 13\r\n", b""))),
    refuse("websocket-with-body", get(WS + b"Content-Length: 5\r\n") + b"hello"),
    refuse("websocket-with-body-a-request", get(WS + b"Content-Length: {slen}\r\n") + SMUGGLED),
    refuse("websocket-chunked-body", get(WS + b"Transfer-Encoding: chunked\r\n") + b"{shex}\r\n" + SMUGGLED + b"\r\n0\r\n\r\n"),
    refuse("websocket-body-upgrade-only", get(b"Upgrade: websocket\r\nContent-Length: {slen}\r\n") + SMUGGLED),
    refuse("h2c-with-body", post(b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: {slen}\r\n", SMUGGLED)),
    refuse("upgrade-twice-conflicting", get(WS.replace(b"Upgrade: websocket\r\n", b"Upgrade: websocket\r\nUpgrade: h2c\r\n"))),
    refuse("upgrade-twice-same", get(WS + b"Upgrade: websocket\r\n")),
    refuse("connection-upgrade-and-close", get(WS.replace(b"Connection: Upgrade\r\n", b"Connection: Upgrade\r\nConnection: close\r\n"))),
    refuse("connection-close-and-keep-alive", get(b"Connection: close\r\nConnection: keep-alive\r\n")),
    refuse("connection-close-keep-alive-list", header(b"Connection: keep-alive, close")),
    forward("connection-keep-alive-and-upgrade-token-alone", header(b"Connection: keep-alive, TE\r\nTE: trailers")),
    either("upgrade-without-connection", get(b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"), BAD),
    # -- identity spoofing: forwarded with the gateway's identity only ----------------------------
    forward("spoof-x-remote-user", header(b"X-Remote-User: system:masters")),
    forward("spoof-x-remote-group", header(b"X-Remote-Group: system:masters")),
    forward("spoof-both-identity-headers", get(b"X-Remote-User: admin\r\nX-Remote-Group: system:masters\r\n")),
    forward("spoof-x-remote-user-underscores", header(b"x_remote_user: admin")),
    forward("spoof-x-remote-group-underscores", header(b"X_Remote_Group: system:masters")),
    forward("spoof-x-remote-user-uppercase", header(b"X-REMOTE-USER: admin")),
    forward("spoof-x-remote-extra", header(b"X-Remote-Extra-Scopes: admin")),
    forward("spoof-x-remote-user-twice", get(b"X-Remote-User: admin\r\nX-Remote-User: stolen\r\n")),
    forward("spoof-x-ray-authorization", header(b"X-Ray-Authorization: Bearer stolen")),
    forward("spoof-ray-cookie", header(b"Cookie: ray-authentication-token=stolen")),
    forward("spoof-ray-cookie-among-others", header(b"Cookie: a=1; ray-authentication-token=stolen; b=2")),
    forward("spoof-ray-cookie-space-separated", header(b"Cookie: a=1 ray-authentication-token=stolen")),
    forward("spoof-ray-cookie-second-header", get(b"Cookie: a=1\r\nCookie: ray-authentication-token=stolen\r\n")),
    forward("spoof-proxy-authorization", header(b"Proxy-Authorization: Bearer stolen")),
    forward("spoof-identity-named-hop-by-hop", get(b"Connection: X-Remote-User\r\nX-Remote-User: admin\r\n")),
    refuse("second-authorization-header", get(b"Authorization: Bearer stolen\r\n")),
    refuse("second-authorization-header-valid-last", b"GET " + T + b" HTTP/1.1\r\nHost: ray\r\nAuthorization: Bearer stolen\r\n{auth}\r\n"),
    refuse("authorization-twice-same-token", b"GET " + T + b" HTTP/1.1\r\nHost: ray\r\nAuthorization: Bearer {tok}\r\nAuthorization: Bearer {tok}\r\n\r\n"),
    refuse("authorization-credential-list", b"GET " + T + b" HTTP/1.1\r\nHost: ray\r\nAuthorization: Bearer {tok}, Bearer stolen\r\n\r\n"),
    refuse("ray-cookie-twice-one-header", header(b"Cookie: ray-authentication-token={tok}; ray-authentication-token=stolen")),
    refuse("ray-cookie-twice-two-headers", get(b"Cookie: ray-authentication-token=stolen\r\nCookie: a=1; ray-authentication-token={tok}\r\n")),
    refuse("session-cookie-twice", header(b"Cookie: raygate-session=a; raygate-session=b")),
    refuse("authorization-name-trailing-space", b"GET " + T + b" HTTP/1.1\r\nHost: ray\r\nAuthorization : Bearer {tok}\r\n\r\n", frozenset({400, 401})),
    refuse("basic-authorization-only", b"GET " + T + b" HTTP/1.1\r\nHost: ray\r\nAuthorization: Basic YWRtaW46YWRtaW4=\r\n\r\n", frozenset({401})),
    refuse("oversized-token", b"GET " + T + b" HTTP/1.1\r\nHost: ray\r\nAuthorization: Bearer " + b"a" * 17_000 + b"\r\n\r\n", frozenset({400, 401, 431})),
    refuse("token-in-query-only", b"GET " + T + b"&access_token={tok} HTTP/1.1\r\nHost: ray\r\n\r\n", frozenset({401})),
    # -- bodies (refused with no token or no rights, never forwarded) ------------------------------
    forward("post-with-length", cl(b"5"), body=b"hello"),
    forward("post-chunked", chunked(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), body=b"hello world"),
    forward("post-body-is-a-request", post(b"Content-Length: {slen}\r\n", SMUGGLED), body=None),
    forward("post-chunked-body-is-a-request", chunked(b"{shex}\r\n" + SMUGGLED + b"\r\n0\r\n\r\n"), body=None),
    forward("get-with-body", get(b"Content-Length: 5\r\n") + b"hello", body=b"hello"),
    forward("delete-with-body", get(b"Content-Length: 5\r\n", method=b"DELETE") + b"hello", body=b"hello"),
    forward("post-64k-body", cl(b"65536", b"x" * 65536), body=b"x" * 65536),
    forward("post-empty-chunked", chunked(b"0\r\n\r\n"), body=b""),
    # -- targets, forwarded byte for byte ----------------------------------------------------------
    forward("encoded-dot-segments", get(target=b"/api/jobs/%2e%2e/x?c={m}"), target=b"/api/jobs/%2e%2e/x?c={m}"),
    forward("query-kept", get(target=b"/api/jobs/?c={m}&a=1&b=%20"), target=b"/api/jobs/?c={m}&a=1&b=%20"),
    forward("static-dot-dot-is-not-the-ui-shell", get(target=b"/static/../api/jobs/?c={m}"), target=b"/static/../api/jobs/?c={m}"),
    forward("static-encoded-dot-dot-is-not-the-ui-shell", get(target=b"/static/%2e%2e/api/jobs/?c={m}"), target=b"/static/%2e%2e/api/jobs/?c={m}"),
    forward("double-slash", get(target=b"//api/jobs/?c={m}"), target=b"//api/jobs/?c={m}"),
    forward("head", get(method=b"HEAD")),
    forward("put", get(b"Content-Length: 2\r\n", method=b"PUT") + b"{}", body=b"{}"),
    forward("patch", get(b"Content-Length: 2\r\n", method=b"PATCH") + b"{}", body=b"{}"),
    forward("http10-keep-alive", b"GET " + T + b" HTTP/1.0\r\n" + HOST + b"{auth}Connection: keep-alive\r\n\r\n"),
]  # fmt: skip
