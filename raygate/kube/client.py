"""The Kubernetes API calls raygate makes, over kubernetes_asyncio, with one failure type.

Every way a call can fail to produce an answer (no route, TLS failure, timeout, 5xx, 429, the API
server refusing raygate's own credentials) becomes BackendUnavailable, so callers fail closed.
Messages name the API server and what to check; they never contain a token.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from kubernetes_asyncio import client as kube
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config import ConfigException, load_kube_config
from kubernetes_asyncio.config.incluster_config import (
    SERVICE_CERT_FILENAME,
    SERVICE_TOKEN_FILENAME,
    InClusterConfigLoader,
)

from raygate.errors import BackendUnavailable, ConfigError
from raygate.identity import Attributes

DEFAULT_TIMEOUT = 5.0
_MAX_SERVER_MESSAGE = 300


@dataclass(frozen=True)
class TokenReviewResult:
    """What a TokenReview answered (authentication.k8s.io/v1 TokenReviewStatus)."""

    authenticated: bool
    user: str = ""
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    audiences: tuple[str, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class AccessReviewResult:
    """What a SubjectAccessReview answered. `denied` is an explicit deny, not "no opinion"."""

    allowed: bool
    denied: bool
    reason: str


class TokenFile:
    """A bearer-token file that is read again whenever it changes.

    Projected service-account tokens are rewritten by the kubelet before they expire; the API
    server rejects the old one after that, so a long-running sidecar must follow the file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._token = ""

    def read(self) -> str:
        try:
            st = self.path.stat()
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                token = self.path.read_text().strip()
                if not token:
                    raise BackendUnavailable(f"token file {self.path} is empty")
                self._token, self._stamp = token, stamp
        except OSError as err:
            if not self._token:
                raise BackendUnavailable(
                    f"cannot read token file {self.path}: {err.strerror}"
                ) from None
            # Keep the last good token while the kubelet swaps the file (atomic rename window).
        return self._token

    def install(self, configuration: kube.Configuration) -> None:
        """Make every request of `configuration` carry the file's current token."""

        def refresh(config: kube.Configuration) -> None:
            config.api_key["BearerToken"] = self.read()
            config.api_key_prefix["BearerToken"] = "Bearer"

        refresh(configuration)
        configuration.refresh_api_key_hook = refresh


def _kubeconfig_token_file(path: Path, context: str | None) -> Path | None:
    """The `tokenFile` of the kubeconfig user in use, resolved like kubectl does, if any."""
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None  # load_kube_config reports the problem with its own words
    context_name = context or doc.get("current-context")
    contexts = {c.get("name"): c.get("context") or {} for c in doc.get("contexts") or []}
    user_name = contexts.get(context_name, {}).get("user")
    users = {u.get("name"): u.get("user") or {} for u in doc.get("users") or []}
    token_file = users.get(user_name, {}).get("tokenFile")
    if not token_file or users.get(user_name, {}).get("token"):
        return None
    return (path.parent / token_file).resolve()


