"""The test set-up's OpenID provider: npm's certified `oidc-provider` under Node.js, on loopback.

tests/fixtures/oidc/provider.mjs configures it (clients, accounts and their groups, TTLs);
`make test-deps` installs it from the committed package-lock.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from tests.conftest import REPO, free_port

FIXTURE = REPO / "tests" / "fixtures" / "oidc"
CLIENT_ID = "raygate"  # public: authorization code + refresh + device flow
SHORT_CLIENT_ID = "raygate-short"  # public, short-lived ID tokens, no refresh token
SECRET_CLIENT_ID = "raygate-secret"  # confidential (client_secret_basic)
SCOPES = ("openid", "email", "profile", "groups", "offline_access")


@dataclass
class Provider:
    issuer: str
    process: subprocess.Popen[str]
    client_secret: str
    output: list[str] = field(default_factory=list)


def _collect(process: subprocess.Popen[str], sink: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        sink.append(line)


@contextmanager
def run_provider(
    accounts: Mapping[str, Sequence[str]],
    *,
    id_token_ttl: int = 3600,
    short_ttl: int = 8,
    client_secret: str = "test-client-secret-0123456789abcdef",
) -> Iterator[Provider]:
    node = shutil.which("node")
    if node is None or not (FIXTURE / "node_modules" / "oidc-provider").is_dir():
        pytest.fail("the OIDC provider is not installed: run `make test-deps` (needs Node.js)")
    port = free_port()
    env = dict(os.environ)
    env.update(
        OIDC_PORT=str(port),
        OIDC_ACCOUNTS=json.dumps({k: list(v) for k, v in accounts.items()}),
        OIDC_ID_TOKEN_TTL=str(id_token_ttl),
        OIDC_SHORT_TTL=str(short_ttl),
        OIDC_CLIENT_SECRET=client_secret,
    )
    process = subprocess.Popen(
        [node, str(FIXTURE / "provider.mjs")],
        cwd=FIXTURE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    provider = Provider(f"http://127.0.0.1:{port}", process, client_secret)
    threading.Thread(target=_collect, args=(process, provider.output), daemon=True).start()
    deadline = time.monotonic() + 30
    try:
        while "listening" not in "".join(provider.output):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the OIDC provider did not start:\n" + "".join(provider.output))
            time.sleep(0.1)
        yield provider
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def sign_in_at_provider(page, login: str, password: str = "any-password") -> None:  # type: ignore[no-untyped-def]
    """Fill oidc-provider's development login form (any login and password are accepted)."""
    page.locator("input[name=login]").wait_for(timeout=30_000)
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", password)
    page.locator("button[type=submit]").click()
    page.wait_for_load_state()
    # Native clients (loopback redirects) always get the consent screen: confirm it.
    consent = page.locator("input[name=prompt][value=consent]")
    if consent.count():
        page.locator("button[type=submit]").click()
        page.wait_for_load_state()


def token_requests(provider: Provider, grant_type: str) -> list[str]:
    """The provider's own record of the token requests of `grant_type` it answered, in order:
    `grant.success refresh_token`, `grant.error refresh_token invalid_grant`, ..."""
    return [
        line.strip()
        for line in list(provider.output)
        if line.startswith(("grant.success ", "grant.error ")) and line.split()[1:2] == [grant_type]
    ]
