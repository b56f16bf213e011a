"""Small value types of the configuration: durations, `host:port`, HTTP header names, TLS
versions by Go's names. Pure: each is a function from text to value or a ValueError, so pydantic
reports it against the field that held it."""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Mapping
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BeforeValidator

from raygate.durations import duration_seconds

# Seconds; written as a number or a Go duration ("90s", "2m", "1h30m").
Duration = Annotated[float, BeforeValidator(duration_seconds)]


def split_host_port(address: str) -> tuple[str, int]:
    """`host:port`, `[::1]:8443` or `:8443` (all interfaces) -> (host, port); ValueError if not."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"{address!r} is not HOST:PORT")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} is out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{address!r}: write an IPv6 host in brackets, e.g. [::1]:8265")
    return host, port


_HEADER_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def header_name(value: object) -> object:
    """An HTTP field name (RFC 9110 token), or ValueError."""
    if isinstance(value, str) and not _HEADER_TOKEN.match(value):
        raise ValueError(f"{value!r} is not a valid HTTP header name")
    return value


HeaderName = Annotated[str, BeforeValidator(header_name)]


def one_or_many(value: object) -> object:
    """Accept one string where a list is expected (`mode: kubernetes`)."""
    return (value,) if isinstance(value, str) else value


# Go's names, as kube-rbac-proxy's `--tls-min-version` takes them.
TLS_VERSIONS: Mapping[str, ssl.TLSVersion] = {
    "VersionTLS10": ssl.TLSVersion.TLSv1,
    "VersionTLS11": ssl.TLSVersion.TLSv1_1,
    "VersionTLS12": ssl.TLSVersion.TLSv1_2,
    "VersionTLS13": ssl.TLSVersion.TLSv1_3,
}


_SIZE_UNITS = {
    "": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
}
_SIZE = re.compile(r"\s*(\d+)\s*([kmgKMG]i?)?[bB]?\s*")


def byte_size(value: object) -> object:
    """Bytes, or a number with a unit as Kubernetes quantities write them: `100Mi`, `1Gi`,
    `10M` (powers of 1000; `K`/`KB`/`MB` too). ValueError for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size {value} is negative")
        return value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        if match is None:
            raise ValueError(f"{value!r} is not a size: use bytes or e.g. 100Mi, 10M")
        return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()]
    return value


ByteSize = Annotated[int, BeforeValidator(byte_size)]
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_RATE_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600}
_RATE_UNITS["hour"] = 3600


def parse_rate(value: object) -> float | None:
    """`10/s`, `600/m`, `1000/h` -> calls per second; None or "" -> no limit."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        rate = float(value)
    elif isinstance(value, str):
        match = _RATE.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a rate (write e.g. '10/s', '600/m' or '1000/h')")
        rate = float(match.group(1)) / _RATE_UNITS[match.group(2)]
    else:
        raise ValueError("a rate is written like '10/s', '600/m' or '1000/h'")
    if rate <= 0:
        raise ValueError("a rate limit must be above zero (leave it out for no limit)")
    return rate


# Calls per second; written "10/s", "600/m" or "1000/h".
Rate = Annotated[float | None, BeforeValidator(parse_rate)]


def is_loopback_host(host: str | None) -> bool:
    """localhost, 127.0.0.0/8 or ::1: a provider on this machine (development and tests)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_issuer_url(url: str) -> str | None:
    """Why `url` cannot be an issuer, or None: https, or http on a loopback address only."""
    parts = urlsplit(url)
    if not parts.hostname:
        return f"{url!r} is not a URL"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and is_loopback_host(parts.hostname):
        return None
    return f"{url!r}: the OIDC issuer must be an https:// URL (http only on a loopback address)"
