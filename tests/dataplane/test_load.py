"""Several hundred clients for a minute: nothing lost, nothing leaked, nothing let through.

`raygate up --upstream` (a process, as users run it) in front of an upstream in this process;
the crowd (tests/dataplane/loadmix.py) mixes allowed, denied and bad-token requests, log streams,
WebSockets, 100 MiB uploads and clients that vanish mid-request. Afterwards:

- every allowed request got its whole answer, every refused one its 401/403;
- nothing refused reached the upstream, every allowed request reached it once;
- the gateway's RSS and open descriptors (from /proc) are back near their baseline;
- the audit log holds exactly one whole JSON line per decision.

RAYGATE_LOAD_CLIENTS / RAYGATE_LOAD_SECONDS shrink it for a quick look while developing;
RAYGATE_LOAD_ARGS adds `raygate up` options (e.g. `--workers 2`: RSS and descriptors are then
summed over the worker processes, and the one audit log must still hold whole lines).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from ..integration.gateway_helpers import serve
from .blackbox import start_gateway, stop_gateway
from .loadmix import LoadUpstream, Outcome, Tokens, footprint, run_crowd, upload_sha256

CLIENTS = int(os.environ.get("RAYGATE_LOAD_CLIENTS", "300"))
SECONDS = float(os.environ.get("RAYGATE_LOAD_SECONDS", "60"))
EXTRA_ARGS = os.environ.get("RAYGATE_LOAD_ARGS", "").split()
UPLOADS = 3
# Near baseline: the allocator keeps some freed memory, the upstream pool some connections.
RSS_SLACK = 48 * 1024 * 1024
FD_SLACK = 8
SETTLE_SECONDS = 20


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_hundreds_of_clients_for_a_minute(tmp_path: Path) -> None:
    asyncio.run(_scenario(tmp_path))


async def _scenario(tmp_path: Path) -> None:
    upstream = LoadUpstream()
    async with serve(upstream.app()) as url:
        gateway = await asyncio.to_thread(
            start_gateway, tmp_path, str(url), {"ray-user": ["*"], "no-rights": None}, EXTRA_ARGS
        )
        try:
            pid = gateway.process.pid
            tokens = Tokens(gateway.token("ray-user"), gateway.token("no-rights"))
            # Warm up every path once (caches, pools, lazily built tables), then the baseline.
            warm = await run_crowd(gateway.url, tokens, clients=20, seconds=3, uploads=0,
                                   denied_uploads=0)  # fmt: skip
            await asyncio.sleep(2)
            base_rss, base_fds = footprint(pid)
            started = time.monotonic()
            outcome = await run_crowd(
                gateway.url, tokens, clients=CLIENTS, seconds=SECONDS, uploads=UPLOADS
            )
            took = time.monotonic() - started
            # Idle again: vanished clients' connections and the crowd's keep-alives are gone.
            deadline = time.monotonic() + SETTLE_SECONDS
            while True:
                rss, fds = footprint(pid)
                if fds <= base_fds + FD_SLACK and rss <= base_rss + RSS_SLACK:
                    break
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            assert gateway.process.poll() is None, gateway.log()
        finally:
            await asyncio.to_thread(stop_gateway, gateway)
    print(
        f"\n{CLIENTS} clients, {took:.0f} s: {dict(outcome.done)}; RSS {base_rss >> 20} -> "
        f"{rss >> 20} MiB, fds {base_fds} -> {fds}"
    )
    assert not outcome.failures, outcome.failures[:20]
    assert warm.failures == [], warm.failures[:20]
    assert sum(outcome.done.values()) >= CLIENTS * 5, outcome.done
    assert outcome.done["upload"] == UPLOADS
    _check_upstream(upstream, [warm, outcome])
    _check_audit(gateway.audit_path, [warm, outcome])
    assert fds <= base_fds + FD_SLACK, (base_fds, fds)
    assert rss <= base_rss + RSS_SLACK, (base_rss >> 20, rss >> 20)


def _check_upstream(upstream: LoadUpstream, outcomes: list[Outcome]) -> None:
    seen = Counter(upstream.paths)
    for outcome in outcomes:
        leaked = [p for p in outcome.refused if seen[p]]
        assert not leaked, f"refused requests reached the upstream: {leaked[:10]}"
        missing = [p for p in outcome.forwarded if seen[p] != 1]
        assert not missing, [(p, seen[p]) for p in missing[:10]]
        assert all(seen[p] <= 1 for p in outcome.vanished)
    expected = upload_sha256()
    uploads = [p for o in outcomes for p in o.forwarded if p.startswith("/api/upload/")]
    assert [upstream.upload_hashes.get(p) for p in uploads] == [expected] * len(uploads)


def _check_audit(path: Path, outcomes: list[Outcome]) -> None:
    # Written off the hot path: give the writer a moment (it flushed at shutdown anyway).
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"", "the audit log ends in a partial line"
    records = [json.loads(line) for line in lines[:-1]]  # every line whole JSON
    by_path = Counter(r["path"] for r in records)
    status = {r["path"]: r["status"] for r in records}
    for outcome in outcomes:
        for p in outcome.forwarded + outcome.refused:
            assert by_path[p] == 1, f"{by_path[p]} audit lines for {p}"
        for p in outcome.refused:
            assert status[p] in (401, 403), (p, status[p])
        for p in outcome.vanished:
            assert by_path[p] <= 1, f"{by_path[p]} audit lines for {p}"
    decided = sum(len(o.forwarded) + len(o.refused) + len(o.vanished) for o in outcomes)
    assert len(records) <= decided, "audit lines for requests nobody sent"
