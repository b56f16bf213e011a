"""A person opens the Ray dashboard in Chromium, pastes a raygate token into Ray's own login
dialog, and sees the cluster's jobs: no header-injecting extension."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.conftest import RaygateUp
from tests.integration.test_ray_gateway import grant_submitter, submit_no_wait

# As the workplace's probe starts it: no sandbox as root, nothing that phones home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail(
            "chromium is not installed: `make test-deps` installs it (Debian package chromium)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


def test_dashboard_login_with_a_raygate_token(
    raygate_up: RaygateUp, browser: Browser, tmp_path: Path
) -> None:
    token = grant_submitter(raygate_up, "browser-user")
    job_id = f"browser-{uuid.uuid4().hex[:8]}"
    submit_no_wait(raygate_up, token, "echo", "hello from the browser test", submission_id=job_id)

    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{raygate_up.address}/#/jobs")
    # Without a session the API answers 401 and Ray's UI asks for a token.
    token_field = page.get_by_placeholder("Enter your authentication token")
    token_field.wait_for(timeout=30_000)
    assert page.get_by_text(job_id).count() == 0

    token_field.fill("not-a-valid-token")
    page.get_by_role("button", name="Submit").click()
    page.get_by_text("Invalid authentication token").wait_for(timeout=15_000)
    assert context.cookies() == []

    token_field.fill(token)
    page.get_by_role("button", name="Submit").click()
    page.wait_for_load_state("networkidle")
    page.goto(f"{raygate_up.address}/#/jobs")
    page.get_by_text(job_id).first.wait_for(timeout=30_000)
    page.screenshot(path=str(tmp_path / "jobs.png"))

    cookies = {c["name"]: c for c in context.cookies()}
    session = cookies["ray-authentication-token"]
    assert session["value"] == token and session["httpOnly"] and session["sameSite"] == "Strict"
    ray_token = (raygate_up.state / "ray-auth-token").read_text().strip()
    assert all(c["value"] != ray_token for c in context.cookies())
    audit = (raygate_up.state / "audit.log").read_text()
    assert (
        '"path":"/api/authenticate"' in audit
        and "system:serviceaccount:default:browser-user" in audit
    )
    context.close()
