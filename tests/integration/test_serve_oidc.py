"""`raygate serve --oidc-issuer ...` (kube-rbac-proxy's OIDC flags): ID tokens from a provider
the test runs, with keys it makes and rotates; authorization still by SubjectAccessReview."""

from __future__ import annotations

import secrets
from pathlib import Path

from raygate.objects import parse_object
from tests.conftest import RaygateUp
from tests.kube.fakeapi import TOKEN_REVIEWS
from tests.kube.test_kube_oidc import CLIENT_ID, Provider, rsa_key

from .serve_helpers import (
    ENTRYPOINT,
    NAMESPACE,
    fake_api,
    http,
    kube_rbac_proxy_args,
    ports,
    ray_cli_env,
    reviews,
    serve_env,
    serving,
    wait_until,
)

DATA_SCIENCE_RBAC = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "ray-user", "namespace": NAMESPACE},
        "rules": [{"apiGroups": ["ray.io"], "resources": ["rayclusters"], "verbs": ["*"]}],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "data-science", "namespace": NAMESPACE},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ray-user"},
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "oidc:data-science"}
        ],
    },
]


def test_oidc_id_tokens_with_a_rotated_signing_key(raygate_up: RaygateUp, tmp_path: Path) -> None:
    up = raygate_up
    (port,) = ports(1)
    provider = Provider()
    with fake_api() as api:
        fake = api.fake
        fake.use_rbac([parse_object(o) for o in DATA_SCIENCE_RBAC])
        provider_running = provider.serve(tmp_path)
        ca_file = api.run(provider_running.__aenter__())
        try:
            args = kube_rbac_proxy_args(up, tmp_path, fake, port=port) + [
                f"--oidc-issuer={provider.issuer}",
                f"--oidc-clientID={CLIENT_ID}",
                f"--oidc-ca-file={ca_file}",
                "--oidc-username-claim=email",
                "--oidc-groups-claim=groups",
                "--oidc-groups-prefix=oidc:",
            ]
            with serving(args, serve_env(up), port=port) as serve:
                url = serve.address + "/api/version"
                token = provider.id_token()
                result = up.run("ray", "job", "submit", "--address", serve.address,
                                *ENTRYPOINT, env=ray_cli_env(up, token))
                out = result.stdout + result.stderr
                assert result.returncode == 0, out + serve.logs()
                assert "'CPU'" in out

                # Another client of the same provider: wrong audience.
                assert http(url, token=provider.id_token(aud="someone-else"))[0] == 401

                # The provider rotates its key: new tokens work, the old key no longer does.
                # raygate fetches the keys again for an unknown key id, at most every 10 s (so a
                # flood of made-up key ids cannot hammer the provider): poll with new tokens.
                old_key = provider.keys["key-1"]
                provider.keys = {"key-2": rsa_key()}
                assert wait_until(
                    lambda: http(url, token=provider.id_token("key-2", jti=secrets.token_hex(8)))[0]
                    == 200,
                    timeout=30, interval=0.5,
                ), serve.logs()
                late = provider.id_token("key-1", key=old_key, sub="user-43")
                assert http(url, token=late)[0] == 401
        finally:
            api.run(provider_running.__aexit__(None, None, None))

        # ID tokens are checked by raygate itself; the API server is only asked to authorize.
        assert fake.calls[TOKEN_REVIEWS] == 0
        users = {(r["spec"]["user"], tuple(r["spec"]["groups"]))
                 for r in reviews(fake, "SubjectAccessReview")}
        assert ("jane@example.com", ("oidc:data-science", "system:authenticated")) in users
