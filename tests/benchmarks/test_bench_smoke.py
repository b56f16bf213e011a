"""Every benchmark runs for a second or so per path and writes a well-formed results file.

No thresholds: a smoke run's figures mean nothing on a shared machine. The speed targets are
checked by `make bench` (benchmarks/RESULTS.md), not here.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import report  # noqa: E402

SCRIPTS = sorted(BENCHMARKS.glob("bench_*.py"))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], dict[str, Any]]:
    """Runs a script's smoke once per module, however many tests look at its result."""
    documents: dict[Path, dict[str, Any]] = {}

    def run(script: Path) -> dict[str, Any]:
        if script not in documents:
            documents[script] = run_smoke(script, tmp_path_factory.mktemp(script.stem))
        return documents[script]

    return run


def run_smoke(script: Path, results: Path, timeout: float = 240) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(script), "--smoke", "--results-dir", str(results)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, (
        f"{script.name} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    )
    written = list(results.glob("*.json"))
    assert len(written) == 1, f"{script.name} wrote {written}"
    document = report.load(written[0])  # raises FormatError if malformed
    assert document["smoke"] is True
    return document


def test_every_benchmark_script_is_smoke_tested() -> None:
    assert {s.name for s in SCRIPTS} >= {
        "bench_gateway.py",
        "bench_ray_overhead.py",
        "bench_workers.py",
        "bench_memory.py",
    }


@pytest.mark.parametrize(
    "script",
    [pytest.param(s, id=s.stem) for s in SCRIPTS],
)
def test_benchmark_smoke_run_writes_a_well_formed_result(
    script: Path, smoke_run: Callable[[Path], dict[str, Any]]
) -> None:
    document = smoke_run(script)
    if document["skipped"]:
        pytest.skip(f"{script.name}: {document['skipped']}")
    assert document["tables"], f"{script.name} reported no table"
    assert all(table["rows"] for table in document["tables"]), "a table has no rows"
    markdown = report.render([document])
    assert document["title"] in markdown


def test_gateway_smoke_run_compares_every_path_with_nginx(
    smoke_run: Callable[[Path], dict[str, Any]],
) -> None:
    document = smoke_run(BENCHMARKS / "bench_gateway.py")
    if document["skipped"]:
        pytest.skip(str(document["skipped"]))
    labels = {row["path"] for row in document["data"]["measurements"]}
    assert labels == {
        "direct (tiny upstream)",
        "nginx reverse proxy",
        "naive aiohttp+uvloop pass-through",
        "minimal uvloop+httptools proxy (issue 7's yardstick)",
        "raygate, valid token, cached decision",
        "raygate, a token never seen before each request",
        "raygate, untrusted token (401)",
        "raygate, no role (403)",
    }
    for row in document["data"]["measurements"]:
        assert row["requests"] > 0 and row["requests_per_second"] > 0, row
        assert row["server_cpu_us_per_request"] >= 0, row
    targets = {t["what"]: t for t in document["targets"]}
    assert any("÷ nginx" in what for what in targets)
    assert all(t["pass"] in (True, False) for t in targets.values())


def test_runner_renders_results_md_from_the_results(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "run.py"),
            "--smoke",
            "--no-profile",
            "--only",
            "rbac",
            "--only",
            "tokens",
            "--results-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    markdown = (tmp_path / "RESULTS.md").read_text()
    assert "RBAC decisions" in markdown and "token verification" in markdown
    assert "Smoke run" in markdown


def test_a_malformed_result_is_refused(tmp_path: Path) -> None:
    result = report.Result("broken", "Broken", smoke=True)
    result.table("t", ["a", "b"]).rows.append([1])  # one cell for two columns
    path = result.write(tmp_path)
    with pytest.raises(report.FormatError, match="1 cells for 2 columns"):
        report.load(path)


def test_hot_path_profile_writes_a_flame_graph(tmp_path: Path) -> None:
    import profile_hotpath

    if profile_hotpath.py_spy() is None:
        pytest.fail("py-spy is not installed; run `make test-deps`")
    done = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "profile_hotpath.py"),
            "--seconds",
            "1",
            "--output-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "raygate-hotpath.svg").read_text().lstrip().startswith("<?xml")
    summary = (tmp_path / "raygate-hotpath.txt").read_text()
    assert "raygate/" in summary, summary
