"""People sign in to the Ray dashboard and the CLI with a real OpenID provider (npm's certified
`oidc-provider`), driven in Debian's Chromium, in front of the session's real Ray head.

The SSO gateway is a second `raygate up --upstream ... --oidc-issuer-url ...` in front of the
same Ray head as the session fixture. alice is in `ml-team` (every verb on the RayCluster),
bob in `viewers` (get only).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.browser.test_dashboard_in_browser import CHROMIUM_ARGS
from tests.conftest import (
    REPO,
    RaygateUp,
    executable,
    free_port,
    start_front_gateway,
    stop_raygate_up,
)
from tests.integration.test_ray_gateway import grant_submitter, http, submit_no_wait
from tests.oidc_provider import (
    CLIENT_ID,
    SECRET_CLIENT_ID,
    SHORT_CLIENT_ID,
    Provider,
    run_provider,
    sign_in_at_provider,
)

ACCOUNTS = {"alice@example.com": ["ml-team"], "bob@example.com": ["viewers"]}
ARTIFACTS = REPO / "tests" / "artifacts"
SESSION_COOKIE = "__Host-raygate-session"
PEOPLE_RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: ray-user, namespace: default}
rules:
- apiGroups: ["ray.io"]
  resources: ["rayclusters"]
  verbs: ["*"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: ray-viewer, namespace: default}
rules:
- apiGroups: ["ray.io"]
  resources: ["rayclusters"]
  verbs: ["get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: ml-team, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: ray-user}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: ml-team}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: viewers, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: ray-viewer}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: viewers}
"""


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    with run_provider(ACCOUNTS, short_ttl=20) as running:
        yield running


def start_sso_gateway(
    raygate_up: RaygateUp,
    provider: Provider,
    workdir: Path,
    client_id: str,
    port: int | None = None,
    extra: tuple[str, ...] = (),
) -> RaygateUp:
    up = start_front_gateway(
        raygate_up,
        workdir,
        "--oidc-issuer-url",
        provider.issuer,
        "--oidc-client-id",
        client_id,
        "--oidc-scope",
        "groups",
        "--oidc-scope",
        "offline_access",
        *extra,
        port=port,
    )
    applied = up.raygate("apply", "-f", "-", input=PEOPLE_RBAC)
    assert applied.returncode == 0, applied.stderr
    return up


@pytest.fixture(scope="module")
def sso(raygate_up: RaygateUp, provider: Provider) -> Iterator[RaygateUp]:
    workdir = Path(tempfile.mkdtemp(prefix="raygate-sso-"))
    up = start_sso_gateway(raygate_up, provider, workdir, CLIENT_ID)
    try:
        yield up
    finally:
        stop_raygate_up(up)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed: `make test-deps` installs it")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context()
    yield ctx
    ctx.close()


@pytest.fixture(scope="module")
def running_job(raygate_up: RaygateUp) -> Iterator[str]:
    """A job that runs for the whole module, submitted with a service-account token."""
    token = grant_submitter(raygate_up, "sso-submitter")
    job_id = f"sso-{uuid.uuid4().hex[:8]}"
    submit_no_wait(raygate_up, token, "sleep", "600", submission_id=job_id)
    yield job_id
    http(f"{raygate_up.address}/api/jobs/{job_id}/stop", method="POST", token=token)


def sign_in(page: Page, gateway: RaygateUp, provider: Provider, login: str) -> None:
    """Open the dashboard, get sent to the provider, sign in, come back signed in."""
    page.goto(f"{gateway.address}/")
    assert page.url.startswith(provider.issuer), page.url
    sign_in_at_provider(page, login)
    page.wait_for_url(f"{gateway.address}/**", timeout=30_000)


def fetch(page: Page, method: str, path: str) -> tuple[int, str]:
    """A request the dashboard's own page makes (same origin, the browser's own headers)."""
    status, body = page.evaluate(
        """async ([method, path]) => {
            const r = await fetch(path, {method, headers: {Accept: 'application/json'}});
            return [r.status, await r.text()];
        }""",
        [method, path],
    )
    return status, body


def went_through_provider(page: Page, url: str, provider: Provider) -> bool:
    """Open `url`; was the browser sent to the provider's authorization endpoint?"""
    visited: list[str] = []
    page.on("request", lambda r: visited.append(r.url))
    page.goto(url)
    page.wait_for_load_state()
    return any(u.startswith(f"{provider.issuer}/auth") for u in visited)


