"""Profile the gateway's hot path: a cached decision forwarded to a tiny upstream.

    .venv/bin/python benchmarks/profile_dataplane.py [--seconds 8] [--connections 16]
        [--audit] [--cprofile benchmarks/profiles/dataplane.pstats]
        [--py-spy benchmarks/profiles/dataplane.svg]

Starts a tiny upstream (answers 200 at once, keep-alive) and the gateway (embedded authority, a
valid token: every request after the first is a cached decision), each pinned to its own core
when there are two, drives it with wrk, and prints req/s and the gateway's CPU time per request
(from /proc, so it stays meaningful on a busy machine where req/s does not). With --cprofile the
gateway runs under cProfile and the stats are written there (`python -m pstats FILE`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

TINY = r"""
import asyncio, sys, uvloop
BODY = b'{"ray_version": "2.52.0"}\n'
RESP = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(BODY), BODY)
class P(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t; self.buf = b""
    def data_received(self, d):
        self.buf += d
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                break
            self.buf = self.buf[i + 4:]
            self.t.write(RESP)
async def main():
    await asyncio.get_running_loop().create_server(P, "127.0.0.1", int(sys.argv[1]))
    await asyncio.Event().wait()
uvloop.run(main())
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _gateway_main(state: str, port: int, upstream: str, audit: bool, profile: str | None) -> None:
    """The gateway as `raygate up --upstream` assembles it (embedded authority), in-process."""
    from raygate.dataplane.server import Gateway
    from raygate.dataplane.settings import GatewaySettings
    from raygate.embedded import EmbeddedAuthority
    from raygate.observe.audit import AuditLog
    from raygate.observe.metrics import GatewayMetrics
    from raygate.pipeline import AuthHeaders, PipelineSettings, profile_for
    from raygate.runtime import install_uvloop
    from tests.integration.gateway_helpers import guide_attributes

    async def run() -> None:
        authority = EmbeddedAuthority(Path(state))
        await authority.start()
        audit_log = AuditLog(Path(state) / "audit.log") if audit else None
        pipeline = PipelineSettings(
            authority=authority,
            profile=profile_for(guide_attributes()),
            upstream_token="ray-token",
            auth_headers=AuthHeaders(enabled=True),
            audit=audit_log,
            metrics=GatewayMetrics(),
            backend_timeout=None,
        )
        gateway = Gateway(GatewaySettings(upstream=upstream, pipeline=pipeline))
        await gateway.listen("127.0.0.1", port)
        Path(state, "ready").touch()
        await asyncio.Event().wait()

    install_uvloop()
    if profile:
        import cProfile
        import signal

        profiler = cProfile.Profile()

        def stop(*_: object) -> None:
            profiler.disable()
            profiler.dump_stats(profile)
            os._exit(0)

        signal.signal(signal.SIGTERM, stop)
        profiler.enable()
    asyncio.run(run())


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--audit", action="store_true", help="write audit lines (as raygate up)")
    parser.add_argument("--cprofile", help="write the gateway's cProfile stats here")
    parser.add_argument("--py-spy", dest="py_spy", help="record a py-spy flame graph (SVG) here")
    parser.add_argument("--gateway", help=argparse.SUPPRESS, nargs=5)
    args = parser.parse_args()
    if args.gateway:
        state, port, upstream, audit, profile = args.gateway
        _gateway_main(state, int(port), upstream, audit == "1", profile or None)
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install -y wrk")
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    from raygate.store.sqlite import ObjectStore
    from raygate.store.tokens import issue_token, load_signing_key
    from tests.integration.gateway_helpers import grant, prepare_state, service_account

    two_cores = len(os.sched_getaffinity(0)) >= 2
    pin = (lambda core: ["taskset", "-c", str(core)]) if two_cores else (lambda core: [])
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        prepare_state(state)
        with ObjectStore.open(state) as store:
            store.apply([service_account("bench")])
            grant(store, "bench", ["get"])
            uid = store.require("ServiceAccount", "bench", "default").metadata.uid or ""
        token = issue_token(
            "default", "bench", uid, signing_key=load_signing_key(state),
            duration=timedelta(hours=1),
        )
        up_port, gw_port = _free_port(), _free_port()
        tiny = subprocess.Popen([*pin(1), sys.executable, "-c", TINY, str(up_port)])
        gateway = subprocess.Popen(
            [*pin(0), sys.executable, __file__, "--gateway", str(state), str(gw_port),
             f"http://127.0.0.1:{up_port}", "1" if args.audit else "0", args.cprofile or ""],
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
        try:
            deadline = time.monotonic() + 30
            while not (state / "ready").exists():
                if time.monotonic() > deadline or gateway.poll() is not None:
                    sys.exit("the gateway did not start")
                time.sleep(0.1)
            url = f"http://127.0.0.1:{gw_port}/api/version"
            wrk = [*pin(1), "wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s",
                   "-H", f"Authorization: Bearer {token}", url]
            warm = [w if not w.startswith("-d") else "-d1s" for w in wrk]
            subprocess.run(warm, capture_output=True, check=True)
            before, tiny_before = _cpu_seconds(gateway.pid), _cpu_seconds(tiny.pid)
            spy = None
            if args.py_spy:
                spy = subprocess.Popen(
                    ["py-spy", "record", "-p", str(gateway.pid), "-o", args.py_spy,
                     "-d", str(max(1, args.seconds - 1)), "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
            out = subprocess.run(wrk, capture_output=True, text=True, check=True).stdout
            if spy is not None:
                spy.wait(30)
            used = _cpu_seconds(gateway.pid) - before
            tiny_used = _cpu_seconds(tiny.pid) - tiny_before
            requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
            rate = re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)  # type: ignore[union-attr]
            non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            print(f"connections={args.connections} requests={requests} req/s={rate} "
                  f"gateway_cpu_us_per_request={used / requests * 1e6:.1f} "
                  f"upstream_cpu_us_per_request={tiny_used / requests * 1e6:.1f} "
                  f"non_2xx={non2xx.group(1) if non2xx else 0}")
        finally:
            gateway.terminate()
            gateway.wait(10)
            tiny.terminate()
            tiny.wait(10)


if __name__ == "__main__":
    main()
