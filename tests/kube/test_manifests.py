"""`raygate manifests`: every object validates against the Kubernetes schemas (strict), the
RayCluster against KubeRay's CRD schema, and the objects do what the deployment promises."""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from raygate.authz.attributes import Profile, request_attributes
from raygate.cli.manifests import manifests
from raygate.config import config_from_mapping, config_from_serve_args
from raygate.deploy.kuberay import (
    ADMIN_PORT,
    CLIENT_PORT,
    CONFIG_DIR,
    CONFIG_KEY,
    GATEWAY_PORT,
    RAY_CLIENT_SERVER_PORT,
    SERVE_PORT,
    ManifestOptions,
    build_manifests,
    kuberay_auth_secret_name,
)
from raygate.errors import ConfigError
from raygate.identity import service_account_identity

KUBERNETES_VERSION = "1.37.0"
CRD_PATH = Path(__file__).resolve().parents[1] / "data" / "ray.io_rayclusters.crd.yaml"

# The ray profile ships ClusterRoles, not Roles: tests/kube/test_ray_profile_manifests.py.
PROFILES = [p.value for p in Profile if p is not Profile.RAY]


def run_cli(*args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(manifests, list(args))
    assert result.exit_code == 0, result.output
    return [doc for doc in yaml.safe_load_all(result.output) if doc is not None]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [doc] = by_kind(docs, kind)
    return doc


@pytest.fixture(scope="module")
def ray_cluster_schema() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRD is 900 KB of YAML
    crd = yaml.load(CRD_PATH.read_text(), Loader=loader)  # a safe loader
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return _closed(version["schema"]["openAPIV3Schema"])


def _closed(schema: Any) -> Any:
    """The CRD schema with unknown fields refused: the API server would silently prune them,
    so a misspelt field would vanish instead of failing."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {k: _closed(v) for k, v in schema.items()}
    if (
        "properties" in closed
        and "additionalProperties" not in closed
        and not closed.get("x-kubernetes-preserve-unknown-fields")
    ):
        closed["additionalProperties"] = False
    return closed


@pytest.mark.parametrize("profile", PROFILES)
def test_every_builtin_object_validates_strictly(profile: str) -> None:
    docs = run_cli("--profile", profile)
    builtin = [d for d in docs if d["kind"] != "RayCluster"]
    assert {d["kind"] for d in builtin} == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "NetworkPolicy",
        "Role",
    }
    for doc in builtin:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("profile", PROFILES)
def test_ray_cluster_validates_against_the_crd(profile: str, ray_cluster_schema) -> None:
    cluster = one(run_cli("--profile", profile), "RayCluster")
    jsonschema.validate(cluster, ray_cluster_schema)


@pytest.mark.parametrize("profile", PROFILES)
def test_ray_cluster_pod_templates_validate_as_kubernetes_pod_templates(profile: str) -> None:
    spec = one(run_cli("--profile", profile), "RayCluster")["spec"]
    templates = [spec["headGroupSpec"]["template"]] + [
        group["template"] for group in spec["workerGroupSpecs"]
    ]
    for index, template in enumerate(templates):
        pod_template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": f"template-{index}"},
            "template": template,
        }
        kubernetes_validate.validate(pod_template, KUBERNETES_VERSION, strict=True)


def test_strict_crd_schema_catches_a_misspelt_field(ray_cluster_schema) -> None:
    cluster = one(run_cli(), "RayCluster")
    broken = copy.deepcopy(cluster)
    broken["spec"]["headGroupSpec"]["rayStartParam"] = {}
    with pytest.raises(jsonschema.ValidationError, match="rayStartParam"):
        jsonschema.validate(broken, ray_cluster_schema)


def head_pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]


def container(pod_spec: Mapping[str, Any], name: str) -> dict[str, Any]:
    [found] = [c for c in pod_spec["containers"] if c["name"] == name]
    return found


@pytest.mark.parametrize("profile", PROFILES)
def test_sidecar_config_loads_and_maps_requests_like_the_profile(profile: str) -> None:
    docs = run_cli("--profile", profile, "--cluster-name", "c1", "--namespace", "ml")
    config_map = one(docs, "ConfigMap")
    sidecar = container(head_pod_spec(docs), "raygate")
    [config_arg] = [a for a in sidecar["args"] if a.startswith("--config=")]
    mount = next(m for m in sidecar["volumeMounts"] if m["name"] == "raygate-config")
    key = config_arg.removeprefix("--config=").removeprefix(mount["mountPath"] + "/")
    config = config_from_mapping(yaml.safe_load(config_map["data"][key]), "ConfigMap")

    assert config.listen.port == GATEWAY_PORT
    assert config.upstream.url == "http://127.0.0.1:8443/"
    assert config.upstream.read_token({"RAY_AUTH_TOKEN": "from-secret"}) == "from-secret"
    assert config.proxy_endpoints_address == ("0.0.0.0", ADMIN_PORT)
    assert config.uses_kubernetes
    user = service_account_identity("ml", "ray-user")
    [attributes] = request_attributes(user, "POST", "/api/jobs/", {}, {}, config.authorization)
    expected_verb = "ray:write" if profile == "ray-k8s" else "create"
    assert (attributes.verb, attributes.namespace, attributes.api_group) == (
        expected_verb,
        "ml",
        "ray.io",
    )
    assert (attributes.resource, attributes.name) == ("rayclusters", "c1")
    # the submitter Role grants exactly what the gateway asks for a submission
    [submitter] = [r for r in by_kind(docs, "Role") if r["metadata"]["name"] == "raygate-submitter"]
    [rule] = submitter["rules"]
    assert attributes.verb in rule["verbs"]
    assert rule["apiGroups"] == ["ray.io"] and rule["resources"] == ["rayclusters"]


def test_ray_k8s_roles_match_rays_own_kubernetes_auth() -> None:
    roles = by_kind(run_cli("--profile", "ray-k8s"), "Role")
    assert [r["rules"] for r in roles] == [
        [{"apiGroups": ["ray.io"], "resources": ["rayclusters"], "verbs": ["ray:write"]}]
    ]


def test_kube_rbac_proxy_roles_are_viewer_and_submitter() -> None:
    roles = {r["metadata"]["name"]: r["rules"] for r in by_kind(run_cli(), "Role")}
    assert roles["raygate-viewer"][0]["verbs"] == ["get"]
    assert sorted(roles["raygate-submitter"][0]["verbs"]) == sorted(
        ["get", "create", "update", "patch", "delete"]
    )


def test_gateway_may_review_tokens_and_access() -> None:
    docs = run_cli("--cluster-name", "c1", "--namespace", "ml")
    role = one(docs, "ClusterRole")
    binding = one(docs, "ClusterRoleBinding")
    account = one(docs, "ServiceAccount")
    assert role["rules"] == [
        {
            "apiGroups": ["authentication.k8s.io"],
            "resources": ["tokenreviews"],
            "verbs": ["create"],
        },
        {
            "apiGroups": ["authorization.k8s.io"],
            "resources": ["subjectaccessreviews"],
            "verbs": ["create"],
        },
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "ml"}
    ]
    assert head_pod_spec(docs)["serviceAccountName"] == account["metadata"]["name"]


def test_ray_runs_in_token_mode_everywhere_with_kuberays_secret() -> None:
    docs = run_cli("--cluster-name", "c1")
    spec = one(docs, "RayCluster")["spec"]
    assert spec["authOptions"] == {"mode": "token"}
    pods = [spec["headGroupSpec"]["template"]["spec"]] + [
        g["template"]["spec"] for g in spec["workerGroupSpecs"]
    ]
    containers = [c for pod in pods for c in pod["containers"]]
    assert {c["name"] for c in containers} == {"ray-head", "raygate", "ray-worker"}
    for each in containers:
        env = {e["name"]: e for e in each["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "c1",
            "key": "auth_token",
        }


def test_dashboard_is_on_loopback_behind_the_gateway() -> None:
    head = one(run_cli(), "RayCluster")["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    assert head["rayStartParams"]["dashboard-port"] == "8443"


def test_sidecar_probes_only_hit_health_endpoints_on_the_admin_port() -> None:
    sidecar = container(head_pod_spec(run_cli()), "raygate")
    named_ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        action = sidecar[probe]["httpGet"]
        assert action["path"] == path
        assert named_ports[action["port"]] == ADMIN_PORT != GATEWAY_PORT
    assert sidecar["securityContext"]["runAsNonRoot"] is True
    assert sidecar["securityContext"]["allowPrivilegeEscalation"] is False


# -- NetworkPolicy: a small evaluator of the parts of the API the policies use ------------------


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "evaluator handles matchLabels only"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _peer_admits(peer: Mapping[str, Any], source_labels: Mapping[str, str], same_ns: bool) -> bool:
    assert set(peer) == {"podSelector"}, "evaluator handles podSelector peers only"
    return same_ns and _selects(peer["podSelector"], source_labels)


def admits(
    policies: list[dict[str, Any]],
    target: tuple[str, Mapping[str, str]],
    source: tuple[str, Mapping[str, str]],
    port: int,
) -> bool:
    """Would traffic from pod `source` (namespace, labels) reach `target` on TCP `port`?"""
    target_ns, target_labels = target
    source_ns, source_labels = source
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == target_ns
        and "Ingress" in p["spec"]["policyTypes"]
        and _selects(p["spec"]["podSelector"], target_labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            port_ok = not ports or any(
                p.get("protocol", "TCP") == "TCP" and p["port"] == port for p in ports
            )
            peers = rule.get("from")
            peer_ok = not peers or any(
                _peer_admits(peer, source_labels, source_ns == target_ns) for peer in peers
            )
            if port_ok and peer_ok:
                return True
    return False


CLUSTER = "c1"
HEAD = ("ml", {"ray.io/cluster": CLUSTER, "ray.io/node-type": "head"})
WORKER = ("ml", {"ray.io/cluster": CLUSTER, "ray.io/node-type": "worker"})
SAME_NAMESPACE_POD = ("ml", {"app": "notebook"})
OTHER_NAMESPACE_POD = ("team-b", {"app": "notebook"})
OTHER_CLUSTER_POD = ("ml", {"ray.io/cluster": "c2", "ray.io/node-type": "worker"})
OTHER_NAMESPACE_SAME_LABELS = ("team-b", {"ray.io/cluster": CLUSTER, "ray.io/node-type": "head"})
CLOSED_PORTS = [6379, RAY_CLIENT_SERVER_PORT, 8443, 52365, ADMIN_PORT, 8080]


@pytest.fixture(scope="module")
def policies() -> list[dict[str, Any]]:
    return by_kind(run_cli("--cluster-name", CLUSTER, "--namespace", "ml"), "NetworkPolicy")


@pytest.mark.parametrize(
    "source",
    [SAME_NAMESPACE_POD, OTHER_NAMESPACE_POD, OTHER_CLUSTER_POD, OTHER_NAMESPACE_SAME_LABELS],
    ids=["same-namespace", "other-namespace", "other-ray-cluster", "look-alike-elsewhere"],
)
def test_other_pods_reach_only_the_gateway_ports(policies, source) -> None:
    # The dashboard, Ray Client and Serve doors: all raygate's.
    for port in (GATEWAY_PORT, CLIENT_PORT, SERVE_PORT):
        assert admits(policies, HEAD, source, port), port
        assert not admits(policies, WORKER, source, port), port
    for port in CLOSED_PORTS:
        assert not admits(policies, HEAD, source, port), port
        assert not admits(policies, WORKER, source, port), port


def test_the_ray_client_and_serve_ports_lead_to_raygate() -> None:
    docs = run_cli("--cluster-name", "c1", "--namespace", "ml")
    pod = head_pod_spec(docs)
    sidecar = container(pod, "raygate")
    head = container(pod, "ray-head")
    ray_start = one(docs, "RayCluster")["spec"]["headGroupSpec"]["rayStartParams"]
    # Ray's own client server moves off 10001, outside Ray's worker port range.
    assert ray_start["ray-client-server-port"] == str(RAY_CLIENT_SERVER_PORT)
    assert not 10002 <= RAY_CLIENT_SERVER_PORT <= 19999
    # Serve's proxy keeps to loopback; the pod IP's 8000 is the Serve door's.
    assert {"name": "RAY_SERVE_DEFAULT_HTTP_HOST", "value": "127.0.0.1"} in head["env"]
    assert {p["name"]: p["containerPort"] for p in head["ports"]}["serve"] == SERVE_PORT
    pod_ip = next(e for e in sidecar["env"] if e["name"] == "POD_IP")
    assert pod_ip["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    config_map = one(docs, "ConfigMap")
    args = [
        a.replace("$(POD_IP)", "10.1.2.3").replace(f"{CONFIG_DIR}/{CONFIG_KEY}", "/dev/null")
        for a in sidecar["args"][1:]
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as config_file:
        config_file.write(next(iter(config_map["data"].values())))
        config_file.flush()
        args = [a.replace("/dev/null", config_file.name) for a in args]
        config = config_from_serve_args(args)
    assert config.client is not None and config.serve is not None
    assert (config.client.listen, config.client.upstream) == (
        f"0.0.0.0:{CLIENT_PORT}",
        f"127.0.0.1:{RAY_CLIENT_SERVER_PORT}",
    )
    assert (config.serve.listen, config.serve.upstream) == (
        f"10.1.2.3:{SERVE_PORT}",
        f"http://127.0.0.1:{SERVE_PORT}",
    )


@pytest.mark.parametrize("port", [6379, 10001, 52365, 8080, 12345])
def test_cluster_pods_reach_each_other(policies, port: int) -> None:
    assert admits(policies, HEAD, WORKER, port)
    assert admits(policies, WORKER, HEAD, port)
    assert admits(policies, WORKER, WORKER, port)


# -- options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cluster-name", "Ray"], "--cluster-name 'Ray'"),
        (["--cluster-name", "1ray"], "DNS-1035"),
        (["--cluster-name", "r" * 54], "at most 53"),
        (["--cluster-name", "ray_cluster"], "--cluster-name"),
        (["--namespace", "Team"], "--namespace 'Team'"),
        (["--namespace", "a" * 64], "--namespace"),
        (["--image", "raygate 0.1"], "--image"),
        (["--ray-image", ""], "--ray-image"),
        (["--ray-image", "rayproject/ray:latest"], "pass --ray-version"),
        (["--ray-image", "rayproject/ray:2.46.0"], "needs Ray 2.52.0 or newer"),
        (["--ray-version", "2.60"], "--ray-version '2.60'"),
    ],
)
def test_bad_options_are_one_line_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(manifests, args)
    assert result.exit_code == 1
    assert message in result.output
    assert result.output.count("\n") == 1


def test_profile_choice_is_checked() -> None:
    result = CliRunner().invoke(manifests, ["--profile", "rbac"])
    assert result.exit_code == 2
    assert "kube-rbac-proxy" in result.output


def test_defaults_follow_the_guide() -> None:
    docs = run_cli()
    cluster = one(docs, "RayCluster")
    assert cluster["metadata"] == {
        "name": "ray-cluster-with-auth",
        "namespace": "default",
        "labels": cluster["metadata"]["labels"],
    }
    pod = head_pod_spec(docs)
    assert container(pod, "raygate")["image"] == "raygate:0.1.0"
    assert container(pod, "ray-head")["image"] == "rayproject/ray:2.60.0"
    assert cluster["spec"]["rayVersion"] == "2.60.0"


def test_images_and_names_are_used() -> None:
    docs = run_cli(
        "--cluster-name",
        "c9",
        "--namespace",
        "ns9",
        "--image",
        "reg.io/raygate@sha256:abc",
        "--ray-image",
        "rayproject/ray:2.61.0-py311",
    )
    pod = head_pod_spec(docs)
    assert container(pod, "raygate")["image"] == "reg.io/raygate@sha256:abc"
    assert one(docs, "RayCluster")["spec"]["rayVersion"] == "2.61.0"
    namespaced = [d for d in docs if d["kind"] not in ("ClusterRole", "ClusterRoleBinding")]
    assert {d["metadata"]["namespace"] for d in namespaced} == {"ns9"}


def test_ray_version_can_be_given_for_an_untagged_image() -> None:
    docs = run_cli("--ray-image", "reg.io/ray@sha256:abc", "--ray-version", "2.55.1")
    assert one(docs, "RayCluster")["spec"]["rayVersion"] == "2.55.1"


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("ray-cluster-with-auth", "ray-cluster-with-auth"),
        ("a" * 50, "a" * 50),
        ("abc-" + "x" * 49, "r" + "x" * 49),  # KubeRay keeps the last 50, then fixes a '-'
        ("abc1" + "x" * 49, "r" + "x" * 49),  # ... or a leading digit
        ("abcd" + "x" * 49, "d" + "x" * 49),
    ],
)
def test_token_secret_name_matches_kuberay(name: str, secret: str) -> None:
    assert kuberay_auth_secret_name(name) == secret


def test_build_manifests_validates_options() -> None:
    with pytest.raises(ConfigError):
        build_manifests(ManifestOptions(cluster_name="-bad"))
