"""What the HTTP benchmarks share: tools, core pinning, wrk, the servers compared, /proc figures.

- `ensure_tools()` installs Debian's nginx and wrk when missing (root or sudo), never starting
  nginx's system service;
- `Cores`: on two or more cores, wrk runs on the first and every server on the second
  (`taskset`), so the load generator never takes CPU from what it measures;
- `Wrk.run()` runs wrk (one thread) with a Lua script that prints its summary as JSON, and
  optionally sends a token never seen before with every request;
- `nginx_tiny_upstream()`, `nginx_reverse_proxy()`, `naive_proxy()`, `raygate_up_upstream()`
  start the compared servers as child processes on loopback ports, and stop them;
- `Processes` reads a process tree's CPU time (utime+stime) and peak RSS (VmHWM) from /proc.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from report import Result

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
RAYGATE = str(Path(PYTHON).parent / "raygate")
STARTUP_TIMEOUT = 30.0
TINY_BODY = "ok\n"


# -- tools ----------------------------------------------------------------------------------------


def ensure_tools(*names: str) -> str | None:
    """Install missing Debian packages (nginx, wrk); None when all are there, else why not."""
    missing = [name for name in names if shutil.which(name) is None]
    if not missing:
        return None
    if os.geteuid() == 0:
        sudo: list[str] = []
    elif shutil.which("sudo"):
        sudo = ["sudo", "-n"]
    else:
        return f"{', '.join(missing)} missing and installing needs root (apt-get install {' '.join(missing)})"
    if shutil.which("apt-get") is None:
        return f"{', '.join(missing)} missing and this is not a Debian system (no apt-get)"
    # RUNLEVEL=1: Debian's maintainer scripts then do not start nginx's system service.
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "RUNLEVEL": "1"}
    print(f"installing {' '.join(missing)} from Debian", file=sys.stderr)
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        done = subprocess.run([*sudo, *command], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            return f"`{' '.join(command)}` failed: {done.stderr.strip()[-300:]}"
    still = [name for name in names if shutil.which(name) is None]
    return f"{', '.join(still)} still missing after apt-get install" if still else None


def skipped_without(result: Result, results_dir: Path | None, *tools: str) -> bool:
    """When a tool is missing, write `result` as skipped (saying which) and say so."""
    missing = ensure_tools(*tools)
    if missing:
        result.skip(missing)
        result.write(results_dir)
    return bool(missing)


def raise_open_file_limit() -> None:
    """Children inherit it: 1,000 WebSockets need 2,000 descriptors in the gateway."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- cores ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cores:
    """Which core the load generator gets and which the servers get (None: not pinned)."""

    load: int | None
    servers: int | None

    @classmethod
    def detect(cls) -> Cores:
        usable = sorted(os.sched_getaffinity(0))
        if len(usable) >= 2 and shutil.which("taskset"):
            return cls(load=usable[0], servers=usable[1])
        return cls(None, None)

    def describe(self) -> str:
        if self.load is None:
            return "not pinned (fewer than two usable cores, or no taskset)"
        return f"wrk pinned to core {self.load}, every server to core {self.servers} (taskset)"

    def server(self, command: Sequence[str]) -> list[str]:
        return self._pin(self.servers, command)

    def loader(self, command: Sequence[str]) -> list[str]:
        return self._pin(self.load, command)

    @staticmethod
    def _pin(core: int | None, command: Sequence[str]) -> list[str]:
        return list(command) if core is None else ["taskset", "-c", str(core), *command]


# -- processes ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[Any], what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {STARTUP_TIMEOUT:g}s")


def stop(process: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 20) -> bool:
    """Ask the server to stop; if it does not, kill its whole session (workers included).
    True when it had to be killed (what it would have cleaned up on its way out is left)."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return True
    return False


@contextlib.contextmanager
def running(
    command: Sequence[str],
    port: int,
    what: str,
    *,
    sig: int = signal.SIGTERM,
    log: Path | None = None,
    **popen: Any,
) -> Iterator[subprocess.Popen[bytes]]:
    """A server started from `command`, once it listens on `port`; stopped on exit."""
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    # A session of its own: stop() can kill the server with every worker it started.
    process = subprocess.Popen(
        list(command), stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **popen
    )
    try:
        try:
            wait_for_port(port, process, what)
        except RuntimeError as err:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{err}\n{tail}") from None
        yield process
    finally:
        stop(process, sig)
        if log:
            out.close()  # type: ignore[union-attr]


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]


def child_map() -> dict[int, list[int]]:
    """{parent pid: [child pids]} for every process, from /proc, at this moment."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int(_stat_fields(int(entry.name))[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(parent, []).append(int(entry.name))
    return parents


