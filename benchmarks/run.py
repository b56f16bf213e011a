"""`make bench`: every benchmarks/bench_*.py in turn, then the hot-path profile, then RESULTS.md.

Each script writes results/<name>.json in the shared format (report.py); a script that fails
is reported and the others still run; RESULTS.md is rendered from whatever results exist, and
the exit status is non-zero if any script failed.

    .venv/bin/python benchmarks/run.py                 # the full bench (6 to 7 minutes on 2 cores)
    .venv/bin/python benchmarks/run.py --smoke --results-dir /tmp/r --no-profile
    .venv/bin/python benchmarks/run.py --only gateway --only memory
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from report import RESULTS_DIR, RESULTS_MD, render_directory

HERE = Path(__file__).resolve().parent
PROFILES = HERE / "profiles"


def scripts(only: list[str]) -> list[Path]:
    found = sorted(HERE.glob("bench_*.py"))
    if only:
        found = [s for s in found if s.stem.removeprefix("bench_") in only or s.stem in only]
    return found


def profile_section(output: Path, top: int = 12) -> str:
    """The hot path's heaviest functions, from profiles/raygate-hotpath.txt, if it exists."""
    summary = PROFILES / "raygate-hotpath.txt"
    if not summary.exists():
        return ""
    taken = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(summary.stat().st_mtime))
    lines = summary.read_text().splitlines()
    head = (
        lines[: lines.index("## anywhere on the stack (inclusive)")]
        if ("## anywhere on the stack (inclusive)" in lines)
        else lines
    )
    relative = os.path.relpath(PROFILES, output.parent)
    return "\n".join(
        [
            "## Hot path profile (`profile_hotpath.py`, `make profile`)",
            "",
            f"py-spy, taken {taken}: flame graph [{relative}/raygate-hotpath.svg]"
            f"({relative}/raygate-hotpath.svg), full list [{relative}/raygate-hotpath.txt]"
            f"({relative}/raygate-hotpath.txt). The heaviest functions on top of the stack:",
            "",
            "```",
            *head[: top + 3],
            "```",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="about a second per path")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="RESULTS.md to write (default: benchmarks/RESULTS.md, or "
        "RESULTS-DIR/RESULTS.md with --results-dir)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        help="run only this benchmark (name without bench_; repeatable)",
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument("--note", default="", help="a paragraph put at the top of RESULTS.md")
    parser.add_argument(
        "--render-only", action="store_true", help="run nothing: re-render RESULTS.md only"
    )
    args = parser.parse_args()
    output = args.output or (
        RESULTS_MD if args.results_dir == RESULTS_DIR else args.results_dir / "RESULTS.md"
    )

    failed: list[str] = []
    timings: list[str] = []
    began = time.monotonic()
    for script in [] if args.render_only else scripts(args.only):
        command = [sys.executable, str(script), "--results-dir", str(args.results_dir)]
        if args.smoke:
            command.append("--smoke")
        print(f"== {script.name}", flush=True)
        start = time.monotonic()
        done = subprocess.run(command)
        timings.append(f"{script.name} {time.monotonic() - start:.0f} s")
        if done.returncode != 0:
            failed.append(f"{script.name} (exit {done.returncode})")
    if not (args.no_profile or args.smoke or args.only or args.render_only):
        print("== profile_hotpath.py", flush=True)
        start = time.monotonic()
        if subprocess.run([sys.executable, str(HERE / "profile_hotpath.py")]).returncode != 0:
            failed.append("profile_hotpath.py")
        timings.append(f"profile_hotpath.py {time.monotonic() - start:.0f} s")

    output.write_text(render_directory(args.results_dir, args.note, profile_section(output)))
    print(f"wrote {output}; took {time.monotonic() - began:.0f} s ({', '.join(timings)})")
    if failed:
        sys.exit("benchmarks failed: " + ", ".join(failed))


if __name__ == "__main__":
    main()
