"""`--workers`: how many gateway processes a flag or the YAML asks for, and the flag's parsing."""

from __future__ import annotations

import os

import pytest

from raygate.cli.serve import _split_workers
from raygate.config import config_from_mapping
from raygate.errors import ConfigError
from raygate.workers import worker_count


def test_auto_is_the_cores_this_process_may_use() -> None:
    assert worker_count("auto") == len(os.sched_getaffinity(0))
    assert worker_count("AUTO") == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("value", "expected"), [(None, 1), (1, 1), ("3", 3), (8, 8)])
def test_numbers_are_taken_as_they_are(value: int | str | None, expected: int) -> None:
    assert worker_count(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "--workers must be at least 1, not 0"),
        (-2, "--workers must be at least 1, not -2"),
        ("two", "--workers must be a number or auto, not 'two'"),
    ],
)
def test_bad_counts_are_one_line_errors(value: int | str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        worker_count(value)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("args", "rest", "workers"),
    [
        (["--config", "c.yaml", "--workers", "2"], ["--config", "c.yaml"], "2"),
        (["--workers=auto", "--upstream=http://u/"], ["--upstream=http://u/"], "auto"),
        (["--upstream=http://u/"], ["--upstream=http://u/"], None),
    ],
)
def test_serve_takes_workers_beside_either_form_of_flags(
    args: list[str], rest: list[str], workers: str | None
) -> None:
    assert _split_workers(args) == (rest, workers)


def test_serve_workers_without_a_value_is_an_error() -> None:
    with pytest.raises(ConfigError, match="flag needs an argument: --workers"):
        _split_workers(["--workers"])


def test_the_yaml_takes_workers_and_refuses_zero() -> None:
    base = {"upstream": {"url": "http://127.0.0.1:8443"}}
    assert config_from_mapping({**base, "workers": "auto"}, source="t").workers == "auto"
    assert config_from_mapping({**base, "workers": 4}, source="t").workers == 4
    assert config_from_mapping(base, source="t").workers == 1
    with pytest.raises(ConfigError, match="workers must be at least 1"):
        config_from_mapping({**base, "workers": 0}, source="t")
