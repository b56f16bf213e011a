"""The CLI's own sign-in: `raygate login` keeps the person's tokens in their config dir.

    $XDG_CONFIG_HOME/raygate/login.json   (default ~/.config/raygate) issuer, client id, tokens
    $XDG_CONFIG_HOME/raygate/id-token     the current ID token alone (RAY_AUTH_TOKEN_PATH)

Both are 0600 (written to a temporary file in the same directory and renamed, so a reader
never sees half a token). An expired ID token is renewed with the refresh token when one was
issued; otherwise the person logs in again.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import jwt

from raygate.errors import ConfigError, ProviderError, SignInError
from raygate.sso.provider import OIDCProviderClient, TokenSet

LOGIN_FILE = "login.json"
TOKEN_FILE = "id-token"
# An ID token this close to its expiry is renewed before use.
EXPIRY_MARGIN = 30.0


def config_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "raygate"


@dataclass
class StoredLogin:
    issuer: str
    client_id: str
    id_token: str
    refresh_token: str | None = None
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    ca_file: str | None = None

    def expiry(self) -> float | None:
        try:
            exp = jwt.decode(self.id_token, options={"verify_signature": False}).get("exp")
        except jwt.PyJWTError:
            return None
        return float(exp) if isinstance(exp, int | float) else None

    def expired(self, now: float | None = None) -> bool:
        exp = self.expiry()
        return exp is None or (now or time.time()) >= exp - EXPIRY_MARGIN

    def provider(self) -> OIDCProviderClient:
        return OIDCProviderClient(
            self.issuer, self.client_id, scopes=self.scopes, ca_file=self.ca_file
        )


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(login: StoredLogin, directory: Path | None = None) -> Path:
    directory = directory or config_dir()
    data = asdict(login)
    data["scopes"] = list(login.scopes)
    try:
        _write_private(directory / LOGIN_FILE, json.dumps(data, indent=2).encode())
        _write_private(directory / TOKEN_FILE, login.id_token.encode())
    except OSError as err:
        raise ConfigError(
            f"cannot write the login under {directory}: {err.strerror or err}"
        ) from None
    return directory / TOKEN_FILE


def load(directory: Path | None = None) -> StoredLogin:
    path = (directory or config_dir()) / LOGIN_FILE
    try:
        data = json.loads(path.read_text())
        return StoredLogin(
            issuer=data["issuer"],
            client_id=data["client_id"],
            id_token=data["id_token"],
            refresh_token=data.get("refresh_token"),
            scopes=tuple(data.get("scopes") or ("openid",)),
            ca_file=data.get("ca_file"),
        )
    except FileNotFoundError:
        raise SignInError(
            "not logged in: run `raygate login --issuer URL --client-id ID` first"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SignInError(f"{path} is unreadable ({err}); run `raygate login` again") from None


def token_path(directory: Path | None = None) -> Path:
    return (directory or config_dir()) / TOKEN_FILE


async def fresh(login: StoredLogin, directory: Path | None = None) -> StoredLogin:
    """`login` with an ID token that is not about to expire: renewed (and saved) if needed."""
    if not login.expired():
        return login
    if login.refresh_token is None:
        raise SignInError("your login has expired and cannot be renewed: run `raygate login` again")
    provider = login.provider()
    try:
        tokens: TokenSet = await provider.refresh(login.refresh_token)
    except ProviderError as err:
        raise SignInError(
            f"your login could not be renewed ({err.error}): run `raygate login` again"
        ) from None
    finally:
        await provider.close()
    renewed = StoredLogin(
        login.issuer,
        login.client_id,
        tokens.id_token,
        tokens.refresh_token,
        login.scopes,
        login.ca_file,
    )
    save(renewed, directory)
    return renewed
