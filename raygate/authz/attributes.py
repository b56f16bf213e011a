"""From an HTTP request to Kubernetes authorization attributes. Pure: no I/O, no mutable state.

The gateway calls `request_attributes` on every request, so the configuration is checked once
(when it is loaded) and the per-request work is a dictionary lookup and, only with rewrites,
a string substitution.

Profiles (chosen with `authorization.profile`):

- `kube-rbac-proxy` (default): what kube-rbac-proxy's `GetRequestAttributes` does, with a verb for
  every method. With `resourceAttributes` configured, a resource request with exactly those
  attributes; with `rewrites` too, one request per rewrite value (the caller must be allowed all of
  them; no value at all gives an empty list, which the gateway answers with 400 like
  kube-rbac-proxy). Without `resourceAttributes`, a non-resource request on the raw URL path.
- `ray-k8s`: what Ray's built-in Kubernetes auth (Ray 2.55+) asks in its one SubjectAccessReview:
  verb `ray:write` on `rayclusters/<name>` in API group `ray.io` in the cluster's namespace, for
  every request. RBAC written for Ray's own auth (KubeRay's `ray-writer` ClusterRole) works as is.

- `ray` (opt-in): one subresource of the RayCluster per Ray route (`rayclusters/jobs`,
  `rayclusters/dashboard`, `rayclusters/serve`, `rayclusters/proxy` for the rest; see
  raygate.ray.routes), on the cluster named by `resourceAttributes`. Job ownership (the
  submitter stamped into the job, `rayclusters/alljobs` for someone else's) is the gateway's
  part: raygate.pipeline.ownership.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from raygate.authz.paths import is_unambiguous_path
from raygate.identity import Attributes, Identity, verb_for_method
from raygate.ray.routes import ray_route

RAY_API_GROUP = "ray.io"
RAY_CLUSTERS_RESOURCE = "rayclusters"
RAY_WRITE_VERB = "ray:write"

# kube-rbac-proxy fills `{{.Value}}` (Go text/template) with the rewrite value. Only this one
# template is meaningful there; anything else inside `{{ }}` is refused when the config loads.
_VALUE_TEMPLATE = re.compile(r"\{\{\s*\.Value\s*\}\}")
_ANY_TEMPLATE = re.compile(r"\{\{.*?\}\}")


class Profile(StrEnum):
    KUBE_RBAC_PROXY = "kube-rbac-proxy"
    RAY_K8S = "ray-k8s"
    RAY = "ray"


class ConfigModel(BaseModel):
    """Base of raygate's configuration models: camelCase keys (as kube-rbac-proxy and Kubernetes
    spell them), unknown keys refused, immutable once loaded."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class ResourceAttributesConfig(ConfigModel):
    """kube-rbac-proxy's `authorization.resourceAttributes`; values may hold `{{.Value}}`."""

    namespace: str = ""
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""

    @field_validator("*")
    @classmethod
    def _only_value_template(cls, value: str) -> str:
        for template in _ANY_TEMPLATE.findall(value):
            if not _VALUE_TEMPLATE.fullmatch(template):
                raise ValueError(
                    f"unsupported template {template!r}; only {{{{.Value}}}} is filled"
                )
        return value

    def has_templates(self) -> bool:
        return any("{{" in v for v in self.model_dump().values())


class RewriteSource(ConfigModel):
    name: str = ""


class Rewrites(ConfigModel):
    """Where rewrite values come from: every value of a query parameter, then of a header."""

    by_query_parameter: RewriteSource | None = None
    by_http_header: RewriteSource | None = Field(default=None, alias="byHttpHeader")


class RayClusterRef(ConfigModel):
    """The RayCluster the gateway stands in front of (ray-k8s profile)."""

    name: str = Field(min_length=1)
    namespace: str = Field(min_length=1)


