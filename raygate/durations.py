"""Durations, the one parser for them: Go's `time.ParseDuration` syntax (`90s`, `2m`, `1h30m`,
`250ms`), as kubectl's `--duration`, kube-rbac-proxy's duration flags and raygate's config take
them. Pure: no I/O, no state."""

from __future__ import annotations

import math
import re
from datetime import timedelta

from raygate.errors import ConfigError

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 MICRO SIGN
    "μs": 1e-6,  # U+03BC GREEK SMALL LETTER MU; Go accepts both
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_PLAIN_NUMBER = re.compile(r"\d+(\.\d*)?|\.\d+")


def parse_duration(text: str) -> timedelta:
    """`1h`, `30m`, `3600s`, `1h30m`, `1.5h`, `10m0s`, `-5m` -> timedelta (Go duration syntax).

    A bare number other than 0 has no unit and is refused, as Go and kubectl refuse it.
    Raises ConfigError with a one-line message that quotes the text.
    """
    raw = text.strip()
    body = raw[1:] if raw[:1] in "+-" else raw
    sign = -1.0 if raw.startswith("-") else 1.0
    if body == "0":
        return timedelta(0)
    if not body:
        raise ConfigError(f'invalid duration "{text}": expected a number with a unit, e.g. 1h')
    if _PLAIN_NUMBER.fullmatch(body):
        raise ConfigError(
            f'invalid duration "{text}": missing unit; write e.g. {body}s, {body}m or {body}h'
        )
    seconds = 0.0
    position = 0
    for match in _PART.finditer(body):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(body):
        raise ConfigError(
            f'invalid duration "{text}": use numbers with units h, m, s, ms, e.g. 1h30m'
        )
    return timedelta(seconds=sign * seconds)


def duration_seconds(value: object) -> float:
    """Seconds from a configuration value: a number of seconds (`30`, `0.5`, `"45"`) or a Go
    duration string. Negative and non-finite values are refused. Raises ValueError, which
    pydantic reports against the field."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("a duration is a number of seconds or a string like '30s' or '2m'")
    if isinstance(value, str):
        text = value.strip()
        if _PLAIN_NUMBER.fullmatch(text):
            seconds = float(text)
        else:
            try:
                seconds = parse_duration(text).total_seconds()
            except ConfigError as err:
                raise ValueError(str(err)) from None
    else:
        seconds = float(value)
    if not math.isfinite(seconds):
        raise ValueError("a duration must be a finite number of seconds")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def format_duration(duration: timedelta) -> str:
    """timedelta -> Go's short form for messages: 48h0m0s -> `48h`, 5400s -> `1h30m`."""
    total = int(duration.total_seconds())
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{v}{u}" for v, u in ((hours, "h"), (minutes, "m"), (seconds, "s")) if v]
    return "".join(parts) or "0s"