@dataclass
class Processes:
    """A server's own processes: the one started and the workers it forks or spawns.

    Walks down from the root through its own kind only: a child with the root's command line
    (a fork) or one of Python's multiprocessing (spawn, forkserver). Ray's processes under
    `raygate up` (`ray start` and everything below it) are not walked into.
    """

    root: int
    pids: list[int] = field(default_factory=list)

    def refresh(self) -> list[int]:
        try:
            command = _cmdline(self.root)
        except OSError:
            return self.pids
        tree = child_map()
        pids, todo = [self.root], [self.root]
        while todo:
            for child in tree.get(todo.pop(), []):
                try:
                    line = _cmdline(child)
                except OSError:
                    continue
                # multiprocessing's resource tracker is bookkeeping, not a worker.
                spawned = any("multiprocessing" in part for part in line[:4])
                if line == command or (
                    spawned and not any("resource_tracker" in part for part in line[:4])
                ):
                    pids.append(child)
                    todo.append(child)
        self.pids = pids
        return pids

    def cpu_seconds(self) -> float:
        """User plus system CPU time the processes have used so far."""
        total = 0
        for pid in self.refresh():
            with contextlib.suppress(OSError, IndexError):
                fields = _stat_fields(pid)
                total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def idle_cpu_ms_per_second(self, seconds: float = 2.0) -> float:
        """CPU the processes use with no request at all (timers, reloads), per second."""
        before = self.cpu_seconds()
        time.sleep(seconds)
        return round((self.cpu_seconds() - before) / seconds * 1000, 1)

    def memory_mib(self) -> dict[int, dict[str, float]]:
        """{pid: {"rss": VmRSS, "hwm": VmHWM}} in MiB, per process."""
        figures: dict[int, dict[str, float]] = {}
        for pid in self.refresh():
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{pid}/status").read_text()
                values = {}
                for line in status.splitlines():
                    name, _, value = line.partition(":")
                    if name in ("VmRSS", "VmHWM"):
                        values[name[2:].lower()] = round(int(value.split()[0]) / 1024, 1)
                figures[pid] = values
        return figures

    def peak_rss_mib(self) -> float:
        """The largest VmHWM among the processes (RSS is a per-worker figure)."""
        return max((m.get("hwm", 0.0) for m in self.memory_mib().values()), default=0.0)

    def rss_mib(self) -> float:
        """The processes' current RSS added up."""
        return round(sum(m.get("rss", 0.0) for m in self.memory_mib().values()), 1)


# -- wrk ------------------------------------------------------------------------------------------

_WRK_DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  local span = 0
  if bench_span then span = bench_span() end
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d,"span_us":%d}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max, span))
end
"""

# Every request carries the next token from a file. The thread stops once every token has been
# answered, so no token is counted twice; wrk still waits out its duration, so the thread
# notes (LuaJIT's ffi, CLOCK_MONOTONIC) when its first request left and its last answer came,
# and the rate is computed over that span.
_WRK_TOKENS = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]]
local clock = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, clock)
  return tonumber(clock.tv_sec) * 1000000 + tonumber(clock.tv_nsec) / 1000
end

local tokens, sent, answered = {}, 0, 0
first_us, last_us = 0, 0
function init(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = "Bearer " .. line end
end
function request()
  sent = sent + 1
  if sent == 1 then first_us = now_us() end
  wrk.headers["Authorization"] = tokens[math.min(sent, #tokens)]
  return wrk.format()
end
function response(status, headers, body)
  answered = answered + 1
  if answered == #tokens then
    last_us = now_us()
    wrk.thread:stop()
  end
end

local threads = {}
function setup(thread) threads[#threads + 1] = thread end
function bench_span()
  local thread = threads[1]
  if thread == nil or thread:get("last_us") == 0 then return 0 end
  return thread:get("last_us") - thread:get("first_us")
end
"""


