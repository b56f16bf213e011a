"""Hold a Ray Client session open: `python hold.py ADDRESS SECONDS CLIENT_ID_FILE`.

Writes the session's client_id to CLIENT_ID_FILE once connected, then runs a trivial task every
half second until SECONDS pass; prints `ERROR ...` and the time it failed at, or `held`.
"""

import sys
import time

import ray

address, seconds, id_file = sys.argv[1], float(sys.argv[2]), sys.argv[3]
started = time.monotonic()
try:
    ray.init(f"ray://{address}")
    from ray.util.client import ray as client

    with open(id_file, "w") as out:
        out.write(client.get_context().client_worker._client_id)

    @ray.remote
    def one() -> int:
        return 1

    print("connected", flush=True)
    while time.monotonic() - started < seconds:
        ray.get(one.remote())
        time.sleep(0.5)
    print("held", flush=True)
except Exception as err:
    print(f"ERROR {type(err).__name__}: {err}", flush=True)
    print(f"after {time.monotonic() - started:.1f}s", flush=True)
    sys.exit(1)
