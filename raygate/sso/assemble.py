"""The browser sign-in step from configuration: chosen and built in one place (server assembly)."""

from __future__ import annotations

from pathlib import Path

from raygate.authn.oidc import OIDCAuthenticator, OIDCOptions
from raygate.config import OIDCConfig
from raygate.sso.flow import BrowserSignIn
from raygate.sso.provider import OIDCProviderClient
from raygate.sso.renewal_lock import RenewalLocks
from raygate.sso.store import SessionStore


def oidc_options(oidc: OIDCConfig) -> OIDCOptions:
    return OIDCOptions(
        issuer_url=oidc.issuer_url,
        client_id=oidc.client_id,
        username_claim=oidc.username_claim,
        username_prefix=oidc.username_prefix,
        groups_claim=oidc.groups_claim,
        groups_prefix=oidc.groups_prefix,
        signing_algorithms=oidc.signing_algorithms,
        ca_file=oidc.ca_file,
    )


def browser_sign_in(oidc: OIDCConfig, state_dir: Path, *, timeout: float = 10.0) -> BrowserSignIn:
    """The step for `oidc` (its client secret read now: a missing file fails at start-up),
    with sessions in `state_dir` (and their renewal locks, shared with the other workers)."""
    options = oidc_options(oidc)
    provider = OIDCProviderClient(
        oidc.issuer_url,
        oidc.client_id,
        client_secret=oidc.read_client_secret(),
        scopes=oidc.scopes,
        ca_file=oidc.ca_file,
        timeout=timeout,
    )
    verifier = OIDCAuthenticator(options, timeout=timeout)
    return BrowserSignIn(
        provider,
        verifier,
        options,
        SessionStore(state_dir),
        RenewalLocks(state_dir),
        renewal_wait=2 * timeout,
    )
