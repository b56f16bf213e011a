"""Soak: the load test's crowd for ten minutes, the gateway's RSS and descriptors over time.

`raygate up --upstream` runs as a process in front of an upstream in this process; the crowd of
tests/dataplane/loadmix.py (allowed, denied and bad-token requests, log streams, WebSockets,
100 MiB uploads, clients that vanish mid-request) runs for `--seconds`, while the gateway's RSS
and open descriptors are sampled from /proc every `--every` seconds. After the crowd stops it
waits for the gateway to go idle and samples again. Not part of `make test` or `make bench`.

    .venv/bin/python benchmarks/soak.py                  # 10 minutes, 300 clients
    .venv/bin/python benchmarks/soak.py --seconds 60     # a short run

Writes benchmarks/results/soak.json: the samples, the baseline, the end state, what the crowd
did, and every failure seen (an empty list is the expected result).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.dataplane.blackbox import start_gateway, stop_gateway  # noqa: E402
from tests.dataplane.loadmix import (  # noqa: E402
    LoadUpstream,
    Outcome,
    Tokens,
    footprint,
    run_crowd,
)
from tests.integration.gateway_helpers import serve  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "soak.json"
MIB = 1024 * 1024


async def soak(seconds: float, clients: int, uploads: int, every: float) -> dict[str, object]:
    upstream = LoadUpstream()
    samples: list[dict[str, float]] = []
    async with serve(upstream.app()) as url:
        with tempfile.TemporaryDirectory() as tmp:
            gateway = await asyncio.to_thread(
                start_gateway, Path(tmp), str(url), {"ray-user": ["*"], "no-rights": None}
            )
            try:
                pid = gateway.process.pid
                tokens = Tokens(gateway.token("ray-user"), gateway.token("no-rights"))
                await run_crowd(gateway.url, tokens, clients=20, seconds=3, uploads=0,
                                denied_uploads=0)  # fmt: skip
                await asyncio.sleep(2)
                base_rss, base_fds = footprint(pid)
                outcome = Outcome()
                started = time.monotonic()

                async def sample() -> None:
                    while True:
                        rss, fds = footprint(pid)
                        samples.append({
                            "t": round(time.monotonic() - started, 1),
                            "rssMiB": round(rss / MIB, 1),
                            "fds": fds,
                            "requests": sum(outcome.done.values()),
                        })  # fmt: skip
                        print(json.dumps(samples[-1]), flush=True)
                        await asyncio.sleep(every)

                sampler = asyncio.create_task(sample())
                await run_crowd(gateway.url, tokens, clients=clients, seconds=seconds,
                                uploads=uploads, outcome=outcome)  # fmt: skip
                ran = time.monotonic() - started
                await asyncio.sleep(15)  # idle: keep-alives and vanished clients gone
                sampler.cancel()
                end_rss, end_fds = footprint(pid)
                alive = gateway.process.poll() is None
            finally:
                await asyncio.to_thread(stop_gateway, gateway)
            seen = Counter(upstream.paths)
            leaked = [p for p in outcome.refused if seen[p]]
            lost = [p for p in outcome.forwarded if seen[p] != 1]
            audit_lines = gateway.audit_path.read_bytes().count(b"\n")
    return {
        "what": "raygate up --upstream under the load test's mix; RSS and fds from /proc",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "clients": clients,
        "seconds": round(ran, 1),
        "done": dict(outcome.done),
        "requests": sum(outcome.done.values()),
        "failures": outcome.failures,
        "refusedThatReachedUpstream": leaked[:20],
        "allowedNotSeenOnceUpstream": lost[:20],
        "auditLines": audit_lines,
        "gatewayAlive": alive,
        "baseline": {"rssMiB": round(base_rss / MIB, 1), "fds": base_fds},
        "end": {"rssMiB": round(end_rss / MIB, 1), "fds": end_fds},
        "peakRssMiB": max(s["rssMiB"] for s in samples),
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--uploads", type=int, default=10, help="100 MiB uploads, spread out")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = asyncio.run(soak(args.seconds, args.clients, args.uploads, args.every))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{result['requests']} requests in {result['seconds']} s; RSS {result['baseline']} -> "
        f"{result['end']}, peak {result['peakRssMiB']} MiB; failures: {len(result['failures'])}"
    )
    bad = result["failures"] or result["refusedThatReachedUpstream"]
    sys.exit(1 if bad or result["allowedNotSeenOnceUpstream"] else 0)


if __name__ == "__main__":
    main()
