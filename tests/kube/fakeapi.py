"""A fake Kubernetes API server for tests: TokenReview, SubjectAccessReview and TokenRequest.

It is strict where a real API server is: it requires its own bearer token (the gateway's), and
every body it receives or sends must validate against the official Kubernetes schemas
(kubernetes-validate, strict mode). A bad body is answered 422 and recorded in `schema_errors`;
`running_fake` fails the test on exit if there were any.

Tests configure who is who (`users`: token -> FakeUser) and what they may do (`authorize`: a
function of raygate Attributes, or `use_rbac(objects)` for real RBAC through raygate's own
PolicyIndex), can slow it (`delay`), stop and restart it on the same port, and point raygate at it
through a kubeconfig it writes (`write_kubeconfig`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import ipaddress
import secrets
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import kubernetes_validate
import kubernetes_validate.utils
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from raygate.identity import Attributes, Decision, Identity, service_account_identity

K8S_VERSION = "1.37"
API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"

TOKEN_REVIEWS = "tokenreviews"
SUBJECT_ACCESS_REVIEWS = "subjectaccessreviews"
TOKEN_REQUESTS = "tokenrequests"


@dataclass(frozen=True)
class FakeUser:
    """What the fake API server knows about one token."""

    user: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: dict[str, tuple[str, ...]] = field(default_factory=dict)
    audiences: tuple[str, ...] = (API_AUDIENCE,)


def deny_all(attributes: Attributes) -> Decision:
    return Decision(allowed=False, reason="no policy configured in the fake")


# ----------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class CertPair:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_path.write_bytes(self.cert_pem)
        key_path.write_bytes(self.key_pem)
        return cert_path, key_path


def make_ca(common_name: str = "fake-ca") -> CertPair:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return CertPair(cert, key)


def issue_cert(
    ca: CertPair, common_name: str, *, organizations: Iterable[str] = (),
    server_ips: Iterable[str] = (), server_names: Iterable[str] = (), client: bool = False,
) -> CertPair:
    """A leaf certificate signed by `ca`: a server one (with SANs) or a client one."""
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    if common_name:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs)).issuer_name(ca.cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), False
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [x509.ExtendedKeyUsageOID.CLIENT_AUTH if client
                 else x509.ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return CertPair(builder.sign(ca.key, hashes.SHA256()), key)


# ----------------------------------------------------------------------------- the server


class SchemaViolation(AssertionError):
    pass


# kubernetes-validate reads its schema files on every call (~10 ms); the files never change, and
# a flood test sends thousands of bodies, so keep them in memory. Only the file reads are cached:
# validation itself is still the library's.
if not hasattr(kubernetes_validate.utils.schema_contents, "cache_info"):
    kubernetes_validate.utils.schema_contents = functools.cache(
        kubernetes_validate.utils.schema_contents
    )


def validate_object(obj: dict[str, Any], direction: str, version: str = K8S_VERSION) -> None:
    """Raise SchemaViolation unless `obj` is valid for Kubernetes `version` (strict schemas)."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as err:
        path = "/".join(str(p) for p in err.absolute_path) or "(root)"
        kind = obj.get("kind")
        raise SchemaViolation(f"{direction} {kind} invalid at {path}: {err.message}") from None
    except (kubernetes_validate.SchemaNotFoundError, KeyError) as err:
        raise SchemaViolation(f"{direction} body has no known kind/apiVersion: {err}") from None


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    }
    return web.json_response(body, status=code)


