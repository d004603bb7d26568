"""failsafe in OpenTelemetry: metrics, span events, gauges and traces (the ``otel`` extra).

Install with ``pip install 'failsafe-kit[otel]'``, then, once at start-up:

```python
from failsafe.opentelemetry import instrument

instrumentation = instrument()  # the global tracer and meter providers
...
instrumentation.uninstrument()
```

[`instrument`][failsafe.opentelemetry.instrument] turns on four things, each of which can
be left off:

- **metrics** (``metrics=True``): an [`OpenTelemetryListener`][failsafe.opentelemetry.OpenTelemetryListener]
  added to every policy with [`add_listener`][failsafe.events.add_listener];
- **span events** (``spans=True``): every policy decision is recorded as an event on the
  caller's current span (``failsafe.retry.scheduled``, ``failsafe.circuit.rejected``...);
- **gauges** (``gauges=True``): observable gauges read from
  [`failsafe.health.gauges`][failsafe.health.gauges] at each collection (breaker states,
  bulkhead occupancy, adaptive limits, budgets, limiter permits, queue consumers);
- **traces** (``spans=True``): an [`OpenTelemetryTracing`][failsafe.opentelemetry.OpenTelemetryTracing]
  through which the HTTP transports, the ASGI middleware of `failsafe.tracing` and the queue
  consumers start client, server and consumer spans and propagate W3C ``traceparent``.

The metrics the listener records, each with the attribute ``failsafe.policy`` (the policy's
name) and the attributes of the enrichers:

| metric | kind | unit | when |
| --- | --- | --- | --- |
| ``failsafe.attempts.failed`` | counter | ``{attempt}`` | an attempt was classified as a failure |
| ``failsafe.retries.scheduled`` | counter | ``{retry}`` | a retry was scheduled |
| ``failsafe.retries.exhausted`` | counter | ``{call}`` | a retry gave up (attribute ``failsafe.reason``: ``attempts``, ``deadline``) |
| ``failsafe.retry.delay`` | histogram | ``s`` | the delay before each scheduled retry |
| ``failsafe.circuit.transitions`` | counter | ``{transition}`` | a breaker changed state (attribute ``failsafe.circuit.state``: ``open``, ``half-open``, ``closed``) |
| ``failsafe.calls.rejected`` | counter | ``{call}`` | a policy refused a call (attribute ``failsafe.reason``: ``circuit_open``, ``bulkhead_full``, ``retry_budget``, ``rate_limited``, ``concurrency_limit``; ``failsafe.enforced``: ``false`` when a metrics-only breaker would have refused it and ran it) |
| ``failsafe.rate_limit.delay`` | histogram | ``s`` | the wait of a call for its rate limiter's permit |
| ``failsafe.hedges`` | counter | ``{attempt}`` | a hedged call started another attempt |
| ``failsafe.hedges.refused`` | counter | ``{attempt}`` | a hedge was due but not started (attribute ``failsafe.reason``: ``budget``) |
| ``failsafe.chaos.injected`` | counter | ``{call}`` | a chaos policy injected something (attribute ``failsafe.chaos.kind``: ``fault``, ``latency``, ``result``) |
| ``failsafe.failovers`` | counter | ``{failover}`` | a failover moved to the next target |
| ``failsafe.timeouts`` | counter | ``{call}`` | a call overran its timeout |
| ``failsafe.fallbacks`` | counter | ``{call}`` | a fallback replaced a failure |

An adaptive concurrency limit's value is the gauge ``failsafe.concurrency.limit`` (read at
each collection), not a metric of the listener.

Nothing here records an exception's message, a header or a body: failures are recorded by
their exception's type (``error.type``), since messages may hold secrets.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from failsafe._extras import missing_extra

try:
    from opentelemetry import propagate, trace
    from opentelemetry.metrics import (
        CallbackOptions,
        MeterProvider,
        Observation,
        get_meter_provider,
    )
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:
    raise missing_extra("otel", "failsafe.opentelemetry", exc) from exc

from failsafe import _tracing, events, health
from failsafe._enrichers import Attributes as _Attributes
from failsafe._enrichers import Enrichers as _Enrichers
from failsafe._enrichers import type_name as _type_name
from failsafe._version import __version__
from failsafe.events import (
    AttemptFailed,
    BulkheadRejected,
    ChaosInjected,
    CircuitClosed,
    CircuitHalfOpened,
    CircuitOpened,
    CircuitRejected,
    CircuitStorageRestored,
    CircuitStorageUnavailable,
    ConcurrencyLimitChanged,
    ConcurrencyLimitRejected,
    Enricher,
    Event,
    FailedOver,
    FallbackUsed,
    HedgeRefused,
    HedgeStarted,
    RateLimitDelayed,
    RateLimiterStorageRestored,
    RateLimiterStorageUnavailable,
    RateLimitRejected,
    RetriesExhausted,
    RetryBudgetExhausted,
    RetryScheduled,
    TimedOut,
)
from failsafe.exceptions import UsageError
from failsafe.outcome import Outcome

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

__all__ = [
    "Instrumentation",
    "OpenTelemetryListener",
    "OpenTelemetryTracing",
    "instrument",
]

_log = logging.getLogger("failsafe.opentelemetry")

_Value = str | bool | int | float

_STATE = {CircuitOpened: "open", CircuitHalfOpened: "half-open", CircuitClosed: "closed"}
_REJECTED = {
    CircuitRejected: "circuit_open",
    BulkheadRejected: "bulkhead_full",
    RetryBudgetExhausted: "retry_budget",
    RateLimitRejected: "rate_limited",
    ConcurrencyLimitRejected: "concurrency_limit",
}
_KEY_LENGTH: Final = 100
"""A breaker key is cut to this many characters in a span event (as in the gauges)."""


# ---------------------------------------------------------------------------------------
# Metrics


class OpenTelemetryListener:
    """Turn failsafe's events into OpenTelemetry counters and histograms.

    The metrics are listed in the module's documentation (`failsafe.opentelemetry`). Add it
    to every policy with ``failsafe.add_listener(OpenTelemetryListener())``, or let
    [`instrument`][failsafe.opentelemetry.instrument] do it.

    Args:
        meter_provider: Where to create the meter (default: the global provider set with
            ``opentelemetry.metrics.set_meter_provider``).
        enrichers: [`Enricher`][failsafe.events.Enricher]s whose attributes are added to
            every point, called with the event. failsafe's own attributes
            (``failsafe.policy``...) win over an enricher's of the same name.

    Thread-safety: OpenTelemetry instruments are thread-safe; so is this listener.
    """

    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
        *,
        enrichers: Iterable[Enricher] = (),
    ) -> None:
        self._enrichers = enrichers if isinstance(enrichers, _Enrichers) else _Enrichers(enrichers)
        provider = meter_provider or get_meter_provider()
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
        self._hedges = meter.create_counter(
            "failsafe.hedges", unit="{attempt}", description="Hedged attempts started"
        )
        self._hedges_refused = meter.create_counter(
            "failsafe.hedges.refused",
            unit="{attempt}",
            description="Hedges that were due but not started",
        )
        self._chaos = meter.create_counter(
            "failsafe.chaos.injected", unit="{call}", description="Calls a chaos policy altered"
        )

    def __call__(self, event: Event, /) -> None:
        """Record one event."""
        attributes: _Attributes = {"failsafe.policy": event.policy}
        kind = type(event)
        if isinstance(event, AttemptFailed):
            self._failed.add(1, self._enrichers.add_to(attributes, event))
        elif isinstance(event, RetryScheduled):
            attributes = self._enrichers.add_to(attributes, event)
            self._scheduled.add(1, attributes)
            self._delay.record(event.delay, attributes)
        elif isinstance(event, RetriesExhausted):
            attributes["failsafe.reason"] = event.reason
            self._exhausted.add(1, self._enrichers.add_to(attributes, event))
        elif kind in _STATE:
            attributes["failsafe.circuit.state"] = _STATE[kind]
            self._transitions.add(1, self._enrichers.add_to(attributes, event))
        elif kind in _REJECTED:
            attributes["failsafe.reason"] = _REJECTED[kind]
            if getattr(event, "enforced", True) is False:  # a metrics-only breaker's
                attributes["failsafe.enforced"] = False
            self._rejected.add(1, self._enrichers.add_to(attributes, event))
        elif isinstance(event, FailedOver):
            self._failovers.add(1, self._enrichers.add_to(attributes, event))
        elif isinstance(event, TimedOut):
            self._timeouts.add(1, self._enrichers.add_to(attributes, event))
        elif isinstance(event, FallbackUsed):
            self._fallbacks.add(1, self._enrichers.add_to(attributes, event))
        elif isinstance(event, RateLimitDelayed):
            self._limit_delay.record(event.delay, self._enrichers.add_to(attributes, event))
        elif isinstance(event, HedgeStarted):
            self._hedges.add(1, self._enrichers.add_to(attributes, event))
        elif isinstance(event, HedgeRefused):
            attributes["failsafe.reason"] = event.reason
            self._hedges_refused.add(1, self._enrichers.add_to(attributes, event))
        elif isinstance(event, ChaosInjected):
            attributes["failsafe.chaos.kind"] = event.kind
            self._chaos.add(1, self._enrichers.add_to(attributes, event))


# ---------------------------------------------------------------------------------------
# Span events


def _failure(attributes: _Attributes, outcome: Outcome[Any] | None) -> _Attributes:
    if outcome is not None and outcome.exception is not None:
        attributes["error.type"] = _type_name(outcome.exception)
    return attributes


def _key(attributes: _Attributes, key: object) -> _Attributes:
    if key is not None:
        attributes["failsafe.circuit.key"] = str(key)[:_KEY_LENGTH]
    return attributes


def _describe(event: Event) -> tuple[str, _Attributes] | None:
    """The span event's name and attributes for a failsafe event (``None``: not recorded)."""
    a: _Attributes = {"failsafe.policy": event.policy}
    if isinstance(event, AttemptFailed):
        a["failsafe.attempt"] = event.attempt
        return "failsafe.attempt.failed", _failure(a, event.outcome)
    if isinstance(event, RetryScheduled):
        a["failsafe.attempt"] = event.attempt
        a["failsafe.retry.delay"] = event.delay
        return "failsafe.retry.scheduled", _failure(a, event.outcome)
    if isinstance(event, RetriesExhausted):
        a["failsafe.attempt"] = event.attempts
        a["failsafe.reason"] = event.reason
        return "failsafe.retry.exhausted", _failure(a, event.outcome)
    if isinstance(event, RetryBudgetExhausted):
        a["failsafe.attempt"] = event.attempt
        return "failsafe.retry_budget.rejected", _failure(a, event.outcome)
    if isinstance(event, CircuitRejected):
        a["failsafe.enforced"] = event.enforced
        a["failsafe.retry_after"] = event.retry_after
        return "failsafe.circuit.rejected", _key(a, event.key)
    if isinstance(event, CircuitOpened):
        a["failsafe.circuit.reset_timeout"] = event.reset_timeout
        return "failsafe.circuit.opened", _failure(_key(a, event.key), event.outcome)
    if isinstance(event, CircuitHalfOpened):
        return "failsafe.circuit.half_opened", _key(a, event.key)
    if isinstance(event, CircuitClosed):
        return "failsafe.circuit.closed", _key(a, event.key)
    if isinstance(event, CircuitStorageUnavailable):
        a["error.type"] = event.error  # the storage exception's type; never its message
        return "failsafe.circuit.storage_unavailable", _key(a, event.key)
    if isinstance(event, CircuitStorageRestored):
        return "failsafe.circuit.storage_restored", _key(a, event.key)
    if isinstance(event, FailedOver):
        return "failsafe.failover", _failure(a, event.outcome)
    if isinstance(event, TimedOut):
        a["failsafe.timeout.seconds"] = event.timeout
        a["failsafe.timeout.cancelled"] = event.cancelled
        return "failsafe.timeout", a
    if isinstance(event, FallbackUsed):
        return "failsafe.fallback.used", _failure(a, event.outcome)
    if isinstance(event, BulkheadRejected):
        a["failsafe.bulkhead.max_concurrent"] = event.max_concurrent
        a["failsafe.bulkhead.max_queued"] = event.max_queued
        return "failsafe.bulkhead.rejected", a
    if isinstance(event, RateLimitRejected):
        a["failsafe.retry_after"] = event.retry_after
        return "failsafe.rate_limit.rejected", a
    if isinstance(event, RateLimitDelayed):
        a["failsafe.rate_limit.delay"] = event.delay
        return "failsafe.rate_limit.delayed", a
    if isinstance(event, RateLimiterStorageUnavailable):
        a["error.type"] = event.error
        return "failsafe.rate_limit.storage_unavailable", a
    if isinstance(event, RateLimiterStorageRestored):
        return "failsafe.rate_limit.storage_restored", a
    if isinstance(event, HedgeStarted):
        a["failsafe.attempt"] = event.attempt
        a["failsafe.hedge.delay"] = event.delay
        return "failsafe.hedge.started", a
    if isinstance(event, HedgeRefused):
        a["failsafe.attempt"] = event.attempt
        a["failsafe.reason"] = event.reason
        return "failsafe.hedge.refused", a
    if isinstance(event, ConcurrencyLimitChanged):
        a["failsafe.concurrency.previous"] = event.previous
        a["failsafe.concurrency.limit"] = event.limit
        a["failsafe.reason"] = event.reason
        return "failsafe.concurrency.limit_changed", a
    if isinstance(event, ConcurrencyLimitRejected):
        a["failsafe.concurrency.limit"] = event.limit
        a["failsafe.concurrency.in_flight"] = event.in_flight
        return "failsafe.concurrency.rejected", a
    if isinstance(event, ChaosInjected):
        a["failsafe.chaos.kind"] = event.kind
        a["failsafe.chaos.detail"] = event.detail
        return "failsafe.chaos.injected", a
    return None