@dataclass
class Wrk:
    """wrk on the load core, one thread, summaries as JSON."""

    cores: Cores
    workdir: Path

    def __post_init__(self) -> None:
        self.report_script = self.workdir / "wrk-report.lua"
        self.report_script.write_text(_WRK_DONE)
        self.tokens_script = self.workdir / "wrk-tokens.lua"
        self.tokens_script.write_text(_WRK_TOKENS + _WRK_DONE)

    def run(
        self,
        url: str,
        connections: int,
        seconds: int,
        *,
        headers: dict[str, str] | None = None,
        token_file: Path | None = None,
    ) -> dict[str, float]:
        """Requests/s, latency percentiles (ms) and error counts of one wrk run."""
        command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s"]
        for name, value in (headers or {}).items():
            command += ["-H", f"{name}: {value}"]
        script = self.tokens_script if token_file else self.report_script
        command += ["-s", str(script), url]
        if token_file:
            command += ["--", str(token_file)]
        done = subprocess.run(
            self.cores.loader(command), capture_output=True, text=True, timeout=seconds + 60
        )
        line = next((x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")), None)
        if done.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
        raw = json.loads(line.removeprefix("WRKJSON "))
        # A token run that answered every token early: its own span, not wrk's duration.
        seconds_run = (raw["span_us"] or raw["duration_us"]) / 1e6
        errors = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
        return {
            "requests": raw["requests"],
            "seconds": round(seconds_run, 2),
            "requests_per_second": round(raw["requests"] / seconds_run, 1),
            "p50_ms": round(raw["p50_us"] / 1000, 3),
            "p90_ms": round(raw["p90_us"] / 1000, 3),
            "p99_ms": round(raw["p99_us"] / 1000, 3),
            "socket_errors": errors,
            "status_4xx_5xx": raw["status_errors"],
        }


def probe(url: str, headers: dict[str, str] | None = None) -> int:
    """The status one request gets (also warms the path up)."""
    host, _, rest = url.removeprefix("http://").partition("/")
    name, _, port = host.partition(":")
    connection = http.client.HTTPConnection(name, int(port or 80), timeout=10)
    try:
        connection.request("GET", "/" + rest, headers=headers or {})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


# -- the servers compared -------------------------------------------------------------------------

_NGINX_MAIN = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
{body}
}}
"""

_NGINX_TINY = """
  server {{
    listen 127.0.0.1:{port};
    location / {{ default_type text/plain; return 200 "{body}"; }}
  }}
