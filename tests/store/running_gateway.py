"""The gateway `raygate up` assembles (embedded authority, admin port, audit log), run in the
test's event loop in front of a recording upstream, so a test can break its surroundings."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from yarl import URL

from raygate.authz.attributes import Profile
from raygate.cli.up import UpOptions, gateway_config
from raygate.config.model import AuditConfig
from raygate.observe.audit import AuditLog, open_audit_log
from raygate.runtime import serve as run_gateway
from raygate.store.sqlite import ObjectStore
from raygate.store.state import write_secret
from tests.integration.gateway_helpers import (
    UPSTREAM_TOKEN,
    RecordingUpstream,
    grant,
    prepare_state,
    serve,
    service_account,
    token_for,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Running:
    url: URL
    admin: URL
    upstream: RecordingUpstream
    state_dir: Path
    audit: AuditLog

    def token(self, name: str) -> str:
        return token_for(self.state_dir, name)


@contextlib.asynccontextmanager
async def running_gateway(
    state_dir: Path,
    accounts: dict[str, Sequence[str] | None],
    audit: AuditConfig | None = None,
) -> AsyncIterator[Running]:
    prepare_state(state_dir)
    with ObjectStore.open(state_dir) as store:
        for name, verbs in accounts.items():
            store.apply([service_account(name)])
            if verbs is not None:
                grant(store, name, verbs)
    token_file = state_dir / "ray-auth-token"
    write_secret(token_file, UPSTREAM_TOKEN.encode())
    upstream = RecordingUpstream()
    async with serve(upstream.app()) as upstream_url:
        options = UpOptions(
            state_dir=state_dir,
            host="127.0.0.1",
            port=free_port(),
            cluster_name="ray-cluster-with-auth",
            namespace="default",
            num_cpus=None,
            object_store_memory=None,
            upstream=upstream_url,
            upstream_token_file=token_file,
            audit=audit or AuditConfig(log=str(state_dir / "audit.log")),
            admin_port=free_port(),
            profile=Profile.KUBE_RBAC_PROXY,
        )
        config = gateway_config(options, upstream_url, token_file)
        audit_log = open_audit_log(options.audit)
        ready = asyncio.Event()
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_gateway(config, audit=audit_log, on_ready=ready.set, stop=stop)
        )
        waiter = asyncio.ensure_future(ready.wait())
        await asyncio.wait([waiter, task], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        try:
            yield Running(
                URL(f"http://127.0.0.1:{options.port}"),
                URL(f"http://127.0.0.1:{options.admin_port}"),
                upstream,
                state_dir,
                audit_log,
            )
        finally:
            stop.set()
            await task
            audit_log.close()
