"""The OAuth 2.0 / OpenID Connect client calls raygate makes to an identity provider.

authlib builds and parses the protocol messages (authorization request, token requests,
client authentication, PKCE); aiohttp carries them, as for every other control-plane call.
ID tokens are verified with PyJWT by `raygate.authn.oidc.OIDCAuthenticator`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import aiohttp
from authlib.common.security import generate_token
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from raygate.authn.oidc import DISCOVERY_PATH
from raygate.errors import BackendUnavailable, ConfigError, ProviderError, SignInError

T = TypeVar("T")
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_SCOPES = ("openid", "email", "profile")


@dataclass(frozen=True)
class TokenSet:
    """What a token endpoint answered (the fields raygate uses)."""

    id_token: str
    refresh_token: str | None = None
    access_token: str | None = None

    @classmethod
    def from_response(cls, body: dict[str, Any]) -> TokenSet:
        id_token = body.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise SignInError(
                "the provider's token response has no id_token (is `openid` a scope?)"
            )
        refresh = body.get("refresh_token")
        access = body.get("access_token")
        return cls(
            id_token=id_token,
            refresh_token=refresh if isinstance(refresh, str) and refresh else None,
            access_token=access if isinstance(access, str) and access else None,
        )


@dataclass(frozen=True)
class PKCE:
    """A fresh code verifier and its S256 challenge (RFC 7636)."""

    verifier: str
    challenge: str

    @classmethod
    def new(cls) -> PKCE:
        verifier = generate_token(64)
        return cls(verifier, create_s256_code_challenge(verifier))


@dataclass(frozen=True)
class DeviceAuthorization:
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: int
    interval: int


class OIDCProviderClient:
    """One client registration (client id, optional secret) at one issuer."""

    def __init__(
        self,
        issuer_url: str,
        client_id: str,
        *,
        client_secret: str | None = None,
        scopes: Sequence[str] = DEFAULT_SCOPES,
        ca_file: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.issuer_url = issuer_url
        self.client_id = client_id
        self.client_secret = client_secret
        self.scopes = tuple(scopes)
        self.ca_file = ca_file
        self.timeout = timeout
        self._metadata: dict[str, Any] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- discovery ---------------------------------------------------------------------------
    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            url = self.issuer_url.rstrip("/") + DISCOVERY_PATH
            document = await self._request("GET", url)
            if document.get("issuer") != self.issuer_url:
                raise BackendUnavailable(
                    f"OIDC discovery at {self.issuer_url} names issuer {document.get('issuer')!r}; "
                    "the configured issuer URL must match it exactly"
                )
            for endpoint in ("authorization_endpoint", "token_endpoint"):
                if not isinstance(document.get(endpoint), str):
                    raise BackendUnavailable(
                        f"OIDC discovery at {self.issuer_url} has no {endpoint}"
                    )
            self._metadata = document
        return self._metadata

    async def endpoint(self, name: str) -> str | None:
        value = (await self.metadata()).get(name)
        return value if isinstance(value, str) and value else None

    # -- authorization code + PKCE -----------------------------------------------------------
    async def authorization_url(
        self, redirect_uri: str, *, state: str, nonce: str, code_challenge: str
    ) -> str:
        endpoint = await self.endpoint("authorization_endpoint")
        assert endpoint is not None  # checked by metadata()
        return prepare_grant_uri(
            endpoint,
            self.client_id,
            "code",
            redirect_uri=redirect_uri,
            scope=" ".join(self.scopes),
            state=state,
            nonce=nonce,
            code_challenge=code_challenge,
            code_challenge_method="S256",
        )

    async def exchange_code(self, code: str, redirect_uri: str, code_verifier: str) -> TokenSet:
        body = prepare_token_request(
            "authorization_code",
            code=code,
            redirect_uri=redirect_uri,
            code_verifier=code_verifier,
        )
        return TokenSet.from_response(await self._token_request(body))

    async def refresh(self, refresh_token: str) -> TokenSet:
        body = prepare_token_request("refresh_token", refresh_token=refresh_token)
        answer = await self._token_request(body)
        tokens = TokenSet.from_response(answer)
        if tokens.refresh_token is None:  # the provider keeps the old one valid (no rotation)
            tokens = TokenSet(tokens.id_token, refresh_token, tokens.access_token)
        return tokens

    # -- device authorization (RFC 8628) -----------------------------------------------------
    async def device_authorization(self) -> DeviceAuthorization:
        endpoint = await self.endpoint("device_authorization_endpoint")
        if endpoint is None:
            raise SignInError(
                f"{self.issuer_url} offers no device authorization; use `raygate login --browser`"
            )
        body = urlencode({"scope": " ".join(self.scopes)})
        answer = await self._client_request(endpoint, body)
        try:
            return DeviceAuthorization(
                device_code=str(answer["device_code"]),
                user_code=str(answer["user_code"]),
                verification_uri=str(answer["verification_uri"]),
                verification_uri_complete=answer.get("verification_uri_complete"),
                expires_in=int(answer.get("expires_in", 600)),
                interval=int(answer.get("interval", 5)),
            )
        except (KeyError, TypeError, ValueError):
            raise SignInError("the provider's device authorization answer is incomplete") from None

    async def poll_device(self, device_code: str) -> TokenSet:
        """One poll; raises ProviderError('authorization_pending' / 'slow_down' / ...)."""
        body = prepare_token_request(DEVICE_CODE_GRANT, device_code=device_code)
        return TokenSet.from_response(await self._token_request(body))

    # -- logout ------------------------------------------------------------------------------
    async def end_session_url(
        self, *, id_token_hint: str | None, post_logout_redirect_uri: str
    ) -> str | None:
        """Where to send a browser to end its session at the provider; None if it offers none."""
        try:
            endpoint = await self.endpoint("end_session_endpoint")
        except BackendUnavailable:
            return None
        if endpoint is None:
            return None
        params = {"client_id": self.client_id, "post_logout_redirect_uri": post_logout_redirect_uri}
        if id_token_hint:
            params["id_token_hint"] = id_token_hint
        separator = "&" if urlsplit(endpoint).query else "?"
        return endpoint + separator + urlencode(params)

    # -- transport ---------------------------------------------------------------------------
    async def _token_request(self, body: str) -> dict[str, Any]:
        endpoint = await self.endpoint("token_endpoint")
        assert endpoint is not None
        return await self._client_request(endpoint, body)

    async def _client_request(self, url: str, body: str) -> dict[str, Any]:
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        if self.client_secret:
            auth = ClientAuth(self.client_id, self.client_secret, "client_secret_basic")
            url, headers, body = auth.prepare("POST", url, headers, body)
        else:
            auth = ClientAuth(self.client_id, None, "none")  # a public client names itself
            url, headers, body = auth.prepare("POST", url, headers, body)
        return await self._request("POST", url, headers=headers, data=body)

    async def _request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        data: str | None = None,
    ) -> dict[str, Any]:
        return await in_task(self._request_in_task(method, url, headers, data))

    async def _request_in_task(
        self, method: str, url: str, headers: dict[str, str] | None, data: str | None
    ) -> dict[str, Any]:
        session = self._client_session()
        try:
            async with session.request(
                method,
                url,
                headers=headers,
                data=data,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                allow_redirects=False,
            ) as response:
                status = response.status
                try:
                    document = await response.json(content_type=None)
                except ValueError:
                    document = None
        except (aiohttp.ClientError, TimeoutError) as err:
            raise BackendUnavailable(
                f"cannot reach the OIDC provider at {url}: {err or type(err).__name__}"
            ) from None
        if isinstance(document, dict) and isinstance(document.get("error"), str) and status < 500:
            raise ProviderError(document["error"], str(document.get("error_description") or ""))
        if status != 200 or not isinstance(document, dict):
            raise BackendUnavailable(f"the OIDC provider answered {status} for {url}")
        return document

    def _client_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            ssl_context: ssl.SSLContext | bool = True
            if self.ca_file:
                try:
                    ssl_context = ssl.create_default_context(cafile=self.ca_file)
                except (OSError, ssl.SSLError) as err:
                    raise ConfigError(f"OIDC CA file {self.ca_file}: {err}") from None
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context))
        return self._session


async def in_task(awaitable: Awaitable[T]) -> T:
    """Await `awaitable` inside an asyncio Task. The data plane steps a decision outside any
    task until it first waits (raygate.dataplane.http.HttpConnection._start), and aiohttp's timeouts need
    one."""
    if asyncio.current_task() is None:
        return await asyncio.ensure_future(awaitable)
    return await awaitable


def new_state() -> str:
    return generate_token(43)
