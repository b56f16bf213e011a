"""The Kubernetes objects `raygate manifests` prints: a KubeRay RayCluster with raygate as its
gateway sidecar, and everything around it. Pure: inputs in, plain dicts out.

How the pieces keep Ray closed:
- Ray's dashboard listens on 127.0.0.1:8443 inside the head pod; raygate listens on 8265 and is
  the only way in from outside the pod.
- Ray runs in token mode (KubeRay `authOptions.mode: token`: KubeRay makes a Secret named after
  the cluster holding `auth_token`). Every Ray container and the raygate sidecar read it
  explicitly, so GCS (6379), the client port (10001) and the agents refuse anyone without the
  token, and raygate sends it upstream in place of the caller's token.
- Ray's other doors go through raygate too: the Ray Client port 10001 is raygate's (Ray's own
  client server moves to 23001), and Serve's HTTP port 8000 on the pod's IP is raygate's while
  Serve's proxy binds 127.0.0.1:8000 (RAY_SERVE_DEFAULT_HTTP_HOST on the head container).
- A NetworkPolicy admits the gateway's ports (8265, 10001, 8000) from anywhere and everything
  else only from the cluster's own pods.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from raygate.authz.attributes import Profile, cluster_authorization
from raygate.errors import ConfigError

GATEWAY_PORT = 8265
ADMIN_PORT = 8266  # /healthz, /readyz, /metrics
RAY_DASHBOARD_PORT = 8443  # Ray's own dashboard, on loopback only
CLIENT_PORT = 10001  # the Ray Client door (Ray's usual client port)
# Ray's own client server: outside Ray's worker port range (10002-19999) and the ephemeral ports.
RAY_CLIENT_SERVER_PORT = 23001
SERVE_PORT = 8000  # the Serve door on the pod IP; Serve's own proxy on 127.0.0.1:8000
GATEWAY_PORTS = (GATEWAY_PORT, CLIENT_PORT, SERVE_PORT)
CONFIG_DIR = "/etc/raygate"
CONFIG_KEY = "config.yaml"
# KubeRay refuses longer RayCluster names (MaxRayClusterNameLength).
MAX_CLUSTER_NAME_LENGTH = 53

_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/:@]*$")
_RAY_VERSION_TAG = re.compile(r":(\d+\.\d+\.\d+)(?:-[A-Za-z0-9._-]+)?$")
_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
# KubeRay refuses authOptions.mode token without rayVersion >= 2.52.0 (Ray's token mode).
MIN_RAY_VERSION = (2, 52, 0)

RBAC_GROUP = "rbac.authorization.k8s.io"
AUTHENTICATOR_CLUSTER_ROLE = "raygate-authenticator"
VIEWER_ROLE = "raygate-viewer"
SUBMITTER_ROLE = "raygate-submitter"
SUBMITTER_VERBS = ("get", "create", "update", "patch", "delete")
ADMIN_ROLE = "raygate-admin"


@dataclass(frozen=True)
class ManifestOptions:
    cluster_name: str = "ray-cluster-with-auth"
    namespace: str = "default"
    image: str = "raygate:0.1.0"
    profile: Profile = Profile.KUBE_RBAC_PROXY
    ray_image: str = "rayproject/ray:2.60.0"
    ray_version: str | None = None  # default: the ray image's tag

    def validate(self) -> ManifestOptions:
        name = self.cluster_name
        if len(name) > MAX_CLUSTER_NAME_LENGTH or not _DNS1035_LABEL.match(name):
            raise ConfigError(
                f"--cluster-name {name!r}: a RayCluster name is a DNS-1035 label of at most "
                f"{MAX_CLUSTER_NAME_LENGTH} characters (lowercase letters, digits, '-', "
                "starting with a letter)"
            )
        if len(self.namespace) > 63 or not _DNS1123_LABEL.match(self.namespace):
            raise ConfigError(
                f"--namespace {self.namespace!r}: a namespace is a DNS-1123 label of at most 63 "
                "characters (lowercase letters, digits, '-')"
            )
        for flag, image in (("--image", self.image), ("--ray-image", self.ray_image)):
            if not _IMAGE.match(image):
                raise ConfigError(f"{flag} {image!r} is not a container image reference")
        version = self.effective_ray_version
        if version is None:
            raise ConfigError(
                f"cannot tell Ray's version from --ray-image {self.ray_image!r}; pass --ray-version"
            )
        parsed = _VERSION.match(version)
        if parsed is None:
            raise ConfigError(f"--ray-version {version!r} is not a version like 2.60.0")
        if tuple(int(part) for part in parsed.groups()) < MIN_RAY_VERSION:
            minimum = ".".join(map(str, MIN_RAY_VERSION))
            raise ConfigError(
                f"Ray {version} has no token mode; KubeRay's authOptions needs Ray "
                f"{minimum} or newer"
            )
        return self

    @property
    def effective_ray_version(self) -> str | None:
        if self.ray_version:
            return self.ray_version
        match = _RAY_VERSION_TAG.search(self.ray_image)
        return match.group(1) if match else None

    @property
    def service_account(self) -> str:
        return f"{self.cluster_name}-raygate"

    @property
    def config_map(self) -> str:
        return f"{self.cluster_name}-raygate"

    @property
    def token_secret(self) -> str:
        return kuberay_auth_secret_name(self.cluster_name)


def kuberay_auth_secret_name(cluster_name: str) -> str:
    """The Secret KubeRay creates for `authOptions.mode: token` (its utils.CheckName)."""
    name = cluster_name[-50:]  # KubeRay keeps the last 50 characters of longer names
    if name[0].isdigit() or not name[0].isalnum():
        name = "r" + name[1:]
    return name


def _labels(options: ManifestOptions) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "raygate",
        "app.kubernetes.io/part-of": options.cluster_name,
    }


def _metadata(options: ManifestOptions, name: str, namespaced: bool = True) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespaced:
        metadata["namespace"] = options.namespace
    metadata["labels"] = _labels(options)
    return metadata


def gateway_config(options: ManifestOptions) -> dict[str, Any]:
    """raygate's own config for the sidecar (see raygate.config.GatewayConfig)."""
    authorization = {
        "mode": "kubernetes",
        **cluster_authorization(options.profile, options.cluster_name, options.namespace),
    }
    return {
        "listen": {"address": f"0.0.0.0:{GATEWAY_PORT}"},
        "upstream": {
            "url": f"http://127.0.0.1:{RAY_DASHBOARD_PORT}/",
            "tokenEnv": "RAY_AUTH_TOKEN",
            # Ray's dashboard reads no X-Forwarded-*, and each header costs it (docs/design.md).
            "forwardedHeaders": False,
        },
        "authentication": {"mode": ["kubernetes"]},
        "authorization": authorization,
        "proxyEndpoints": {"port": ADMIN_PORT},
    }


