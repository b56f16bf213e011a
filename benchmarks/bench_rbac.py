"""How long one RBAC decision takes as bindings for *other* subjects pile up.

The index files bindings under the subjects they name, so the cost should stay flat from 10 to
10,000 bindings. Writes benchmarks/results/rbac.json.

    .venv/bin/python benchmarks/bench_rbac.py [--decisions 50000] [--smoke] [--results-dir DIR]
"""

from __future__ import annotations

import json
import time
from typing import Any

from report import Result, common_arguments

from raygate.identity import Attributes, Identity, service_account_identity
from raygate.objects import parse_object
from raygate.rbac import PolicyIndex

RBAC = "rbac.authorization.k8s.io/v1"
SIZES = (10, 1_000, 10_000)


def _guide() -> list[Any]:
    return [
        parse_object(
            {
                "apiVersion": RBAC,
                "kind": "Role",
                "metadata": {"name": "ray-user", "namespace": "default"},
                "rules": [{"apiGroups": ["ray.io"], "resources": ["rayclusters"], "verbs": ["*"]}],
            }
        ),
        parse_object(
            {
                "apiVersion": RBAC,
                "kind": "RoleBinding",
                "metadata": {"name": "ray-user", "namespace": "default"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "ray-user",
                },
                "subjects": [
                    {"kind": "ServiceAccount", "name": "ray-user", "namespace": "default"}
                ],
            }
        ),
        parse_object(
            {
                "apiVersion": RBAC,
                "kind": "ClusterRole",
                "metadata": {"name": "viewer"},
                "rules": [
                    {
                        "apiGroups": ["ray.io"],
                        "resources": ["rayclusters", "rayclusters/jobs"],
                        "verbs": ["get", "list"],
                    }
                ],
            }
        ),
    ]


def _other_bindings(count: int) -> list[Any]:
    """`count` bindings, none naming the benchmarked identities: a mix of RoleBindings in the
    same namespace (service accounts) and ClusterRoleBindings (users and groups)."""
    objects = []
    for i in range(count):
        ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "viewer"}
        if i % 2:
            subject = {"kind": "ServiceAccount", "name": f"sa-{i}", "namespace": "default"}
            doc = {
                "apiVersion": RBAC,
                "kind": "RoleBinding",
                "metadata": {"name": f"rb-{i}", "namespace": "default"},
            }
        else:
            kind = "User" if i % 4 else "Group"
            subject = {"kind": kind, "name": f"{kind.lower()}-{i}"}
            doc = {
                "apiVersion": RBAC,
                "kind": "ClusterRoleBinding",
                "metadata": {"name": f"crb-{i}"},
            }
        objects.append(parse_object({**doc, "roleRef": ref, "subjects": [subject]}))
    return objects


def _time_decisions(index: PolicyIndex, attributes: Attributes, decisions: int) -> float:
    """Seconds per decision, best of three runs (the least disturbed by the machine)."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(decisions):
            index.authorize(attributes)
        best = min(best, (time.perf_counter() - start) / decisions)
    return best


def main() -> None:
    parser = common_arguments(__doc__)
    parser.add_argument("--decisions", type=int, default=50_000)
    args = parser.parse_args()
    if args.smoke:
        args.decisions = 200
    result = Result(
        "rbac",
        "RBAC decisions as bindings for other subjects pile up",
        about=(
            "PolicyIndex.authorize, one thread, best of 3 runs of "
            f"{args.decisions:,} decisions; the index files bindings by subject, so the cost "
            "should stay flat."
        ),
        smoke=args.smoke,
    )

    allowed = Attributes(
        service_account_identity("default", "ray-user"),
        "get",
        namespace="default",
        api_group="ray.io",
        resource="rayclusters",
        name="ray-cluster-with-auth",
    )
    denied = Attributes(
        Identity("mallory", groups=("system:authenticated",)),
        "get",
        namespace="default",
        api_group="ray.io",
        resource="rayclusters",
        name="ray-cluster-with-auth",
    )
    rows = []
    for size in SIZES:
        objects = _guide() + _other_bindings(size)
        start = time.perf_counter()
        index = PolicyIndex.build(objects)
        build_seconds = time.perf_counter() - start
        assert index.authorize(allowed).allowed and not index.authorize(denied).allowed
        row: dict[str, Any] = {"other_bindings": size, "build_ms": round(build_seconds * 1e3, 2)}
        for label, attributes in (("allowed", allowed), ("denied", denied)):
            seconds = _time_decisions(index, attributes, args.decisions)
            row[f"{label}_us_per_decision"] = round(seconds * 1e6, 3)
            row[f"{label}_decisions_per_second"] = round(1 / seconds)
        rows.append(row)
        print(json.dumps(row))

    table = result.table(
        "µs per decision",
        ["other bindings", "index build ms", "allowed µs", "denied µs", "allowed per second"],
    )
    for row in rows:
        table.add(
            row["other_bindings"],
            row["build_ms"],
            row["allowed_us_per_decision"],
            row["denied_us_per_decision"],
            row["allowed_decisions_per_second"],
        )
    result.data = {"decisions_per_measurement": args.decisions, "results": rows}
    result.write(args.results_dir)


if __name__ == "__main__":
    main()
