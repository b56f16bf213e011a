"""What the headers a gateway adds cost Ray's dashboard (not part of `make bench`; ~6 minutes).

Ray's dashboard serves its job routes (`/api/version`, `/api/jobs/`) from a module process and
copies every request header into its second request to it, so each added header is work on
Ray's core. One `raygate up` with a 1-CPU Ray head, pinned as in bench_ray_overhead.py (Ray on
the server core; raygate and wrk on the other), 16 connections. Each side is compared with
direct in blocks of adjacent 1 s windows, direct, side, side, direct (Ray's pace wanders; a
drift cancels within a block), and its ratio is its req/s over all blocks ÷ direct's:

- direct with the five headers raygate sent before session 5 (X-Forwarded-For/-Proto/-Host,
  X-Remote-User/-Group);
- direct with X-Forwarded-For only;
- raygate as it is.

    .venv/bin/python benchmarks/ray_header_cost.py [--blocks 16] [--endpoint /api/version]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from bench_ray_overhead import RBAC, RaygateUp
from harness import Cores, Processes, Wrk, bearer, ensure_tools, pin, tempdir

CONNECTIONS = 16
RAYGATE_GROUPS = "system:serviceaccounts,system:serviceaccounts:default,system:authenticated"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=16)
    parser.add_argument("--endpoint", default="/api/version")
    args = parser.parse_args()
    missing = ensure_tools("wrk")
    if missing:
        raise SystemExit(f"ray_header_cost: {missing}")
    cores = Cores.detect()
    with tempdir("raygate-header-cost-") as tmp:
        up = RaygateUp(Path(tmp), cores)
        try:
            up.wait_up()
            up.cli("apply", "-f", "-", stdin=RBAC)
            token = up.cli("create", "token", "bench")
            ray_token = (up.state / "ray-auth-token").read_text().strip()
            dashboard = str(up.ray()["dashboard"]).rstrip("/") + args.endpoint
            pin(Processes(up.process.pid).refresh(), cores.load)
            five = {
                "X-Forwarded-For": "127.0.0.1",
                "X-Forwarded-Proto": "http",
                "X-Forwarded-Host": f"127.0.0.1:{up.port}",
                "X-Remote-User": "system:serviceaccount:default:bench",
                "X-Remote-Group": RAYGATE_GROUPS,
            }
            direct = (dashboard, bearer(ray_token))
            sides = {
                "direct + five headers": (dashboard, {**bearer(ray_token), **five}),
                "direct + X-Forwarded-For": (
                    dashboard,
                    {**bearer(ray_token), "X-Forwarded-For": "127.0.0.1"},
                ),
                "raygate": (f"http://127.0.0.1:{up.port}{args.endpoint}", bearer(token)),
            }
            wrk = Wrk(cores, Path(tmp))
            wrk.run(direct[0], CONNECTIONS, 2, headers=direct[1])
            for name, side in sides.items():
                ratios, side_total, direct_total = [], 0.0, 0.0
                for _ in range(args.blocks):
                    rps = [
                        wrk.run(url, CONNECTIONS, 1, headers=headers)["requests_per_second"]
                        for url, headers in (direct, side, side, direct)
                    ]
                    ratios.append((rps[1] + rps[2]) / (rps[0] + rps[3]))
                    side_total += rps[1] + rps[2]
                    direct_total += rps[0] + rps[3]
                print(
                    f"{name:26} ÷ direct: {side_total / direct_total:.3f} over {args.blocks} "
                    f"blocks (median {statistics.median(ratios):.3f}, blocks "
                    f"{min(ratios):.3f}-{max(ratios):.3f})",
                    flush=True,
                )
        finally:
            up.stop()


if __name__ == "__main__":
    main()
