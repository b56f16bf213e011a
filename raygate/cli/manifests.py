"""`raygate manifests`: what a KubeRay user applies to run raygate as the Ray head's gateway."""

from __future__ import annotations

import click

from raygate.authz.attributes import Profile
from raygate.cli.common import report_errors
from raygate.deploy.kuberay import ManifestOptions, build_manifests, render_manifests

_DEFAULTS = ManifestOptions()


@click.command()
@click.option(
    "--cluster-name",
    default=_DEFAULTS.cluster_name,
    show_default=True,
    help="Name of the RayCluster.",
)
@click.option(
    "-n", "--namespace", default=_DEFAULTS.namespace, show_default=True, help="Its namespace."
)
@click.option("--image", default=_DEFAULTS.image, show_default=True, help="raygate's image.")
@click.option(
    "--profile",
    type=click.Choice([p.value for p in Profile]),
    default=_DEFAULTS.profile.value,
    show_default=True,
    help="kube-rbac-proxy: get/create/update/patch/delete on the RayCluster by HTTP method; "
    "ray-k8s: ray:write on the RayCluster for everything (RBAC of Ray's own Kubernetes auth); "
    "ray: one subresource per Ray operation (jobs, dashboard, serve, proxy) with job "
    "ownership, and the raygate-viewer/-submitter/-admin ClusterRoles.",
)
@click.option("--ray-image", default=_DEFAULTS.ray_image, show_default=True, help="Ray's image.")
@click.option(
    "--ray-version",
    default=None,
    help="Ray's version for KubeRay (default: the --ray-image tag); 2.52.0 or newer.",
)
@report_errors
def manifests(
    cluster_name: str,
    namespace: str,
    image: str,
    profile: str,
    ray_image: str,
    ray_version: str | None,
) -> None:
    """Print a RayCluster with the raygate sidecar and what it needs, as YAML.

    \b
    Ray runs in token mode behind raygate; a NetworkPolicy leaves only port 8265 (raygate)
    open to other pods. Apply with:
      raygate manifests | kubectl apply -f -
    """
    options = ManifestOptions(
        cluster_name=cluster_name,
        namespace=namespace,
        image=image,
        profile=Profile(profile),
        ray_image=ray_image,
        ray_version=ray_version,
    )
    click.echo(render_manifests(build_manifests(options), options), nl=False)
