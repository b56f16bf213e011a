"""Prometheus metrics of the gateway, in a registry of its own (one per gateway)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "raygate_requests", "Requests answered, by HTTP status code.", ["code"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "raygate_decisions",
            "Access decisions (allow, deny, unauthenticated, unavailable).",
            ["decision"],
            registry=self.registry,
        )
        self.cache_events = Counter(
            "raygate_cache_events", "Authentication/authorization cache hits and misses.",
            ["cache", "result"], registry=self.registry,
        )
        self.backend_latency = Histogram(
            "raygate_backend_latency_seconds", "Latency of identity and policy backend calls.",
            ["backend", "call"], registry=self.registry,
        )
        self.upstream_latency = Histogram(
            "raygate_upstream_latency_seconds", "Time to the upstream's response headers.",
            registry=self.registry,
        )