class AttributesConfig(ConfigModel):
    """What `request_attributes` needs; `authorization` in raygate's config extends it."""

    profile: Profile = Profile.KUBE_RBAC_PROXY
    resource_attributes: ResourceAttributesConfig | None = None
    rewrites: Rewrites | None = None
    ray_cluster: RayClusterRef | None = None

    @model_validator(mode="after")
    def _consistent(self) -> AttributesConfig:
        if self.profile is Profile.RAY_K8S:
            if self.ray_cluster is None:
                raise ValueError("profile ray-k8s needs rayCluster: {name, namespace}")
            if self.resource_attributes is not None or self.rewrites is not None:
                raise ValueError(
                    "profile ray-k8s fixes the attributes; remove resourceAttributes/rewrites"
                )
        elif self.profile is Profile.RAY:
            resource = self.resource_attributes
            if resource is None or not resource.name:
                raise ValueError(
                    "profile ray needs resourceAttributes: {namespace, name} of the RayCluster"
                )
            if self.rewrites is not None or self.ray_cluster is not None:
                raise ValueError(
                    "profile ray reads resourceAttributes only; remove rewrites/rayCluster"
                )
            if resource.subresource or resource.has_templates():
                raise ValueError(
                    "profile ray sets the subresource per Ray route; remove "
                    "resourceAttributes.subresource and {{.Value}} templates"
                )
        elif self.rewrites is not None and self.resource_attributes is None:
            raise ValueError("rewrites fill resourceAttributes templates; set resourceAttributes")
        return self


def _header_values(headers: Mapping[str, Any], name: str) -> list[str]:
    """Every value of header `name`, case-insensitively; one entry per header line."""
    getall = getattr(headers, "getall", None)
    if getall is not None:  # aiohttp / multidict: repeated header lines stay separate
        return list(getall(name, []))
    wanted = name.lower()
    values: list[str] = []
    for key, value in headers.items():
        if key.lower() == wanted:
            values.extend([value] if isinstance(value, str) else value)
    return values


def _query_values(query: Mapping[str, Any], name: str) -> list[str]:
    """Every value of query parameter `name`; a multidict (aiohttp's request.query) works too."""
    getall = getattr(query, "getall", None)
    if getall is not None:
        return list(getall(name, []))
    value = query.get(name, ())
    return [value] if isinstance(value, str) else list(value)


def _fill(template: str, value: str) -> str:
    if "{{" not in template:
        return template
    # A function replacement: the value is caller input and must not be read as a regex escape.
    return _VALUE_TEMPLATE.sub(lambda _: value, template)


def _kube_rbac_proxy(
    identity: Identity,
    method: str,
    path: str,
    query: Mapping[str, Sequence[str]],
    headers: Mapping[str, Any],
    config: AttributesConfig,
) -> list[Attributes]:
    verb = verb_for_method(method)
    resource = config.resource_attributes
    if resource is None:
        raw = _raw_path(path)
        if not is_unambiguous_path(raw):
            # nonResourceURLs match the raw path; `..` or `%2F` could name another path upstream.
            raise ValueError(
                f"ambiguous path {raw!r}: dot segments and encoded separators are refused"
            )
        return [Attributes(identity=identity, verb=verb, resource_request=False, path=raw)]
    rewrites = config.rewrites
    if rewrites is None:
        values: list[str] = [""]  # one request, templates (if any) filled with nothing
    else:
        values = []
        if rewrites.by_query_parameter is not None and rewrites.by_query_parameter.name:
            values.extend(_query_values(query, rewrites.by_query_parameter.name))
        if rewrites.by_http_header is not None and rewrites.by_http_header.name:
            values.extend(_header_values(headers, rewrites.by_http_header.name))
    return [
        Attributes(
            identity=identity,
            verb=verb,
            resource_request=True,
            namespace=_fill(resource.namespace, value),
            api_group=_fill(resource.api_group, value),
            api_version=_fill(resource.api_version, value),
            resource=_fill(resource.resource, value),
            subresource=_fill(resource.subresource, value),
            name=_fill(resource.name, value),
        )
        for value in values
    ]


