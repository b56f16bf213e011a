"""`raygate up --workers 1` vs `--workers 2` in front of the tiny upstream (nginx `return 200`).

Two layouts: the servers pinned to one core (wrk on the other), as in bench_gateway.py, where a
second worker can only add overhead; and nothing pinned, where the two workers, the upstream
and wrk share both cores. Valid token, cached decision; 16 and 64 connections. Reports req/s,
p50, raygate's CPU per request (all workers) and peak RSS per worker. Skipped, with a note,
when this raygate has no `--workers` flag.

    .venv/bin/python benchmarks/bench_workers.py [--smoke] [--results-dir DIR]
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from harness import (
    Cores,
    Wrk,
    bearer,
    nginx_tiny_upstream,
    prepare_state,
    probe,
    raise_open_file_limit,
    raygate_has_workers_flag,
    raygate_up_upstream,
    skipped_without,
    tempdir,
)
from report import Result, common_arguments

PATH = "/api/version"
WORKERS = (1, 2)


@dataclass(frozen=True)
class Settings:
    connections: tuple[int, ...]
    seconds: int
    warmup: int


FULL = Settings(connections=(16, 64), seconds=4, warmup=1)
SMOKE = Settings(connections=(16,), seconds=1, warmup=0)


def main() -> None:
    args = common_arguments(__doc__).parse_args()
    settings = SMOKE if args.smoke else FULL
    result = Result(
        "workers",
        "raygate --workers 1 vs --workers 2",
        about=(
            "`raygate up --upstream` in front of nginx answering 200, valid token, cached "
            f"decision, GET {PATH}; wrk one thread, {settings.seconds} s per measurement after "
            f"{settings.warmup} s of warm-up."
        ),
        smoke=args.smoke,
    )
    if not raygate_has_workers_flag():
        result.skip("this raygate has no --workers flag (`raygate up --help`); nothing measured")
        result.write(args.results_dir)
        return
    if skipped_without(result, args.results_dir, "nginx", "wrk"):
        return
    raise_open_file_limit()
    pinned = Cores.detect()
    layouts = {"servers on one core, wrk on the other": pinned, "nothing pinned": Cores(None, None)}
    if pinned.load is None:
        layouts = {"nothing pinned": pinned}
    table = result.table(
        "Requests per second, p50, CPU and RSS by worker count",
        [
            "layout",
            "workers",
            "connections",
            "req/s",
            "× 1 worker",
            "p50 ms",
            "p99 ms",
            "CPU µs/req (all workers)",
            "peak RSS MiB per worker",
        ],
    )
    raw = []
    with tempdir("raygate-bench-workers-") as tmp:
        work = Path(tmp)
        state = prepare_state(work / "state")
        headers = bearer(state.allowed_token)
        for layout, cores in layouts.items():
            wrk = Wrk(cores, work)
            single: dict[int, float] = {}
            for workers in WORKERS:
                with contextlib.ExitStack() as stack:
                    tiny, _ = stack.enter_context(nginx_tiny_upstream(cores, work))
                    port, processes = stack.enter_context(
                        raygate_up_upstream(cores, work, state, tiny, workers=workers)
                    )
                    url = f"http://127.0.0.1:{port}{PATH}"
                    if probe(url, headers) != 200:
                        raise RuntimeError(f"--workers {workers}: GET {PATH} did not answer 200")
                    for c in settings.connections:
                        if settings.warmup:
                            wrk.run(url, c, settings.warmup, headers=headers)
                        cpu = processes.cpu_seconds()
                        figures = wrk.run(url, c, settings.seconds, headers=headers)
                        cpu = processes.cpu_seconds() - cpu
                        if figures["socket_errors"] or figures["status_4xx_5xx"]:
                            raise RuntimeError(f"--workers {workers} c={c}: {figures}")
                        figures["cpu_us_per_request"] = round(cpu / figures["requests"] * 1e6, 1)
                        figures["processes"] = len(processes.pids)
                        figures["peak_rss_mib_per_worker"] = processes.peak_rss_mib()
                        single.setdefault(c, figures["requests_per_second"])
                        table.add(
                            layout,
                            workers,
                            c,
                            figures["requests_per_second"],
                            round(figures["requests_per_second"] / single[c], 3),
                            figures["p50_ms"],
                            figures["p99_ms"],
                            figures["cpu_us_per_request"],
                            figures["peak_rss_mib_per_worker"],
                        )
                        raw.append(
                            {"layout": layout, "workers": workers, "connections": c, **figures}
                        )
                        print(f"{layout:40} workers={workers} c={c:<3} {figures}", flush=True)
    table.notes.append(
        "'nothing pinned' measures what a second worker buys when it has a core to run on; on a "
        "2-core machine wrk takes much of it, so the ratio is a floor."
    )
    limit = 80e6 / 2**20
    peak = max(r["peak_rss_mib_per_worker"] for r in raw)
    result.target(
        "raygate peak RSS per worker, --workers 2 under load (MiB)",
        peak,
        f"< 80 MB ({limit:.1f} MiB)",
        peak < limit,
    )
    result.data = {"settings": settings.__dict__, "measurements": raw}
    result.write(args.results_dir)


if __name__ == "__main__":
    main()
