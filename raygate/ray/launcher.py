"""Start and stop a local Ray head that only the gateway can talk to.

Ray listens on more than its dashboard (GCS, client server, dashboard agent, all on every
interface), so the head runs in Ray's token mode with a token only the gateway holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from raygate.errors import ConfigError, UpstreamError

# `ray start` refuses a dashboard port inside its worker port range.
RAY_WORKER_PORTS = range(10002, 20000)
# Ray puts Unix sockets under <temp-dir>/session_<date>_<pid>/sockets/...; sockets paths are
# limited to 107 bytes, which leaves about 40 for the temp dir itself.
MAX_TEMP_DIR_LEN = 40
RAY_INFO_FILE = "ray.json"


def free_port(host: str = "127.0.0.1", avoid: range = RAY_WORKER_PORTS) -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port not in avoid:
            return port
    raise UpstreamError("could not find a free loopback port outside Ray's worker port range")


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


# Ray makes its temp dir world-writable (0777), so when it cannot live in the private state
# dir it is a child of a private parent of ours: /tmp/raygate-<hash>/r.
RAY_TEMP_CHILD = "r"


@dataclass(frozen=True)
class RayUser:
    """`raygate up --ray-user`: the operating-system user Ray (and so every job) runs as."""

    name: str
    uid: int
    gid: int
    home: str


def resolve_ray_user(name: str) -> RayUser:
    """The user for `--ray-user NAME`: raygate must run as root, and NAME be another user."""
    if os.geteuid() != 0:
        raise ConfigError(
            f"--ray-user {name}: raygate up must run as root to start Ray as another user "
            f"(it runs as uid {os.geteuid()})"
        )
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(f"--ray-user {name}: no such user (create it, e.g. useradd)") from None
    if entry.pw_uid == 0:
        raise ConfigError(
            f"--ray-user {name}: that is root; name an unprivileged user, so jobs cannot read "
            "raygate's state"
        )
    return RayUser(name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def _may(info: os.stat_result, user: RayUser, groups: set[int], bits: int) -> bool:
    """Whether `user` has every permission in `bits` (r=4, w=2, x=1) on a file with `info`."""
    if info.st_uid == user.uid:
        return (info.st_mode >> 6) & bits == bits
    if info.st_gid in groups:
        return (info.st_mode >> 3) & bits == bits
    return info.st_mode & bits == bits


def check_ray_user_can_run(user: RayUser, programs: list[str]) -> None:
    """Ray runs this Python environment as `user`: every directory on the way to it must let
    that user pass, or Ray fails with a bare "Permission denied". Say which one, up front."""
    groups = set(os.getgrouplist(user.name, user.gid))
    for program in programs:
        for target in (Path(program), Path(os.path.realpath(program))):
            for directory in reversed(target.parents):
                info = os.stat(directory)
                if not _may(info, user, groups, 1):
                    raise ConfigError(
                        f"--ray-user {user.name} cannot run Ray from {program}: it may not enter "
                        f"{directory} (mode {stat.S_IMODE(info.st_mode):o}); install raygate "
                        f"and Ray where {user.name} can read them (e.g. a venv outside a private "
                        "home directory)"
                    )
            if not _may(os.stat(target), user, groups, 5):
                raise ConfigError(
                    f"--ray-user {user.name} cannot read and run {target}; install raygate and "
                    f"Ray where {user.name} can"
                )


def ray_temp_dir(state_dir: Path, run_as: RayUser | None = None) -> Path:
    """Ray's files go under the state dir unless its path is too long for Unix sockets (or Ray
    runs as another user, who must not enter the state dir); then under
    `<tmp>/raygate-<hash>/r`, whose parent `prepare_ray_temp_dir` keeps private."""
    preferred = state_dir.resolve() / "ray"
    if len(str(preferred)) <= MAX_TEMP_DIR_LEN and run_as is None:
        return preferred
    key = str(preferred) if run_as is None else f"{preferred}:{run_as.name}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    for base in (tempfile.gettempdir(), "/tmp"):
        candidate = Path(base) / f"raygate-{digest}" / RAY_TEMP_CHILD
        if len(str(candidate)) <= MAX_TEMP_DIR_LEN:
            return candidate
    return candidate


def prepare_ray_temp_dir(state_dir: Path, run_as: RayUser | None = None) -> Path:
    """Create Ray's temp dir (see `ray_temp_dir`) and return it.

    Outside the state dir its parent must be ours alone: created 0700, or else an existing
    real directory (not a symlink) owned by us with no group/other bits. Anything else may
    have been put there by another local user, and raises UpstreamError. With `run_as`, the
    parent may be passed through (0711, never listed) and the temp dir is that user's (0700).
    """
    temp_dir = ray_temp_dir(state_dir, run_as)
    if temp_dir.parent == state_dir.resolve():
        temp_dir.mkdir(parents=True, exist_ok=True)
        return temp_dir
    _private_parent(temp_dir.parent, pass_through=run_as is not None)
    try:
        temp_dir.mkdir(exist_ok=True)
    except OSError as err:
        raise UpstreamError(f"cannot create Ray's temp dir {temp_dir}: {err.strerror}") from None
    if run_as is not None:
        # Ray's user may pass through our private parent (no listing), and owns its own dir.
        os.chmod(temp_dir.parent, 0o711)
        os.chown(temp_dir, run_as.uid, run_as.gid)
        os.chmod(temp_dir, 0o700)
    return temp_dir


def _private_parent(path: Path, *, pass_through: bool = False) -> None:
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as err:
        raise UpstreamError(f"cannot create Ray's temp parent {path}: {err.strerror}") from None
    info = os.lstat(path)
    fix = "remove it, or use a state dir with a shorter path (--state)"
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise UpstreamError(f"Ray's temp parent {path} is not a real directory: {fix}")
    if info.st_uid != os.getuid():
        raise UpstreamError(
            f"Ray's temp parent {path} is owned by uid {info.st_uid}, not by you: {fix}"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & (0o066 if pass_through else 0o077):  # --ray-user's user may pass, not read
        raise UpstreamError(
            f"Ray's temp parent {path} is open to other users (mode {mode:o}): {fix}"
        )


def ray_executable() -> str:
    """The `ray` next to this Python (the venv's), else the one on PATH."""
    candidate = Path(sys.executable).parent / "ray"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("ray")
    if not found:
        raise UpstreamError(
            "the `ray` command was not found: install ray[default] (make venv does)"
        )
    return found


@dataclass
class RayHead:
    process: subprocess.Popen[bytes]
    dashboard_url: str
    temp_dir: Path
    log_path: Path
    ports: dict[str, int] = field(default_factory=dict)
    token: str = ""
    serve_started: bool = False

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.ports['gcs']}"

    def stop(self, timeout: float = 30.0) -> None:
        if self.serve_started:
            shutdown_serve(self)
        stop_ray_head(self, timeout)