def jobs_page_lists(page: Page, gateway: RaygateUp, job_id: str) -> None:
    page.goto(f"{gateway.address}/#/jobs")
    try:
        page.get_by_text(job_id).first.wait_for(timeout=30_000)
    except Exception:
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / f"sso-jobs-failed-{uuid.uuid4().hex[:6]}.png"
        page.screenshot(path=str(shot))
        print(f"jobs page without {job_id}: {shot}; cookies {page.context.cookies()}")
        raise


def session_cookie(context: BrowserContext) -> dict:  # type: ignore[type-arg]
    cookies = {c["name"]: c for c in context.cookies()}
    assert SESSION_COOKIE in cookies, list(cookies)
    return cookies[SESSION_COOKIE]  # type: ignore[return-value]


def test_a_person_signs_in_and_the_jobs_page_lists_jobs(
    sso: RaygateUp, provider: Provider, context: BrowserContext, running_job: str
) -> None:
    page = context.new_page()
    sign_in(page, sso, provider, "alice@example.com")
    jobs_page_lists(page, sso, running_job)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "sso-jobs-signed-in.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot of the signed-in dashboard: {shot}")

    cookie = session_cookie(context)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["secure"]
    assert cookie["path"] == "/" and "domain" not in cookie or cookie["domain"] == "localhost"
    status, body = fetch(page, "GET", "/raygate/whoami")
    assert status == 200, body
    user_info = json.loads(body)["status"]["userInfo"]
    assert user_info["username"] == "alice@example.com"
    assert "ml-team" in user_info["groups"]

    listed = sso.raygate("get", "sessions")
    assert listed.returncode == 0 and "alice@example.com" in listed.stdout, listed.stderr
    assert cookie["value"] not in listed.stdout
    audit = (sso.state / "audit.log").read_text()
    assert '"user":"alice@example.com"' in audit and '"decision":"sign-in"' in audit
    # API clients without credentials still get 401, never a redirect to the provider.
    response = context.request.get(
        f"{sso.address}/api/jobs/",
        headers={"Accept": "application/json", "Cookie": ""},
        max_redirects=0,
    )
    assert response.status == 401


def test_a_viewer_cannot_stop_a_job_that_a_team_member_can(
    sso: RaygateUp, provider: Provider, browser: Browser, running_job: str
) -> None:
    bob = browser.new_context()
    try:
        page = bob.new_page()
        sign_in(page, sso, provider, "bob@example.com")
        jobs_page_lists(page, sso, running_job)
        status, body = fetch(page, "POST", f"/api/jobs/{running_job}/stop")
        assert status == 403, body
        assert 'User "bob@example.com" cannot create' in body
        status, body = fetch(page, "GET", f"/api/jobs/{running_job}")
        assert status == 200 and json.loads(body)["status"] in ("PENDING", "RUNNING"), body
    finally:
        bob.close()
    audit = (sso.state / "audit.log").read_text()
    assert any(
        '"user":"bob@example.com"' in line and '"decision":"deny"' in line
        for line in audit.splitlines()
    )


def test_a_state_change_from_another_origin_is_refused(
    sso: RaygateUp, provider: Provider, context: BrowserContext, running_job: str
) -> None:
    page = context.new_page()
    sign_in(page, sso, provider, "alice@example.com")
    # The cookie rides along (same site: another port of the same host), Origin gives it away.
    response = context.request.post(
        f"{sso.address}/api/jobs/{running_job}/stop",
        headers={"Origin": "http://localhost:9", "Accept": "application/json"},
        max_redirects=0,
    )
    assert response.status == 403 and "another site or port" in response.text()
    status, body = fetch(page, "GET", f"/api/jobs/{running_job}")
    assert status == 200 and json.loads(body)["status"] in ("PENDING", "RUNNING"), body


def test_logout_ends_access_and_the_provider_session(
    sso: RaygateUp, provider: Provider, context: BrowserContext
) -> None:
    page = context.new_page()
    sign_in(page, sso, provider, "alice@example.com")
    old = session_cookie(context)["value"]
    assert fetch(page, "GET", "/api/jobs/")[0] == 200
    page.goto(f"{sso.address}/raygate/logout")
    # The provider's end-session page asks to confirm, then sends the browser back.
    assert page.url.startswith(provider.issuer), page.url
    page.get_by_role("button", name="Yes, sign me out").click()
    page.wait_for_url(f"{sso.address}/raygate/signed-out", timeout=30_000)
    assert "signed out" in page.content()
    assert fetch(page, "GET", "/api/jobs/")[0] == 401
    # The old cookie, replayed, is worth nothing: the server-side session is gone.
    replayed = context.request.get(
        f"{sso.address}/api/jobs/",
        headers={"Cookie": f"{SESSION_COOKIE}={old}", "Accept": "application/json"},
        max_redirects=0,
    )
    assert replayed.status == 401
    # Signed out at the provider too: opening the dashboard asks for a login again.
    page.goto(f"{sso.address}/")
    assert page.url.startswith(provider.issuer)
    page.locator("input[name=login]").wait_for(timeout=30_000)


