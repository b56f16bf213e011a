"""Prometheus metrics of the gateway, in a registry of its own (one per gateway)."""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Upstream latencies reach the Histogram in batches of this many (`observe_all`): a second's
# worth at once, each observed on its own (24,000 at 24k req/s), held the event loop ~17 ms,
# which was every request's worst latency under load.
LATENCY_BATCH = 1024


def observe_all(histogram: Histogram, values: list[float]) -> None:
    """`histogram.observe(v)` for every value: counted per bucket first, then one increment per
    bucket and one of the sum (a lock, and in multiprocess mode a file write, each), where
    observing them one by one takes all that per value. Reaches into prometheus_client's
    Histogram (its bounds, bucket values and sum, unchanged since 0.4); without them, observes
    one by one."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values:
            histogram.observe(value)
        return
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect_left(bounds, value)] += 1  # the first bound >= value, as observe does
    total.inc(sum(values))
    for bucket, count in zip(buckets, counts, strict=True):
        if count:
            bucket.inc(count)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "raygate_requests",
            "Requests answered, by HTTP status code.",
            ["code"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "raygate_decisions",
            "Access decisions (allow, deny, unauthenticated, unavailable).",
            ["decision"],
            registry=self.registry,
        )
        self.cache_events = Counter(
            "raygate_cache_events",
            "Authentication/authorization cache hits and misses.",
            ["cache", "result"],
            registry=self.registry,
        )
        self.backend_latency = Histogram(
            "raygate_backend_latency_seconds",
            "Latency of identity and policy backend calls.",
            ["backend", "call"],
            registry=self.registry,
        )
        self._requests_by_code: dict[int, Any] = {}
        self._decisions_by_name: dict[str, Any] = {}
        self._backend_by_call: dict[str, Any] = {}
        self.door_calls = Counter(
            "raygate_door_calls",
            "Calls at the Ray Client and Serve doors, by door, method (gRPC method or Serve "
            "application) and outcome (allow, deny, unauthenticated, unavailable, cut, or "
            "the gRPC status / HTTP code Ray answered).",
            ["door", "method", "outcome"],
            registry=self.registry,
        )
        self.door_streams = Gauge(
            "raygate_door_open_streams",
            "Ray Client streams (data, log, object) open through the gateway.",
            ["method"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self._door_children: dict[tuple[str, str, str], Any] = {}
        self._cached_hits: tuple[Any, Any] | None = None
        self._pending: dict[tuple[int, str], int] = {}
        self._cached = 0
        self._latencies: list[float] = []
        self.upstream_latency = Histogram(
            "raygate_upstream_latency_seconds",
            "Time to the upstream's response headers.",
            registry=self.registry,
        )

    # The hot path only counts in plain ints; `flush` adds them to the Prometheus metrics
    # before every scrape, once a second, and every LATENCY_BATCH requests under load. A
    # Prometheus increment costs a lock, and in multiprocess mode a write to a shared file.
    def request_answered(self, status: int, decision: str) -> None:
        key = (status, decision)
        pending = self._pending
        pending[key] = pending.get(key, 0) + 1

    def upstream_answered(self, seconds: float) -> None:
        """Time to the upstream's response headers, counted locally until the next flush."""
        latencies = self._latencies
        latencies.append(seconds)
        if len(latencies) >= LATENCY_BATCH:
            self.flush()

    def decision_cached(self) -> None:
        """A request decided from the pipeline's cache: a hit for both caches it spares."""
        self._cached += 1

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for (status, decision), count in pending.items():
            child = self._requests_by_code.get(status)
            if child is None:
                child = self._requests_by_code[status] = self.requests.labels(code=str(status))
            child.inc(count)
            child = self._decisions_by_name.get(decision)
            if child is None:
                child = self._decisions_by_name[decision] = self.decisions.labels(
                    decision=decision
                )
            child.inc(count)
        latencies, self._latencies = self._latencies, []
        if latencies:
            observe_all(self.upstream_latency, latencies)
        cached, self._cached = self._cached, 0
        if cached:
            hits = self._cached_hits
            if hits is None:
                hits = self._cached_hits = (
                    self.cache_events.labels(cache="authn", result="hit"),
                    self.cache_events.labels(cache="authz", result="hit"),
                )
            hits[0].inc(cached)
            hits[1].inc(cached)

    def backend_call(self, call: str, seconds: float) -> None:
        child = self._backend_by_call.get(call)
        if child is None:
            child = self._backend_by_call[call] = self.backend_latency.labels(
                backend="authority", call=call
            )
        child.observe(seconds)

    def door_call(self, door: str, method: str, outcome: str) -> None:
        key = (door, method, outcome)
        child = self._door_children.get(key)
        if child is None:
            child = self._door_children[key] = self.door_calls.labels(
                door=door, method=method, outcome=outcome
            )
        child.inc()
