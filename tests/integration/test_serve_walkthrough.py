"""The guide's walkthrough through `raygate serve`, the KubeRay sidecar, with the sample's own
args and ConfigMap, the fake Kubernetes API server as the cluster and the session's Ray head
(token mode) as the upstream; the real `ray` CLI throughout."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import RaygateUp
from tests.kube.fakeapi import SUBJECT_ACCESS_REVIEWS, TOKEN_REVIEWS

from .serve_helpers import (
    CLUSTER_NAME,
    ENTRYPOINT,
    GUIDE_RBAC,
    K8S_AUTH_SAMPLE,
    NAMESPACE,
    fake_api,
    http,
    kube_rbac_proxy_args,
    load_manifests,
    ports,
    ray_cli_env,
    ray_dashboard,
    ray_job_ids,
    reviews,
    sample_sidecar,
    serve_env,
    serving,
)

SA_USER = f"system:serviceaccount:{NAMESPACE}:ray-user"


def submit(up: RaygateUp, address: str, token: str | None) -> tuple[int, str]:
    result = up.run("ray", "job", "submit", "--address", address, *ENTRYPOINT,
                    env=ray_cli_env(up, token))
    return result.returncode, result.stdout + result.stderr


def resource_attributes(body: dict) -> dict:  # type: ignore[type-arg]
    return body["spec"]["resourceAttributes"]


def test_sample_sidecar_args_are_the_guides() -> None:
    # What the walkthrough below runs: the sample's args, of which the test changes three values.
    sample = sample_sidecar()
    assert sample.args == [
        "--insecure-listen-address=0.0.0.0:8265",
        "--upstream=http://127.0.0.1:8443/",
        "--config-file=/etc/kube-rbac-proxy/config-file.yaml",
        "--logtostderr=true",
    ]
    assert "name: ray-cluster-with-auth" in sample.config_file


def test_guide_walkthrough_through_the_kube_rbac_proxy_drop_in(
    raygate_up: RaygateUp, tmp_path: Path
) -> None:
    up = raygate_up
    (port,) = ports(1)
    with fake_api() as api:
        fake = api.fake
        fake.use_rbac([])  # a cluster with no bindings yet
        args = kube_rbac_proxy_args(up, tmp_path, fake, port=port)
        with serving(args, serve_env(up), port=port) as serve:
            jobs_before = ray_job_ids(up)

            # 1. Without a token: refused, and told how to pass one.
            code, out = submit(up, serve.address, None)
            assert code != 0
            assert "401" in out or "Authentication required" in out, out
            assert "Bearer" in out
            assert http(serve.address + "/api/version")[0] == 401

            # 2. The service account's token is known, but nothing is bound to it yet: 403.
            first_token = fake.add_service_account_token(NAMESPACE, "ray-user")
            code, out = submit(up, serve.address, first_token)
            assert code != 0
            assert "403" in out or "Forbidden" in out or "Authentication failed" in out, out
            status, body, _ = http(serve.address + "/api/version", token=first_token)
            assert status == 403
            assert SA_USER in body and "rayclusters" in body
            assert ray_job_ids(up) == jobs_before

            # 3. The guide's Role and RoleBinding, unchanged.
            fake.use_rbac(load_manifests(GUIDE_RBAC))

            # 4. As in the guide, a token made after the grant (`kubectl create token`; each
            # has its own credential id, so the denial cached for the first one is not reused).
            token = fake.add_service_account_token(NAMESPACE, "ray-user")
            code, out = submit(up, serve.address, token)
            assert code == 0, out + serve.logs()
            assert "submitted successfully" in out
            assert "'CPU'" in out
            assert "succeeded" in out
            assert len(ray_job_ids(up) - jobs_before) == 1

            listed = up.run("ray", "job", "list", "--address", serve.address,
                            env=ray_cli_env(up, token))
            assert listed.returncode == 0, listed.stderr

        # The sidecar's stdout is its audit log: who did what, never a token.
        audit = serve.audit()
        submits = [r for r in audit if (r["method"], r["path"]) == ("POST", "/api/jobs/")]
        assert [(r["user"], r["decision"], r["verb"]) for r in submits] == [
            (SA_USER, "allow", "create")
        ]
        versions = [r for r in audit if (r["method"], r["path"]) == ("GET", "/api/version")]
        assert {(r["decision"], r["verb"]) for r in versions if "verb" in r} == {
            ("deny", "get"), ("allow", "get")
        }
        assert {r["decision"] for r in audit} >= {"unauthenticated", "deny", "allow"}
        for secret in (first_token, token, fake.gateway_token):
            assert secret not in "".join(serve.stdout) + serve.logs()

        assert fake.schema_errors == []
        token_reviews = reviews(fake, "TokenReview")
        assert token_reviews and fake.calls[TOKEN_REVIEWS] == len(token_reviews)
        assert {r["apiVersion"] for r in token_reviews} == {"authentication.k8s.io/v1"}
        assert {r["spec"]["token"] for r in token_reviews} == {first_token, token}
        assert all("audiences" not in r["spec"] for r in token_reviews)  # none configured

        sars = reviews(fake, "SubjectAccessReview")
        assert fake.calls[SUBJECT_ACCESS_REVIEWS] == len(sars)
        assert {r["apiVersion"] for r in sars} == {"authorization.k8s.io/v1"}
        for review in sars:
            spec = review["spec"]
            assert spec["user"] == SA_USER
            assert "system:serviceaccounts:default" in spec["groups"]
            assert spec["uid"] and spec["extra"]
            assert {k: v for k, v in resource_attributes(review).items() if k != "verb"} == {
                "namespace": "default",
                "group": "ray.io",
                "version": "v1",
                "resource": "rayclusters",
                "name": CLUSTER_NAME,
            }
        verbs = {resource_attributes(r)["verb"] for r in sars}
        # GET /api/version and GET logs: get; POST /api/jobs/: create.
        assert verbs == {"get", "create"}
        # The deny, then the allows: get and create for the new token, once each (cached).
        assert sorted(resource_attributes(r)["verb"] for r in sars) == ["create", "get", "get"]


def ray_k8s_config(
    up: RaygateUp, tmp: Path, kubeconfig: Path, port: int, **extra: object
) -> Path:
    import yaml

    config = {
        "listen": {"address": f"127.0.0.1:{port}"},
        "upstream": {"url": ray_dashboard(up)},
        "authentication": {"mode": ["kubernetes"]},
        "authorization": {
            "mode": "kubernetes",
            "profile": "ray-k8s",
            "rayCluster": {"name": CLUSTER_NAME, "namespace": NAMESPACE},
        },
        "kubeconfig": str(kubeconfig),
        **extra,
    }
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_ray_k8s_profile_takes_the_rbac_of_rays_kubernetes_auth(
    raygate_up: RaygateUp, tmp_path: Path
) -> None:
    up = raygate_up
    (port,) = ports(1)
    # KubeRay's ray-cluster.kubernetes.auth.yaml: ClusterRole `ray-writer` (verb ray:write),
    # bound here to one account with a RoleBinding; another gets a Role with `get` only.
    (writer_role,) = load_manifests(K8S_AUTH_SAMPLE, kind="ClusterRole", name="ray-writer")
    from raygate.objects import parse_object

    bindings = [
        parse_object({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "ray-writer", "namespace": NAMESPACE},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "ray-writer"},
            "subjects": [{"kind": "ServiceAccount", "name": "writer", "namespace": NAMESPACE}],
        }),
        parse_object({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "getter", "namespace": NAMESPACE},
            "rules": [{"apiGroups": ["ray.io"], "resources": ["rayclusters"], "verbs": ["get"]}],
        }),
        parse_object({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "getter", "namespace": NAMESPACE},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": "getter"},
            "subjects": [{"kind": "ServiceAccount", "name": "getter", "namespace": NAMESPACE}],
        }),
    ]
    with fake_api() as api:
        fake = api.fake
        fake.use_rbac([writer_role, *bindings])
        config = ray_k8s_config(up, tmp_path, fake.write_kubeconfig(tmp_path / "kubeconfig"), port)
        with serving(["--config", str(config)], serve_env(up), port=port) as serve:
            jobs_before = ray_job_ids(up)

            getter = fake.add_service_account_token(NAMESPACE, "getter")
            code, out = submit(up, serve.address, getter)
            assert code != 0
            status, body, _ = http(serve.address + "/api/version", token=getter)
            assert status == 403
            assert "ray:write" in body
            assert ray_job_ids(up) == jobs_before

            writer = fake.add_service_account_token(NAMESPACE, "writer")
            code, out = submit(up, serve.address, writer)
            assert code == 0, out + serve.logs()
            assert "'CPU'" in out
            assert len(ray_job_ids(up) - jobs_before) == 1

        # Every request asks Ray's one question: ray:write on the RayCluster, whatever the method.
        asked = {
            tuple(sorted(r["spec"]["resourceAttributes"].items()))
            for r in reviews(fake, "SubjectAccessReview")
        }
        assert asked == {
            tuple(sorted({
                "namespace": NAMESPACE, "verb": "ray:write", "group": "ray.io",
                "resource": "rayclusters", "name": CLUSTER_NAME,
            }.items()))
        }


def test_ray_k8s_profile_through_kube_rbac_proxy_config_file(
    raygate_up: RaygateUp, tmp_path: Path
) -> None:
    # The drop-in keeps its args; the ConfigMap switches the profile.
    up = raygate_up
    (port,) = ports(1)
    config_file = (
        "authorization:\n"
        "  profile: ray-k8s\n"
        f"  rayCluster: {{name: {CLUSTER_NAME}, namespace: {NAMESPACE}}}\n"
    )
    (writer_role,) = load_manifests(K8S_AUTH_SAMPLE, kind="ClusterRole", name="ray-writer")
    from raygate.objects import parse_object

    binding = parse_object({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "ray-writer", "namespace": NAMESPACE},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "ray-writer"},
        "subjects": [{"kind": "ServiceAccount", "name": "writer", "namespace": NAMESPACE}],
    })
    with fake_api() as api:
        fake = api.fake
        fake.use_rbac([writer_role, binding])
        args = kube_rbac_proxy_args(up, tmp_path, fake, port=port, config_file=config_file)
        with serving(args, serve_env(up), port=port) as serve:
            writer = fake.add_service_account_token(NAMESPACE, "writer")
            stranger = fake.add_service_account_token(NAMESPACE, "stranger")
            status, body, _ = http(serve.address + "/api/version", token=writer)
            assert status == 200, body
            assert '"ray_version"' in body
            status, body, _ = http(serve.address + "/api/jobs/", token=stranger)
            assert status == 403
            assert "ray:write" in body
        verbs = {r["spec"]["resourceAttributes"]["verb"]
                 for r in reviews(fake, "SubjectAccessReview")}
        assert verbs == {"ray:write"}


def test_auth_token_audiences_are_asked_of_the_token_review(
    raygate_up: RaygateUp, tmp_path: Path
) -> None:
    up = raygate_up
    (port,) = ports(1)
    with fake_api() as api:
        fake = api.fake
        fake.use_rbac(load_manifests(GUIDE_RBAC))
        args = kube_rbac_proxy_args(up, tmp_path, fake, port=port)
        args.append("--auth-token-audiences=ray-gateway")
        with serving(args, serve_env(up), port=port) as serve:
            for_raygate = fake.add_service_account_token(
                NAMESPACE, "ray-user", audiences=["ray-gateway"]
            )
            for_api_server = fake.add_service_account_token(NAMESPACE, "ray-user")
            assert http(serve.address + "/api/version", token=for_raygate)[0] == 200
            assert http(serve.address + "/api/version", token=for_api_server)[0] == 401
        asked = [r["spec"].get("audiences") for r in reviews(fake, "TokenReview")]
        assert asked == [["ray-gateway"], ["ray-gateway"]]


def test_config_file_static_entries_and_rewrites(raygate_up: RaygateUp, tmp_path: Path) -> None:
    # kube-rbac-proxy's other config-file keys: a static allow (no SubjectAccessReview) and a
    # rewrite that takes the namespace from the query.
    up = raygate_up
    (port,) = ports(1)
    config_file = f"""