class KubeClient:
    """TokenReview, SubjectAccessReview and TokenRequest against one API server."""

    def __init__(
        self, api_client: kube.ApiClient, *, timeout: float = DEFAULT_TIMEOUT, server: str = ""
    ) -> None:
        self.api_client = api_client
        self.timeout = timeout
        self.server = server or api_client.configuration.host
        self._authentication = kube.AuthenticationV1Api(api_client)
        self._authorization = kube.AuthorizationV1Api(api_client)
        self._core = kube.CoreV1Api(api_client)
        self._version = kube.VersionApi(api_client)

    @classmethod
    async def from_kubeconfig(
        cls, path: str | os.PathLike[str], *, context: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> KubeClient:
        """A client for the kubeconfig at `path` (`--kubeconfig`)."""
        kubeconfig = Path(path)
        configuration = kube.Configuration()
        try:
            await load_kube_config(
                config_file=str(kubeconfig), context=context,
                client_configuration=configuration, persist_config=False,
            )
        except (ConfigException, OSError, yaml.YAMLError, KeyError, TypeError) as err:
            raise ConfigError(f"cannot use kubeconfig {kubeconfig}: {err}") from None
        token_file = _kubeconfig_token_file(kubeconfig, context)
        if token_file is not None:
            TokenFile(token_file).install(configuration)
        return cls(kube.ApiClient(configuration), timeout=timeout)

    @classmethod
    async def in_cluster(
        cls, *, timeout: float = DEFAULT_TIMEOUT,
        token_file: str = SERVICE_TOKEN_FILENAME, ca_file: str = SERVICE_CERT_FILENAME,
        environ: Mapping[str, str] | None = None,
    ) -> KubeClient:
        """A client for the pod's own service account (KUBERNETES_SERVICE_HOST and the token)."""
        configuration = kube.Configuration()
        try:
            InClusterConfigLoader(
                token_filename=token_file, cert_filename=ca_file,
                environ=dict(os.environ if environ is None else environ),
            ).load_and_set(configuration)
        except ConfigException as err:
            raise ConfigError(
                f"not running in a Kubernetes pod ({err}); pass --kubeconfig"
            ) from None
        # The stock hook re-reads the file once a minute; ours follows each rewrite at once.
        TokenFile(token_file).install(configuration)
        return cls(kube.ApiClient(configuration), timeout=timeout)

    @classmethod
    async def connect(
        cls, kubeconfig: str | os.PathLike[str] | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> KubeClient:
        """The kubeconfig when given; in a pod, its service account; else $KUBECONFIG, as
        kubectl reads it (the first file of the list)."""
        if kubeconfig:
            return await cls.from_kubeconfig(kubeconfig, timeout=timeout)
        from_env = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
        if from_env and not os.environ.get("KUBERNETES_SERVICE_HOST"):
            return await cls.from_kubeconfig(from_env, timeout=timeout)
        return await cls.in_cluster(timeout=timeout)

    async def close(self) -> None:
        await self.api_client.close()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def ping(self) -> str:
        """The API server's version (GET /version, open to every caller); for readiness checks."""
        info = await self._call("version request", self._version.get_code)
        return str(info.git_version or "")

    async def create_token_review(
        self, token: str, audiences: Sequence[str] = ()
    ) -> TokenReviewResult:
        body = kube.V1TokenReview(
            api_version="authentication.k8s.io/v1", kind="TokenReview",
            spec=kube.V1TokenReviewSpec(token=token, audiences=list(audiences) or None),
        )
        review = await self._call(
            "TokenReview", self._authentication.create_token_review, body, secret=token
        )
        status = review.status
        if status is None:
            return TokenReviewResult(authenticated=False, error="empty TokenReview status")
        user = status.user
        return TokenReviewResult(
            authenticated=bool(status.authenticated) and user is not None,
            user=(user.username or "") if user else "",
            uid=(user.uid or "") if user else "",
            groups=tuple(user.groups or ()) if user else (),
            extra={k: tuple(v or ()) for k, v in ((user.extra or {}) if user else {}).items()},
            audiences=tuple(status.audiences or ()),
            error=status.error or "",
        )

    async def create_subject_access_review(self, attributes: Attributes) -> AccessReviewResult:
        identity = attributes.identity
        spec = kube.V1SubjectAccessReviewSpec(
            user=identity.user or None,
            uid=identity.uid or None,
            groups=list(identity.groups) or None,
            extra={k: list(v) for k, v in identity.extra.items()} or None,
        )
        if attributes.resource_request:
            spec.resource_attributes = kube.V1ResourceAttributes(
                namespace=attributes.namespace or None,
                verb=attributes.verb,
                group=attributes.api_group or None,
                version=attributes.api_version or None,
                resource=attributes.resource or None,
                subresource=attributes.subresource or None,
                name=attributes.name or None,
            )
        else:
            spec.non_resource_attributes = kube.V1NonResourceAttributes(
                path=attributes.path, verb=attributes.verb
            )
        body = kube.V1SubjectAccessReview(
            api_version="authorization.k8s.io/v1", kind="SubjectAccessReview", spec=spec
        )
        review = await self._call(
            "SubjectAccessReview", self._authorization.create_subject_access_review, body
        )
        status = review.status
        if status is None:
            raise BackendUnavailable(
                f"Kubernetes API server {self.server} answered a SubjectAccessReview without status"
            )
        reason = status.reason or status.evaluation_error or ""
        return AccessReviewResult(
            allowed=bool(status.allowed) and not status.denied,
            denied=bool(status.denied),
            reason=reason,
        )

    async def create_token_request(
        self, namespace: str, service_account: str, *,
        duration_seconds: int | None = None, audiences: Sequence[str] = (),
    ) -> str:
        """A new token for a service account (what `kubectl create token` does)."""
        body = kube.AuthenticationV1TokenRequest(
            api_version="authentication.k8s.io/v1", kind="TokenRequest",
            spec=kube.V1TokenRequestSpec(
                audiences=list(audiences), expiration_seconds=duration_seconds
            ),
        )
        answer = await self._call(
            "TokenRequest", self._core.create_namespaced_service_account_token,
            service_account, namespace, body,
        )
        if answer.status is None or not answer.status.token:
            raise BackendUnavailable(
                f"Kubernetes API server {self.server} issued no token for "
                f"{namespace}/{service_account}"
            )
        return answer.status.token

    async def _call(self, what: str, method: Any, *args: Any, secret: str = "") -> Any:
        try:
            async with asyncio.timeout(self.timeout):
                return await method(*args, _request_timeout=self.timeout)
        except TimeoutError:
            raise BackendUnavailable(
                f"Kubernetes API server {self.server} did not answer a {what} "
                f"within {self.timeout:g}s"
            ) from None
        except ApiException as err:
            raise BackendUnavailable(self._describe_refusal(what, err, secret)) from None
        except (aiohttp.ClientError, OSError, ValueError) as err:
            # ValueError: a body the generated models refuse to deserialize.
            detail = _redact(str(err) or type(err).__name__, secret)
            raise BackendUnavailable(
                f"cannot reach Kubernetes API server {self.server} for a {what}: {detail}"
            ) from None

    def _describe_refusal(self, what: str, err: ApiException, secret: str) -> str:
        status = err.status or 0
        head = f"Kubernetes API server {self.server} answered {status} to a {what}"
        message = _redact(_status_message(err.body), secret)
        if status in (401, 403):
            hint = (
                "check raygate's own credentials and that its service account may create "
                "tokenreviews and subjectaccessreviews"
            )
            return f"{head}: {message or err.reason}; {hint}"
        return f"{head}: {message or err.reason or 'no message'}"


def _status_message(body: Any) -> str:
    """The `message` of a metav1.Status body, shortened to one line."""
    try:
        message = json.loads(body).get("message", "") if body else ""
    except (ValueError, AttributeError, TypeError):
        message = ""
    message = " ".join(str(message).split())
    return message[:_MAX_SERVER_MESSAGE]


def _redact(text: str, secret: str) -> str:
    return text.replace(secret, "<redacted>") if secret else text