def _token_env(options: ManifestOptions) -> list[dict[str, Any]]:
    return [
        {"name": "RAY_AUTH_MODE", "value": "token"},
        {
            "name": "RAY_AUTH_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": options.token_secret, "key": "auth_token"}},
        },
    ]


def _sidecar(options: ManifestOptions) -> dict[str, Any]:
    def probe(path: str, failure_threshold: int) -> dict[str, Any]:
        # Only the health endpoints on the admin port: a probe never passes authorization.
        return {
            "httpGet": {"path": path, "port": "raygate-admin"},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": failure_threshold,
        }

    return {
        "name": "raygate",
        "image": options.image,
        "args": [
            "serve",
            f"--config={CONFIG_DIR}/{CONFIG_KEY}",
            f"--client-listen=0.0.0.0:{CLIENT_PORT}",
            f"--client-upstream=127.0.0.1:{RAY_CLIENT_SERVER_PORT}",
            # The pod's own address: Serve's proxy holds 127.0.0.1 on the same port.
            f"--serve-listen=$(POD_IP):{SERVE_PORT}",
            f"--serve-upstream=http://127.0.0.1:{SERVE_PORT}",
        ],
        "env": [
            *_token_env(options),
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ],
        "ports": [
            {"containerPort": ADMIN_PORT, "name": "raygate-admin", "protocol": "TCP"},
        ],
        "readinessProbe": probe("/readyz", 3),
        "livenessProbe": {**probe("/healthz", 6), "initialDelaySeconds": 5},
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "1", "memory": "256Mi"},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "raygate-config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "raygate-tmp", "mountPath": "/tmp"},
        ],
    }