def test_an_admin_revokes_a_session(
    sso: RaygateUp, provider: Provider, context: BrowserContext
) -> None:
    page = context.new_page()
    sign_in(page, sso, provider, "bob@example.com")
    assert fetch(page, "GET", "/api/jobs/")[0] == 200
    listed = sso.raygate("get", "sessions", "-o", "json")
    names = [
        s["name"] for s in json.loads(listed.stdout)["items"] if s["user"] == "bob@example.com"
    ]
    assert names, listed.stdout
    for name in names:
        deleted = sso.raygate("delete", "session", name)
        assert deleted.returncode == 0 and "deleted" in deleted.stdout, deleted.stderr
    assert fetch(page, "GET", "/api/jobs/")[0] == 401
    # The browser is sent through the provider again (which, still signed in, sends it back).
    assert went_through_provider(page, f"{sso.address}/", provider)


def test_a_forged_or_replayed_state_or_code_is_refused(
    sso: RaygateUp, provider: Provider, browser: Browser
) -> None:
    first = browser.new_context()
    second = browser.new_context()
    try:
        callbacks: list[str] = []
        page = first.new_page()
        page.on(
            "request",
            lambda r: callbacks.append(r.url) if "/oauth2/callback?" in r.url else None,
        )
        sign_in(page, sso, provider, "alice@example.com")
        assert len(callbacks) == 1
        callback = callbacks[0]

        forged = first.request.get(
            f"{sso.address}/oauth2/callback?state=forged&code=forged", max_redirects=0
        )
        assert forged.status == 400 and "state" in forged.text()
        replayed = first.request.get(callback, max_redirects=0)
        assert replayed.status == 400 and "already used" in replayed.text()

        # The used code with a fresh, valid state of another browser: the provider refuses it.
        code = re.search(r"[?&]code=([^&]+)", callback)
        assert code is not None
        start = second.request.get(f"{sso.address}/raygate/login", max_redirects=0)
        assert start.status == 302
        fresh_state = re.search(r"[?&]state=([^&]+)", start.headers["location"])
        assert fresh_state is not None
        reused = second.request.get(
            f"{sso.address}/oauth2/callback?code={code.group(1)}&state={fresh_state.group(1)}",
            max_redirects=0,
        )
        assert reused.status == 400 and "did not accept the sign-in code" in reused.text()
        assert SESSION_COOKIE not in {c["name"] for c in second.cookies()}
        # A callback started in one browser does not sign in another (login CSRF).
        planted = first.request.get(f"{sso.address}/raygate/login", max_redirects=0)
        planted_state = re.search(r"[?&]state=([^&]+)", planted.headers["location"])
        assert planted_state is not None
        other = second.request.get(
            f"{sso.address}/oauth2/callback?code=x&state={planted_state.group(1)}",
            max_redirects=0,
        )
        assert other.status == 400
    finally:
        first.close()
        second.close()


