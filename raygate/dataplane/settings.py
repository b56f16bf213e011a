"""What the data plane needs beyond the pipeline: where the upstream is, limits, deadlines."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from raygate.pipeline import PipelineSettings

# Ray caps job packages at 100 MiB; the rest is multipart/JSON slack.
DEFAULT_MAX_BODY_BYTES = 100 * 1024 * 1024 + 1024 * 1024
# One header line (or the request line). OIDC tokens with many groups are long.
DEFAULT_MAX_HEADER_BYTES = 20 * 1024
# Header lines per request: bounds what one connection can make the gateway hold before any
# authentication.
MAX_HEADERS = 64
# A client idle this long between requests, or still sending its headers, is disconnected.
DEFAULT_IDLE_TIMEOUT = 30.0


@dataclass(frozen=True)
class UpstreamAddress:
    scheme: str
    host: str
    port: int
    host_header: str  # what the Host header of forwarded requests says
    base_path: str  # a path prefix of the upstream URL, prepended to every target

    @classmethod
    def parse(cls, url: str) -> UpstreamAddress:
        parts = urlsplit(str(url))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream must be an http(s) URL, not {url!r}")
        default = 443 if parts.scheme == "https" else 80
        port = parts.port or default
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == default else f"{shown}:{port}"
        return cls(parts.scheme, host, port, host_header, parts.path.rstrip("/"))


@dataclass
class GatewaySettings:
    upstream: str
    pipeline: PipelineSettings
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_headers: int = MAX_HEADERS
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    upstream_connect_timeout: float = 10.0
    # Waiting for the upstream's response headers, the upload included (then 504). None: no
    # limit. A response under way is never cut: a log stream may be silent for minutes.
    upstream_headers_timeout: float | None = 300.0
    # TLS to an https upstream: its CA and raygate's client certificate (None: system CAs).
    upstream_ssl: ssl.SSLContext | None = None
    # Idle keep-alive connections to the upstream: at most this many, for at most this long
    # (well under aiohttp's 75 s, so Ray never closes one the gateway is about to use).
    upstream_pool_size: int = 256
    upstream_idle_seconds: float = 15.0
