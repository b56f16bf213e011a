"""Authorization attributes for Ray's other doors: Ray Client (gRPC) and Serve (HTTP). Pure.

Ray Client (one permission for a whole driver session, as every gRPC call is a POST):

- `kube-rbac-proxy`: verb `create` on the configured `resourceAttributes` (the RayCluster);
  without resourceAttributes, `create` on the non-resource path `/<service>/<method>`.
- `ray-k8s`: verb `ray:write` on `rayclusters/<name>` (what Ray's own Kubernetes auth asks).
- `ray`: verb `create` on the subresource `rayclusters/client`.

Serve (one permission per Serve application, so a plain Role lets alice call `chat` and not
`admin`): resource `applications` in API group `serve.ray.io`, named after the application, in
the RayCluster's namespace. The verb is the HTTP method's (`get` for GET/HEAD, `create` for
POST, ...) with the `kube-rbac-proxy` and `ray` profiles, `ray:write` with `ray-k8s`. The
`kube-rbac-proxy` profile without resourceAttributes has no namespace to name: it authorizes
the method's verb on the raw request path, as for the dashboard.
"""

from __future__ import annotations

from raygate.authz.attributes import (
    RAY_WRITE_VERB,
    AttributesConfig,
    Profile,
    ray_cluster_attributes,
    ray_k8s_cluster_attributes,
    verb_for_method,
)
from raygate.identity import Attributes, Identity

CLIENT_SUBRESOURCE = "client"
CLIENT_VERB = "create"  # gRPC calls are HTTP/2 POSTs
SERVE_API_GROUP = "serve.ray.io"
SERVE_APPLICATIONS = "applications"


def cluster_namespace(config: AttributesConfig) -> str | None:
    """The RayCluster's namespace, or None when the config names no cluster."""
    if config.profile is Profile.RAY_K8S:
        assert config.ray_cluster is not None
        return config.ray_cluster.namespace
    resource = config.resource_attributes
    if resource is None or "{{" in resource.namespace:
        return None
    return resource.namespace


def client_attributes(
    identity: Identity, grpc_method: str, config: AttributesConfig
) -> list[Attributes]:
    """What one Ray Client call (`/ray.rpc.RayletDriver/ClusterInfo`, ...) needs."""
    if config.profile is Profile.RAY_K8S:
        return [ray_k8s_cluster_attributes(identity, config)]
    if config.profile is Profile.RAY:
        return [ray_cluster_attributes(identity, CLIENT_VERB, CLIENT_SUBRESOURCE, config)]
    resource = config.resource_attributes
    if resource is None:
        return [
            Attributes(
                identity=identity, verb=CLIENT_VERB, resource_request=False, path=grpc_method
            )
        ]
    # Rewrites read HTTP query parameters and headers, which a gRPC call has none of: the
    # templates are filled with nothing (kube-rbac-proxy's behaviour for a missing value is to
    # refuse, so a template left in a name refuses too: no object is named "").
    return [
        Attributes(
            identity=identity,
            verb=CLIENT_VERB,
            namespace=resource.namespace,
            api_group=resource.api_group,
            api_version=resource.api_version,
            resource=resource.resource,
            subresource=resource.subresource,
            name=resource.name,
        )
    ]


def serve_attributes(
    identity: Identity, http_method: str, raw_path: str, application: str, config: AttributesConfig
) -> list[Attributes]:
    """What one call to Serve application `application` needs."""
    verb = RAY_WRITE_VERB if config.profile is Profile.RAY_K8S else verb_for_method(http_method)
    namespace = cluster_namespace(config)
    if namespace is None:
        return [
            Attributes(
                identity=identity,
                verb=verb,
                resource_request=False,
                path=raw_path.partition("?")[0] or "/",
            )
        ]
    return [
        Attributes(
            identity=identity,
            verb=verb,
            namespace=namespace,
            api_group=SERVE_API_GROUP,
            resource=SERVE_APPLICATIONS,
            name=application,
        )
    ]
