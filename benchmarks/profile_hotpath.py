"""Where raygate spends its CPU on the hot path: py-spy sampling it under wrk load.

`raygate up --upstream` in front of nginx answering 200, valid token with a cached decision, 16
connections (wrk on one core, the servers on the other). py-spy (from PyPI) attaches to raygate
and its workers and writes:

- profiles/raygate-hotpath.svg: a flame graph (open it in a browser);
- profiles/raygate-hotpath.txt: the functions with the most samples, on the stack and on top.

    .venv/bin/python benchmarks/profile_hotpath.py [--seconds 8] [--output-dir DIR]   # make profile
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from harness import (
    PYTHON,
    Cores,
    Wrk,
    bearer,
    ensure_tools,
    nginx_tiny_upstream,
    prepare_state,
    probe,
    raygate_up_upstream,
    tempdir,
)

PROFILES = Path(__file__).resolve().parent / "profiles"
PATH = "/api/version"
CONNECTIONS = 16


def py_spy() -> str | None:
    beside = Path(PYTHON).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(tool: str, pid: int, seconds: int, output: Path, form: str) -> None:
    command = [
        tool,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(seconds),
        "--rate",
        "200",
        "--subprocesses",
        "--format",
        form,
        "--output",
        str(output),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0 or not output.exists():
        raise RuntimeError(f"py-spy failed ({done.returncode}): {done.stderr.strip()[-1000:]}")


def summarize(raw: Path, top: int = 30) -> str:
    """From py-spy's collapsed stacks: the heaviest functions inclusive and self."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        if frames:
            own[frames[-1]] += count
    lines = [
        f"{total} samples of raygate under wrk -c{CONNECTIONS} (GET {PATH}, cached "
        "decision); share of samples:",
        "",
        "## on top of the stack (self)",
    ]
    lines += [f"{n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
    lines += ["", "## anywhere on the stack (inclusive)"]
    lines += [f"{n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--output-dir", type=Path, default=PROFILES)
    args = parser.parse_args()
    tool = py_spy()
    missing = ensure_tools("nginx", "wrk")
    if tool is None or missing:
        sys.exit(f"profile_hotpath: {missing or 'py-spy is not installed (make test-deps)'}")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    svg = args.output_dir / "raygate-hotpath.svg"
    text = args.output_dir / "raygate-hotpath.txt"
    cores = Cores.detect()
    with tempdir("raygate-profile-") as tmp:
        work = Path(tmp)
        state = prepare_state(work / "state")
        headers = bearer(state.allowed_token)
        wrk = Wrk(cores, work)
        with contextlib.ExitStack() as stack:
            tiny, _ = stack.enter_context(nginx_tiny_upstream(cores, work))
            port, processes = stack.enter_context(raygate_up_upstream(cores, work, state, tiny))
            url = f"http://127.0.0.1:{port}{PATH}"
            if probe(url, headers) != 200:
                sys.exit("profile_hotpath: raygate did not answer 200")
            wrk.run(url, CONNECTIONS, 1, headers=headers)
            raw = work / "raygate.raw"
            for output, form in ((svg, "flamegraph"), (raw, "raw")):
                # Load for the whole recording, plus a second on each side.
                load = threading.Thread(
                    target=wrk.run,
                    args=(url, CONNECTIONS, args.seconds + 2),
                    kwargs={"headers": headers},
                )
                load.start()
                try:
                    record(tool, processes.root, args.seconds, output, form)
                finally:
                    load.join()
            text.write_text(summarize(raw))
    print(f"wrote {svg} and {text}", file=sys.stderr)


if __name__ == "__main__":
    main()
