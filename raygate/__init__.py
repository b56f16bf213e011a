"""raygate: identity and Kubernetes-style access control in front of a Ray cluster."""

from raygate.identity import Attributes, Decision, Identity

__all__ = ["Attributes", "Decision", "Identity"]
__version__ = "0.1.0"
