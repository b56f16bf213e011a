"""`raygate serve` and `raygate up` take the audit flags; the YAML has them under `audit:`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from raygate.cli.serve import audit_for, split_audit_flags
from raygate.config import config_from_mapping
from raygate.errors import ConfigError
from raygate.observe.audit import AuditFailurePolicy, AuditFormat
from tests.conftest import executable, free_port

UPSTREAM = {"upstream": {"url": "http://127.0.0.1:8443"}}


def test_audit_flags_are_taken_out_of_kube_rbac_proxys_flags() -> None:
    rest, flags = split_audit_flags(
        ["--upstream=http://x/", "--audit-log", "-", "--audit-format=kubernetes", "-v=2"]
    )
    assert rest == ["--upstream=http://x/", "-v=2"]
    assert flags == {"log": "-", "format": "kubernetes"}
    with pytest.raises(ConfigError, match="flag needs an argument: --audit-max-size"):
        split_audit_flags(["--audit-max-size"])


def test_yaml_audit_section_then_flags_decide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAYGATE_AUDIT_LOG", raising=False)
    config = config_from_mapping(
        {
            **UPSTREAM,
            "audit": {
                "log": "/var/log/raygate/audit.log",
                "maxSize": "10Mi",
                "maxBackups": 3,
                "format": "kubernetes",
                "failurePolicy": "fail-open",
            },
        }
    )
    assert config.audit.max_size == 10 * 1024 * 1024
    assert config.audit.format is AuditFormat.KUBERNETES
    audit = audit_for(config, {"maxSize": "1M", "failurePolicy": "fail-closed"})
    assert (audit.log, audit.max_size, audit.max_backups) == (
        "/var/log/raygate/audit.log",
        10**6,
        3,
    )
    assert audit.failure_policy is AuditFailurePolicy.FAIL_CLOSED


def test_defaults_rotate_at_100_mib_keep_5_and_fail_closed() -> None:
    audit = config_from_mapping(UPSTREAM).audit
    assert (audit.log, audit.max_size, audit.max_backups) == (None, 100 * 1024 * 1024, 5)
    assert audit.failure_policy is AuditFailurePolicy.FAIL_CLOSED
    assert audit.format is AuditFormat.JSON


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"maxSize": "lots"}, "--audit-max-size: 'lots' is not a size"),
        ({"maxBackups": "-1"}, "--audit-max-backups"),
        ({"format": "xml"}, "--audit-format"),
        ({"failurePolicy": "maybe"}, "--audit-failure-policy"),
    ],
)
def test_bad_audit_flags_are_one_line_errors_naming_the_flag(
    flags: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        audit_for(config_from_mapping(UPSTREAM), flags)


def test_raygate_serve_refuses_a_bad_size_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            executable("raygate"),
            "serve",
            f"--insecure-listen-address=127.0.0.1:{free_port()}",
            "--upstream=http://127.0.0.1:1/",
            "--audit-max-size=huge",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "error: --audit-max-size: 'huge' is not a size: use bytes or e.g. 100Mi, 10M"
    ]


def test_raygate_up_refuses_a_bad_size_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [executable("raygate"), "up", "--port", str(free_port()), "--audit-max-size", "1 lot"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --audit-max-size:"), result.stderr
    assert not (tmp_path / ".raygate" / "ray.json").exists()
