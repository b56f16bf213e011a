"""`raygate login`, `raygate env`, `raygate whoami`: a person's own identity on the command line.

`login` signs in with the organization's OpenID provider as a public client (no secret): the
device-authorization flow by default (a code to enter on any device's browser), or with
`--browser` a loopback redirect with PKCE. The tokens go to a 0600 file in the user's config
dir (raygate.sso.cli_tokens); `env` prints the exports that make `ray job ...` and Ray Client
send the ID token; `whoami` asks the gateway who it takes the caller for.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
import webbrowser
from datetime import UTC, datetime
from typing import Any

import click

from raygate.cli.common import report_errors
from raygate.errors import BackendUnavailable, SignInError

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# offline_access: a refresh token, so `raygate env` can renew the ID token without a new login.
DEFAULT_SCOPES = ("openid", "email", "profile", "offline_access")
EXEC_CREDENTIAL_VERSION = "client.authentication.k8s.io/v1"


def _say(message: str) -> None:
    click.echo(message, err=True)


def _verifier(issuer: str, client_id: str, ca_file: str | None):  # type: ignore[no-untyped-def]
    from raygate.authn.oidc import OIDCAuthenticator, OIDCOptions

    return OIDCAuthenticator(OIDCOptions(issuer, client_id, ca_file=ca_file))


async def _device_login(provider, verifier) -> Any:  # type: ignore[no-untyped-def]
    from raygate.errors import ProviderError

    grant = await provider.device_authorization()
    _say(
        f"To sign in, open {grant.verification_uri} in a browser and enter the code "
        f"{grant.user_code}"
    )
    if grant.verification_uri_complete:
        _say(f"(or open {grant.verification_uri_complete})")
    interval = max(1, grant.interval)
    deadline = time.monotonic() + grant.expires_in
    while time.monotonic() < deadline:
        await asyncio.sleep(interval)
        try:
            tokens = await provider.poll_device(grant.device_code)
        except ProviderError as err:
            if err.error == "authorization_pending":
                continue
            if err.error == "slow_down":
                interval += 5
                continue
            if err.error == "access_denied":
                raise SignInError("the sign-in was denied at the identity provider") from None
            if err.error == "expired_token":
                break
            raise
        if await verifier.verify(tokens.id_token) is None:
            raise SignInError("the provider's ID token did not verify")
        return tokens
    raise SignInError("the device code expired before the sign-in was approved; try again")


async def _browser_login(provider, verifier, timeout: float) -> Any:  # type: ignore[no-untyped-def]
    from aiohttp import web
    from authlib.common.security import generate_token

    from raygate.sso.provider import PKCE, new_state

    pkce, state, nonce = PKCE.new(), new_state(), generate_token(32)
    answer: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()

    async def callback(request: web.Request) -> web.Response:
        if not answer.done():
            answer.set_result(dict(request.query))
        return web.Response(
            text="raygate: sign-in received; you can close this tab.\n", content_type="text/plain"
        )

    app = web.Application()
    app.router.add_get("/callback", callback)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        redirect_uri = f"http://127.0.0.1:{port}/callback"
        url = await provider.authorization_url(
            redirect_uri, state=state, nonce=nonce, code_challenge=pkce.challenge
        )
        _say(f"Opening your browser to sign in; if it does not open, visit:\n  {url}")
        webbrowser.open(url)
        try:
            params = await asyncio.wait_for(answer, timeout)
        except TimeoutError:
            raise SignInError(f"no sign-in within {timeout:g}s; try again") from None
    finally:
        await runner.cleanup()
    if not secrets.compare_digest(params.get("state", ""), state):
        raise SignInError("the sign-in answer's state does not match (a forged redirect?)")
    if "error" in params:
        raise SignInError(f"the identity provider refused the sign-in ({params['error']})")
    if "code" not in params:
        raise SignInError("the sign-in answer has no code")
    tokens = await provider.exchange_code(params["code"], redirect_uri, pkce.verifier)
    claims = await verifier.verify(tokens.id_token)
    if claims is None or not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
        raise SignInError("the provider's ID token did not verify (signature, audience or nonce)")
    return tokens


def _exec_credential(id_token: str, expiry: float | None) -> str:
    status: dict[str, Any] = {"token": id_token}
    if expiry is not None:
        status["expirationTimestamp"] = datetime.fromtimestamp(expiry, UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
    return json.dumps(
        {"apiVersion": EXEC_CREDENTIAL_VERSION, "kind": "ExecCredential", "status": status}
    )


async def _login(
    issuer: str,
    client_id: str,
    scopes: tuple[str, ...],
    ca_file: str | None,
    use_browser: bool,
    timeout: float,
    reuse: bool,
):  # type: ignore[no-untyped-def]
    from raygate.sso import cli_tokens
    from raygate.sso.provider import OIDCProviderClient

    if reuse:
        try:
            stored = cli_tokens.load()
        except SignInError:
            stored = None
        if stored is not None and (stored.issuer, stored.client_id) == (issuer, client_id):
            try:
                return await cli_tokens.fresh(stored)
            except SignInError:
                pass  # expired for good: sign in again
    provider = OIDCProviderClient(issuer, client_id, scopes=scopes, ca_file=ca_file)
    verifier = _verifier(issuer, client_id, ca_file)
    try:
        if use_browser:
            tokens = await _browser_login(provider, verifier, timeout)
        else:
            tokens = await _device_login(provider, verifier)
    finally:
        await provider.close()
        await verifier.close()
    login = cli_tokens.StoredLogin(
        issuer, client_id, tokens.id_token, tokens.refresh_token, scopes, ca_file
    )
    cli_tokens.save(login)
    return login


def _check_issuer(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    from raygate.config.values import check_issuer_url

    problem = check_issuer_url(value)
    if problem is not None:
        raise click.BadParameter(problem)
    return value


@click.command()
@click.option("--issuer", required=True, callback=_check_issuer, help="The OIDC issuer URL.")
@click.option("--client-id", required=True, help="The public client registered for raygate.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    help="A scope to ask for besides openid, email, profile and offline_access (repeatable), "
    "e.g. groups.",
)
@click.option(
    "--browser",
    "use_browser",
    is_flag=True,
    help="Sign in in this machine's browser (loopback redirect with PKCE) instead of a device code.",
)
@click.option("--ca-file", default=None, help="CA bundle for a provider with a private CA.")
@click.option(
    "--timeout", default=300.0, show_default=True, help="Seconds to wait for the browser sign-in."
)
@click.option(
    "--exec-credential",
    is_flag=True,
    help="Print a kubectl-style ExecCredential (client.authentication.k8s.io/v1) with the ID "
    "token, reusing a valid login (renewed if needed) without asking again.",
)
@report_errors
def login(
    issuer: str,
    client_id: str,
    scopes: tuple[str, ...],
    use_browser: bool,
    ca_file: str | None,
    timeout: float,
    exec_credential: bool,
) -> None:
    """Sign in with your organization's OpenID provider (tokens kept 0600 in your config dir)."""
    from raygate.sso import cli_tokens

    wanted = tuple(dict.fromkeys((*DEFAULT_SCOPES, *scopes)))
    try:
        stored = asyncio.run(
            _login(issuer, client_id, wanted, ca_file, use_browser, timeout, exec_credential)
        )
    except BackendUnavailable as err:
        raise SignInError(str(err)) from None
    if exec_credential:
        click.echo(_exec_credential(stored.id_token, stored.expiry()))
        return
    _say(f"Logged in; tokens saved in {cli_tokens.config_dir()} (mode 0600).")
    _say('Next: eval "$(raygate env)" then use `ray job submit` as usual.')


