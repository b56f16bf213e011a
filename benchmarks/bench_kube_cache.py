"""How many API-server calls a flood of requests costs: raygate's caches vs. Ray's built-in
Kubernetes auth.

Both run against the fake API server of the tests (real kubernetes_asyncio client, every body
schema-checked), with the RBAC of KubeRay's `ray-cluster.kubernetes.auth.yaml` (`ray:write` on
the RayCluster). Ray's model, as documented for RAY_ENABLE_K8S_TOKEN_AUTH: a TokenReview per
request, then a SubjectAccessReview, and only allowed results cached, so every bad token costs a
TokenReview and every authenticated-but-denied request a TokenReview and a SubjectAccessReview.

Requests arrive in waves of `--concurrency` at a time. Only call counts are reported: the fake
spends most of its time validating bodies against the schemas, so wall time would measure it, not
raygate. Writes benchmarks/results/kube_cache.json.

    .venv/bin/python benchmarks/bench_kube_cache.py [--requests 1000] [--smoke] [--results-dir DIR]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from report import Result, common_arguments  # noqa: E402

from raygate.authz.cache import CachingAuthenticator, CachingAuthorizer, token_key  # noqa: E402
from raygate.identity import Attributes, Identity  # noqa: E402
from raygate.kube.client import KubeClient  # noqa: E402
from raygate.kube.sar import SubjectAccessReviewAuthorizer  # noqa: E402
from raygate.kube.tokenreview import TokenReviewAuthenticator  # noqa: E402
from tests.kube.fakeapi import (  # noqa: E402
    SUBJECT_ACCESS_REVIEWS,
    TOKEN_REVIEWS,
    FakeKubeAPI,
    running_fake,
)

CLUSTER, NAMESPACE = "ray-cluster-with-k8s-auth", "default"
RBAC = "rbac.authorization.k8s.io/v1"
POLICY = [
    {
        "apiVersion": RBAC,
        "kind": "ClusterRole",
        "metadata": {"name": "ray-writer"},
        "rules": [{"apiGroups": ["ray.io"], "resources": ["rayclusters"], "verbs": ["ray:write"]}],
    },
    {
        "apiVersion": RBAC,
        "kind": "RoleBinding",
        "metadata": {"name": "ray-writer", "namespace": NAMESPACE},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "ray-writer",
        },
        "subjects": [{"kind": "ServiceAccount", "name": "ray-user", "namespace": NAMESPACE}],
    },
]

Check = Callable[[str], Awaitable[bool]]
RAYGATE_CACHES = "authn 120 s by token hash (failures 10 s), allow 300 s, deny 30 s, single flight"
RAY_MODEL = "TokenReview + SubjectAccessReview per request, only allowed cached"


def ray_write(identity: Identity) -> Attributes:
    return Attributes(
        identity=identity,
        verb="ray:write",
        namespace=NAMESPACE,
        api_group="ray.io",
        resource="rayclusters",
        name=CLUSTER,
    )


def raygate_check(client: KubeClient) -> Check:
    authn = CachingAuthenticator(TokenReviewAuthenticator(client))
    authz = CachingAuthorizer(SubjectAccessReviewAuthorizer(client))

    async def check(token: str) -> bool:
        identity = await authn.authenticate_token(token)
        return identity is not None and (await authz.authorize(ray_write(identity))).allowed

    return check


def ray_builtin_check(client: KubeClient) -> Check:
    """Ray's built-in Kubernetes auth: reviews every request, caches allowed tokens only."""
    allowed_tokens: set[bytes] = set()
    authz = SubjectAccessReviewAuthorizer(client)

    async def check(token: str) -> bool:
        if token_key(token) in allowed_tokens:
            return True
        review = await client.create_token_review(token)
        if not review.authenticated:
            return False
        identity = Identity(review.user, review.uid, review.groups, review.extra)
        if (await authz.authorize(ray_write(identity))).allowed:
            allowed_tokens.add(token_key(token))
            return True
        return False

    return check