class FakeKubeAPI:
    def __init__(
        self, *, gateway_token: str | None = None, users: dict[str, FakeUser] | None = None,
        authorize: Callable[[Attributes], Decision] = deny_all, tls: bool = False,
        host: str = "127.0.0.1", k8s_version: str = K8S_VERSION,
    ) -> None:
        self.gateway_tokens = {gateway_token or secrets.token_urlsafe(24)}
        self.users: dict[str, FakeUser] = dict(users or {})
        self.authorize = authorize
        self.host = host
        self.k8s_version = k8s_version
        self.port = 0
        self.delay = 0.0
        self.fail_with: int | None = None  # answer every review with this HTTP status
        # Answer every review with these bytes (status 201, as JSON): an API server, or
        # something in front of it, answering garbage.
        self.garbage: bytes | None = None
        self.in_flight = 0  # reviews being answered now, and the most at once
        self.max_in_flight = 0
        self.ignore_audiences = False  # behave like an API server that drops spec.audiences
        self.service_accounts: set[tuple[str, str]] | None = None  # None: any exists
        self.calls: Counter[str] = Counter()
        self.rejected_credentials = 0
        self.schema_errors: list[str] = []
        self.received: list[dict[str, Any]] = []
        self._token_signing_key = secrets.token_bytes(32)
        self._runner: web.AppRunner | None = None
        self.ca: CertPair | None = make_ca("fake-kube-ca") if tls else None
        self._server_cert = (
            issue_cert(self.ca, "kube-apiserver", server_ips=[host]) if self.ca else None
        )

    @property
    def gateway_token(self) -> str:
        return next(iter(self.gateway_tokens))

    @property
    def url(self) -> str:
        scheme = "https" if self.ca else "http"
        return f"{scheme}://{self.host}:{self.port}"

    # -------------------------------------------------------------- lifecycle

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._authenticate_gateway])
        app.router.add_get("/version", self._version)
        app.router.add_get("/version/", self._version)
        app.router.add_post("/apis/authentication.k8s.io/v1/tokenreviews", self._token_review)
        app.router.add_post(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews", self._subject_access_review
        )
        app.router.add_post(
            "/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", self._token_request
        )
        return app

    def _ssl_context(self, tmp: Path) -> ssl.SSLContext | None:
        if self._server_cert is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert_path, key_path = self._server_cert.write(tmp, "apiserver")
        context.load_cert_chain(cert_path, key_path)
        return context

    async def start(self, workdir: Path | None = None) -> None:
        """Listen on the remembered port (a free one the first time)."""
        import tempfile

        runner = web.AppRunner(self._app(), handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        with tempfile.TemporaryDirectory() as tmp:
            site = web.TCPSite(
                runner, self.host, self.port, ssl_context=self._ssl_context(Path(tmp)),
                reuse_address=True,
            )
            await site.start()
        if self.port == 0:
            self.port = runner.addresses[0][1]
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    # -------------------------------------------------------------- configuration helpers

    def add_user(self, token: str, user: FakeUser) -> None:
        self.users[token] = user

    def add_service_account_token(
        self, namespace: str, name: str, *, uid: str = "", audiences: Iterable[str] = (),
        lifetime: float = 3600.0,
    ) -> str:
        """A JWT the fake accepts for the service account (like a bound token, with `exp`)."""
        now = dt.datetime.now(dt.UTC)
        uid = uid or secrets.token_hex(8)
        auds = tuple(audiences) or (API_AUDIENCE,)
        identity = service_account_identity(namespace, name, uid)
        token = jwt.encode(
            {
                "iss": self.url, "sub": identity.user, "aud": list(auds),
                "iat": int(now.timestamp()), "exp": int(now.timestamp() + lifetime),
                "jti": secrets.token_hex(8),
            },
            self._token_signing_key, algorithm="HS256",
        )
        self.users[token] = FakeUser(
            identity.user, uid=uid, groups=identity.groups, audiences=auds,
            extra={"authentication.kubernetes.io/credential-id": (f"JTI={uid}",)},
        )
        return token

    def use_rbac(self, objects: Iterable[Any]) -> None:
        """Decide with raygate's embedded RBAC engine, so the fake is an honest RBAC server.

        `objects`: raygate.objects models or manifest dicts (Role, RoleBinding, ...).
        """
        from raygate.objects import parse_object
        from raygate.rbac.index import PolicyIndex

        parsed = [parse_object(o) if isinstance(o, dict) else o for o in objects]
        self.authorize = PolicyIndex.build(parsed).authorize

    def write_kubeconfig(self, path: Path, *, token_file: Path | None = None) -> Path:
        """A kubeconfig for raygate: server, CA when TLS, and the gateway token (or a tokenFile)."""
        cluster: dict[str, Any] = {"server": self.url}
        if self.ca is not None:
            ca_path = path.with_name(path.name + ".ca.crt")
            ca_path.write_bytes(self.ca.cert_pem)
            cluster["certificate-authority"] = str(ca_path)
        user: dict[str, Any] = (
            {"tokenFile": str(token_file)} if token_file else {"token": self.gateway_token}
        )
        doc = {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": "raygate", "user": user}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "raygate"}}],
        }
        path.write_text(yaml.safe_dump(doc))
        return path

    # -------------------------------------------------------------- handlers

    @web.middleware
    async def _authenticate_gateway(self, request: web.Request, handler: Any) -> web.StreamResponse:
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or credential not in self.gateway_tokens:
            self.rejected_credentials += 1
            return _status(401, "Unauthorized", "Unauthorized")
        return await handler(request)

    async def _read(self, request: web.Request, endpoint: str) -> dict[str, Any] | web.Response:
        self.calls[endpoint] += 1
        if self.delay:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                # kube-apiserver abandons a request whose client went away (its context is
                # cancelled): so does the fake, so `in_flight` counts what the client still holds.
                deadline = asyncio.get_running_loop().time() + self.delay
                while asyncio.get_running_loop().time() < deadline:
                    transport = request.transport
                    if transport is None or transport.is_closing():
                        return web.Response(status=499)
                    await asyncio.sleep(0.02)
            finally:
                self.in_flight -= 1
        if self.garbage is not None:
            return web.Response(body=self.garbage, status=201, content_type="application/json")
        if self.fail_with is not None:
            return _status(self.fail_with, "InternalError", "the fake was told to fail")
        try:
            body = await request.json()
            self.received.append(body)
            validate_object(body, "request", self.k8s_version)
        except (ValueError, SchemaViolation) as err:
            self.schema_errors.append(str(err))
            return _status(422, "Invalid", str(err))
        return body

    def _answer(self, obj: dict[str, Any], status: int = 201) -> web.Response:
        try:
            validate_object(obj, "response", self.k8s_version)
        except SchemaViolation as err:
            self.schema_errors.append(str(err))
            raise
        return web.json_response(obj, status=status)

    async def _version(self, request: web.Request) -> web.Response:
        self.calls["version"] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_with is not None:
            return _status(self.fail_with, "InternalError", "the fake was told to fail")
        return web.json_response({
            "major": "1", "minor": self.k8s_version.split(".")[1],
            "gitVersion": f"v{self.k8s_version}.0",
            "gitCommit": "0" * 40, "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64",
        })

    async def _token_review(self, request: web.Request) -> web.Response:
        body = await self._read(request, TOKEN_REVIEWS)
        if isinstance(body, web.Response):
            return body
        spec = body["spec"]
        wanted = tuple(spec.get("audiences") or ())
        known = self.users.get(spec.get("token", ""))
        status: dict[str, Any]
        if known is None:
            status = {"authenticated": False, "error": "invalid bearer token"}
        else:
            audiences = known.audiences if not wanted or self.ignore_audiences else tuple(
                a for a in wanted if a in known.audiences
            )
            if not audiences:
                status = {
                    "authenticated": False,
                    "error": "token audiences are invalid for the target audiences",
                }
            else:
                user: dict[str, Any] = {"username": known.user, "groups": list(known.groups)}
                if known.uid:
                    user["uid"] = known.uid
                if known.extra:
                    user["extra"] = {k: list(v) for k, v in known.extra.items()}
                status = {"authenticated": True, "user": user, "audiences": list(audiences)}
        return self._answer({**body, "metadata": {}, "status": status})

    async def _subject_access_review(self, request: web.Request) -> web.Response:
        body = await self._read(request, SUBJECT_ACCESS_REVIEWS)
        if isinstance(body, web.Response):
            return body
        spec = body["spec"]
        identity = Identity(
            user=spec.get("user", ""), uid=spec.get("uid", ""),
            groups=tuple(spec.get("groups") or ()),
            extra={k: tuple(v) for k, v in (spec.get("extra") or {}).items()},
        )
        if "resourceAttributes" in spec:
            ra = spec["resourceAttributes"]
            attributes = Attributes(
                identity=identity, verb=ra.get("verb", ""), namespace=ra.get("namespace", ""),
                api_group=ra.get("group", ""), api_version=ra.get("version", ""),
                resource=ra.get("resource", ""), subresource=ra.get("subresource", ""),
                name=ra.get("name", ""),
            )
        else:
            nra = spec.get("nonResourceAttributes") or {}
            attributes = Attributes(
                identity=identity, verb=nra.get("verb", ""), resource_request=False,
                path=nra.get("path", ""),
            )
        decision = self.authorize(attributes)
        status: dict[str, Any] = {"allowed": decision.allowed}
        if decision.reason:
            status["reason"] = decision.reason
        return self._answer({**body, "metadata": {}, "status": status})

    async def _token_request(self, request: web.Request) -> web.Response:
        body = await self._read(request, TOKEN_REQUESTS)
        if isinstance(body, web.Response):
            return body
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        if self.service_accounts is not None and (namespace, name) not in self.service_accounts:
            return _status(404, "NotFound", f'serviceaccounts "{name}" not found')
        spec = body.get("spec") or {}
        lifetime = spec.get("expirationSeconds") or 3600
        token = self.add_service_account_token(
            namespace, name, audiences=spec.get("audiences") or (), lifetime=lifetime
        )
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=lifetime)
        answer = {
            **body,
            "metadata": {"name": name, "namespace": namespace},
            "spec": {**spec, "expirationSeconds": lifetime,
                     "audiences": spec.get("audiences") or [API_AUDIENCE]},
            "status": {"token": token,
                       "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ")},
        }
        return self._answer(answer)


@asynccontextmanager
async def running_fake(**kwargs: Any) -> AsyncIterator[FakeKubeAPI]:
    """A started fake; on exit it stops and fails the test if any body broke the schemas."""
    fake = FakeKubeAPI(**kwargs)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()
    if fake.schema_errors:
        raise SchemaViolation("; ".join(fake.schema_errors))
