"""An https upstream: raygate checks its certificate against --upstream-ca-file and presents
--upstream-client-cert-file; without the CA it refuses to forward."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from raygate.config import config_from_mapping
from raygate.errors import ConfigError
from raygate.runtime import _upstream_tls
from tests.integration.gateway_helpers import gateway_stack
from tests.kube.fakeapi import issue_cert, make_ca


def _tls_upstream(tmp: Path) -> tuple[ssl.SSLContext, Path, Path, Path, list[str]]:
    """An upstream that only talks TLS to clients with a certificate from its CA."""
    ca = make_ca("upstream-ca")
    server_cert, server_key = issue_cert(ca, "ray", server_ips=["127.0.0.1"]).write(tmp, "server")
    client_cert, client_key = issue_cert(ca, "raygate", client=True).write(tmp, "client")
    (tmp / "ca.crt").write_bytes(ca.cert_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tmp / "ca.crt"))
    context.load_cert_chain(server_cert, server_key)
    context.verify_mode = ssl.CERT_REQUIRED  # Ray behind mTLS: no client cert, no answer
    seen: list[str] = []
    return context, tmp / "ca.crt", client_cert, client_key, seen


def _config(upstream: str, **tls: str) -> object:
    return config_from_mapping({"upstream": {"url": upstream, **tls}}, source="test")


def test_https_upstream_with_ca_and_client_certificate(tmp_path: Path) -> None:
    server_ctx, ca_file, client_cert, client_key, seen = _tls_upstream(tmp_path)

    async def version(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        seen.append(dict(x[0] for x in peer["subject"])["commonName"] if peer else "")
        return web.json_response({"ray_version": "test"})

    async def scenario() -> None:
        app = web.Application()
        app.router.add_get("/api/version", version)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        upstream = f"https://127.0.0.1:{port}"
        try:
            good = _upstream_tls(
                _config(
                    upstream,
                    caFile=str(ca_file),
                    clientCertFile=str(client_cert),
                    clientKeyFile=str(client_key),
                )
            )  # type: ignore[arg-type]
            async with (
                gateway_stack(
                    tmp_path / "a",
                    accounts={"user": ["get"]},
                    upstream_url=URL(upstream),
                    upstream_ssl=good,
                ) as stack,
                aiohttp.ClientSession() as client,
            ):
                headers = {"Authorization": f"Bearer {stack.token('user')}"}
                async with client.get(f"{stack.url}/api/version", headers=headers) as response:
                    assert response.status == 200
                    assert (await response.json()) == {"ray_version": "test"}
            assert seen == ["raygate"]
            # Without the CA the upstream's certificate is not trusted: 502, nothing sent.
            async with (
                gateway_stack(
                    tmp_path / "b", accounts={"user": ["get"]}, upstream_url=URL(upstream)
                ) as stack,
                aiohttp.ClientSession() as client,
            ):
                headers = {"Authorization": f"Bearer {stack.token('user')}"}
                async with client.get(f"{stack.url}/api/version", headers=headers) as response:
                    assert response.status == 502
            assert seen == ["raygate"]
        finally:
            await runner.cleanup()

    asyncio.run(scenario())


def test_unreadable_upstream_tls_files_are_a_config_error(tmp_path: Path) -> None:
    config = _config("https://127.0.0.1:1", caFile=str(tmp_path / "missing.crt"))
    with pytest.raises(ConfigError, match="upstream TLS files"):
        _upstream_tls(config)  # type: ignore[arg-type]
