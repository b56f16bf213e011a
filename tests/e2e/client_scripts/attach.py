"""Try to attach to someone else's Ray Client session: `python attach.py ADDRESS CLIENT_ID`.

The real client, made to use CLIENT_ID (as a reconnect would) instead of a fresh one.
"""

import sys
import time

import ray
import ray.util.client.worker as client_worker

address, client_id = sys.argv[1], sys.argv[2]
client_worker.make_client_id = lambda: client_id
started = time.monotonic()
try:
    ray.init(f"ray://{address}")

    @ray.remote
    def one() -> int:
        return 1

    print("attached", ray.get(one.remote()), flush=True)
except Exception as err:
    print(f"ERROR {type(err).__name__}: {err}", flush=True)
    print(f"after {time.monotonic() - started:.1f}s", flush=True)
    sys.exit(1)
