"""Durations: Go's syntax, one parser for the CLI's `--duration`, kube-rbac-proxy's flags and
raygate's config (which also takes a plain number of seconds)."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from raygate.durations import duration_seconds, format_duration, parse_duration
from raygate.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1h", timedelta(hours=1)),
        ("30m", timedelta(minutes=30)),
        ("3600s", timedelta(hours=1)),
        ("1h30m", timedelta(minutes=90)),
        ("10m0s", timedelta(minutes=10)),
        ("1.5h", timedelta(minutes=90)),
        ("48h", timedelta(hours=48)),
        ("90000ms", timedelta(seconds=90)),
        ("0", timedelta(0)),
    ],
)
def test_go_durations_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected



@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3600", r'invalid duration "3600": missing unit; write e\.g\. 3600s'),
        ("", r"expected a number with a unit"),
        ("1d", r'invalid duration "1d"'),
        ("h", r'invalid duration "h"'),
        ("1h 30m", r'invalid duration "1h 30m"'),
        ("one hour", r'invalid duration "one hour"'),
    ],
)
def test_bad_durations_are_refused_with_a_hint(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_duration(text)



@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (30, 30.0),
        (0.5, 0.5),
        ("45", 45.0),
        ("30s", 30.0),
        ("2m", 120.0),
        ("1h30m", 5400.0),
        ("1m30.5s", 90.5),
        ("250ms", 0.25),
        ("0", 0.0),
    ],
)
def test_config_durations_are_seconds_or_go_durations(value: object, seconds: float) -> None:
    assert duration_seconds(value) == pytest.approx(seconds)



@pytest.mark.parametrize("value", ["5x", "m", "1m 30s", "s30", "", "-1", "-5m", "nan", "inf", math.inf, math.nan, -0.5, True, None, [1]])
def test_bad_config_durations_are_value_errors(value: object) -> None:
    with pytest.raises(ValueError):
        duration_seconds(value)



@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(hours=48), "48h"),
        (timedelta(minutes=90), "1h30m"),
        (timedelta(seconds=61), "1m1s"),
        (timedelta(0), "0s"),
    ],
)
def test_durations_are_formatted_in_go_short_form(duration: timedelta, text: str) -> None:
    assert format_duration(duration) == text
    assert parse_duration(text) == duration
