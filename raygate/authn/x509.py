"""Client certificates and the listener's TLS: identity from a verified peer certificate
(CN is the user, O values are the groups, as kube-apiserver reads them), the SSLContext built from
kube-rbac-proxy's TLS flags, and a reloader that picks up renewed certificate files."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import os
import socket
import ssl
import tempfile
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from raygate.config import TLS_VERSIONS  # Go's names, as `--tls-min-version` takes them
from raygate.errors import ConfigError
from raygate.identity import AUTHENTICATED_GROUP, Identity

log = logging.getLogger(__name__)

DEFAULT_TLS_MIN_VERSION = "VersionTLS12"


def identity_from_certificate(certificate: x509.Certificate) -> Identity | None:
    """The identity a verified client certificate names; None without a usable CN."""
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    user = names[0].value if names else ""
    if not isinstance(user, str) or not user:
        return None
    groups = [
        str(attr.value)
        for attr in certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    ]
    if AUTHENTICATED_GROUP not in groups:
        groups.append(AUTHENTICATED_GROUP)
    return Identity(user=user, groups=tuple(groups))


def identity_from_ssl_object(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> Identity | None:
    """The identity of a TLS connection's peer (aiohttp: transport extra info "ssl_object").

    Only meaningful on a listener built by `server_ssl_context` with a client CA: the handshake
    then fails unless the certificate chains to that CA, so any certificate seen here is verified.
    """
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    return identity_from_certificate(x509.load_der_x509_certificate(der))


def tls_version(name: str | ssl.TLSVersion) -> ssl.TLSVersion:
    if isinstance(name, ssl.TLSVersion):
        return name
    try:
        return TLS_VERSIONS[name]
    except KeyError:
        raise ConfigError(
            f"--tls-min-version {name!r} is not supported; use one of {', '.join(TLS_VERSIONS)}"
        ) from None


def server_ssl_context(
    cert_file: str | os.PathLike[str] | None,
    key_file: str | os.PathLike[str] | None,
    *,
    min_version: str | ssl.TLSVersion = DEFAULT_TLS_MIN_VERSION,
    client_ca_file: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext:
    """The listener's context (`--tls-cert-file`, `--tls-private-key-file`, `--tls-min-version`,
    `--client-ca-file`). A client certificate is optional, so bearer tokens keep working.

    Without cert and key files, a self-signed certificate is made, as kube-rbac-proxy does for
    `--secure-listen-address` alone.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = tls_version(min_version)
    if cert_file and key_file:
        _load_pair(context, cert_file, key_file)
    elif cert_file or key_file:
        raise ConfigError("--tls-cert-file and --tls-private-key-file go together")
    else:
        _load_self_signed(context)
    if client_ca_file:
        try:
            context.load_verify_locations(cafile=os.fspath(client_ca_file))
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(f"--client-ca-file {client_ca_file}: {_why(err)}") from None
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def _load_pair(
    context: ssl.SSLContext, cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str]
) -> None:
    try:
        context.load_cert_chain(os.fspath(cert_file), os.fspath(key_file))
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(
            f"--tls-cert-file {cert_file} / --tls-private-key-file {key_file}: {_why(err)}"
        ) from None


def self_signed_pem(hosts: Iterable[str] = ()) -> tuple[bytes, bytes]:
    """A self-signed certificate and key (PEM) for `hosts` plus localhost and this host's name."""
    key = ec.generate_private_key(ec.SECP256R1())
    names = {"localhost", socket.gethostname(), "127.0.0.1", "::1", *hosts}
    sans: list[x509.GeneralName] = []
    for name in sorted(names):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "raygate")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _load_self_signed(context: ssl.SSLContext) -> None:
    cert_pem, key_pem = self_signed_pem()
    # load_cert_chain only reads files; keep the key on disk just long enough, owner-only.
    with tempfile.TemporaryDirectory(prefix="raygate-tls-") as tmp:
        cert_path, key_path = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
        cert_path.write_bytes(cert_pem)
        key_path.touch(mode=0o600)
        key_path.write_bytes(key_pem)
        context.load_cert_chain(cert_path, key_path)
    log.info("serving TLS with a self-signed certificate (no --tls-cert-file given)")


def _why(err: OSError | ssl.SSLError) -> str:
    return getattr(err, "reason", None) or err.strerror or str(err)


class CertReloader:
    """Loads renewed certificate and key files into a live SSLContext.

    New handshakes use the new pair; open connections keep theirs. A pair that does not load (say
    the certificate was written and the key not yet) is skipped and tried again on the next poll.
    """

    def __init__(
        self, context: ssl.SSLContext, cert_file: str | os.PathLike[str],
        key_file: str | os.PathLike[str], *, interval: float = 10.0,
    ) -> None:
        self.context = context
        self.cert_file = Path(cert_file)
        self.key_file = Path(key_file)
        self.interval = interval
        self.reloads = 0
        self._stamp = self._current_stamp()
        self._task: asyncio.Task[None] | None = None

    def _current_stamp(self) -> tuple[tuple[int, int, int], ...] | None:
        try:
            return tuple(
                (st.st_ino, st.st_mtime_ns, st.st_size)
                for st in (self.cert_file.stat(), self.key_file.stat())
            )
        except OSError:
            return None

    def reload_if_changed(self) -> bool:
        """Load the files if they changed since the last load; True when the new pair is live."""
        stamp = self._current_stamp()
        if stamp is None or stamp == self._stamp:
            return False
        # Check the pair in a scratch context first: a failed load_cert_chain could leave the
        # live context with the new certificate and the old key.
        try:
            _load_pair(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), self.cert_file, self.key_file)
        except ConfigError as err:
            log.warning("TLS certificate not reloaded, will retry: %s", err)
            return False
        _load_pair(self.context, self.cert_file, self.key_file)
        self._stamp = stamp
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.cert_file)
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.reload_if_changed()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