def _ray_k8s(
    identity: Identity,
    method: str,
    path: str,
    query: Mapping[str, Sequence[str]],
    headers: Mapping[str, Any],
    config: AttributesConfig,
) -> list[Attributes]:
    return [ray_k8s_cluster_attributes(identity, config)]


def ray_k8s_cluster_attributes(identity: Identity, config: AttributesConfig) -> Attributes:
    """Write on the RayCluster itself: all the ray-k8s profile asks of any call."""
    cluster = config.ray_cluster
    assert cluster is not None  # AttributesConfig guarantees it for this profile
    return Attributes(
        identity=identity,
        verb=RAY_WRITE_VERB,
        resource_request=True,
        namespace=cluster.namespace,
        api_group=RAY_API_GROUP,
        resource=RAY_CLUSTERS_RESOURCE,
        name=cluster.name,
    )


def ray_cluster_attributes(
    identity: Identity, verb: str, subresource: str, config: AttributesConfig
) -> Attributes:
    """`verb` on `rayclusters/<subresource>` of the cluster in `resourceAttributes` (ray profile)."""
    resource = config.resource_attributes
    assert resource is not None  # AttributesConfig guarantees it for this profile
    return Attributes(
        identity=identity,
        verb=verb,
        resource_request=True,
        namespace=resource.namespace,
        api_group=resource.api_group or RAY_API_GROUP,
        api_version=resource.api_version,
        resource=resource.resource or RAY_CLUSTERS_RESOURCE,
        subresource=subresource,
        name=resource.name,
    )


def _ray(
    identity: Identity,
    method: str,
    path: str,
    query: Mapping[str, Sequence[str]],
    headers: Mapping[str, Any],
    config: AttributesConfig,
) -> list[Attributes]:
    route = ray_route(method, _raw_path(path))
    return [
        ray_cluster_attributes(identity, p.verb, p.subresource, config) for p in route.permissions
    ]


_Mapper = Callable[
    [Identity, str, str, Mapping[str, Sequence[str]], Mapping[str, Any], AttributesConfig],
    list[Attributes],
]

_MAPPERS: Mapping[Profile, _Mapper] = {
    Profile.KUBE_RBAC_PROXY: _kube_rbac_proxy,
    Profile.RAY_K8S: _ray_k8s,
    Profile.RAY: _ray,
}


def _raw_path(path: str) -> str:
    return path.partition("?")[0] or "/"


def request_attributes(
    identity: Identity,
    method: str,
    path: str,
    query: Mapping[str, Sequence[str]],
    headers: Mapping[str, Any],
    config: AttributesConfig,
) -> list[Attributes]:
    """The attributes to authorize for one request; every one must be allowed.

    `path` is the raw (still percent-encoded) request path, as forwarded upstream; a query part
    is ignored. `query` maps each parameter to all its values (or is a multidict); `headers` is
    a plain mapping or a multidict (then repeated header lines count as separate values).
    An empty list means the request carries no rewrite value: answer 400, forward nothing.
    """
    return _MAPPERS[config.profile](identity, method, path, query, headers, config)


def cluster_authorization(profile: Profile, cluster_name: str, namespace: str) -> dict[str, Any]:
    """The `authorization` settings (config keys) that guard one RayCluster with `profile`."""
    settings: dict[str, Any] = {"profile": str(profile)}
    if profile is Profile.RAY_K8S:
        settings["rayCluster"] = {"name": cluster_name, "namespace": namespace}
    else:
        settings["resourceAttributes"] = {
            "namespace": namespace,
            "apiGroup": RAY_API_GROUP,
            "apiVersion": "v1",
            "resource": RAY_CLUSTERS_RESOURCE,
            "name": cluster_name,
        }
    return settings
