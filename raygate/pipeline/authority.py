"""Who may do what: the one interface every identity and policy backend offers the pipeline.

The embedded store, the Kubernetes API server (TokenReview/SubjectAccessReview) and an OIDC
issuer (tokens only; authorization then comes from one of the others) all end up as one
`Authority`, assembled in one place: `raygate.runtime.assemble`.
"""

from __future__ import annotations

from typing import Protocol

from raygate.authn import TokenAuthenticator
from raygate.authz import Authorizer
from raygate.identity import Attributes, Decision, Identity


class Authority(Protocol):
    """Authenticates credentials and authorizes attributes.

    `authenticate` answers None for a credential that is not valid (401); both raise
    raygate.errors.BackendUnavailable when they cannot decide (503, nothing forwarded).
    `revision` changes whenever earlier answers may no longer hold (the embedded store's
    revision; a constant for backends whose own caches expire answers): the pipeline's
    decision cache drops what it learnt under another revision.
    """

    @property
    def revision(self) -> int: ...

    async def authenticate(self, credential: str) -> Identity | None: ...

    async def authorize(self, attributes: Attributes) -> Decision: ...


class CombinedAuthority:
    """An Authority made of a token authenticator and an authorizer (possibly from different
    backends, e.g. OIDC tokens with RBAC from the Kubernetes API server)."""

    def __init__(
        self,
        authenticator: TokenAuthenticator,
        authorizer: Authorizer,
        revision_of: object | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.authorizer = authorizer
        # Anything with a `revision` attribute (the EmbeddedAuthority), or None: constant.
        self._revision_of = revision_of

    @property
    def revision(self) -> int:
        source = self._revision_of
        return source.revision if source is not None else 0  # type: ignore[attr-defined]

    async def authenticate(self, credential: str) -> Identity | None:
        return await self.authenticator.authenticate_token(credential)

    async def authorize(self, attributes: Attributes) -> Decision:
        return await self.authorizer.authorize(attributes)