def _ray_env(
    token: str, run_as: RayUser | None = None, temp_dir: Path | None = None
) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("RAY_") or k == "RAY_JOB_HEADERS"
    }
    env.pop("RAY_JOB_HEADERS", None)
    if run_as is not None:
        # Ray's own token reaches Ray (and its jobs, which need it for ray.init()) in its
        # environment, which only that user and root can read; raygate's files stay out of reach.
        home = run_as.home if os.path.isdir(run_as.home) else str(temp_dir or "/")
        env.update(HOME=home, USER=run_as.name, LOGNAME=run_as.name)
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        RAY_USAGE_STATS_ENABLED="0",
        # Jobs run `python` from PATH: make it this environment's, which has Ray.
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    return env


def start_ray_head(
    state_dir: Path,
    token: str,
    *,
    num_cpus: int | None = None,
    object_store_memory: int | None = None,
    timeout: float = 120.0,
    ports: dict[str, int] | None = None,
    run_as: RayUser | None = None,
) -> RayHead:
    """Start the head; `ports` (a restart) keeps the addresses of the head it replaces;
    `run_as` starts Ray as that operating-system user (raygate running as root)."""
    temp_dir = prepare_ray_temp_dir(state_dir, run_as)
    log_path = state_dir / "ray-head.log"
    ports = (
        dict(ports)
        if ports
        else {
            "dashboard": free_port(),
            "gcs": free_port(),
            "client": free_port(),
            "agent": free_port(),
        }
    )
    cmd = [
        ray_executable(),
        "start",
        "--head",
        "--block",
        "--node-ip-address",
        "127.0.0.1",
        "--port",
        str(ports["gcs"]),
        "--ray-client-server-port",
        str(ports["client"]),
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        str(ports["dashboard"]),
        "--dashboard-agent-listen-port",
        str(ports["agent"]),
        "--temp-dir",
        str(temp_dir),
        "--disable-usage-stats",
    ]
    if num_cpus is not None:
        cmd += ["--num-cpus", str(num_cpus)]
    if object_store_memory is not None:
        cmd += ["--object-store-memory", str(object_store_memory)]
    with open(log_path, "ab") as log:
        as_user = {"user": run_as.uid, "group": run_as.gid, "extra_groups": []} if run_as else {}
        process = subprocess.Popen(
            cmd,
            env=_ray_env(token, run_as, temp_dir),
            **as_user,  # type: ignore[arg-type]
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Not the state dir: Ray's processes have no business near the signing key.
            cwd=temp_dir,
        )
    head = RayHead(
        process, f"http://127.0.0.1:{ports['dashboard']}", temp_dir, log_path, ports, token
    )
    write_ray_info(state_dir, head)
    try:
        _wait_until_ready(head, token, timeout)
    except BaseException:
        stop_ray_head(head, timeout=10)
        raise
    return head


