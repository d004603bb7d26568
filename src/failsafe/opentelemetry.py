"""A listener that records failsafe's events as OpenTelemetry metrics (the ``otel`` extra).

Install with ``pip install 'failsafe-kit[otel]'``, then:

```python
import failsafe
from failsafe.opentelemetry import OpenTelemetryListener

failsafe.add_listener(OpenTelemetryListener())
```

The metrics, each with the attribute ``failsafe.policy`` (the policy's name):

| metric | kind | unit | when |
| --- | --- | --- | --- |
| ``failsafe.attempts.failed`` | counter | ``{attempt}`` | an attempt was classified as a failure |
| ``failsafe.retries.scheduled`` | counter | ``{retry}`` | a retry was scheduled |
| ``failsafe.retries.exhausted`` | counter | ``{call}`` | a retry gave up (attribute ``failsafe.reason``: ``attempts``, ``deadline``) |
| ``failsafe.retry.delay`` | histogram | ``s`` | the delay before each scheduled retry |
| ``failsafe.circuit.transitions`` | counter | ``{transition}`` | a breaker changed state (attribute ``failsafe.circuit.state``: ``open``, ``half-open``, ``closed``) |
| ``failsafe.calls.rejected`` | counter | ``{call}`` | a policy refused a call (attribute ``failsafe.reason``: ``circuit_open``, ``bulkhead_full``, ``retry_budget``, ``rate_limited``, ``concurrency_limit``; ``failsafe.enforced``: ``false`` when a metrics-only breaker would have refused it and ran it) |
| ``failsafe.rate_limit.delay`` | histogram | ``s`` | the wait of a call for its rate limiter's permit |
| ``failsafe.concurrency.limit`` | histogram | ``{call}`` | an adaptive concurrency limit's new value, each time it moves |
| ``failsafe.hedges`` | counter | ``{attempt}`` | a hedged call started another attempt |
| ``failsafe.chaos.injected`` | counter | ``{call}`` | a chaos policy injected something (attribute ``failsafe.chaos.kind``: ``fault``, ``latency``, ``result``) |
| ``failsafe.failovers`` | counter | ``{failover}`` | a failover moved to the next target |
| ``failsafe.timeouts`` | counter | ``{call}`` | a call overran its timeout |
| ``failsafe.fallbacks`` | counter | ``{call}`` | a fallback replaced a failure |
"""

from __future__ import annotations

from typing import Any

from failsafe._extras import missing_extra

try:
    from opentelemetry import metrics
except ImportError as exc:
    raise missing_extra("otel", "failsafe.opentelemetry", exc) from exc

from failsafe._version import __version__
from failsafe.events import (
    AttemptFailed,
    BulkheadRejected,
    ChaosInjected,
    CircuitClosed,
    CircuitHalfOpened,
    CircuitOpened,
    CircuitRejected,
    ConcurrencyLimitChanged,
    ConcurrencyLimitRejected,
    Event,
    FailedOver,
    FallbackUsed,
    HedgeStarted,
    RateLimitDelayed,
    RateLimitRejected,
    RetriesExhausted,
    RetryBudgetExhausted,
    RetryScheduled,
    TimedOut,
)

__all__ = ["OpenTelemetryListener"]

_STATE = {CircuitOpened: "open", CircuitHalfOpened: "half-open", CircuitClosed: "closed"}
_REJECTED = {
    CircuitRejected: "circuit_open",
    BulkheadRejected: "bulkhead_full",
    RetryBudgetExhausted: "retry_budget",
    RateLimitRejected: "rate_limited",
    ConcurrencyLimitRejected: "concurrency_limit",
}


class OpenTelemetryListener:
    """Turn failsafe's events into OpenTelemetry counters and a delay histogram.

    Args:
        meter_provider: Where to create the meter (default: the global provider set with
            ``opentelemetry.metrics.set_meter_provider``).

    Thread-safety: OpenTelemetry instruments are thread-safe; so is this listener.
    """

    def __init__(self, meter_provider: metrics.MeterProvider | None = None) -> None:
        provider = meter_provider or metrics.get_meter_provider()
        meter = provider.get_meter("failsafe", __version__)
        self._failed = meter.create_counter(
            "failsafe.attempts.failed", unit="{attempt}", description="Attempts that failed"
        )
        self._scheduled = meter.create_counter(
            "failsafe.retries.scheduled", unit="{retry}", description="Retries scheduled"
        )
        self._exhausted = meter.create_counter(
            "failsafe.retries.exhausted", unit="{call}", description="Calls whose retries gave up"
        )
        self._delay = meter.create_histogram(
            "failsafe.retry.delay", unit="s", description="Delay before each retry"
        )
        self._transitions = meter.create_counter(
            "failsafe.circuit.transitions",
            unit="{transition}",
            description="Circuit breaker state changes",
        )
        self._rejected = meter.create_counter(
            "failsafe.calls.rejected", unit="{call}", description="Calls a policy refused to run"
        )
        self._failovers = meter.create_counter(
            "failsafe.failovers", unit="{failover}", description="Moves to the next target"
        )
        self._timeouts = meter.create_counter(
            "failsafe.timeouts", unit="{call}", description="Calls that overran their timeout"
        )
        self._fallbacks = meter.create_counter(
            "failsafe.fallbacks", unit="{call}", description="Failures replaced by a fallback"
        )
        self._limit_delay = meter.create_histogram(
            "failsafe.rate_limit.delay", unit="s", description="Waits for a rate limiter's permit"
        )
        self._limit = meter.create_histogram(
            "failsafe.concurrency.limit",
            unit="{call}",
            description="An adaptive concurrency limit's value, each time it moves",
        )
        self._hedges = meter.create_counter(
            "failsafe.hedges", unit="{attempt}", description="Hedged attempts started"
        )
        self._chaos = meter.create_counter(
            "failsafe.chaos.injected", unit="{call}", description="Calls a chaos policy altered"
        )

    def __call__(self, event: Event, /) -> None:
        """Record one event."""
        attributes: dict[str, Any] = {"failsafe.policy": event.policy}
        kind = type(event)
        if isinstance(event, AttemptFailed):
            self._failed.add(1, attributes)
        elif isinstance(event, RetryScheduled):
            self._scheduled.add(1, attributes)
            self._delay.record(event.delay, attributes)
        elif isinstance(event, RetriesExhausted):
            self._exhausted.add(1, {**attributes, "failsafe.reason": event.reason})
        elif kind in _STATE:
            self._transitions.add(1, {**attributes, "failsafe.circuit.state": _STATE[kind]})
        elif kind in _REJECTED:
            attributes["failsafe.reason"] = _REJECTED[kind]
            if getattr(event, "enforced", True) is False:  # a metrics-only breaker's
                attributes["failsafe.enforced"] = False
            self._rejected.add(1, attributes)
        elif isinstance(event, FailedOver):
            self._failovers.add(1, attributes)
        elif isinstance(event, TimedOut):
            self._timeouts.add(1, attributes)
        elif isinstance(event, FallbackUsed):
            self._fallbacks.add(1, attributes)
        elif isinstance(event, RateLimitDelayed):
            self._limit_delay.record(event.delay, attributes)
        elif isinstance(event, ConcurrencyLimitChanged):
            self._limit.record(event.limit, attributes)
        elif isinstance(event, HedgeStarted):
            self._hedges.add(1, attributes)
        elif isinstance(event, ChaosInjected):
            self._chaos.add(1, {**attributes, "failsafe.chaos.kind": event.kind})