def test_sessions_survive_a_gateway_restart_and_expire_with_the_id_token(
    raygate_up: RaygateUp, provider: Provider, browser: Browser
) -> None:
    """With a client whose ID tokens live 20 s and that gets no refresh token."""
    workdir = Path(tempfile.mkdtemp(prefix="raygate-sso-short-"))
    port = free_port()
    gateway = start_sso_gateway(raygate_up, provider, workdir, SHORT_CLIENT_ID, port=port)
    context = browser.new_context()
    try:
        page = context.new_page()
        sign_in(page, gateway, provider, "alice@example.com")
        assert fetch(page, "GET", "/api/jobs/")[0] == 200
        stop_raygate_up(gateway)
        gateway = start_sso_gateway(raygate_up, provider, workdir, SHORT_CLIENT_ID, port=port)
        assert fetch(page, "GET", "/api/jobs/")[0] == 200  # the session outlived the restart
        listed = json.loads(gateway.raygate("get", "sessions", "-o", "json").stdout)["items"]
        expires = max(
            datetime.strptime(s["expires"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
            for s in listed
        )
        time.sleep(max(0.0, expires - time.time()) + 1.5)
        assert fetch(page, "GET", "/api/jobs/")[0] == 401  # an API call: 401, no redirect
        assert went_through_provider(page, f"{gateway.address}/", provider)
    finally:
        context.close()
        stop_raygate_up(gateway)
        shutil.rmtree(workdir, ignore_errors=True)


def start_login(env: dict[str, str], provider: Provider, *flags: str) -> subprocess.Popen[str]:
    """`raygate login` at `provider` as the test client (groups scope), `flags` added; its
    output piped for the test to read the link it prints."""
    return subprocess.Popen(
        [
            executable("raygate"),
            "login",
            "--issuer",
            provider.issuer,
            "--client-id",
            CLIENT_ID,
            *flags,
            "--scope",
            "groups",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def device_login(
    env: dict[str, str], provider: Provider, context: BrowserContext, person: str
) -> None:
    """`raygate login` with the device flow; the person approves the code in the browser."""
    login = start_login(env, provider)
    try:
        assert login.stderr is not None
        verification = None
        for line in login.stderr:
            found = re.search(r"\(or open (\S+)\)", line)
            if found:
                verification = found.group(1)
                break
        assert verification is not None
        page = context.new_page()
        page.goto(verification)
        page.get_by_role("button", name="Continue").click()
        sign_in_at_provider(page, person)
        page.get_by_text("Sign-in Success").wait_for(timeout=30_000)
        assert login.wait(timeout=60) == 0, login.stderr.read()
    finally:
        if login.poll() is None:
            login.kill()
            login.wait()


def test_the_cli_signs_in_with_the_device_flow_and_submits_a_job(
    sso: RaygateUp, provider: Provider, context: BrowserContext, tmp_path: Path
) -> None:
    env = sso.env(XDG_CONFIG_HOME=str(tmp_path / "config"))
    device_login(env, provider, context, "alice@example.com")
    config = tmp_path / "config" / "raygate"
    assert (config / "login.json").stat().st_mode & 0o777 == 0o600
    assert (config / "id-token").stat().st_mode & 0o777 == 0o600

    exports = sso.raygate("env", env=env)
    assert exports.returncode == 0, exports.stderr
    job_env = dict(env)
    for line in exports.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        job_env[name] = shlex.split(value)[0]
    assert job_env["RAY_AUTH_MODE"] == "token"
    assert Path(job_env["RAY_AUTH_TOKEN_PATH"]).read_text() in job_env["RAY_JOB_HEADERS"]

    submitted = sso.run(
        "ray",
        "job",
        "submit",
        "--address",
        sso.address,
        "--",
        "echo",
        "hello from alice",
        env=job_env,
        timeout=180,
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert "hello from alice" in submitted.stdout

    whoami = sso.raygate("whoami", "--address", sso.address, env=env)
    assert whoami.returncode == 0, whoami.stderr
    assert "alice@example.com" in whoami.stdout and "ml-team" in whoami.stdout
    exec_credential = sso.raygate(
        "login", "--issuer", provider.issuer, "--client-id", CLIENT_ID, "--exec-credential", env=env
    )
    assert exec_credential.returncode == 0, exec_credential.stderr
    credential = json.loads(exec_credential.stdout)
    assert credential["kind"] == "ExecCredential"
    assert credential["apiVersion"] == "client.authentication.k8s.io/v1"
    assert credential["status"]["token"] == Path(job_env["RAY_AUTH_TOKEN_PATH"]).read_text()
    audit = (sso.state / "audit.log").read_text()
    assert any(
        '"user":"alice@example.com"' in line
        and '"method":"POST"' in line
        and '"decision":"allow"' in line
        for line in audit.splitlines()
    )


def test_can_i_answers_for_people_and_their_groups(sso: RaygateUp) -> None:
    resource = "rayclusters.ray.io/ray-cluster-with-auth"
    alice = sso.raygate(
        "auth", "can-i", "create", resource, "--as=alice@example.com", "--as-group=ml-team"
    )
    bob = sso.raygate(
        "auth", "can-i", "create", resource, "--as=bob@example.com", "--as-group=viewers"
    )
    bob_get = sso.raygate(
        "auth", "can-i", "get", resource, "--as=bob@example.com", "--as-group=viewers"
    )
    assert (alice.returncode, alice.stdout.strip()) == (0, "yes")
    assert (bob.returncode, bob.stdout.strip()) == (1, "no")
    assert (bob_get.returncode, bob_get.stdout.strip()) == (0, "yes")


def _session_times(gateway: RaygateUp, user: str) -> tuple[float, float]:
    """(expires, refreshed) of `user`'s one session, from `raygate get sessions -o json`."""
    items = json.loads(gateway.raygate("get", "sessions", "-o", "json").stdout)["items"]
    (item,) = [s for s in items if s["user"] == user]

    def seconds(text: str) -> float:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()

    return seconds(item["expires"]), seconds(item["refreshed"])


def test_a_session_is_renewed_with_the_refresh_token(
    raygate_up: RaygateUp, browser: Browser
) -> None:
    """ID tokens that live 15 s, and a refresh token (offline_access): the session goes on."""
    with run_provider(ACCOUNTS, id_token_ttl=15) as short_lived:
        workdir = Path(tempfile.mkdtemp(prefix="raygate-sso-refresh-"))
        gateway = start_sso_gateway(raygate_up, short_lived, workdir, CLIENT_ID)
        context = browser.new_context()
        try:
            page = context.new_page()
            sign_in(page, gateway, short_lived, "alice@example.com")
            expires, _ = _session_times(gateway, "alice@example.com")
            time.sleep(max(0.0, expires - time.time()) + 1.5)
            status, body = fetch(page, "GET", "/api/jobs/")
            assert status == 200, body  # renewed behind the scenes, no trip to the provider
            renewed, refreshed = _session_times(gateway, "alice@example.com")
            assert renewed > expires and refreshed >= expires - 5
            assert page.url.startswith(gateway.address)

            # The CLI's login is renewed the same way by `raygate env`.
            env = gateway.env(XDG_CONFIG_HOME=str(workdir / "config"))
            approver = browser.new_context()  # not yet signed in at the provider
            try:
                device_login(env, short_lived, approver, "alice@example.com")
            finally:
                approver.close()
            token_file = workdir / "config" / "raygate" / "id-token"
            first = token_file.read_text()
            first_exp = jwt.decode(first, options={"verify_signature": False})["exp"]
            time.sleep(max(0.0, first_exp - time.time()) + 1.5)
            exports = gateway.raygate("env", env=env)
            assert exports.returncode == 0, exports.stderr
            second = token_file.read_text()
            assert second != first and second in exports.stdout
            assert jwt.decode(second, options={"verify_signature": False})["exp"] > first_exp
            whoami = gateway.raygate("whoami", "--address", gateway.address, env=env)
            assert whoami.returncode == 0 and "alice@example.com" in whoami.stdout, whoami.stderr
        finally:
            context.close()
            stop_raygate_up(gateway)
            shutil.rmtree(workdir, ignore_errors=True)


def test_the_cli_signs_in_with_a_loopback_redirect(
    sso: RaygateUp, provider: Provider, context: BrowserContext, tmp_path: Path
) -> None:
    """`raygate login --browser`: PKCE and a redirect to 127.0.0.1 (BROWSER=true opens
    nothing, the test's Chromium follows the printed link)."""
    env = sso.env(XDG_CONFIG_HOME=str(tmp_path / "config"), BROWSER="true")
    login = start_login(env, provider, "--browser")
    try:
        assert login.stderr is not None
        url = None
        for line in login.stderr:
            if line.startswith("  http"):
                url = line.strip()
                break
        assert url is not None and "code_challenge_method=S256" in url
        page = context.new_page()
        page.goto(url)
        sign_in_at_provider(page, "alice@example.com")
        page.get_by_text("sign-in received").wait_for(timeout=30_000)
        assert login.wait(timeout=60) == 0, login.stderr.read()
    finally:
        if login.poll() is None:
            login.kill()
            login.wait()
    whoami = sso.raygate("whoami", "--address", sso.address, "-o", "json", env=env)
    assert whoami.returncode == 0, whoami.stderr
    user_info = json.loads(whoami.stdout)["status"]["userInfo"]
    assert user_info["username"] == "alice@example.com" and "ml-team" in user_info["groups"]


def test_a_confidential_client_signs_in_with_its_secret(
    raygate_up: RaygateUp, provider: Provider, browser: Browser
) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="raygate-sso-secret-"))
    secret_file = workdir / "client-secret"
    secret_file.write_text(provider.client_secret + "\n")
    gateway = start_sso_gateway(
        raygate_up,
        provider,
        workdir,
        SECRET_CLIENT_ID,
        extra=("--oidc-client-secret-file", str(secret_file)),
    )
    context = browser.new_context()
    try:
        page = context.new_page()
        sign_in(page, gateway, provider, "bob@example.com")
        status, body = fetch(page, "GET", "/raygate/whoami")
        assert status == 200 and "bob@example.com" in body, body
        assert provider.client_secret not in "".join(gateway.output)
        assert provider.client_secret not in (gateway.state / "audit.log").read_text()
    finally:
        context.close()
        stop_raygate_up(gateway)
        shutil.rmtree(workdir, ignore_errors=True)
