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
    """Rate-limit and shed rejections, permit waits, limit moves, hedges and chaos are recorded."""
    from failsafe import events as ev

    reader = InMemoryMetricReader()
    listener = OpenTelemetryListener(MeterProvider(metric_readers=[reader]))
    listener(ev.RateLimitRejected(policy="api", key="t1", retry_after=0.5))
    listener(ev.RateLimitDelayed(policy="api", key="t1", delay=0.25))
    listener(ev.ConcurrencyLimitRejected(policy="db", limit=4, in_flight=4))
    listener(ev.ConcurrencyLimitChanged(policy="db", previous=4, limit=6, reason="growth"))
    listener(ev.HedgeStarted(policy="reads", attempt=2, delay=0.05, target=None))
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
    assert m["failsafe.concurrency.limit"] == [({"failsafe.policy": "db"}, (1, 6))]
    assert m["failsafe.hedges"] == [({"failsafe.policy": "reads"}, 1)]
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