SHELLS = ("bash", "fish", "powershell")


def _quote(shell: str, value: str) -> str:
    if shell == "powershell":
        return "'" + value.replace("'", "''") + "'"
    if shell == "fish":
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return "'" + value.replace("'", "'\"'\"'") + "'"


def env_lines(shell: str, id_token: str, token_file: str) -> list[str]:
    values = {
        "RAY_JOB_HEADERS": json.dumps({"Authorization": f"Bearer {id_token}"}),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": token_file,
    }
    if shell == "fish":
        return [f"set -gx {k} {_quote(shell, v)};" for k, v in values.items()]
    if shell == "powershell":
        return [f"$Env:{k} = {_quote(shell, v)}" for k, v in values.items()]
    return [f"export {k}={_quote(shell, v)}" for k, v in values.items()]


@click.command()
@click.option(
    "--shell",
    type=click.Choice(SHELLS),
    default="bash",
    show_default=True,
    help="Syntax of the exports (bash also suits zsh and sh).",
)
@report_errors
def env(shell: str) -> None:
    """Print the exports that make `ray job ...` and Ray Client use your login:
    eval "$(raygate env)"."""
    from raygate.sso import cli_tokens

    try:
        stored = asyncio.run(cli_tokens.fresh(cli_tokens.load()))
    except BackendUnavailable as err:
        raise SignInError(str(err)) from None
    # The token file is rewritten on every renewal; make sure it holds this token.
    path = cli_tokens.save(stored)
    for line in env_lines(shell, stored.id_token, str(path)):
        click.echo(line)


