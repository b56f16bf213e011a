"""Several token authenticators tried in order, like kube-apiserver's union authenticator."""

from __future__ import annotations

from collections.abc import Sequence

from raygate.authn import TokenAuthenticator
from raygate.errors import BackendUnavailable
from raygate.identity import Identity


class ChainAuthenticator:
    """The first authenticator that recognises the token wins.

    If none does and one of them could not answer, the chain cannot answer either: a token that
    the unreachable backend would have accepted must get 503, not 401.
    """

    def __init__(self, authenticators: Sequence[TokenAuthenticator]) -> None:
        if not authenticators:
            raise ValueError("a chain needs at least one authenticator")
        self.authenticators = tuple(authenticators)

    async def authenticate_token(self, token: str) -> Identity | None:
        unavailable: BackendUnavailable | None = None
        for authenticator in self.authenticators:
            try:
                identity = await authenticator.authenticate_token(token)
            except BackendUnavailable as err:
                unavailable = unavailable or err
                continue
            if identity is not None:
                return identity
        if unavailable is not None:
            raise unavailable
        return None