_RECORDED: Final = frozenset(
    {
        AttemptFailed,
        RetryScheduled,
        RetriesExhausted,
        RetryBudgetExhausted,
        CircuitRejected,
        CircuitOpened,
        CircuitHalfOpened,
        CircuitClosed,
        CircuitStorageUnavailable,
        CircuitStorageRestored,
        FailedOver,
        TimedOut,
        FallbackUsed,
        BulkheadRejected,
        RateLimitRejected,
        RateLimitDelayed,
        RateLimiterStorageUnavailable,
        RateLimiterStorageRestored,
        HedgeStarted,
        HedgeRefused,
        ConcurrencyLimitChanged,
        ConcurrencyLimitRejected,
        ChaosInjected,
    }
)
"""The events recorded as span events (others, such as one per HTTP attempt, are not)."""


class _SpanEvents:
    """A listener adding each policy decision as an event to the caller's current span.

    Listeners run on the thread or task that took the decision, so the current span is the
    caller's. An event of another kind (``HttpAttempt``: the attempt is a span of its own)
    returns after a set look-up, and without a recording span after one more check.
    """

    __slots__ = ("_enrichers",)

    def __init__(self, enrichers: _Enrichers) -> None:
        self._enrichers = enrichers

    def __call__(self, event: Event, /) -> None:
        if type(event) not in _RECORDED:
            return
        span = trace.get_current_span()
        if not span.is_recording():
            return
        described = _describe(event)
        if described is None:
            return
        name, attributes = described
        span.add_event(name, self._enrichers.add_to(attributes, event))


