"""A session is renewed once, whichever of the gateway's workers gets there first.

`raygate up/serve --workers N` runs N processes over one session store in the state directory.
npm's oidc-provider rotates the refresh tokens of public clients and takes a second use of one
for theft (`invalid_grant`, and the whole sign-in revoked), as Okta, Auth0 and Keycloak with
rotation do. The provider prints a line per token request (tests/fixtures/oidc/provider.mjs),
so what it was asked is counted at the provider itself.

Each worker here is a process of its own (spawned: its own event loop and `BrowserSignIn` on the
shared state directory, so the in-process asyncio.Lock cannot help): a gateway worker without
the HTTP listener in front. The session comes from a real sign-in at the provider, through its
own login form with an HTTP client (nothing here is about the page, so no Chromium).
"""

from __future__ import annotations

import asyncio
import html
import multiprocessing
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from urllib.parse import urljoin

import aiohttp
import pytest

from raygate.config import OIDCConfig
from raygate.errors import BackendUnavailable
from raygate.pipeline.head import Headers, RequestHead
from raygate.sso.assemble import browser_sign_in
from raygate.sso.flow import BrowserAnswer, BrowserSignIn, SignedIn
from raygate.sso.provider import OIDCProviderClient
from raygate.sso.store import Session, SessionStore
from tests.conftest import REPO
from tests.oidc_provider import CLIENT_ID, SCOPES, Provider, run_provider, token_requests

ALICE = "alice@example.com"
ID_TOKEN_TTL = 4  # seconds: sessions expire within the test
WORKERS = 2
HOST = "127.0.0.1:8265"  # the gateway as the browser addresses it (no listener is needed)
SESSION_COOKIE = "__Host-raygate-session"
HTML = "text/html,application/xhtml+xml,*/*;q=0.8"
# Another worker, stuck in the middle of renewing the session (the lock it takes is the one a
# renewing worker takes).
HOLD_RENEWAL_LOCK = """
import sys, time
from pathlib import Path
from raygate.sso.renewal_lock import RenewalLocks
assert RenewalLocks(Path(sys.argv[1])).try_acquire(sys.argv[2])
print("holding", flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    with run_provider({ALICE: ["ml-team"]}, id_token_ttl=ID_TOKEN_TTL) as running:
        yield running


def oidc_config(issuer: str) -> OIDCConfig:
    return OIDCConfig.model_validate(
        {"issuerURL": issuer, "clientID": CLIENT_ID, "browserSignIn": True, "scopes": SCOPES}
    )


def request(target: str, *headers: tuple[str, str]) -> RequestHead:
    return RequestHead("GET", target, Headers(list(headers)), peer="127.0.0.1", host=HOST)


def api_call(secret: str) -> RequestHead:
    """What the dashboard's page asks with the session cookie."""
    return request(
        "/api/jobs/", ("Cookie", f"{SESSION_COOKIE}={secret}"), ("Accept", "application/json")
    )


async def sign_in_over_http(sign_in: BrowserSignIn, login: str) -> str:
    """Sign in as a browser does: the gateway's redirect to the provider, the provider's login
    form, the callback. Returns the session cookie's value."""
    start = await sign_in.session(request("/", ("Accept", HTML)))
    assert isinstance(start, BrowserAnswer) and start.status == 302, start
    headers = dict(start.headers)
    sign_in_cookie = headers["Set-Cookie"].split(";")[0]
    location = headers["Location"]
    callback = sign_in.redirect_uri(request("/"))
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        for _ in range(10):
            if location.startswith(callback):
                break
            async with client.get(location, allow_redirects=False) as page:
                if page.status in (302, 303):
                    location = urljoin(location, page.headers["Location"])
                    continue
                body = await page.text()
            assert page.status == 200, body
            action = re.search(r'<form[^>]* action="([^"]+)"', body)
            prompt = re.search(r'name="prompt" value="(\w+)"', body)
            assert action and prompt, body
            form = {"prompt": prompt[1]}
            if prompt[1] == "login":  # devInteractions accepts any password
                form.update(login=login, password="any-password")
            submit = urljoin(location, html.unescape(action[1]))
            async with client.post(submit, data=form, allow_redirects=False) as answer:
                assert answer.status in (302, 303), await answer.text()
                location = urljoin(submit, answer.headers["Location"])
        else:
            raise AssertionError(f"the sign-in did not come back to {callback}: {location}")
    done = await sign_in.route(
        request(location.removeprefix(f"http://{HOST}"), ("Cookie", sign_in_cookie))
    )
    assert isinstance(done, BrowserAnswer) and done.status == 302, done.body
    (cookie,) = [
        value
        for name, value in done.headers
        if name == "Set-Cookie" and value.startswith(f"{SESSION_COOKIE}=")
    ]
    return cookie.split(";")[0].partition("=")[2]


def signed_in_session(provider: Provider, state: Path) -> tuple[str, Session]:
    async def run() -> str:
        sign_in = browser_sign_in(oidc_config(provider.issuer), state)
        try:
            return await sign_in_over_http(sign_in, ALICE)
        finally:
            await sign_in.close()

    secret = asyncio.run(run())
    store = SessionStore(state)
    session = store.lookup(secret)
    store.close()
    assert session is not None and session.identity.user == ALICE
    return secret, session


