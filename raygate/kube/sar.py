"""Authorization by the cluster: ask the API server (SubjectAccessReview) if a caller may act."""

from __future__ import annotations

from raygate.identity import Attributes, Decision
from raygate.kube.client import KubeClient

SOURCE = "kubernetes"


class SubjectAccessReviewAuthorizer:
    """An Authorizer backed by authorization.k8s.io/v1 SubjectAccessReview.

    The review carries the caller's user, uid, groups and extra, so the cluster's authorizers
    (RBAC, webhooks) decide exactly as they would for a direct request.
    """

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    async def authorize(self, attributes: Attributes) -> Decision:
        review = await self.client.create_subject_access_review(attributes)
        return Decision(allowed=review.allowed, reason=review.reason, source=SOURCE)