# Serve's HTTP proxy takes its options from whoever starts Serve first, and binds
# 127.0.0.1:8000 by default (an env variable sets the host, nothing sets the port), so the
# launcher starts Serve itself on a private port before anyone else can.
_SERVE_START = """
import sys, ray
from ray import serve
ray.init(address=sys.argv[1], logging_level="WARNING", log_to_driver=False)
serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[2])})
"""
_SERVE_SHUTDOWN = """
import sys, ray
from ray import serve
ray.init(address=sys.argv[1], logging_level="WARNING", log_to_driver=False)
serve.shutdown()
"""


def _ray_python(head: RayHead, script: str, *args: str, timeout: float) -> None:
    with open(head.log_path, "ab") as log:
        result = subprocess.run(
            [sys.executable, "-c", script, head.gcs_address, *args],
            env=_ray_env(head.token),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=head.temp_dir,
            timeout=timeout,
        )
    if result.returncode != 0:
        raise UpstreamError(
            f"Ray failed ({result.returncode}): {_last_error_line(head.log_path)} "
            f"(full log: {head.log_path})"
        )


def start_serve(head: RayHead, timeout: float = 120.0) -> int:
    """Start Ray Serve with its HTTP proxy on a private loopback port; return that port."""
    port = free_port()
    head.ports["serve"] = port
    try:
        _ray_python(head, _SERVE_START, str(port), timeout=timeout)
    except subprocess.TimeoutExpired:
        raise UpstreamError(f"Ray Serve did not start within {timeout:.0f}s") from None
    head.serve_started = True
    return port


def shutdown_serve(head: RayHead, timeout: float = 20.0) -> None:
    """Serve first: with Serve running, stopping Ray alone takes ~37 s; after it, ~5 s."""
    if head.process.poll() is not None:
        return
    try:
        _ray_python(head, _SERVE_SHUTDOWN, timeout=timeout)
    except (UpstreamError, subprocess.TimeoutExpired, OSError):
        pass  # stopping Ray stops Serve too, only slower
    head.serve_started = False


def write_ray_info(state_dir: Path, head: RayHead) -> None:
    """Where Ray listens, for `raygate` users and tests that check the ports refuse strangers.
    No secret in it: the token stays in its own 0600 file."""
    (state_dir / RAY_INFO_FILE).write_text(
        json.dumps(
            {
                "pid": head.process.pid,
                "dashboard": head.dashboard_url,
                "ports": head.ports,
                "tempDir": str(head.temp_dir),
                "log": str(head.log_path),
            },
            indent=2,
        )
        + "\n"
    )


def _wait_until_ready(head: RayHead, token: str, timeout: float) -> None:
    """Ready means the dashboard answers and the head node is alive: the dashboard comes up
    first, and a raylet that fails to start (bad resources, no memory) fails after it."""
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {token}"}
    while time.monotonic() < deadline:
        if head.process.poll() is not None:
            raise UpstreamError(
                f"Ray failed to start (exit code {head.process.returncode}): "
                f"{_last_error_line(head.log_path)} (full log: {head.log_path})"
            )
        if _head_node_alive(head.dashboard_url, headers):
            return
        time.sleep(0.3)
    raise UpstreamError(
        f"Ray's dashboard did not answer within {timeout:.0f}s (log: {head.log_path})"
    )


def _head_node_alive(dashboard_url: str, headers: dict[str, str]) -> bool:
    request = urllib.request.Request(dashboard_url + "/nodes?view=summary", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            body = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return False
    nodes = (body.get("data") or {}).get("summary") or []
    return any(node.get("raylet", {}).get("state") == "ALIVE" for node in nodes)


def _last_error_line(log_path: Path) -> str:
    try:
        lines = [
            ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()
        ]
    except OSError:
        return "no log"
    for line in reversed(lines):
        lowered = line.lower()
        if "error" in lowered or "exception" in lowered:
            return line[:300]
    return lines[-1][-300:] if lines else "no output"


def _session_pids(marker: str) -> list[int]:
    """Processes whose command line names our Ray temp dir (Ray daemons may leave our group)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            pids.append(int(entry.name))
    return pids


def stop_ray_head(head: RayHead, timeout: float = 15.0) -> None:
    """SIGTERM lets `ray start --block` drain and stop its processes; what is left is killed.

    Only the `ray start` process is signalled first: signalling the whole group makes its
    daemons race their parent's orderly shutdown.
    """
    process = head.process
    if process.poll() is None:
        try:
            os.kill(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        leftovers = set(_session_pids(str(head.temp_dir)))
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in leftovers:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _session_pids(str(head.temp_dir)):
            time.sleep(0.2)
    if process.poll() is None:
        process.wait(timeout=5)
