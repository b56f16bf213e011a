"""`raygate serve --secure-listen-address` with certificates the test makes: client certificates
authenticate (CN user, O groups) without a bearer token, a certificate from another CA is refused
at the handshake, and renewed certificate files are served without a restart."""

from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from raygate.objects import parse_object
from tests.conftest import RaygateUp
from tests.kube.fakeapi import TOKEN_REVIEWS, CertPair, issue_cert, make_ca

from .serve_helpers import (
    GUIDE_RBAC,
    NAMESPACE,
    fake_api,
    http,
    load_manifests,
    ports,
    ray_dashboard,
    reviews,
    sample_sidecar,
    serve_env,
    serving,
    wait_until,
)

ADMINS_RBAC = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "ray-admin", "namespace": NAMESPACE},
        "rules": [{"apiGroups": ["ray.io"], "resources": ["rayclusters"], "verbs": ["*"]}],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "ray-admins", "namespace": NAMESPACE},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ray-admin"},
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "ray-admins"}
        ],
    },
]


def served_serial(port: int) -> int:
    """The serial number of the certificate the listener presents now."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def replace_pair(pair: CertPair, cert_path: Path, key_path: Path) -> None:
    """Write a renewed pair the way a cert manager does: each file swapped in whole."""
    for path, data in ((key_path, pair.key_pem), (cert_path, pair.cert_pem)):
        scratch = path.with_suffix(".new")
        scratch.write_bytes(data)
        os.replace(scratch, path)


def client_context(ca: CertPair, tmp: Path, client: CertPair | None = None) -> ssl.SSLContext:
    ca_path = tmp / "server-ca.crt"
    ca_path.write_bytes(ca.cert_pem)
    context = ssl.create_default_context(cafile=str(ca_path))
    if client is not None:
        cert, key = client.write(tmp, f"client-{client.cert.serial_number}")
        context.load_cert_chain(cert, key)
    return context


def test_client_certificates_and_certificate_reload(
    raygate_up: RaygateUp, tmp_path: Path
) -> None:
    up = raygate_up
    (port,) = ports(1)
    server_ca, client_ca, other_ca = make_ca("server-ca"), make_ca("client-ca"), make_ca("other")
    server_cert, server_key = issue_cert(server_ca, "raygate", server_ips=["127.0.0.1"]).write(
        tmp_path, "tls"
    )
    client_ca_path = tmp_path / "client-ca.crt"
    client_ca_path.write_bytes(client_ca.cert_pem)
    alice = issue_cert(client_ca, "alice", organizations=["ray-admins"], client=True)
    mallory = issue_cert(other_ca, "alice", organizations=["ray-admins"], client=True)
    config_file = tmp_path / "config-file.yaml"
    config_file.write_text(sample_sidecar().config_file)

    with fake_api() as api:
        fake = api.fake
        fake.use_rbac([parse_object(o) for o in ADMINS_RBAC] + load_manifests(GUIDE_RBAC))
        args = [
            f"--secure-listen-address=127.0.0.1:{port}",
            f"--upstream={ray_dashboard(up)}",
            f"--config-file={config_file}",
            f"--tls-cert-file={server_cert}",
            f"--tls-private-key-file={server_key}",
            f"--client-ca-file={client_ca_path}",
            f"--kubeconfig={fake.write_kubeconfig(tmp_path / 'kubeconfig')}",
            "--logtostderr=true",
        ]
        with serving(args, serve_env(up), port=port, scheme="https") as serve:
            url = serve.address + "/api/version"

            # alice's certificate is her credential: no bearer token, no TokenReview.
            status, body, _ = http(url, context=client_context(server_ca, tmp_path, alice))
            assert status == 200, body + serve.logs()
            assert '"ray_version"' in body
            assert fake.calls[TOKEN_REVIEWS] == 0
            (sar,) = reviews(fake, "SubjectAccessReview")
            assert sar["spec"]["user"] == "alice"
            assert set(sar["spec"]["groups"]) == {"ray-admins", "system:authenticated"}

            # Neither certificate nor token: 401. A certificate from another CA: no handshake.
            assert http(url, context=client_context(server_ca, tmp_path))[0] == 401
            with pytest.raises(OSError):
                http(url, context=client_context(server_ca, tmp_path, mallory))

            # Bearer tokens keep working on the TLS listener.
            token = fake.add_service_account_token(NAMESPACE, "ray-user")
            assert http(url, token=token, context=client_context(server_ca, tmp_path))[0] == 200

            # The certificate is renewed on disk: served without a restart.
            first_serial = served_serial(port)
            renewed = issue_cert(server_ca, "raygate", server_ips=["127.0.0.1"])
            assert renewed.cert.serial_number != first_serial
            replace_pair(renewed, server_cert, server_key)
            assert wait_until(
                lambda: served_serial(port) == renewed.cert.serial_number, timeout=20
            ), serve.logs()
            status, _, _ = http(url, context=client_context(server_ca, tmp_path, alice))
            assert status == 200
            assert serve.process.poll() is None
