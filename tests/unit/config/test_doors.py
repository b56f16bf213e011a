"""The doors' settings: YAML sections, `raygate serve` flags and rates."""

from __future__ import annotations

import pytest

from raygate.config import config_from_mapping, config_from_serve_args, parse_rate
from raygate.errors import ConfigError

KRP = ["--insecure-listen-address=0.0.0.0:8265", "--upstream=http://127.0.0.1:8443/"]


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("10/s", 10.0), ("600/m", 10.0), ("36/h", 0.01), ("1.5/second", 1.5), (None, None)],
)
def test_rates(text: str | None, per_second: float | None) -> None:
    assert parse_rate(text) == (pytest.approx(per_second) if per_second else None)


@pytest.mark.parametrize("text", ["10", "ten/s", "10/day", "0/s", "-1/s"])
def test_bad_rates_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)


def test_the_doors_in_yaml() -> None:
    config = config_from_mapping(
        {
            "upstream": {"url": "http://127.0.0.1:8443"},
            "client": {
                "listen": "0.0.0.0:10001",
                "upstream": "127.0.0.1:10002",
                "recheckInterval": "5s",
            },
            "serve": {
                "listen": "0.0.0.0:8000",
                "upstream": "http://127.0.0.1:8001",
                "rateLimit": "600/m",
            },
        }
    )
    assert config.client is not None and config.client.recheck_interval == 5.0
    assert config.serve is not None and config.serve.rate_limit == pytest.approx(10.0)


def test_the_doors_stay_closed_by_default() -> None:
    config = config_from_mapping({"upstream": {"url": "http://127.0.0.1:8443"}})
    assert config.client is None and config.serve is None


def test_door_flags_next_to_kube_rbac_proxys() -> None:
    config = config_from_serve_args(
        [
            *KRP,
            "--client-listen",
            "0.0.0.0:10001",
            "--client-upstream=127.0.0.1:10002",
            "--serve-listen=0.0.0.0:8000",
            "--serve-upstream",
            "http://127.0.0.1:8001",
            "--serve-rate-limit=5/s",
        ]
    )
    assert config.client is not None and config.client.upstream == "127.0.0.1:10002"
    assert config.serve is not None and config.serve.rate_limit == 5.0
    assert config.upstream.url == "http://127.0.0.1:8443/"


def test_door_flags_next_to_a_config_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "gateway.yaml"
    path.write_text("upstream: {url: 'http://127.0.0.1:8443'}\n")
    config = config_from_serve_args(
        ["--config", str(path), "--serve-listen=:8000", "--serve-upstream=http://127.0.0.1:1"]
    )
    assert config.serve is not None and config.serve.listen == ":8000"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--serve-listen=0.0.0.0:8000"], "--serve-upstream is needed"),
        (["--client-upstream=127.0.0.1:1"], "--client-listen is needed"),
        (
            ["--client-listen=x", "--client-upstream=127.0.0.1:1"],
            "--client-listen: 'x' is not HOST:PORT",
        ),
        (
            ["--serve-listen=:8000", "--serve-upstream=ftp://x"],
            "--serve-upstream: 'ftp://x' is not an http:// URL",
        ),
        (
            ["--serve-listen=:8000", "--serve-upstream=http://x:1", "--serve-rate-limit=fast"],
            "--serve-rate-limit",
        ),
        (
            ["--client-listen=:1", "--client-upstream=x:2", "--client-recheck-interval=1h"],
            "at most 30s",
        ),
    ],
)
def test_bad_door_flags_are_one_line_errors(flags: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_serve_args([*KRP, *flags])
    assert message in str(err.value)
    assert "\n" not in str(err.value)