def workloads(fake: FakeKubeAPI, requests: int) -> dict[str, list[str]]:
    bad = [f"not-a-valid-token-{i}" for i in range(50)]
    denied = [fake.add_service_account_token(NAMESPACE, f"intruder-{i}") for i in range(10)]
    allowed = [fake.add_service_account_token(NAMESPACE, "ray-user") for _ in range(5)]
    mixed = allowed * 8 + bad[:10] + denied[:10]  # 2/3 legitimate, 1/3 noise
    return {
        "bad_tokens_50_distinct": [bad[i % len(bad)] for i in range(requests)],
        "denied_tokens_10_distinct": [denied[i % len(denied)] for i in range(requests)],
        "allowed_tokens_5_distinct": [allowed[i % len(allowed)] for i in range(requests)],
        "mixed": [mixed[i % len(mixed)] for i in range(requests)],
    }


async def measure(
    fake: FakeKubeAPI,
    kubeconfig: Path,
    make_check: Callable[[KubeClient], Check],
    tokens: list[str],
    concurrency: int,
) -> dict[str, Any]:
    before = dict(fake.calls)
    async with await KubeClient.from_kubeconfig(kubeconfig) as client:
        check = make_check(client)
        allowed = 0
        for i in range(0, len(tokens), concurrency):
            allowed += sum(await asyncio.gather(*map(check, tokens[i : i + concurrency])))
    token_reviews = fake.calls[TOKEN_REVIEWS] - before.get(TOKEN_REVIEWS, 0)
    access_reviews = fake.calls[SUBJECT_ACCESS_REVIEWS] - before.get(SUBJECT_ACCESS_REVIEWS, 0)
    return {
        "allowed_requests": allowed,
        "token_reviews": token_reviews,
        "subject_access_reviews": access_reviews,
        "api_calls": token_reviews + access_reviews,
    }


async def run(requests: int, concurrency: int) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    async with running_fake() as fake:
        fake.use_rbac(POLICY)
        with tempfile.TemporaryDirectory() as tmp:
            kubeconfig = fake.write_kubeconfig(Path(tmp) / "kubeconfig")
            for name, tokens in workloads(fake, requests).items():
                row: dict[str, Any] = {"workload": name, "requests": len(tokens)}
                for label, make_check in (
                    ("raygate", raygate_check),
                    ("ray_builtin_k8s_auth", ray_builtin_check),
                ):
                    row[label] = await measure(fake, kubeconfig, make_check, tokens, concurrency)
                raygate_calls = max(row["raygate"]["api_calls"], 1)
                row["api_call_ratio_ray_over_raygate"] = round(
                    row["ray_builtin_k8s_auth"]["api_calls"] / raygate_calls, 1
                )
                results.append(row)
    return {
        "benchmark": "Kubernetes API calls for a flood of requests (fake API server, loopback)",
        "concurrency": concurrency,
        "raygate_caches": RAYGATE_CACHES,
        "ray_model": RAY_MODEL,
        "results": results,
    }


def main() -> None:
    parser = common_arguments(__doc__)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    if args.smoke:
        args.requests = 100
    result = Result(
        "kube_cache",
        "Kubernetes API calls for a flood of requests: raygate's caches vs Ray's built-in auth",
        about=(
            "The fake API server of the tests (real kubernetes_asyncio client); requests in "
            f"waves of {args.concurrency}. raygate: {RAYGATE_CACHES}. Ray's model: "
            f"{RAY_MODEL}. Only call counts: wall time would measure the fake."
        ),
        smoke=args.smoke,
    )
    data = asyncio.run(run(args.requests, args.concurrency))
    table = result.table(
        "API calls (TokenReview + SubjectAccessReview)",
        ["workload", "requests", "raygate calls", "Ray built-in calls", "Ray ÷ raygate"],
    )
    for row in data["results"]:
        table.add(
            row["workload"],
            row["requests"],
            row["raygate"]["api_calls"],
            row["ray_builtin_k8s_auth"]["api_calls"],
            row["api_call_ratio_ray_over_raygate"],
        )
    result.data = data
    result.write(args.results_dir)


if __name__ == "__main__":
    main()
