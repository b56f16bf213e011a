"""The benchmarks' one results format: each script writes a `Result`, `RESULTS.md` is rendered
from all of them.

A script builds a `Result` (tables of figures, targets with pass/fail, raw data), then calls
`result.write(results_dir)`, which writes `results/<name>.json`. `python benchmarks/report.py`
(also the last step of `make bench`) renders every `results/*.json` into `RESULTS.md`.

    from report import Result, Table, common_arguments

    args = common_arguments(__doc__).parse_args()      # --smoke, --results-dir
    result = Result("tokens", "Service-account token verification", smoke=args.smoke)
    table = result.table("Verifications per second", ["token", "per second"])
    table.add("valid", 13600)
    result.target("valid tokens per second", 13600, ">= 10000", 13600 >= 10000)
    result.data["raw"] = {...}
    result.write(args.results_dir)

Scripts run as `python benchmarks/bench_x.py`, so `benchmarks/` is on sys.path and `import
report` works; nothing here needs raygate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FORMAT = "raygate-bench/1"
HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
RESULTS_MD = HERE / "RESULTS.md"

Cell = str | int | float | None


@dataclass
class Table:
    """One table of RESULTS.md: a title, column names, rows of cells, notes under it."""

    title: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: Cell) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{self.title}: {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(list(cells))

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": self.columns,
            "rows": self.rows,
            "notes": self.notes,
        }


@dataclass
class Target:
    """A figure the project promises, what it must be, and whether this run met it.

    `passed` is None when the figure could not be measured (the reason goes in `measured`).
    """

    what: str
    measured: Cell
    target: str
    passed: bool | None

    def to_json(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "measured": self.measured,
            "target": self.target,
            "pass": self.passed,
        }


@dataclass
class Result:
    """Everything one benchmark script reports."""

    name: str
    title: str
    about: str = ""
    smoke: bool = False
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    def table(self, title: str, columns: list[str]) -> Table:
        table = Table(title, columns)
        self.tables.append(table)
        return table

    def target(self, what: str, measured: Cell, target: str, passed: bool | None) -> None:
        self.targets.append(Target(what, measured, target, passed))

    def skip(self, reason: str) -> None:
        """The whole benchmark could not run here (a tool is missing): say why."""
        self.skipped = reason

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "title": self.title,
            "about": self.about,
            "smoke": self.smoke,
            "skipped": self.skipped,
            "started": datetime.fromtimestamp(self.started, UTC).isoformat(timespec="seconds"),
            "seconds": round(time.time() - self.started, 1),
            "environment": environment(),
            "tables": [table.to_json() for table in self.tables],
            "targets": [target.to_json() for target in self.targets],
            "notes": self.notes,
            "data": self.data,
        }

    def write(self, results_dir: Path | None = None) -> Path:
        directory = results_dir or RESULTS_DIR
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.name}.json"
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        print(f"wrote {path}", file=sys.stderr)
        return path


def environment() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_1m": round(load[0], 2),
    }


def common_arguments(doc: str | None) -> argparse.ArgumentParser:
    """The flags every benchmark script takes."""
    parser = argparse.ArgumentParser(
        description=(doc or "").strip().splitlines()[0] if doc else None
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="about a second per path, to check the script works; figures mean nothing",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS_DIR,
        help=f"where <name>.json goes (default {RESULTS_DIR})",
    )
    return parser


# -- reading and checking ----------------------------------------------------------------------


class FormatError(ValueError):
    """A results file that does not follow FORMAT."""


def load(path: Path) -> dict[str, Any]:
    """A results file, checked against the format (raises FormatError with what is wrong)."""
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise FormatError(f"{path}: {err}") from err
    check(document, str(path))
    return document


def check(document: Any, where: str = "result") -> None:
    def need(condition: bool, what: str) -> None:
        if not condition:
            raise FormatError(f"{where}: {what}")

    need(isinstance(document, dict), "not a JSON object")
    need(document.get("format") == FORMAT, f"format is not {FORMAT!r}")
    for key, kind in (
        ("name", str),
        ("title", str),
        ("smoke", bool),
        ("tables", list),
        ("targets", list),
        ("environment", dict),
        ("data", dict),
    ):
        need(isinstance(document.get(key), kind), f"{key!r} missing or not a {kind.__name__}")
    need(
        document.get("skipped") is None or isinstance(document["skipped"], str),
        "'skipped' is not a string",
    )
    for table in document["tables"]:
        need(
            isinstance(table, dict) and isinstance(table.get("title"), str), "a table lacks a title"
        )
        columns = table.get("columns")
        need(isinstance(columns, list) and bool(columns), f"table {table['title']!r}: no columns")
        for row in table.get("rows", []):
            need(
                isinstance(row, list) and len(row) == len(columns),
                f"table {table['title']!r}: a row has {len(row)} cells for {len(columns)} columns",
            )
            need(
                all(cell is None or isinstance(cell, str | int | float) for cell in row),
                f"table {table['title']!r}: a cell is not a number or a string",
            )
    for target in document["targets"]:
        need(
            isinstance(target, dict)
            and isinstance(target.get("what"), str)
            and isinstance(target.get("target"), str)
            and target.get("pass") in (True, False, None),
            f"a target is malformed: {target!r}",
        )


# -- RESULTS.md --------------------------------------------------------------------------------


def _cell(value: Cell) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _verdict(passed: bool | None) -> str:
    return {True: "**pass**", False: "**FAIL**", None: "not measured"}[passed]


def render(documents: list[dict[str, Any]], header: str = "", footer: str = "") -> str:
    lines = [
        "# Benchmark results",
        "",
        "Generated by `make bench` (benchmarks/run.py, then benchmarks/report.py) from",
        "`benchmarks/results/*.json`; do not edit by hand. How each figure is measured:",
        "benchmarks/README.md.",
        "",
    ]
    if header:
        lines += [header, ""]
    targets = [(doc, t) for doc in documents for t in doc["targets"]]
    if targets:
        lines += [
            "## Targets",
            "",
            "| benchmark | target | measured | wanted | result |",
            "|---|---|---|---|---|",
        ]
        for doc, t in targets:
            lines.append(
                f"| {doc['name']} | {_cell(t['what'])} | {_cell(t['measured'])} "
                f"| {_cell(t['target'])} | {_verdict(t['pass'])} |"
            )
        lines.append("")
    for doc in documents:
        env = doc["environment"]
        lines += [f"## {doc['title']} (`{doc['name']}`)", ""]
        if doc.get("about"):
            lines += [doc["about"], ""]
        stamp = (
            f"Run {doc.get('started', '?')} in {doc.get('seconds', '?')} s; Python "
            f"{env.get('python')}, {env.get('usable_cpus')} usable of {env.get('cpus')} CPUs, "
            f"load average {env.get('load_average_1m')} at the start."
        )
        if doc["smoke"]:
            stamp += " **Smoke run: the figures mean nothing.**"
        lines += [stamp, ""]
        if doc.get("skipped"):
            lines += [f"Skipped: {doc['skipped']}", ""]
        for table in doc["tables"]:
            lines += [f"**{table['title']}**", ""]
            lines.append("| " + " | ".join(table["columns"]) + " |")
            lines.append("|" + "---|" * len(table["columns"]))
            for row in table["rows"]:
                lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
            lines.append("")
            lines += [f"- {note}" for note in table.get("notes", [])]
            if table.get("notes"):
                lines.append("")
        if doc.get("notes"):
            lines += [f"- {note}" for note in doc["notes"]] + [""]
    if footer:
        lines += [footer]
    return "\n".join(lines).rstrip() + "\n"


def render_directory(results_dir: Path = RESULTS_DIR, header: str = "", footer: str = "") -> str:
    """RESULTS.md for every results file in a directory (sorted by name)."""
    # soak.json (benchmarks/soak.py) is a time series of its own, not a side-by-side result.
    paths = [p for p in sorted(results_dir.glob("*.json")) if p.name != "soak.json"]
    documents = [load(path) for path in paths]
    return render(documents, header, footer)


def main() -> None:
    parser = argparse.ArgumentParser(description="Render benchmarks/results/*.json to RESULTS.md")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--output", type=Path, default=RESULTS_MD)
    parser.add_argument("--header", default="", help="a paragraph put above the tables")
    args = parser.parse_args()
    args.output.write_text(render_directory(args.results_dir, args.header))
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
