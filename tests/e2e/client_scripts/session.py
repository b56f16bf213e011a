"""A Ray Client driver for the door's tests: `python session.py ADDRESS WORKING_DIR`.

Runs a task, an actor, a 50 MB put/get and a task importing a module from `working_dir`,
printing one line per step; the first error is printed as `ERROR <type>: <message>`.
"""

import sys
import time

import numpy as np
import ray

address, working_dir = sys.argv[1], sys.argv[2]
started = time.monotonic()
try:
    ray.init(f"ray://{address}", runtime_env={"working_dir": working_dir})
    print("connected", flush=True)

    @ray.remote
    def add(x: int, y: int) -> int:
        return x + y

    print("task", ray.get(add.remote(1, 2)), flush=True)

    @ray.remote(num_cpus=0)
    class Counter:
        def __init__(self) -> None:
            self.n = 0

        def inc(self) -> int:
            self.n += 1
            return self.n

    counter = Counter.remote()
    ray.get(counter.inc.remote())
    print("actor", ray.get(counter.inc.remote()), flush=True)

    payload = np.arange(50 * 1024 * 1024, dtype=np.uint8)
    back = ray.get(ray.put(payload))
    print("put/get", back.nbytes, bool((back == payload).all()), flush=True)

    @ray.remote
    def from_working_dir() -> str:
        import shipped_module  # only in working_dir

        return shipped_module.GREETING

    print("working_dir", ray.get(from_working_dir.remote()), flush=True)
    ray.shutdown()
except Exception as err:  # the test reads the message
    print(f"ERROR {type(err).__name__}: {err}", flush=True)
    print(f"after {time.monotonic() - started:.1f}s", flush=True)
    sys.exit(1)