"""

_NGINX_PROXY = """
  upstream backend {{
    server 127.0.0.1:{upstream};
    keepalive 128;
    keepalive_requests 1000000;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
"""


@contextlib.contextmanager
def nginx(cores: Cores, workdir: Path, name: str, body: str, port: int) -> Iterator[int]:
    """nginx as a foreground process (one worker, no master) with its own config; its pid."""
    directory = workdir / f"nginx-{name}-{port}"
    directory.mkdir()
    config = directory / "nginx.conf"
    config.write_text(_NGINX_MAIN.format(dir=directory, body=body))
    command = cores.server(
        ["nginx", "-p", str(directory), "-c", str(config), "-e", str(directory / "error.log")]
    )
    with running(
        command, port, f"nginx ({name})", sig=signal.SIGQUIT, log=directory / "stdout.log"
    ) as process:
        yield process.pid


def nginx_tiny_upstream(cores: Cores, workdir: Path) -> contextlib.AbstractContextManager[int]:
    """The tiny upstream: nginx answering 200 with a 3-byte body at once. Yields (port, pid)."""
    port = free_port()
    body = _NGINX_TINY.format(port=port, body=TINY_BODY.replace("\n", "\\n"))
    return _with_port(nginx(cores, workdir, "tiny", body, port), port)


def nginx_reverse_proxy(
    cores: Cores, workdir: Path, upstream: int
) -> contextlib.AbstractContextManager[int]:
    """nginx proxying to 127.0.0.1:upstream with keep-alive upstream connections."""
    port = free_port()
    body = _NGINX_PROXY.format(port=port, upstream=upstream)
    return _with_port(nginx(cores, workdir, "proxy", body, port), port)


@contextlib.contextmanager
def _with_port(manager: contextlib.AbstractContextManager[int], port: int) -> Iterator[Any]:
    with manager as pid:
        yield port, pid


@contextlib.contextmanager
def _python_proxy(
    cores: Cores, workdir: Path, script: str, arguments: Sequence[str], what: str
) -> Iterator[tuple[int, int]]:
    """benchmarks/`script` listening on a free port (`--port`), pinned as a server."""
    port = free_port()
    command = cores.server([PYTHON, str(HERE / script), "--port", str(port), *arguments])
    log = workdir / f"{script.removesuffix('.py')}.log"
    with running(command, port, what, log=log) as process:
        yield port, process.pid


def naive_proxy(
    cores: Cores, workdir: Path, upstream: int
) -> contextlib.AbstractContextManager[tuple[int, int]]:
    """The naive aiohttp+uvloop pass-through (naive_proxy.py). Yields (port, pid)."""
    return _python_proxy(
        cores,
        workdir,
        "naive_proxy.py",
        ["--upstream", f"http://127.0.0.1:{upstream}"],
        "naive proxy",
    )


def minimal_proxy(
    cores: Cores, workdir: Path, upstream: int, token: str
) -> contextlib.AbstractContextManager[tuple[int, int]]:
    """Issue 7's yardstick (minimal_proxy.py): uvloop + httptools, a decision lookup, nothing
    else. Yields (port, pid)."""
    return _python_proxy(
        cores,
        workdir,
        "minimal_proxy.py",
        ["--upstream", f"127.0.0.1:{upstream}", "--token", token],
        "minimal proxy",
    )


# -- raygate --------------------------------------------------------------------------------------

UPSTREAM_TOKEN = "bench-ray-token"
ALLOWED, DENIED = "bench", "bench-denied"


def _rbac_documents() -> list[dict[str, Any]]:
    """Service account `bench` may do everything on the RayCluster; `bench-denied` nothing."""
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": ALLOWED}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": DENIED}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "bench", "namespace": "default"},
            "rules": [{"apiGroups": ["ray.io"], "resources": ["rayclusters"], "verbs": ["*"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "bench", "namespace": "default"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "bench"},
            "subjects": [{"kind": "ServiceAccount", "name": ALLOWED, "namespace": "default"}],
        },
    ]


@dataclass
class State:
    """An embedded authority's state directory with the benchmark's accounts and tokens."""

    directory: Path
    allowed_token: str
    denied_token: str

    def mint(self, count: int, path: Path) -> Path:
        """`count` distinct valid tokens for `bench`, one a line (for the wrk token script)."""
        from raygate.store.tokens import issue_token, load_signing_key

        key = load_signing_key(self.directory)
        uid = self._uid(ALLOWED)
        with path.open("w") as out:
            for _ in range(count):
                token = issue_token(
                    "default", ALLOWED, uid, signing_key=key, duration=timedelta(hours=2)
                )
                out.write(token + "\n")
        return path

    def _uid(self, name: str) -> str:
        from raygate.store.sqlite import ObjectStore

        with ObjectStore.open(self.directory) as store:
            return store.require("ServiceAccount", name, "default").metadata.uid or ""


def prepare_state(directory: Path) -> State:
    """The state `raygate up --state` reads: the accounts and roles above, Ray's token."""
    from raygate.objects import parse_object
    from raygate.store.sqlite import ObjectStore
    from raygate.store.tokens import issue_token, load_signing_key

    with ObjectStore.open(directory) as store:
        store.apply([parse_object(doc) for doc in _rbac_documents()])
    (directory / "upstream-token").write_text(UPSTREAM_TOKEN)
    key = load_signing_key(directory)
    state = State(directory, "", "")
    tokens = [
        issue_token("default", name, state._uid(name), signing_key=key, duration=timedelta(hours=2))
        for name in (ALLOWED, DENIED)
    ]
    state.allowed_token, state.denied_token = tokens
    return state


def raygate_has_workers_flag() -> bool:
    help_text = subprocess.run([RAYGATE, "up", "--help"], capture_output=True, text=True).stdout
    return "--workers" in help_text


@contextlib.contextmanager
def raygate_up_upstream(
    cores: Cores,
    workdir: Path,
    state: State,
    upstream: int,
    *,
    workers: int | None = None,
    extra: Sequence[str] = (),
) -> Iterator[tuple[int, Processes]]:
    """`raygate up --upstream` (embedded authority, audit log on). Yields (port, processes).

    Stopped with SIGINT, as Ctrl-C stops it.
    """
    port = free_port()
    command = [
        RAYGATE,
        "up",
        "--state",
        str(state.directory),
        "--upstream",
        f"http://127.0.0.1:{upstream}",
        "--upstream-token-file",
        str(state.directory / "upstream-token"),
        "--port",
        str(port),
        *extra,
    ]
    if workers is not None:
        command += ["--workers", str(workers)]
    log = workdir / f"raygate-{port}.log"
    with running(
        cores.server(command), port, "raygate up --upstream", sig=signal.SIGINT, log=log
    ) as process:
        processes = Processes(process.pid)
        if workers and workers > 1:
            # The workers may bind a moment after the first: wait until all are there.
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while len(processes.refresh()) < workers and time.monotonic() < deadline:
                time.sleep(0.1)
        yield port, processes


# Where a gateway in front of Ray is measured: on wrk's core with Ray alone on the other (a
# Kubernetes sidecar has CPU of its own), or on Ray's core; on one core, not pinned at all.
SIDECAR, SHARED, UNPINNED = "sidecar", "shared", "unpinned"


def gateway_arrangements(cores: Cores) -> dict[str, int | None]:
    """Each arrangement the gateway is measured in, with the core it is moved to."""
    if cores.load is None:
        return {UNPINNED: None}
    return {SIDECAR: cores.load, SHARED: cores.servers}


def pin(pids: Iterable[int], core: int | None) -> None:
    """Every thread of the processes onto one core (`taskset -a -p -c CORE PID`)."""
    if core is None:
        return
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread that just ended
                os.sched_setaffinity(int(task.name), {core})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def tempdir(prefix: str) -> contextlib.AbstractContextManager[str]:
    return tempfile.TemporaryDirectory(prefix=prefix)
