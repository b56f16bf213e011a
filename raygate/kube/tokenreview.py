"""Authentication by the cluster: ask the API server (TokenReview) who a bearer token belongs to."""

from __future__ import annotations

from collections.abc import Sequence

from raygate.identity import Identity
from raygate.kube.client import KubeClient


class TokenReviewAuthenticator:
    """A TokenAuthenticator backed by authentication.k8s.io/v1 TokenReview.

    With `audiences`, the API server is asked to check the token was issued for one of them, and
    the answer must name at least one of them: an API server that ignores audiences would
    otherwise accept a token minted for some other service (kube-rbac-proxy checks the same).
    """

    def __init__(self, client: KubeClient, audiences: Sequence[str] = ()) -> None:
        self.client = client
        self.audiences = tuple(audiences)

    async def authenticate_token(self, token: str) -> Identity | None:
        review = await self.client.create_token_review(token, self.audiences)
        if not review.authenticated or not review.user:
            return None
        if self.audiences and not set(self.audiences) & set(review.audiences):
            return None
        return Identity(
            user=review.user, uid=review.uid, groups=review.groups, extra=review.extra
        )
