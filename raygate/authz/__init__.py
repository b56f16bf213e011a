"""Authorization: may this identity do this. Request mapping lives in attributes.py; every
authority answers through Authorizer (defined with the shared types in raygate.identity)."""

from raygate.identity import Authorizer

__all__ = ["Authorizer"]