# ---------------------------------------------------------------------------------------
# Traces

_KINDS: Final = {
    "client": SpanKind.CLIENT,
    "server": SpanKind.SERVER,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
    "internal": SpanKind.INTERNAL,
}


class _Span:
    """A started OpenTelemetry span as failsafe's I/O edges use it."""

    __slots__ = ("_span",)

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def set(self, key: str, value: _Value, /) -> None:
        self._span.set_attribute(key, value)

    def failed(self, error: BaseException | str, /) -> None:
        kind = error if isinstance(error, str) else _type_name(error)
        self._span.set_attribute("error.type", kind)
        self._span.set_status(Status(StatusCode.ERROR))


class _Scope:
    """The span's block: current while it runs; an exception leaving it marks it failed."""

    __slots__ = ("_inner", "_span")

    def __init__(self, inner: AbstractContextManager[trace.Span]) -> None:
        self._inner = inner

    def __enter__(self) -> _Span:
        self._span = _Span(self._inner.__enter__())
        return self._span

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        if error is not None:
            self._span.failed(error)
        return self._inner.__exit__(kind, error, traceback)


class OpenTelemetryTracing:
    """The tracing system failsafe's I/O edges use, on an OpenTelemetry tracer.

    [`instrument`][failsafe.opentelemetry.instrument] builds and installs one; build one
    yourself only to pass it elsewhere. Spans are started with
    ``tracer.start_as_current_span`` (so they are the current span while their block runs);
    context travels in W3C ``traceparent``/``tracestate`` headers through the global
    propagator (``opentelemetry.propagate``). An exception leaving a span's block sets the
    span's status to ERROR and ``error.type`` to the exception's qualified type name; the
    exception's message is never recorded (it may hold secrets), and the exception passes
    through.

    Args:
        tracer_provider: Where to get the tracer (default: the global provider set with
            ``opentelemetry.trace.set_tracer_provider``).
        enrichers: [`Enricher`][failsafe.events.Enricher]s whose attributes are added to
            every span started here, called with ``None``.

    Thread-safety: safe to share between threads and tasks (OpenTelemetry keeps the current
    span in a context variable).
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        *,
        enrichers: Iterable[Enricher] = (),
    ) -> None:
        provider = tracer_provider or trace.get_tracer_provider()
        self._tracer = provider.get_tracer("failsafe", __version__)
        self._enrichers = enrichers if isinstance(enrichers, _Enrichers) else _Enrichers(enrichers)

    def span(
        self,
        name: str,
        *,
        kind: str,
        attributes: Mapping[str, _Value],
        carrier: Mapping[str, str] | None = None,
    ) -> _Scope:
        """Start a span of ``kind`` (``"client"``, ``"server"``, ``"producer"``, ``"consumer"``, ``"internal"``).

        Args:
            name: The span's name.
            kind: Its kind.
            attributes: Its attributes at start (the enrichers' are added).
            carrier: Headers holding the W3C context to continue; without them the span is
                a child of the current span.

        Returns:
            A context manager yielding the span; the span ends with the block.
        """
        context = propagate.extract(carrier) if carrier is not None else None
        start: Mapping[str, _Value] = (
            {**self._enrichers(None), **attributes} if self._enrichers else attributes
        )
        return _Scope(
            self._tracer.start_as_current_span(
                name,
                context=context,
                kind=_KINDS.get(kind, SpanKind.INTERNAL),
                attributes=start,
                record_exception=False,  # the exception's message may hold secrets
                set_status_on_exception=False,  # _Scope sets status and error.type
            )
        )

    def inject(self, carrier: MutableMapping[str, str], /) -> None:
        """Write the current span's context (``traceparent``, ``tracestate``) into ``carrier``."""
        propagate.inject(carrier)

    def current_ids(self) -> tuple[str, str] | None:
        """The current span's trace id (32 hex digits) and span id (16), or ``None``."""
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return format(context.trace_id, "032x"), format(context.span_id, "016x")


# ---------------------------------------------------------------------------------------
# Gauges


class _Gauges:
    """Observable gauges fed by ``failsafe.health.gauges()`` at each collection.

    Each gauge's callback reads the policies anew (no I/O: see `failsafe.health`), so a
    collection reads them once per gauge name; nothing is kept between collections.
    """

    def __init__(self, meter_provider: MeterProvider, enrichers: _Enrichers) -> None:
        self._enrichers = enrichers
        self.active = True
        meter = meter_provider.get_meter("failsafe", __version__)
        for name, (unit, description) in health.GAUGES.items():
            meter.create_observable_gauge(
                name, callbacks=[self._callback(name)], unit=unit, description=description
            )

    def _callback(self, name: str) -> Any:
        def observe(options: CallbackOptions) -> Iterator[Observation]:
            if not self.active:  # OpenTelemetry cannot remove an instrument: it goes silent
                return
            extra = self._enrichers(None) if self._enrichers else {}
            for reading in health.gauges():
                if reading.name == name:
                    yield Observation(reading.value, {**extra, **reading.attributes})

        return observe


# ---------------------------------------------------------------------------------------
# instrument()

_lock = threading.Lock()
_active: Instrumentation | None = None


class Instrumentation:
    """What [`instrument`][failsafe.opentelemetry.instrument] turned on, to turn it off.

    Also a context manager: ``with instrument(): ...`` uninstruments when the block ends.
    """

    def __init__(
        self,
        listeners: Sequence[events.Listener],
        gauges: _Gauges | None,
        tracing: OpenTelemetryTracing | None,
        previous: _tracing.Tracing | None,
    ) -> None:
        self._listeners = tuple(listeners)
        self._gauges = gauges
        self._tracing = tracing
        self._previous = previous
        self._done = False

    @property
    def tracing(self) -> OpenTelemetryTracing | None:
        """The installed tracing system (``None`` when built with ``spans=False``)."""
        return self._tracing

    def uninstrument(self) -> None:
        """Turn everything off: listeners removed, gauges silent, tracing uninstalled.

        Calling it again does nothing. The tracing system that was installed before
        `instrument` is installed again (unless another was installed since).
        """
        global _active
        with _lock:
            if self._done:
                return
            self._done = True
            if _active is self:
                _active = None
            for listener in self._listeners:
                with contextlib.suppress(ValueError):  # the user removed it already
                    events.remove_listener(listener)
            if self._gauges is not None:
                self._gauges.active = False
            if self._tracing is not None and _tracing.installed() is self._tracing:
                _tracing.install(self._previous)

    def __enter__(self) -> Instrumentation:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.uninstrument()


def instrument(
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    enrichers: Iterable[Enricher] = (),
    metrics: bool = True,
    spans: bool = True,
    gauges: bool = True,
) -> Instrumentation:
    """Send failsafe's metrics, span events, gauges and traces to OpenTelemetry.

    Call it once, at start-up, after configuring OpenTelemetry's providers.

    Args:
        tracer_provider: Where spans go (default: the global tracer provider).
        meter_provider: Where metrics and gauges go (default: the global meter provider).
        enrichers: [`Enricher`][failsafe.events.Enricher]s whose attributes are added to
            every metric point and span event (called with the event), every gauge reading
            and every span failsafe starts (called with ``None``). One that raises is logged
            (at WARNING the first time, then at DEBUG) and skipped; values that are not
            ``str``, ``bool``, ``int`` or ``float`` are dropped; failsafe's own attributes
            win over an enricher's of the same name.
        metrics: Record the event metrics (an `OpenTelemetryListener` added globally).
        spans: Record each decision as an event on the caller's current span, and install
            the tracing through which the HTTP transports, the ASGI middleware and the
            queue consumers start spans and propagate ``traceparent``.
        gauges: Register the observable gauges read from
            [`failsafe.health.gauges`][failsafe.health.gauges].

    Returns:
        The [`Instrumentation`][failsafe.opentelemetry.Instrumentation], whose
        ``uninstrument()`` turns it all off.

    Raises:
        UsageError: If failsafe is already instrumented (call ``uninstrument()`` on the
            first one before instrumenting again).
    """
    global _active
    shared = _Enrichers(enrichers)
    with _lock:
        if _active is not None:
            raise UsageError(
                "failsafe is already instrumented: call uninstrument() on the "
                "Instrumentation that instrument() returned before calling it again"
            )
        meters = meter_provider or get_meter_provider()
        built_gauges = _Gauges(meters, shared) if gauges else None
        listeners: list[events.Listener] = []
        if metrics:
            listeners.append(OpenTelemetryListener(meters, enrichers=shared))
        tracing: OpenTelemetryTracing | None = None
        previous: _tracing.Tracing | None = None
        if spans:
            listeners.append(_SpanEvents(shared))
            tracing = OpenTelemetryTracing(tracer_provider, enrichers=shared)
            previous = _tracing.install(tracing)
        for listener in listeners:
            events.add_listener(listener)
        _active = Instrumentation(listeners, built_gauges, tracing, previous)
        return _active
