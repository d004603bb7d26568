"""The OpenTelemetry listener records the documented metrics (with the real SDK, in memory)."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from failsafe import (
    Backoff,
    Bulkhead,
    BulkheadFull,
    CircuitBreaker,
    CircuitOpenError,
    ConsecutiveFailures,
    Failover,
    Fallback,
    Pipeline,
    Retry,
    Timeout,
    TimeoutExceeded,
)
from failsafe.opentelemetry import OpenTelemetryListener
from failsafe.testing import FakeClock, fail_first


def collect(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    data = reader.get_metrics_data()
    assert data is not None
    out: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    if value is None:
                        value = (point.count, point.sum)  # histogram
                    out.setdefault(metric.name, []).append((dict(point.attributes), value))
    return out


def test_every_decision_becomes_a_metric() -> None:
    """Retries, give-ups, delays, transitions, rejections, failovers, timeouts, fallbacks."""
    reader = InMemoryMetricReader()
    listener = OpenTelemetryListener(MeterProvider(metric_readers=[reader]))
    clock = FakeClock()

    retry = Retry(attempts=3, backoff=Backoff.constant(0.5), clock=clock, listeners=[listener])
    with pytest.raises(ConnectionError):
        retry.call(fail_first(9, ConnectionError))

    breaker = CircuitBreaker(
        name="wh", trip=ConsecutiveFailures(threshold=1), clock=clock, listeners=[listener]
    )
    with pytest.raises(ConnectionError):
        breaker.call(fail_first(1, ConnectionError))
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: None)

    bulkhead = Bulkhead(max_concurrent=1, listeners=[listener])

    def nested() -> None:
        with pytest.raises(BulkheadFull):
            bulkhead.call(lambda: None)

    bulkhead.call(nested)

    Pipeline(
        Fallback("fb", listeners=[listener]),
        Failover(["a", "b"], listeners=[listener]),
    ).call(fail_first(9, ConnectionError))

    def slow() -> None:
        clock.sleep(2)

    with pytest.raises(TimeoutExceeded):
        Timeout(1, clock=clock, listeners=[listener]).call(slow)

    m = collect(reader)
    assert m["failsafe.attempts.failed"] == [({"failsafe.policy": "retry"}, 3)]
    assert m["failsafe.retries.scheduled"] == [({"failsafe.policy": "retry"}, 2)]
    assert m["failsafe.retry.delay"] == [({"failsafe.policy": "retry"}, (2, 1.0))]
    assert m["failsafe.retries.exhausted"] == [
        ({"failsafe.policy": "retry", "failsafe.reason": "attempts"}, 1)
    ]
    assert m["failsafe.circuit.transitions"] == [
        ({"failsafe.policy": "wh", "failsafe.circuit.state": "open"}, 1)
    ]
    assert sorted(m["failsafe.calls.rejected"], key=str) == sorted(
        [
            ({"failsafe.policy": "wh", "failsafe.reason": "circuit_open"}, 1),
            ({"failsafe.policy": "bulkhead", "failsafe.reason": "bulkhead_full"}, 1),
        ],
        key=str,
    )
    assert m["failsafe.failovers"] == [({"failsafe.policy": "failover"}, 1)]
    assert m["failsafe.fallbacks"] == [({"failsafe.policy": "fallback"}, 1)]
    assert m["failsafe.timeouts"] == [({"failsafe.policy": "timeout"}, 1)]


def test_the_newer_policies_events_become_metrics() -> None:
    """Rate-limit and shed rejections, permit waits, hedges (and refused ones) and chaos count."""
    from failsafe import events as ev

    reader = InMemoryMetricReader()
    listener = OpenTelemetryListener(MeterProvider(metric_readers=[reader]))
    listener(ev.RateLimitRejected(policy="api", key="t1", retry_after=0.5))
    listener(ev.RateLimitDelayed(policy="api", key="t1", delay=0.25))
    listener(ev.ConcurrencyLimitRejected(policy="db", limit=4, in_flight=4))
    listener(ev.ConcurrencyLimitChanged(policy="db", previous=4, limit=6, reason="growth"))
    listener(ev.HedgeStarted(policy="reads", attempt=2, delay=0.05, target=None))
    listener(ev.HedgeRefused(policy="reads", attempt=2, reason="budget"))
    listener(ev.ChaosInjected(policy="chaos", kind="fault", detail="ConnectionError"))
    m = collect(reader)
    assert sorted(m["failsafe.calls.rejected"], key=str) == sorted(
        [
            ({"failsafe.policy": "api", "failsafe.reason": "rate_limited"}, 1),
            ({"failsafe.policy": "db", "failsafe.reason": "concurrency_limit"}, 1),
        ],
        key=str,
    )
    assert m["failsafe.rate_limit.delay"] == [({"failsafe.policy": "api"}, (1, 0.25))]
    assert "failsafe.concurrency.limit" not in m  # a gauge of instrument(), not an event metric
    assert m["failsafe.hedges"] == [({"failsafe.policy": "reads"}, 1)]
    assert m["failsafe.hedges.refused"] == [
        ({"failsafe.policy": "reads", "failsafe.reason": "budget"}, 1)
    ]
    assert m["failsafe.chaos.injected"] == [
        ({"failsafe.policy": "chaos", "failsafe.chaos.kind": "fault"}, 1)
    ]


def test_a_metrics_only_breakers_refusals_are_marked_not_enforced() -> None:
    """A call a metrics-only breaker would have refused counts with failsafe.enforced=False."""
    reader = InMemoryMetricReader()
    listener = OpenTelemetryListener(MeterProvider(metric_readers=[reader]))
    breaker = CircuitBreaker(
        name="trial", threshold=1, clock=FakeClock(), listeners=[listener], metrics_only=True
    )
    with pytest.raises(ConnectionError):
        breaker.call(fail_first(1, ConnectionError))
    assert breaker.call(lambda: "ran") == "ran"
    assert collect(reader)["failsafe.calls.rejected"] == [
        (
            {
                "failsafe.policy": "trial",
                "failsafe.reason": "circuit_open",
                "failsafe.enforced": False,
            },
            1,
        )
    ]


def gauge_points(reader: InMemoryMetricReader, policy: str) -> dict[str, list[Any]]:
    """The gauge points of one policy (other tests' live policies are registered too)."""
    data = reader.get_metrics_data()
    found: dict[str, list[Any]] = {}
    for rm in data.resource_metrics if data is not None else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    if point.attributes and point.attributes.get("failsafe.policy") == policy:
                        found.setdefault(metric.name, []).append(
                            (dict(point.attributes), point.value)  # type: ignore[union-attr]
                        )
    return found


def test_instrument_exports_the_health_gauges() -> None:
    """instrument() registers the gauges of failsafe.health, read at each collection."""
    from failsafe.opentelemetry import instrument

    reader = InMemoryMetricReader()
    bulkhead = Bulkhead(name="otel-pool", max_concurrent=3)
    breaker = CircuitBreaker(name="otel-stock", clock=FakeClock())
    with instrument(meter_provider=MeterProvider(metric_readers=[reader]), spans=False):
        assert gauge_points(reader, "otel-pool") == {
            "failsafe.bulkhead.in_flight": [({"failsafe.policy": "otel-pool"}, 0)],
            "failsafe.bulkhead.queued": [({"failsafe.policy": "otel-pool"}, 0)],
        }
        assert gauge_points(reader, "otel-stock") == {
            "failsafe.circuit.state": [({"failsafe.policy": "otel-stock"}, 0)]
        }
        breaker.open()
        assert gauge_points(reader, "otel-stock")["failsafe.circuit.state"][0][1] == 2

        def inside() -> None:
            points = gauge_points(reader, "otel-pool")["failsafe.bulkhead.in_flight"]
            assert points == [({"failsafe.policy": "otel-pool"}, 1)]

        bulkhead.call(inside)


def test_an_adaptive_limit_is_a_gauge() -> None:
    """failsafe.concurrency.limit is the gauge of an adaptive limit's current value."""
    from failsafe import AdaptiveConcurrency
    from failsafe.opentelemetry import instrument

    reader = InMemoryMetricReader()
    limit = AdaptiveConcurrency(name="otel-db", initial_limit=7)
    with instrument(meter_provider=MeterProvider(metric_readers=[reader]), spans=False):
        points = gauge_points(reader, "otel-db")
    assert points["failsafe.concurrency.limit"] == [({"failsafe.policy": "otel-db"}, 7)]
    assert limit.limit == 7


def test_gauges_carry_the_enrichers_attributes_and_go_silent_when_undone() -> None:
    """Gauges get the enrichers' attributes (called with None); uninstrument() silences them."""
    from failsafe.opentelemetry import instrument

    reader = InMemoryMetricReader()
    seen: list[object] = []

    def region(event: object) -> dict[str, str]:
        seen.append(event)
        return {"region": "eu"}

    bulkhead = Bulkhead(name="otel-enriched", max_concurrent=1)
    done = instrument(
        meter_provider=MeterProvider(metric_readers=[reader]), spans=False, enrichers=[region]
    )
    try:
        assert gauge_points(reader, "otel-enriched")["failsafe.bulkhead.in_flight"] == [
            ({"region": "eu", "failsafe.policy": "otel-enriched"}, 0)
        ]
        assert seen
        assert all(event is None for event in seen)
    finally:
        done.uninstrument()
    assert gauge_points(reader, "otel-enriched") == {}
    assert bulkhead.name == "otel-enriched"