authorization:
  rewrites:
    byQueryParameter: {{name: namespace}}
  resourceAttributes:
    namespace: "{{{{.Value}}}}"
    apiGroup: ray.io
    apiVersion: v1
    resource: rayclusters
    name: {CLUSTER_NAME}
  static:
  - user: {{name: "system:serviceaccount:default:ci"}}
    verb: get
    resourceRequest: true
    namespace: ci
"""
    with fake_api() as api:
        fake = api.fake
        fake.use_rbac(load_manifests(GUIDE_RBAC))
        args = kube_rbac_proxy_args(up, tmp_path, fake, port=port, config_file=config_file)
        with serving(args, serve_env(up), port=port) as serve:
            url = serve.address + "/api/version"
            ci = fake.add_service_account_token(NAMESPACE, "ci")
            user = fake.add_service_account_token(NAMESPACE, "ray-user")

            assert http(url + "?namespace=ci", token=ci)[0] == 200
            assert fake.calls[SUBJECT_ACCESS_REVIEWS] == 0  # the static entry decided
            assert http(url, token=user)[0] == 400  # no value for the rewrite
            assert http(url + "?namespace=default", token=user)[0] == 200
            assert http(url + "?namespace=other", token=user)[0] == 403
        namespaces = [r["spec"]["resourceAttributes"]["namespace"]
                      for r in reviews(fake, "SubjectAccessReview")]
        assert namespaces == ["default", "other"]
