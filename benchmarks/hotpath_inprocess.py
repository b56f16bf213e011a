"""The data plane's own Python cost per request, without sockets: deterministic on a busy machine.

    .venv/bin/python benchmarks/hotpath_inprocess.py [--requests 20000] [--audit]
        [--path /api/version] [--token valid|invalid|none|denied] [--cprofile FILE]

Drives one `HttpConnection` (as `raygate up --upstream` assembles it: embedded authority, the
guide's attributes, audit log optional) with in-memory transports on both legs: the client's
request bytes are fed to it, the upstream's response bytes are fed back to the upstream
connection it wrote to. No syscalls and no event-loop polling are counted, only what the
gateway's Python does per request (parse both legs, decide, build the upstream head, relay the
response, audit, metrics). Prints the main thread's CPU time per request (`time.thread_time`,
so the audit writer thread is not in it; run with `--audit` to count its hot-path share) and
a count of Python function calls per request (`sys.setprofile`, one pass over 1,000 requests):
a figure that does not move with the machine's load. `profile_dataplane.py` measures the whole
process under wrk, syscalls included.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 26\r\n\r\n"
    b'{"ray_version": "2.52.0"}\n'
)


async def _run(args: argparse.Namespace) -> None:
    from raygate.dataplane.http import HttpConnection
    from raygate.dataplane.server import Gateway
    from raygate.dataplane.settings import GatewaySettings
    from raygate.dataplane.upstream import UpstreamConnection
    from raygate.embedded import EmbeddedAuthority
    from raygate.observe.audit import AuditLog
    from raygate.observe.metrics import GatewayMetrics
    from raygate.pipeline import AuthHeaders, PipelineSettings, profile_for
    from raygate.store.sqlite import ObjectStore
    from raygate.store.tokens import issue_token, load_signing_key
    from tests.dataplane.memory_transport import MemoryTransport
    from tests.integration.gateway_helpers import (
        grant,
        guide_attributes,
        prepare_state,
        service_account,
    )

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        prepare_state(state)
        with ObjectStore.open(state) as store:
            store.apply([service_account("bench"), service_account("norole")])
            grant(store, "bench", ["get"])
            uids = {
                name: store.require("ServiceAccount", name, "default").metadata.uid or ""
                for name in ("bench", "norole")
            }
        key = load_signing_key(state)
        tokens = {
            name: issue_token("default", name, uid, signing_key=key, duration=timedelta(hours=1))
            for name, uid in uids.items()
        }
        authority = EmbeddedAuthority(state)
        await authority.start()
        audit_log = AuditLog(Path(tmp) / "audit.log") if args.audit else None
        settings = PipelineSettings(
            authority=authority,
            profile=profile_for(guide_attributes()),
            upstream_token="ray-token",
            auth_headers=AuthHeaders(enabled=True),
            audit=audit_log,
            metrics=GatewayMetrics(),
            backend_timeout=None,
            decision_ttl=args.decision_ttl,
        )
        gateway = Gateway(GatewaySettings(upstream="http://127.0.0.1:9", pipeline=settings))
        token = {
            "valid": tokens["bench"],
            "denied": tokens["norole"],
            "invalid": tokens["bench"][:-4] + "AAAA",
            "none": None,
        }[args.token]
        auth = b"" if token is None else b"Authorization: Bearer %s\r\n" % token.encode()
        request = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:8265\r\nUser-Agent: wrk\r\n%s\r\n" % (
            args.path.encode(),
            auth,
        )
        client = MemoryTransport()
        conn = HttpConnection(gateway, "http")
        conn.connection_made(client)
        upstream = UpstreamConnection(gateway.pool)
        upstream_transport = MemoryTransport()
        upstream.connection_made(upstream_transport)
        gateway.pool._all.add(upstream)
        forwards = args.token == "valid"

        async def one() -> None:
            conn.data_received(request)
            if forwards:
                if gateway.pool._idle:
                    raise SystemExit("the request was not forwarded")
                upstream.data_received(RESPONSE)
            for _ in range(1000):
                if client.written:
                    break
                # A decision that waited (a backend call, a thread): let it finish.
                await asyncio.sleep(0 if _ < 100 else 0.001)
            else:
                raise SystemExit("no answer")
            client.written.clear()
            upstream_transport.written.clear()

        gateway.pool._idle.append(upstream)
        for _ in range(200):  # warm: the first decision is not cached
            await one()
        # Function calls per request: deterministic, whatever else the machine does.
        calls = 0

        def count(frame: Any, event: str, arg: Any) -> None:
            nonlocal calls
            if event in ("call", "c_call"):
                calls += 1

        sys.setprofile(count)
        for _ in range(1000):
            await one()
        sys.setprofile(None)
        profiler = None
        if args.cprofile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        start = time.thread_time()
        for _ in range(args.requests):
            await one()
        used = time.thread_time() - start
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.cprofile)
        print(
            f"token={args.token} audit={'on' if args.audit else 'off'} requests={args.requests} "
            f"cpu_us_per_request={used / args.requests * 1e6:.2f} "
            f"python_calls_per_request={calls / 1000:.1f}"
        )
        if audit_log is not None:
            audit_log.close()
        await authority.stop()
        conn.connection_lost(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument(
        "--decision-ttl",
        type=float,
        default=1.0,
        help="seconds a decision is reused (long: no re-verification mid-run, e.g. under "
        "valgrind, where a request takes milliseconds)",
    )
    parser.add_argument("--audit", action="store_true", help="write audit lines (as raygate up)")
    parser.add_argument("--path", default="/api/version")
    parser.add_argument("--token", choices=["valid", "invalid", "none", "denied"], default="valid")
    parser.add_argument("--cprofile", help="write cProfile stats of the timed requests here")
    args = parser.parse_args()
    from raygate.runtime import install_uvloop

    install_uvloop()
    asyncio.run(_run(args))


if __name__ == "__main__":
    main()