def ray_cluster(options: ManifestOptions) -> dict[str, Any]:
    head_container = {
        "name": "ray-head",
        "image": options.ray_image,
        "env": [
            *_token_env(options),
            # Serve's HTTP proxy on loopback only: the pod IP's port 8000 is the Serve door's.
            {"name": "RAY_SERVE_DEFAULT_HTTP_HOST", "value": "127.0.0.1"},
        ],
        # KubeRay builds the head Service from the first container's ports: 8265, 10001 and
        # 8000 there reach raygate in the same pod, as in KubeRay's kube-rbac-proxy sample.
        "ports": [
            {"containerPort": 6379, "name": "gcs-server"},
            {"containerPort": GATEWAY_PORT, "name": "dashboard"},
            {"containerPort": CLIENT_PORT, "name": "client"},
            {"containerPort": SERVE_PORT, "name": "serve"},
        ],
        "resources": {
            "limits": {"cpu": "2", "memory": "4Gi"},
            "requests": {"cpu": "2", "memory": "4Gi"},
        },
    }
    worker_container = {
        "name": "ray-worker",
        "image": options.ray_image,
        "env": _token_env(options),
        "resources": {
            "limits": {"cpu": "1", "memory": "4Gi"},
            "requests": {"cpu": "1", "memory": "4Gi"},
        },
    }
    spec: dict[str, Any] = {
        "authOptions": {"mode": "token"},
        "headGroupSpec": {
            "rayStartParams": {
                "dashboard-host": "127.0.0.1",
                "dashboard-port": str(RAY_DASHBOARD_PORT),
                "ray-client-server-port": str(RAY_CLIENT_SERVER_PORT),
            },
            "template": {
                "metadata": {"labels": _labels(options)},
                "spec": {
                    "serviceAccountName": options.service_account,
                    "containers": [head_container, _sidecar(options)],
                    "volumes": [
                        {"name": "raygate-config", "configMap": {"name": options.config_map}},
                        {"name": "raygate-tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
        "workerGroupSpecs": [
            {
                "groupName": "worker-group",
                "replicas": 2,
                "minReplicas": 1,
                "maxReplicas": 5,
                "rayStartParams": {},
                "template": {"spec": {"containers": [worker_container]}},
            }
        ],
    }
    spec = {"rayVersion": options.effective_ray_version, **spec}
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": _metadata(options, options.cluster_name),
        "spec": spec,
    }


def config_map(options: ManifestOptions) -> dict[str, Any]:
    text = yaml.safe_dump(gateway_config(options), sort_keys=False)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(options, options.config_map),
        "data": {CONFIG_KEY: text},
    }


def service_account(options: ManifestOptions) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(options, options.service_account),
    }


def authenticator_cluster_role(options: ManifestOptions) -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": AUTHENTICATOR_CLUSTER_ROLE,
            "labels": {"app.kubernetes.io/name": "raygate"},
        },
        "rules": [
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
        ],
    }


def authenticator_binding(options: ManifestOptions) -> dict[str, Any]:
    # Namespace and cluster name are DNS labels (no ':'), so this name is unique per cluster.
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": _metadata(
            options, f"raygate:{options.namespace}:{options.cluster_name}", namespaced=False
        ),
        "roleRef": {
            "apiGroup": RBAC_GROUP,
            "kind": "ClusterRole",
            "name": AUTHENTICATOR_CLUSTER_ROLE,
        },
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": options.service_account,
                "namespace": options.namespace,
            }
        ],
    }


def network_policies(options: ManifestOptions) -> list[dict[str, Any]]:
    """Two policies (they add up): the cluster's pods reach each other on any port; the head pod
    is reachable from anywhere else on the gateway's ports only (dashboard, Ray Client, Serve)."""
    cluster_pods = {"matchLabels": {"ray.io/cluster": options.cluster_name}}
    head_pod = {"matchLabels": {"ray.io/cluster": options.cluster_name, "ray.io/node-type": "head"}}
    intra_cluster = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(options, f"{options.cluster_name}-raygate-intra-cluster"),
        "spec": {
            "podSelector": cluster_pods,
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": cluster_pods}]}],
        },
    }
    gateway = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(options, f"{options.cluster_name}-raygate-gateway"),
        "spec": {
            "podSelector": head_pod,
            "policyTypes": ["Ingress"],
            "ingress": [
                {"ports": [{"protocol": "TCP", "port": port} for port in GATEWAY_PORTS]}
            ],
        },
    }
    return [intra_cluster, gateway]


