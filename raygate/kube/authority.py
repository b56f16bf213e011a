"""The Kubernetes authority assembled from configuration: one API client, cached TokenReview
authentication, cached SubjectAccessReview authorization, and cached OIDC when configured.

The gateway composes these with its other authenticators; this module only builds them, so the
same caches and timeouts apply whichever command starts the gateway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from raygate.authn.oidc import OIDCAuthenticator, OIDCOptions
from raygate.authz.cache import CachingAuthenticator, CachingAuthorizer, EventHook
from raygate.config import CacheConfig, GatewayConfig, OIDCConfig
from raygate.kube.client import KubeClient
from raygate.kube.sar import SubjectAccessReviewAuthorizer
from raygate.kube.tokenreview import TokenReviewAuthenticator

# (cache name, event) -> None; matches GatewayMetrics.cache_events labels (cache, result).
CacheEventHook = Callable[[str, str], None]


def _events(hook: CacheEventHook | None, cache: str) -> EventHook | None:
    if hook is None:
        return None
    return lambda event: hook(cache, event)


@dataclass
class KubeAuthority:
    client: KubeClient
    authenticator: CachingAuthenticator  # TokenReview, cached by token hash
    authorizer: CachingAuthorizer  # SubjectAccessReview, allow and deny cached apart

    async def ping(self) -> str:
        """The API server's version; raises BackendUnavailable when it does not answer."""
        return await self.client.ping()

    async def close(self) -> None:
        await self.client.close()


async def connect_kube_authority(
    config: GatewayConfig, *, on_cache_event: CacheEventHook | None = None
) -> KubeAuthority:
    """Connect with `config.kubeconfig` (in-cluster credentials when unset)."""
    client = await KubeClient.connect(config.kubeconfig, timeout=config.limits.backend_timeout)
    return KubeAuthority(
        client=client,
        authenticator=CachingAuthenticator(
            TokenReviewAuthenticator(client, config.authentication.audiences),
            ttl=config.cache.authentication_ttl, max_entries=config.cache.max_entries,
            on_event=_events(on_cache_event, "authn"),
        ),
        authorizer=CachingAuthorizer(
            SubjectAccessReviewAuthorizer(client),
            allow_ttl=config.cache.allow_ttl, deny_ttl=config.cache.deny_ttl,
            max_entries=config.cache.max_entries, on_event=_events(on_cache_event, "authz"),
        ),
    )


def oidc_authenticator(
    oidc: OIDCConfig, cache: CacheConfig, *, timeout: float = 5.0,
    on_cache_event: CacheEventHook | None = None,
) -> tuple[OIDCAuthenticator, CachingAuthenticator]:
    """The OIDC authenticator (close it on shutdown) and its cached front for the chain."""
    inner = OIDCAuthenticator(
        OIDCOptions(
            issuer_url=oidc.issuer_url, client_id=oidc.client_id,
            username_claim=oidc.username_claim, username_prefix=oidc.username_prefix,
            groups_claim=oidc.groups_claim, groups_prefix=oidc.groups_prefix,
            signing_algorithms=oidc.signing_algorithms, ca_file=oidc.ca_file,
        ),
        timeout=timeout,
    )
    cached = CachingAuthenticator(
        inner, ttl=cache.authentication_ttl, max_entries=cache.max_entries,
        on_event=_events(on_cache_event, "oidc"),
    )
    return inner, cached
