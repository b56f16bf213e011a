"""Client certificates and listener TLS, with certificates the tests make."""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509

from raygate.authn.x509 import (
    CertReloader,
    identity_from_certificate,
    identity_from_ssl_object,
    server_ssl_context,
    tls_version,
)
from raygate.errors import ConfigError
from raygate.identity import Identity

from .fakeapi import CertPair, issue_cert, make_ca

CA = make_ca("client-ca")


@pytest.mark.parametrize(
    ("common_name", "organizations", "expected"),
    [
        ("jane", ["ray-admins", "devs"],
         Identity("jane", groups=("ray-admins", "devs", "system:authenticated"))),
        ("system:serviceaccount:default:ci", [],
         Identity("system:serviceaccount:default:ci", groups=("system:authenticated",))),
    ],
    ids=["user-with-groups", "no-organization"],
)
def test_certificate_names_user_and_groups(
    common_name: str, organizations: list[str], expected: Identity
) -> None:
    pair = issue_cert(CA, common_name, organizations=organizations, client=True)
    assert identity_from_certificate(pair.cert) == expected


def test_certificate_without_common_name_has_no_identity() -> None:
    assert identity_from_certificate(issue_cert(CA, "", organizations=["devs"]).cert) is None


class Listener:
    """An aiohttp server on the raygate SSLContext that answers with the peer's identity."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _whoami(self, request: web.Request) -> web.Response:
        assert request.transport is not None
        identity = identity_from_ssl_object(request.transport.get_extra_info("ssl_object"))
        if identity is None:
            return web.json_response({"user": None})
        return web.json_response({"user": identity.user, "groups": list(identity.groups)})

    async def __aenter__(self) -> Listener:
        app = web.Application()
        app.router.add_get("/whoami", self._whoami)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.context).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def client_context(server_ca: CertPair, client: CertPair | None, tmp_path: Path,
                   max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=server_ca.cert_pem.decode())
    if client is not None:
        cert_file, key_file = client.write(tmp_path, f"client-{client.cert.serial_number}")
        context.load_cert_chain(cert_file, key_file)
    if max_version is not None:
        context.maximum_version = max_version
    return context


async def whoami(port: int, context: ssl.SSLContext) -> dict[str, object]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"https://127.0.0.1:{port}/whoami", ssl=context) as response:
            return await response.json()


@pytest.fixture
def server_files(tmp_path: Path) -> tuple[CertPair, Path, Path, Path]:
    server_ca = make_ca("server-ca")
    cert_file, key_file = issue_cert(server_ca, "raygate", server_ips=["127.0.0.1"]).write(
        tmp_path, "server"
    )
    client_ca_file = tmp_path / "client-ca.crt"
    client_ca_file.write_bytes(CA.cert_pem)
    return server_ca, cert_file, key_file, client_ca_file


def test_verified_client_certificate_becomes_the_identity(
    tmp_path: Path, server_files: tuple[CertPair, Path, Path, Path]
) -> None:
    server_ca, cert_file, key_file, client_ca_file = server_files
    jane = issue_cert(CA, "jane", organizations=["ray-admins"], client=True)

    async def scenario() -> None:
        context = server_ssl_context(cert_file, key_file, client_ca_file=client_ca_file)
        async with Listener(context) as listener:
            answer = await whoami(listener.port, client_context(server_ca, jane, tmp_path))
            assert answer == {"user": "jane", "groups": ["ray-admins", "system:authenticated"]}
            # No certificate: the connection still works, so a bearer token can be used.
            anonymous = await whoami(listener.port, client_context(server_ca, None, tmp_path))
            assert anonymous == {"user": None}

    asyncio.run(scenario())


def test_certificate_from_another_ca_is_refused(
    tmp_path: Path, server_files: tuple[CertPair, Path, Path, Path]
) -> None:
    server_ca, cert_file, key_file, client_ca_file = server_files
    impostor = issue_cert(make_ca("impostor-ca"), "jane", organizations=["ray-admins"],
                          client=True)

    async def scenario() -> None:
        context = server_ssl_context(cert_file, key_file, client_ca_file=client_ca_file)
        async with Listener(context) as listener:
            with pytest.raises(aiohttp.ClientError):
                await whoami(listener.port, client_context(server_ca, impostor, tmp_path))

    asyncio.run(scenario())


def test_without_client_ca_certificates_are_ignored(
    tmp_path: Path, server_files: tuple[CertPair, Path, Path, Path]
) -> None:
    server_ca, cert_file, key_file, _ = server_files
    jane = issue_cert(CA, "jane", client=True)

    async def scenario() -> None:
        async with Listener(server_ssl_context(cert_file, key_file)) as listener:
            answer = await whoami(listener.port, client_context(server_ca, jane, tmp_path))
            assert answer == {"user": None}

    asyncio.run(scenario())


def test_tls_min_version_13_refuses_a_tls12_client(
    tmp_path: Path, server_files: tuple[CertPair, Path, Path, Path]
) -> None:
    server_ca, cert_file, key_file, _ = server_files

    async def scenario() -> None:
        context = server_ssl_context(cert_file, key_file, min_version="VersionTLS13")
        async with Listener(context) as listener:
            old = client_context(server_ca, None, tmp_path, max_version=ssl.TLSVersion.TLSv1_2)
            with pytest.raises(aiohttp.ClientError):
                await whoami(listener.port, old)
            assert await whoami(listener.port, client_context(server_ca, None, tmp_path))

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("name", "expected"),
    [("VersionTLS12", ssl.TLSVersion.TLSv1_2), ("VersionTLS13", ssl.TLSVersion.TLSv1_3)],
)
def test_go_tls_version_names(name: str, expected: ssl.TLSVersion) -> None:
    assert tls_version(name) == expected


def test_unknown_tls_version_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--tls-min-version 'TLS1.2' is not supported"):
        tls_version("TLS1.2")


def test_unreadable_certificate_names_the_flags(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--tls-cert-file"):
        server_ssl_context(tmp_path / "missing.crt", tmp_path / "missing.key")


async def served_serial(port: int, server_ca: CertPair) -> int:
    context = ssl.create_default_context(cadata=server_ca.cert_pem.decode())
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    await writer.wait_closed()
    return x509.load_der_x509_certificate(der).serial_number


def replace_files(pair: CertPair, cert_file: Path, key_file: Path, *, key: bool = True) -> None:
    for path, data in ((cert_file, pair.cert_pem), (key_file, pair.key_pem)):
        if path is key_file and not key:
            continue
        staged = path.with_suffix(".new")
        staged.write_bytes(data)
        os.replace(staged, path)


def test_renewed_certificate_is_served_to_new_connections(tmp_path: Path) -> None:
    server_ca = make_ca("server-ca")
    first = issue_cert(server_ca, "raygate", server_ips=["127.0.0.1"])
    renewed = issue_cert(server_ca, "raygate", server_ips=["127.0.0.1"])
    cert_file, key_file = first.write(tmp_path, "server")

    async def scenario() -> None:
        context = server_ssl_context(cert_file, key_file)
        reloader = CertReloader(context, cert_file, key_file)
        async with Listener(context) as listener:
            assert await served_serial(listener.port, server_ca) == first.cert.serial_number
            assert not reloader.reload_if_changed()

            # Half-way through a renewal (new certificate, old key) nothing changes.
            replace_files(renewed, cert_file, key_file, key=False)
            assert not reloader.reload_if_changed()
            assert await served_serial(listener.port, server_ca) == first.cert.serial_number

            replace_files(renewed, cert_file, key_file)
            assert reloader.reload_if_changed()
            assert await served_serial(listener.port, server_ca) == renewed.cert.serial_number
        assert reloader.reloads == 1

    asyncio.run(scenario())


def test_without_certificate_files_a_self_signed_one_is_served() -> None:
    async def scenario() -> None:
        async with Listener(server_ssl_context(None, None)) as listener:
            trust_anything = ssl.create_default_context()
            trust_anything.check_hostname = False
            trust_anything.verify_mode = ssl.CERT_NONE
            _, writer = await asyncio.open_connection(
                "127.0.0.1", listener.port, ssl=trust_anything
            )
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            writer.close()
            await writer.wait_closed()
        served = x509.load_der_x509_certificate(der)
        names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "localhost" in names.get_values_for_type(x509.DNSName)
        assert served.issuer == served.subject

    asyncio.run(scenario())


def test_certificate_without_key_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="go together"):
        server_ssl_context(tmp_path / "tls.crt", None)
