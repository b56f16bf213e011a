"""The gateway's metrics: what the hot path counts reaches Prometheus as if counted one by one."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from raygate.observe.metrics import LATENCY_BATCH, GatewayMetrics, observe_all


def _exposed(registry: CollectorRegistry) -> dict[str, float]:
    """The histogram's samples as /metrics shows them (name and labels -> value)."""
    return {
        f"{sample.name}{sorted(sample.labels.items())}": sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name.startswith("raygate_upstream_latency_seconds")
        and not sample.name.endswith("_created")
    }


def _observed_one_by_one(values: list[float]) -> dict[str, float]:
    registry = CollectorRegistry()
    histogram = Histogram(
        "raygate_upstream_latency_seconds",
        "Time to the upstream's response headers.",
        registry=registry,
    )
    for value in values:
        histogram.observe(value)
    return _exposed(registry)


@given(
    st.lists(
        st.one_of(
            st.floats(min_value=0, max_value=30, allow_nan=False),
            # exactly on a bucket's bound: counted in that bucket, as observe does
            st.sampled_from([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        ),
        max_size=200,
    )
)
def test_latencies_counted_in_a_batch_expose_what_observing_each_would(
    values: list[float],
) -> None:
    metrics = GatewayMetrics()
    for value in values:
        metrics.upstream_answered(value)
    metrics.flush()
    exposed = _exposed(metrics.registry)
    expected = _observed_one_by_one(values)
    assert exposed.keys() == expected.keys()
    for key, value in expected.items():
        assert abs(exposed[key] - value) <= 1e-9 * max(1.0, abs(value)), key


def test_a_busy_gateway_reaches_prometheus_every_batch_without_waiting_for_the_second() -> None:
    metrics = GatewayMetrics()
    for _ in range(LATENCY_BATCH):
        metrics.upstream_answered(random.uniform(0, 0.01))
    text = generate_latest(metrics.registry).decode()
    assert f"raygate_upstream_latency_seconds_count {float(LATENCY_BATCH)}" in text


def test_a_histogram_without_the_expected_insides_is_observed_one_by_one() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("h_seconds", "h", registry=registry)

    class Opaque:
        def __init__(self) -> None:
            self.seen: list[float] = []

        def observe(self, value: float) -> None:
            self.seen.append(value)
            histogram.observe(value)

    opaque = Opaque()
    observe_all(opaque, [0.1, 0.2, 7.0])  # type: ignore[arg-type]
    assert opaque.seen == [0.1, 0.2, 7.0]
    assert registry.get_sample_value("h_seconds_count") == 3.0
