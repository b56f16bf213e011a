"""Every error raygate raises on purpose. Messages are one line a user can act on."""

from __future__ import annotations


class RaygateError(Exception):
    """Base of all raygate errors; str(err) is the one-line message shown to the user."""


class ConfigError(RaygateError):
    """Bad configuration or command-line input."""


class ManifestError(RaygateError):
    """A manifest was rejected; the message names the document and field."""


class NotFoundError(RaygateError):
    """A named object does not exist."""


class StoreError(RaygateError):
    """The state directory cannot be read or written."""


class TokenError(RaygateError):
    """A token could not be issued or did not verify. Never contains the token itself."""


class BackendUnavailable(RaygateError):
    """The identity or policy backend could not answer; callers must fail closed (503)."""


class UpstreamError(RaygateError):
    """Ray (the upstream) could not be started or reached."""


class SignInError(RaygateError):
    """A sign-in with the OpenID provider failed: a refused, forged or replayed state or code,
    or a provider answer that does not verify. Never contains a token or code."""