def example_roles(options: ManifestOptions) -> list[dict[str, Any]]:
    """Roles to bind users to (ClusterRoles for the `ray` profile). Namespace-wide on purpose: add `resourceNames: [CLUSTER]` to pin
    one to a single cluster (a shared name cannot carry one cluster's name without the next
    `raygate manifests | kubectl apply` overwriting it)."""

    def role(name: str, verbs: tuple[str, ...] | list[str]) -> dict[str, Any]:
        return {
            "apiVersion": f"{RBAC_GROUP}/v1",
            "kind": "Role",
            "metadata": {
                "name": name,
                "namespace": options.namespace,
                "labels": {"app.kubernetes.io/name": "raygate"},
            },
            "rules": [
                {"apiGroups": ["ray.io"], "resources": ["rayclusters"], "verbs": list(verbs)}
            ],
        }

    if options.profile is Profile.RAY_K8S:
        # Ray's Kubernetes auth has one all-or-nothing permission: there is no viewer.
        return [role(SUBMITTER_ROLE, ["ray:write"])]
    if options.profile is Profile.RAY:
        return ray_profile_cluster_roles()
    return [role(VIEWER_ROLE, ["get"]), role(SUBMITTER_ROLE, SUBMITTER_VERBS)]


def _rules(grants: Mapping[str, list[str]]) -> list[dict[str, Any]]:
    return [
        {"apiGroups": ["ray.io"], "resources": [resource], "verbs": verbs}
        for resource, verbs in grants.items()
    ]


def ray_profile_cluster_roles() -> list[dict[str, Any]]:
    """The `ray` profile's roles (see raygate.ray.routes). ClusterRoles, so one RoleBinding per
    namespace grants them there (or a ClusterRoleBinding everywhere); `resourceNames: [CLUSTER]`
    in a copy pins one to a single cluster. `rayclusters/jobs` acts on the caller's own jobs;
    `rayclusters/alljobs` on everyone's."""
    job_verbs = ["get", "list", "create", "stop", "delete"]
    viewer = {
        "rayclusters": ["get"],
        "rayclusters/jobs": ["get", "list"],
        "rayclusters/dashboard": ["get"],
    }
    # Ray Client runs a driver on the cluster: code, like a job.
    submitter = {**viewer, "rayclusters/jobs": job_verbs, "rayclusters/client": ["create"]}
    admin = {
        **submitter,
        "rayclusters/alljobs": job_verbs,
        "rayclusters/serve": ["get", "update", "delete"],
        "rayclusters/proxy": ["*"],
    }
    return [
        {
            "apiVersion": f"{RBAC_GROUP}/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "raygate"}},
            "rules": _rules(grants),
        }
        for name, grants in (
            (VIEWER_ROLE, viewer),
            (SUBMITTER_ROLE, submitter),
            (ADMIN_ROLE, admin),
        )
    ]


def build_manifests(options: ManifestOptions) -> list[dict[str, Any]]:
    """Every object, in the order `kubectl apply` should create them."""
    options.validate()
    return [
        service_account(options),
        authenticator_cluster_role(options),
        authenticator_binding(options),
        config_map(options),
        *network_policies(options),
        *example_roles(options),
        ray_cluster(options),
    ]


class _ManifestDumper(yaml.SafeDumper):
    """Plain YAML for people: no anchors for repeated selectors, multi-line text as `|` blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_ManifestDumper.add_representer(str, _represent_str)


def render_manifests(documents: list[Mapping[str, Any]], options: ManifestOptions) -> str:
    header = (
        f"# raygate in front of RayCluster {options.namespace}/{options.cluster_name} "
        f"(profile {options.profile}).\n"
        "# Apply with: raygate manifests ... | kubectl apply -f -\n"
    )
    body = "---\n".join(
        yaml.dump(dict(doc), Dumper=_ManifestDumper, sort_keys=False) for doc in documents
    )
    return header + body
