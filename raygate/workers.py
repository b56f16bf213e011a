"""`--workers N`: N gateway processes on one address, the kernel spreading connections.

Each worker binds the listen address itself with SO_REUSEPORT and runs the whole gateway (its
own pipeline, caches and upstream pool; the embedded authority polls the store in each, so a
change shows in all within a poll interval). The parent binds the address first (without
listening) to fail early on a taken port, starts the workers, forwards SIGTERM/SIGINT to them
and waits for their graceful drain.

- Audit: every worker appends whole lines to the one file (O_APPEND, one write per line), or
  to the stdout they share (lines under PIPE_BUF are written whole).
- Metrics: prometheus_client's multiprocess mode, in a directory of the parent's; the first
  worker serves /healthz, /readyz and /metrics for all, with every worker's counts summed.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from raygate.config import GatewayConfig
from raygate.errors import ConfigError

log = logging.getLogger("raygate.workers")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Longer than a worker's own drain (runtime.SHUTDOWN_GRACE + FINAL_WRITE_GRACE).
STOP_GRACE = 30.0
READY_TIMEOUT = 120.0


def worker_count(value: int | str | None) -> int:
    """`auto`: the cores this process may run on; else a positive number."""
    if value is None:
        return 1
    if isinstance(value, str):
        if value.strip().lower() == "auto":
            return len(os.sched_getaffinity(0))
        try:
            value = int(value)
        except ValueError:
            raise ConfigError(f"--workers must be a number or auto, not {value!r}") from None
    if value < 1:
        raise ConfigError(f"--workers must be at least 1, not {value}")
    return value


def _reserve(host: str, port: int) -> socket.socket:
    """Bind (not listen) the address with SO_REUSEPORT: a taken port fails here, in the
    parent, with one line; workers then bind the same address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return sock


def _worker_main(
    config: GatewayConfig,
    index: int,
    audit_path: str | None,
    log_level: int,
    ready: Any,
    parent: int,
) -> None:
    """One worker process (spawned: a fresh interpreter, prometheus_client in multiprocess
    mode from the environment)."""
    import asyncio

    from raygate.observe.metrics import GatewayMetrics
    from raygate.runtime import audit_log_for, install_uvloop, serve

    logging.basicConfig(
        level=log_level,
        format=f"%(asctime)s %(levelname)s %(name)s[worker {index}]: %(message)s",
        stream=sys.stderr,
    )
    # Out of the terminal's process group: a Ctrl-C reaches the parent alone, which passes one
    # SIGTERM on (a second signal would cut the graceful drain short).
    os.setpgrp()

    async def orphaned() -> None:
        """Ends when the parent is gone (killed without passing the signal on)."""
        while os.getppid() == parent:
            await asyncio.sleep(1.0)
        log.warning("the parent process is gone; stopping")

    # Audit lines to a shared stdout: one write per line (whole lines up to PIPE_BUF on a pipe),
    # never a block-buffered flush that cuts a line between two workers' writes.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    audit = audit_log_for(audit_path)
    install_uvloop()
    try:
        asyncio.run(
            serve(
                config,
                audit=audit,
                on_ready=ready.set,
                watch=orphaned(),
                reuse_port=True,
                admin=index == 0,
                metrics=GatewayMetrics(),
            )
        )
    except KeyboardInterrupt:
        pass
    finally:
        audit.close()


def run_workers(
    config: GatewayConfig,
    workers: int,
    *,
    audit_path: str | None,
    on_ready: Callable[[], None] | None = None,
    alive: Callable[[], str | None] | None = None,
    log_level: int = logging.INFO,
) -> int:
    """Run `workers` gateway processes until a signal (or `alive()` names a reason to stop).
    Returns the exit status: 0 after a requested stop, 1 when a worker failed."""
    host, port = config.listen.host, config.listen.port
    reserved = _reserve(host, port)
    if port == 0:
        port = reserved.getsockname()[1]
        config = config.model_copy(
            update={"listen": config.listen.model_copy(update={"address": f"{host}:{port}"})}
        )
    metrics_dir = tempfile.mkdtemp(prefix="raygate-metrics-")
    previous = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = metrics_dir
    context = multiprocessing.get_context("spawn")
    processes: list[Any] = []
    stopping = [False]
    status = 0

    def on_signal(_signum: int, _frame: object) -> None:
        stopping[0] = True

    old_handlers = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        events = []
        for index in range(workers):
            ready = context.Event()
            process = context.Process(
                target=_worker_main,
                args=(config, index, audit_path, log_level, ready, os.getpid()),
                name=f"raygate-worker-{index}",
                daemon=False,
            )
            process.start()
            processes.append(process)
            events.append(ready)
        deadline = time.monotonic() + READY_TIMEOUT
        while not all(e.is_set() for e in events):
            if stopping[0] or any(p.exitcode is not None for p in processes):
                break
            if time.monotonic() > deadline:
                log.error("workers not ready after %gs", READY_TIMEOUT)
                stopping[0] = True
                status = 1
                break
            time.sleep(0.05)
        else:
            reserved.close()  # the workers listen now
            log.info("%d workers serving on %s:%d", workers, host, port)
            if on_ready is not None:
                on_ready()
        while not stopping[0]:
            failed = [p for p in processes if p.exitcode is not None]
            if failed:
                log.error(
                    "worker %s exited with %s; stopping the others",
                    failed[0].name,
                    failed[0].exitcode,
                )
                status = 1
                break
            reason = alive() if alive is not None else None
            if reason is not None:
                log.error("%s", reason)
                status = 1
                break
            time.sleep(0.2)
    finally:
        reserved.close()
        for process in processes:
            if process.exitcode is None and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                log.warning("worker %s did not stop in time; killing it", process.name)
                process.kill()
                process.join(5)
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if any(p.exitcode not in (0, None, -signal.SIGTERM) for p in processes) and not status:
        status = 1 if not stopping[0] else status
    return status
