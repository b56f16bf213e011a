"""Every error raygate raises on purpose. Messages are one line a user can act on."""

from __future__ import annotations


class RaygateError(Exception):
    """Base of all raygate errors; str(err) is the one-line message shown to the user."""


class ConfigError(RaygateError):
    """Bad configuration or command-line input."""


class UsageError(ConfigError):
    """A mistake in a command's arguments that no state could fix; the CLI exits 2, as for
    click's own usage errors (`raygate auth can-i` keeps exit 1 for "no")."""


class ManifestError(RaygateError):
    """A manifest was rejected; the message names the document and field."""


class RefusedDocument(ManifestError):
    """A well-formed YAML or JSON document the reader will not load (a duplicate key, an alias
    bomb). Raised inside the parser, where the source and document number are not known; the
    manifest reader adds them. `line` and `column` are 0-based, when known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


class NotFoundError(RaygateError):
    """A named object does not exist."""


class StoreError(RaygateError):
    """The state directory cannot be read or written."""


class AlreadyExistsError(StoreError):
    """`create` of an object whose kind, namespace and name are taken."""


class TokenError(RaygateError):
    """A token could not be issued or did not verify. Never contains the token itself."""


class BackendUnavailable(RaygateError):
    """The identity or policy backend could not answer; callers must fail closed (503)."""


class UpstreamError(RaygateError):
    """Ray (the upstream) could not be started or reached."""


class SignInError(RaygateError):
    """A sign-in with the OpenID provider failed: a refused, forged or replayed state or code,
    or a provider answer that does not verify. Never contains a token or code."""


class ProviderError(SignInError):
    """The provider answered an OAuth error (`invalid_grant`, `authorization_pending`, ...)."""

    def __init__(self, error: str, description: str = "") -> None:
        self.error = error
        self.description = description
        super().__init__(
            f"the identity provider refused: {error}" + (f" ({description})" if description else "")
        )


class RequestRefused(RaygateError):
    """A request the data plane refuses while parsing it (oversized or malformed head): the
    answer to give (a raygate.pipeline.Answer), after which the connection closes."""

    def __init__(self, answer: object) -> None:
        super().__init__(getattr(answer, "status", "refused"))
        self.answer = answer
