"""The gateway beside nginx and a naive pass-through, in front of a tiny upstream, in one run.

Paths, each at 1, 16 and 64 connections (wrk, one thread, on its own core; every server on the
other core, one worker each):

- direct: the tiny upstream itself (nginx answering 200 with a 3-byte body at once);
- nginx as a reverse proxy (keep-alive upstream connections);
- a naive aiohttp+uvloop pass-through (naive_proxy.py);
- issue 7's yardstick: a minimal proxy on uvloop protocols with httptools on both legs that
  only hashes the token and looks a decision up (minimal_proxy.py): what Python on this design
  costs when it does nothing else;
- `raygate up --upstream` (embedded authority, audit log on): a valid token whose decision is
  cached; a token never seen before on every request (pre-minted, cycled by a wrk Lua script);
  a token raygate does not trust (401); a valid token of an account with no role (403).

Reports req/s, p50/p99, the ratio to nginx measured in the same run, each server's CPU per
request (utime+stime from /proc over the run, divided by the requests) and raygate's peak RSS.

    .venv/bin/python benchmarks/bench_gateway.py [--smoke] [--results-dir DIR]
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

from harness import (
    Cores,
    Processes,
    Wrk,
    bearer,
    minimal_proxy,
    naive_proxy,
    nginx_reverse_proxy,
    nginx_tiny_upstream,
    prepare_state,
    probe,
    raise_open_file_limit,
    raygate_up_upstream,
    skipped_without,
    tempdir,
)
from report import Result, common_arguments

PATH = "/api/version"
RSS_LIMIT_MIB = 80e6 / 2**20  # "80 MB"


@dataclass(frozen=True)
class Settings:
    connections: tuple[int, ...]
    seconds: int
    warmup: int
    new_tokens: int  # per connection count


FULL = Settings(connections=(1, 16, 64), seconds=4, warmup=1, new_tokens=8000)
SMOKE = Settings(connections=(1, 16), seconds=1, warmup=0, new_tokens=100)


@dataclass
class Path_:
    label: str
    port: int
    processes: Processes
    headers: dict[str, str]
    status: int
    token_files: dict[int, Path] | None = None


def untrusted_token() -> str:
    """A well-formed service-account token signed by a key raygate does not know."""
    from raygate.store.tokens import SigningKey, issue_token

    return issue_token(
        "default", "bench", "0" * 8, signing_key=SigningKey.generate(), duration=timedelta(hours=1)
    )


def measure(wrk: Wrk, path: Path_, connections: int, settings: Settings) -> dict[str, float]:
    url = f"http://127.0.0.1:{path.port}{PATH}"
    status = probe(url, path.headers)
    if status != path.status:
        raise RuntimeError(f"{path.label}: GET {PATH} answered {status}, expected {path.status}")
    if settings.warmup:
        wrk.run(url, connections, settings.warmup, headers=path.headers)
    token_file = path.token_files[connections] if path.token_files else None
    cpu = path.processes.cpu_seconds()
    figures = wrk.run(
        url, connections, settings.seconds, headers=path.headers, token_file=token_file
    )
    cpu = path.processes.cpu_seconds() - cpu
    figures["server_cpu_us_per_request"] = round(cpu / max(figures["requests"], 1) * 1e6, 1)
    wrong = (
        figures["status_4xx_5xx"]
        if path.status < 400
        else (figures["requests"] - figures["status_4xx_5xx"])
    )
    if figures["socket_errors"] or wrong:
        raise RuntimeError(f"{path.label} at {connections} connections: {figures}")
    return figures


def main() -> None:
    parser = common_arguments(__doc__)
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="measure only the paths whose label holds TEXT (repeatable; for profiling runs)",
    )
    parser.add_argument(
        "--connections", type=int, action="append", help="instead of 1, 16 and 64 (repeatable)"
    )
    args = parser.parse_args()
    settings = SMOKE if args.smoke else FULL
    if args.connections:
        settings = replace(settings, connections=tuple(args.connections))
    result = Result(
        "gateway",
        "Tiny upstream: direct, nginx, a naive pass-through and raygate",
        about=(
            "One run, side by side. The tiny upstream is nginx answering 200 at once. "
            f"wrk: one thread, {settings.seconds} s per measurement after {settings.warmup} s of "
            f"warm-up, GET {PATH}. raygate: `raygate up --upstream` (embedded authority, audit "
            "log on), one worker. CPU per request is the server's own (for direct: the "
            "upstream's; for the proxies: the proxy process's, not the upstream's)."
        ),
        smoke=args.smoke,
    )
    if skipped_without(result, args.results_dir, "nginx", "wrk"):
        return
    raise_open_file_limit()
    cores = Cores.detect()
    result.notes.append(cores.describe())
    rows: list[tuple[str, int, dict[str, float]]] = []
    memory: list[dict[int, dict[str, float]]] = []  # after the known tokens, after the new ones
    with tempdir("raygate-bench-gateway-") as tmp:
        work = Path(tmp)
        state = prepare_state(work / "state")
        token_files = {
            c: state.mint(settings.new_tokens, work / f"tokens-{c}.txt")
            for c in settings.connections
        }
        wrk = Wrk(cores, work)
        with contextlib.ExitStack() as stack:
            tiny, tiny_pid = stack.enter_context(nginx_tiny_upstream(cores, work))
            ngx, ngx_pid = stack.enter_context(nginx_reverse_proxy(cores, work, tiny))
            naive, naive_pid = stack.enter_context(naive_proxy(cores, work, tiny))
            minimal, minimal_pid = stack.enter_context(
                minimal_proxy(cores, work, tiny, state.allowed_token)
            )
            gate, gate_procs = stack.enter_context(raygate_up_upstream(cores, work, state, tiny))
            paths = [
                Path_("direct (tiny upstream)", tiny, Processes(tiny_pid), {}, 200),
                Path_("nginx reverse proxy", ngx, Processes(ngx_pid), {}, 200),
                Path_("naive aiohttp+uvloop pass-through", naive, Processes(naive_pid), {}, 200),
                Path_(
                    "minimal uvloop+httptools proxy (issue 7's yardstick)",
                    minimal,
                    Processes(minimal_pid),
                    bearer(state.allowed_token),
                    200,
                ),
                Path_(
                    "raygate, valid token, cached decision",
                    gate,
                    gate_procs,
                    bearer(state.allowed_token),
                    200,
                ),
                Path_(
                    "raygate, a token never seen before each request",
                    gate,
                    gate_procs,
                    bearer(state.allowed_token),
                    200,
                    token_files,
                ),
                Path_(
                    "raygate, untrusted token (401)",
                    gate,
                    gate_procs,
                    bearer(untrusted_token()),
                    401,
                ),
                Path_("raygate, no role (403)", gate, gate_procs, bearer(state.denied_token), 403),
            ]
            if args.only:
                paths = [p for p in paths if any(o in p.label for o in args.only)]
            idle = gate_procs.idle_cpu_ms_per_second()
            result.notes.append(
                f"raygate idle (no requests): {idle} ms of CPU per second; CPU per request "
                "includes that share of the run."
            )
            # Never-seen tokens last: each fills raygate's verified-token cache, so the memory
            # under load is read before them, and again after them.
            fresh = [path for path in paths if path.token_files]
            for group in ([p for p in paths if not p.token_files], fresh):
                for connections in settings.connections:
                    for path in group:
                        figures = measure(wrk, path, connections, settings)
                        print(f"{path.label:50} c={connections:<3} {figures}", flush=True)
                        rows.append((path.label, connections, figures))
                memory.append(gate_procs.memory_mib())
    order = {path.label: i for i, path in enumerate(paths)}
    rows.sort(key=lambda row: (row[1], order[row[0]]))
    report(result, rows, memory, settings)
    result.write(args.results_dir)


def report(
    result: Result,
    rows: list[tuple[str, int, dict[str, float]]],
    memory: list[dict[int, dict[str, float]]],
    settings: Settings,
) -> None:
    by = {(label, c): figures for label, c, figures in rows}
    nginx, cached = "nginx reverse proxy", "raygate, valid token, cached decision"
    labels = list(dict.fromkeys(label for label, _, _ in rows))

    summary = result.table(
        "Summary (as in issue 7)",
        [
            "path",
            "c=1 p50 ms",
            *(f"c={c} req/s" for c in settings.connections[1:]),
            "CPU µs/req (c=16)",
        ],
    )
    busy = settings.connections[1] if len(settings.connections) > 1 else settings.connections[0]
    for label in labels:
        summary.add(
            label,
            by.get((label, 1), {}).get("p50_ms"),
            *(by[label, c]["requests_per_second"] for c in settings.connections[1:]),
            by[label, busy]["server_cpu_us_per_request"],
        )

    table = result.table(
        "Every measurement",
        [
            "path",
            "connections",
            "req/s",
            "× nginx req/s",
            "p50 ms",
            "p99 ms",
            "p50 − nginx p50 (ms)",
            "server CPU µs/req",
            "requests",
        ],
    )
    for label, c, figures in rows:
        base = by.get((nginx, c))  # absent in an --only run without nginx
        table.add(
            label,
            c,
            figures["requests_per_second"],
            round(figures["requests_per_second"] / base["requests_per_second"], 3)
            if base
            else None,
            figures["p50_ms"],
            figures["p99_ms"],
            round(figures["p50_ms"] - base["p50_ms"], 3) if base else None,
            figures["server_cpu_us_per_request"],
            figures["requests"],
        )
    table.notes.append(
        f"'a token never seen before': {settings.new_tokens:,} tokens minted per connection "
        "count, each sent once; the run ends when all are answered, and the rate is over the "
        "span from the first request to the last answer (timed in wrk's Lua script), so it "
        "can be shorter than the others."
    )

    compared = all((label, c) in by for label in (nginx, cached) for c in settings.connections)
    for c in settings.connections[1:] if compared else ():
        ratio = by[cached, c]["requests_per_second"] / by[nginx, c]["requests_per_second"]
        result.target(
            f"tiny upstream, c={c}: raygate req/s ÷ nginx req/s (one worker each)",
            round(ratio, 3),
            ">= 0.5",
            ratio >= 0.5,
        )
    if compared:
        added = by[cached, 1]["p50_ms"] - by[nginx, 1]["p50_ms"]
        result.target(
            "tiny upstream, c=1: raygate p50 − nginx p50 (ms)",
            round(added, 3),
            "<= +0.05 ms",
            added <= 0.05,
        )
    distinct = settings.new_tokens * len(settings.connections)
    workers = result.table(
        "raygate's processes: RSS and peak RSS (VmHWM), MiB",
        [
            "pid",
            "after the cached, 401 and 403 runs: RSS",
            "peak",
            f"after {distinct:,} never-seen tokens: RSS",
            "peak",
        ],
    )
    known, fresh = memory
    for pid, figures in known.items():
        after = fresh.get(pid, {})
        workers.add(
            str(pid), figures.get("rss"), figures.get("hwm"), after.get("rss"), after.get("hwm")
        )
    for what, snapshot in (("under load", known), (f"after {distinct:,} never-seen tokens", fresh)):
        peak = max((m.get("hwm", 0.0) for m in snapshot.values()), default=0.0)
        result.target(
            f"raygate peak RSS per worker {what} (VmHWM, MiB)",
            peak,
            f"< 80 MB ({RSS_LIMIT_MIB:.1f} MiB)",
            peak < RSS_LIMIT_MIB,
        )
    result.data = {
        "path": PATH,
        "settings": settings.__dict__,
        "measurements": [
            {"path": label, "connections": c, **figures} for label, c, figures in rows
        ],
        "raygate_memory_mib": {
            "after_known_tokens": {str(pid): m for pid, m in known.items()},
            "after_new_tokens": {str(pid): m for pid, m in fresh.items()},
        },
    }


if __name__ == "__main__":
    main()
