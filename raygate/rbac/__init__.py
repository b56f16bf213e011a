"""Kubernetes RBAC, embedded: pure rule evaluation, aggregation and a subject-keyed index."""

from raygate.rbac.authorizer import LocalRBACAuthorizer
from raygate.rbac.index import PolicyIndex

__all__ = ["LocalRBACAuthorizer", "PolicyIndex"]