def describe(outcome: SignedIn | BrowserAnswer | None) -> str:
    if isinstance(outcome, SignedIn):
        return f"signed in as {outcome.identity.user}"
    if isinstance(outcome, BrowserAnswer):
        return f"{outcome.status} {outcome.reason}"
    return repr(outcome)


def renew_in_worker(
    issuer: str, state_dir: str, secret: str, start: Barrier, results: Queue[str]
) -> None:
    """One gateway worker: asked for a page with the session's cookie at the same moment as
    the others."""

    async def run() -> str:
        sign_in = browser_sign_in(oidc_config(issuer), Path(state_dir))
        try:
            await sign_in.provider.metadata()  # discovered already, as in a running worker
            start.wait(timeout=60)
            return describe(await sign_in.session(api_call(secret)))
        finally:
            await sign_in.close()

    try:
        results.put(asyncio.run(run()))
    except Exception as err:  # noqa: BLE001 - reported to the test, which fails on it
        results.put(f"error {type(err).__name__}: {err}")


def refresh_calls_after(provider: Provider, seen: int, expected: int) -> list[str]:
    """The refresh-token requests the provider answered after the first `seen`, once at least
    `expected` have been printed (and a moment for any more)."""
    deadline = time.monotonic() + 5
    while len(token_requests(provider, "refresh_token")) < seen + expected:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    time.sleep(0.5)
    return token_requests(provider, "refresh_token")[seen:]


def refresh_with(provider: Provider, refresh_token: str) -> None:
    """Use a refresh token at the provider (raises ProviderError if it is refused)."""

    async def run() -> None:
        client = OIDCProviderClient(provider.issuer, CLIENT_ID)
        try:
            await client.refresh(refresh_token)
        finally:
            await client.close()

    asyncio.run(run())


def test_workers_renewing_one_session_at_once_make_one_refresh_call_and_keep_it(
    provider: Provider, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    secret, before = signed_in_session(provider, state)
    old_tokens = before.tokens(secret)
    assert old_tokens is not None and old_tokens.refresh_token is not None

    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(WORKERS + 1)
    results = spawn.Queue()
    workers = [
        spawn.Process(
            target=renew_in_worker, args=(provider.issuer, str(state), secret, start, results)
        )
        for _ in range(WORKERS)
    ]
    for worker in workers:
        worker.start()
    try:
        time.sleep(max(0.0, before.expires - time.time()) + 0.5)  # the ID token has expired
        seen = len(token_requests(provider, "refresh_token"))
        start.wait(timeout=60)
        outcomes = [results.get(timeout=60) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
                worker.join()

    assert outcomes == [f"signed in as {ALICE}"] * WORKERS
    assert refresh_calls_after(provider, seen, 1) == ["grant.success refresh_token"]
    # The store holds the renewed session, with the provider's new (rotated) refresh token...
    store = SessionStore(state)
    after = store.lookup(secret)
    store.close()
    assert after is not None and after.expires > before.expires
    new_tokens = after.tokens(secret)
    assert new_tokens is not None and new_tokens.refresh_token not in (
        None,
        old_tokens.refresh_token,
    )
    # ...which the provider still honours: the sign-in was not revoked as a replay.
    assert new_tokens.refresh_token is not None
    refresh_with(provider, new_tokens.refresh_token)


def test_a_worker_stuck_renewing_a_session_delays_it_but_never_ends_it(
    provider: Provider, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    secret, before = signed_in_session(provider, state)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_RENEWAL_LOCK, str(state), before.key],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )

    async def scenario() -> None:
        sign_in = browser_sign_in(oidc_config(provider.issuer), state)
        sign_in.renewal_wait = 1.0
        try:
            await requests_while_a_worker_is_stuck(sign_in)
        finally:
            await sign_in.close()

    async def requests_while_a_worker_is_stuck(sign_in: BrowserSignIn) -> None:
        # While the ID token still holds (the last second before it expires, when a renewal is
        # due), requests go on with it rather than wait for the stuck worker.
        sign_in.clock = lambda: before.expires - 0.5
        started = time.monotonic()
        early = await sign_in.session(api_call(secret))
        assert describe(early) == f"signed in as {ALICE}"
        assert time.monotonic() - started < 0.5
        sign_in.clock = time.time

        # Once it has expired, a request waits for that renewal, a bounded time: 503, and the
        # session is kept (no sign-out, no refresh call).
        await asyncio.sleep(max(0.0, before.expires - time.time()) + 0.5)
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="another gateway worker"):
            await sign_in.session(api_call(secret))
        assert 1.0 <= time.monotonic() - started < 5.0
        assert sign_in.store.lookup(secret) == before

        # The stuck worker crashes: the kernel drops its lock and the next request renews.
        holder.kill()
        holder.wait()
        renewed = await sign_in.session(api_call(secret))
        assert describe(renewed) == f"signed in as {ALICE}"
        after = sign_in.store.lookup(secret)
        assert after is not None and after.expires > before.expires

    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        seen = len(token_requests(provider, "refresh_token"))
        asyncio.run(scenario())
        assert refresh_calls_after(provider, seen, 1) == ["grant.success refresh_token"]
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