@click.command()
@click.option(
    "--address",
    default=None,
    help=f"The gateway (default: $RAY_ADDRESS if it is http(s), else {DEFAULT_ADDRESS}).",
)
@click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@report_errors
def whoami(address: str | None, output: str) -> None:
    """Who the gateway takes you for (user and groups), like `kubectl auth whoami`."""
    from raygate.sso import cli_tokens

    if address is None:
        ray_address = os.environ.get("RAY_ADDRESS", "")
        address = (
            ray_address if ray_address.startswith(("http://", "https://")) else DEFAULT_ADDRESS
        )
    token = _caller_token()
    if token is None:
        stored = asyncio.run(cli_tokens.fresh(cli_tokens.load()))
        token = stored.id_token
    status, body = asyncio.run(_ask_whoami(address.rstrip("/"), token))
    if status != 200:
        raise SignInError(
            f"the gateway at {address} answered {status}: {body.strip().splitlines()[0] if body.strip() else ''}"
        )
    review = json.loads(body)
    if output == "json":
        click.echo(json.dumps(review, indent=2))
        return
    info = review.get("status", {}).get("userInfo", {})
    rows = [("Username", info.get("username", ""))]
    if info.get("uid"):
        rows.append(("UID", info["uid"]))
    rows.append(("Groups", "[" + " ".join(info.get("groups", [])) + "]"))
    width = max(len("ATTRIBUTE"), *(len(k) for k, _ in rows))
    click.echo(f"{'ATTRIBUTE'.ljust(width)}   VALUE")
    for key, value in rows:
        click.echo(f"{key.ljust(width)}   {value}")


def _caller_token() -> str | None:
    """A bearer token already in RAY_JOB_HEADERS (what `ray job` would send), if any."""
    headers = os.environ.get("RAY_JOB_HEADERS")
    if not headers:
        return None
    try:
        parsed = json.loads(headers)
    except ValueError:
        return None
    for key, value in parsed.items() if isinstance(parsed, dict) else ():
        if key.lower() == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


async def _ask_whoami(address: str, token: str) -> tuple[int, str]:
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session,
            session.get(
                f"{address}/raygate/whoami",
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            ) as response,
        ):
            return response.status, await response.text()
    except (aiohttp.ClientError, TimeoutError) as err:
        raise SignInError(
            f"cannot reach the gateway at {address}: {err or type(err).__name__}"
        ) from None
