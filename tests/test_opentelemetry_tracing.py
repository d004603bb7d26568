"""instrument(): span events under the caller's span, the tracing seam, enrichers, undoing it.

Everything runs against the real OpenTelemetry SDK, exporting to memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import failsafe
from failsafe import (
    Backoff,
    CircuitBreaker,
    CircuitOpenError,
    Fallback,
    Hedging,
    Pipeline,
    Retry,
    UsageError,
    _tracing,
)
from failsafe import events as ev
from failsafe import opentelemetry as fotel
from failsafe.events import Event
from failsafe.opentelemetry import (
    Instrumentation,
    OpenTelemetryListener,
    OpenTelemetryTracing,
    instrument,
)
from failsafe.outcome import Outcome
from failsafe.testing import FakeClock, fail_first
from tests.conftest import Driver
from tests.test_opentelemetry import collect

SECRET = "password=hunter2"


class Otel:
    """An SDK tracer provider and meter provider exporting to memory, and instrument() on them."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.tracer_provider.get_tracer("tests")
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.instrumentations: list[Instrumentation] = []

    def instrument(self, **options: Any) -> Instrumentation:
        """Instrument failsafe on these providers (undone by the fixture at the end)."""
        done = instrument(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **options
        )
        self.instrumentations.append(done)
        return done

    def caller(self, name: str = "caller") -> Any:
        """The caller's own span (recording no exception event: the test's, not failsafe's)."""
        return self.tracer.start_as_current_span(name, record_exception=False)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        (found,) = [s for s in self.spans() if s.name == name]
        return found

    def events(self, name: str = "caller") -> list[tuple[str, dict[str, Any]]]:
        """The events of the span ``name``: (event name, attributes)."""
        return [(e.name, dict(e.attributes or {})) for e in self.span(name).events]


@pytest.fixture
def otel() -> Iterator[Otel]:
    """Providers in memory; every instrumentation a test made is undone after it."""
    found = Otel()
    yield found
    for done in found.instrumentations:
        done.uninstrument()


def in_caller_span(otel: Otel, driver: Driver, policy: failsafe.Policy, fn: Any) -> Any:
    """Run ``fn`` through ``policy`` (sync or async) inside the span "caller"."""
    with otel.caller():
        return driver.call(policy, fn)


def test_retries_are_events_on_the_callers_span(otel: Otel, driver: Driver) -> None:
    """Each failed attempt and each retry wait (with its delay) is an event of the caller's span."""
    otel.instrument()
    retry = Retry(attempts=3, backoff=Backoff.constant(0.5), clock=FakeClock())
    assert in_caller_span(otel, driver, retry, fail_first(2, ConnectionError, returns="ok")) == "ok"
    failed = {"failsafe.policy": "retry", "error.type": "ConnectionError"}
    assert otel.events() == [
        ("failsafe.attempt.failed", {**failed, "failsafe.attempt": 1}),
        (
            "failsafe.retry.scheduled",
            {**failed, "failsafe.attempt": 1, "failsafe.retry.delay": 0.5},
        ),
        ("failsafe.attempt.failed", {**failed, "failsafe.attempt": 2}),
        (
            "failsafe.retry.scheduled",
            {**failed, "failsafe.attempt": 2, "failsafe.retry.delay": 0.5},
        ),
    ]
    assert [s.name for s in otel.spans()] == ["caller"]  # events, not spans of their own


def test_giving_up_and_the_fallback_are_events(otel: Otel, driver: Driver) -> None:
    """A retry that gives up and the fallback replacing its failure are both recorded."""
    otel.instrument()
    policy = Pipeline(
        Fallback("cached"), Retry(attempts=2, backoff=Backoff.none(), clock=FakeClock())
    )
    assert in_caller_span(otel, driver, policy, fail_first(9, TimeoutError)) == "cached"
    names = [name for name, _ in otel.events()]
    assert names == [
        "failsafe.attempt.failed",
        "failsafe.retry.scheduled",
        "failsafe.attempt.failed",
        "failsafe.retry.exhausted",
        "failsafe.fallback.used",
    ]
    exhausted, used = otel.events()[3][1], otel.events()[4][1]
    assert exhausted == {
        "failsafe.policy": "retry",
        "failsafe.attempt": 2,
        "failsafe.reason": "attempts",
        "error.type": "TimeoutError",
    }
    assert used == {"failsafe.policy": "fallback", "error.type": "TimeoutError"}


def test_a_hedge_is_an_event_of_the_callers_span(otel: Otel, driver: Driver) -> None:
    """A hedged call's extra attempt shows as failsafe.hedge.started on the caller's span."""
    otel.instrument()
    hedging = Hedging(delay=1.0, clock=FakeClock())
    assert in_caller_span(otel, driver, hedging, fail_first(1, ConnectionError, returns="ok")) == (
        "ok"
    )
    started = [a for name, a in otel.events() if name == "failsafe.hedge.started"]
    assert len(started) == 1
    assert started[0]["failsafe.policy"] == "hedging"
    assert started[0]["failsafe.attempt"] == 2


def test_a_breaker_rejection_is_an_event(otel: Otel, driver: Driver) -> None:
    """An open breaker's refusal is failsafe.circuit.rejected (enforced), after its opening."""
    otel.instrument()
    breaker = CircuitBreaker(name="stock", threshold=1, clock=FakeClock())
    with pytest.raises(ConnectionError):
        in_caller_span(otel, driver, breaker, fail_first(1, ConnectionError))
    with pytest.raises(CircuitOpenError):
        in_caller_span(otel, driver, breaker, lambda: "never")
    first, second = [s for s in otel.spans() if s.name == "caller"]
    assert [e.name for e in first.events] == ["failsafe.circuit.opened"]
    assert dict(first.events[0].attributes or {})["error.type"] == "ConnectionError"
    (rejected,) = second.events
    assert rejected.name == "failsafe.circuit.rejected"
    attributes = dict(rejected.attributes or {})
    assert attributes["failsafe.policy"] == "stock"
    assert attributes["failsafe.enforced"] is True
    assert attributes["failsafe.retry_after"] == 30.0


def test_a_metrics_only_breakers_rejection_is_not_enforced(otel: Otel) -> None:
    """A metrics-only breaker's would-be refusal is an event with failsafe.enforced=False."""
    otel.instrument()
    breaker = CircuitBreaker(name="trial", threshold=1, clock=FakeClock(), metrics_only=True)
    with otel.caller():
        with pytest.raises(ConnectionError):
            breaker.call(fail_first(1, ConnectionError))
        assert breaker.call(lambda: "ran") == "ran"
    rejected = [a for name, a in otel.events() if name == "failsafe.circuit.rejected"]
    assert [a["failsafe.enforced"] for a in rejected] == [False]


EVENTS: list[tuple[Event, str, Mapping[str, Any]]] = [
    (
        ev.AttemptFailed(policy="p", attempt=1, outcome=Outcome(result=503)),
        "failsafe.attempt.failed",
        {"failsafe.attempt": 1},
    ),
    (
        ev.RetryBudgetExhausted(policy="p", attempt=2, outcome=Outcome(exception=OSError())),
        "failsafe.retry_budget.rejected",
        {"failsafe.attempt": 2, "error.type": "OSError"},
    ),
    (ev.CircuitHalfOpened(policy="p", key=None), "failsafe.circuit.half_opened", {}),
    (ev.CircuitClosed(policy="p", key="x" * 300), "failsafe.circuit.closed", {}),
    (
        ev.CircuitStorageUnavailable(policy="p", key=None, error="redis.ConnError", message=SECRET),
        "failsafe.circuit.storage_unavailable",
        {"error.type": "redis.ConnError"},
    ),
    (
        ev.CircuitStorageRestored(policy="p", key=None, wrote_back=True, outage=1.0),
        "failsafe.circuit.storage_restored",
        {},
    ),
    (
        ev.FailedOver(policy="p", from_target="a", to_target="b", outcome=Outcome(result=1)),
        "failsafe.failover",
        {},
    ),
    (
        ev.TimedOut(policy="p", timeout=2.0, cancelled=True),
        "failsafe.timeout",
        {"failsafe.timeout.seconds": 2.0, "failsafe.timeout.cancelled": True},
    ),
    (
        ev.BulkheadRejected(policy="p", max_concurrent=2, max_queued=0),
        "failsafe.bulkhead.rejected",
        {"failsafe.bulkhead.max_concurrent": 2, "failsafe.bulkhead.max_queued": 0},
    ),
    (
        ev.RateLimitRejected(policy="p", key="tenant", retry_after=0.5),
        "failsafe.rate_limit.rejected",
        {"failsafe.retry_after": 0.5},
    ),
    (
        ev.RateLimitDelayed(policy="p", key=None, delay=0.25),
        "failsafe.rate_limit.delayed",
        {"failsafe.rate_limit.delay": 0.25},
    ),
    (
        ev.RateLimiterStorageUnavailable(policy="p", error="redis.ConnError", message=SECRET),
        "failsafe.rate_limit.storage_unavailable",
        {"error.type": "redis.ConnError"},
    ),
    (
        ev.RateLimiterStorageRestored(policy="p", outage=3.0),
        "failsafe.rate_limit.storage_restored",
        {},
    ),
    (
        ev.ConcurrencyLimitChanged(policy="p", previous=4, limit=6, reason="growth"),
        "failsafe.concurrency.limit_changed",
        {
            "failsafe.concurrency.previous": 4,
            "failsafe.concurrency.limit": 6,
            "failsafe.reason": "growth",
        },
    ),
    (
        ev.ConcurrencyLimitRejected(policy="p", limit=4, in_flight=4),
        "failsafe.concurrency.rejected",
        {"failsafe.concurrency.limit": 4, "failsafe.concurrency.in_flight": 4},
    ),
    (
        ev.HedgeRefused(policy="p", attempt=2, reason="budget"),
        "failsafe.hedge.refused",
        {"failsafe.attempt": 2, "failsafe.reason": "budget"},
    ),
    (
        ev.ChaosInjected(policy="p", kind="latency", detail="0.5s"),
        "failsafe.chaos.injected",
        {"failsafe.chaos.kind": "latency", "failsafe.chaos.detail": "0.5s"},
    ),
]


@pytest.mark.parametrize(("event", "name", "attributes"), EVENTS, ids=[e[1] for e in EVENTS])
def test_each_decision_has_its_span_event(
    otel: Otel, event: Event, name: str, attributes: Mapping[str, Any]
) -> None:
    """Every policy decision becomes its documented span event, with its attributes."""
    otel.instrument()
    with otel.caller():
        ev._deliver((), event)
    (recorded,) = otel.events()
    assert recorded[0] == name
    for key, value in attributes.items():
        assert recorded[1][key] == value
    assert recorded[1]["failsafe.policy"] == "p"
    assert SECRET not in str(recorded)


def test_a_long_breaker_key_is_cut(otel: Otel) -> None:
    """A keyed breaker's key is recorded as failsafe.circuit.key, cut to 100 characters."""
    otel.instrument()
    with otel.caller():
        ev._deliver((), ev.CircuitClosed(policy="p", key="x" * 300))
    assert otel.events()[0][1]["failsafe.circuit.key"] == "x" * 100


def test_without_a_recording_span_nothing_is_described(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside any span the span-event listener stops at is_recording(), before any work."""
    otel.instrument(metrics=False)

    def fail(event: Event) -> None:
        raise AssertionError("described without a recording span")

    monkeypatch.setattr(fotel, "_describe", fail)
    assert not trace.get_current_span().is_recording()
    retry = Retry(attempts=2, backoff=Backoff.none(), clock=FakeClock())
    assert retry.call(fail_first(1, ConnectionError, returns="ok")) == "ok"
    assert otel.spans() == []


def test_a_span_through_the_seam_continues_the_carriers_trace(otel: Otel) -> None:
    """A server span with a traceparent carrier is the child of the span the carrier names."""
    tracing = OpenTelemetryTracing(otel.tracer_provider)
    carrier = _tracing.traceparent("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    with tracing.span("GET", kind="server", attributes={"url.path": "/x"}, carrier=carrier) as span:
        span.set("http.response.status_code", 200)
        ids = tracing.current_ids()
    (server,) = otel.spans()
    assert server.kind is SpanKind.SERVER
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == "b7ad6b7169203331"
    assert format(server.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert ids == ("0af7651916cd43dd8448eb211c80319c", format(server.context.span_id, "016x"))
    assert dict(server.attributes or {}) == {"url.path": "/x", "http.response.status_code": 200}


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("client", SpanKind.CLIENT),
        ("producer", SpanKind.PRODUCER),
        ("consumer", SpanKind.CONSUMER),
        ("internal", SpanKind.INTERNAL),
    ],
)
def test_span_kinds_map_to_opentelemetrys(otel: Otel, kind: str, expected: SpanKind) -> None:
    """Each of the seam's kinds starts a span of OpenTelemetry's matching kind."""
    tracing = OpenTelemetryTracing(otel.tracer_provider)
    with tracing.span("op", kind=kind, attributes={}):
        pass
    assert otel.span("op").kind is expected


def test_inject_writes_the_current_spans_traceparent(otel: Otel) -> None:
    """inject() writes the current span's W3C traceparent; current_ids() reads the same ids."""
    tracing = OpenTelemetryTracing(otel.tracer_provider)
    assert tracing.current_ids() is None
    headers: dict[str, str] = {}
    with tracing.span("send", kind="producer", attributes={}):
        tracing.inject(headers)
        ids = tracing.current_ids()
    assert ids is not None
    assert headers["traceparent"].startswith(f"00-{ids[0]}-{ids[1]}-")


def test_an_exception_fails_the_span_by_its_type_only(otel: Otel) -> None:
    """An exception leaving a span sets ERROR and error.type; its message is never recorded."""
    tracing = OpenTelemetryTracing(otel.tracer_provider)
    with (
        pytest.raises(PermissionError, match="hunter2"),
        tracing.span("op", kind="client", attributes={}),
    ):
        raise PermissionError(SECRET)
    span = otel.span("op")
    assert span.status.status_code is StatusCode.ERROR
    assert not span.status.description
    assert dict(span.attributes or {}) == {"error.type": "PermissionError"}
    assert list(span.events) == []  # no exception event: it would carry the message


def test_a_string_failure_is_the_error_type(otel: Otel) -> None:
    """Span.failed("503") sets error.type to the string as it is."""
    tracing = OpenTelemetryTracing(otel.tracer_provider)
    with tracing.span("GET", kind="client", attributes={}) as span:
        span.failed("503")
    assert otel.span("GET").status.status_code is StatusCode.ERROR
    assert dict(otel.span("GET").attributes or {})["error.type"] == "503"


def test_a_secret_message_reaches_no_span(otel: Otel, driver: Driver) -> None:
    """An exception's message ("password=hunter2") appears in no exported span or event."""
    otel.instrument()
    policy = Pipeline(
        Fallback("fb"),
        CircuitBreaker(threshold=1, clock=FakeClock()),
        Retry(attempts=2, backoff=Backoff.none(), clock=FakeClock()),
    )
    assert in_caller_span(otel, driver, policy, fail_first(9, ConnectionError(SECRET))) == "fb"
    tracing = _tracing.installed()
    assert tracing is not None
    with pytest.raises(PermissionError), tracing.span("op", kind="client", attributes={}):
        raise PermissionError(SECRET)
    spans = otel.spans()
    assert len(spans) == 2
    assert sum(len(s.events) for s in spans) >= 4
    for span in spans:
        assert "hunter2" not in span.to_json()


def test_enrichers_reach_metrics_span_events_and_spans(otel: Otel) -> None:
    """An enricher's attributes are added to metric points, span events and seam spans."""
    seen: list[Event | None] = []

    def tenant(event: Event | None) -> Mapping[str, str | bool | int | float]:
        seen.append(event)
        return {"tenant": "acme", "failsafe.policy": "overridden?", "region": "eu"}

    otel.instrument(enrichers=[tenant])
    with otel.caller():
        Retry(attempts=2, backoff=Backoff.none(), clock=FakeClock()).call(
            fail_first(1, ConnectionError, returns="ok")
        )
    tracing = _tracing.installed()
    assert tracing is not None
    with tracing.span("GET", kind="client", attributes={"http.request.method": "GET"}):
        pass
    for _, attributes in otel.events():
        assert attributes["tenant"] == "acme"
        assert attributes["failsafe.policy"] == "retry"  # failsafe's own attribute wins
    assert dict(otel.span("GET").attributes or {}) == {
        "tenant": "acme",
        "failsafe.policy": "overridden?",  # a span failsafe did not name
        "region": "eu",
        "http.request.method": "GET",
    }
    points = collect(otel.reader)
    assert points["failsafe.retries.scheduled"] == [
        ({"failsafe.policy": "retry", "tenant": "acme", "region": "eu"}, 1)
    ]
    assert None in seen  # the seam's span: no event caused it
    assert any(isinstance(e, ev.RetryScheduled) for e in seen)


def test_a_failing_enricher_is_logged_once_and_skipped(
    otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    """A raising enricher is logged once at WARNING (then DEBUG), by type only; others apply."""

    def broken(event: Event | None) -> Mapping[str, str | bool | int | float]:
        raise RuntimeError(SECRET)

    def region(event: Event | None) -> Mapping[str, Any]:
        return {"region": "eu", "odd": object(), "none": None, "ok": 1.5}

    listener = OpenTelemetryListener(otel.meter_provider, enrichers=[broken, region])
    caplog.set_level(logging.DEBUG, logger="failsafe.events")
    for _ in range(3):
        listener(ev.TimedOut(policy="t", timeout=1.0, cancelled=False))
    assert collect(otel.reader)["failsafe.timeouts"] == [
        ({"failsafe.policy": "t", "region": "eu", "ok": 1.5}, 3)
    ]
    logged = [r for r in caplog.records if r.name == "failsafe.events"]
    assert [r.levelno for r in logged] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert all(SECRET not in r.getMessage() and r.exc_info is None for r in logged)


def test_an_enricher_sees_the_callers_context(otel: Otel) -> None:
    """Enrichers run on the caller's task, so a context variable set there is visible."""
    import contextvars

    tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="none")
    otel.instrument(enrichers=[lambda event: {"tenant": tenant.get()}])
    retry = Retry(attempts=2, backoff=Backoff.none(), clock=FakeClock())

    async def serve(name: str) -> None:
        tenant.set(name)
        with otel.caller(f"caller-{name}"):
            await retry.call_async(fail_first(1, ConnectionError).async_)

    async def main() -> None:
        await asyncio.gather(serve("a"), serve("b"))

    asyncio.run(main())
    for name in ("a", "b"):
        assert {a["tenant"] for _, a in otel.events(f"caller-{name}")} == {name}


def test_uninstrument_undoes_everything(otel: Otel) -> None:
    """After uninstrument() no listener, tracing or span event is left; a second call is a no-op."""
    before = ev._global
    done = otel.instrument()
    assert len(ev._global) == len(before) + 2
    assert isinstance(_tracing.installed(), OpenTelemetryTracing)
    assert done.tracing is _tracing.installed()
    done.uninstrument()
    done.uninstrument()
    assert ev._global == before
    assert _tracing.installed() is None
    with otel.caller():
        Retry(attempts=2, backoff=Backoff.none(), clock=FakeClock()).call(
            fail_first(1, ConnectionError)
        )
    assert otel.events() == []
    assert collect_or_empty(otel.reader) == {}


def collect_or_empty(reader: InMemoryMetricReader) -> dict[str, Any]:
    data = reader.get_metrics_data()
    return {} if data is None else collect(reader)


def test_instrumenting_twice_is_a_usage_error(otel: Otel) -> None:
    """A second instrument() before uninstrument() raises UsageError; after it, it works."""
    first = otel.instrument()
    with pytest.raises(UsageError, match="already instrumented"):
        otel.instrument()
    first.uninstrument()
    with otel.instrument(spans=False):
        assert _tracing.installed() is None
    assert ev._global == ()


def test_the_tracing_installed_before_is_restored(otel: Otel) -> None:
    """uninstrument() puts back the tracing system that instrument() replaced."""
    mine = OpenTelemetryTracing(otel.tracer_provider)
    previous = _tracing.install(mine)
    try:
        with otel.instrument():
            assert _tracing.installed() is not mine
        assert _tracing.installed() is mine
    finally:
        _tracing.install(previous)


def test_switches_leave_parts_off(otel: Otel) -> None:
    """metrics=False records no metric; spans=False installs no tracing and adds no event."""
    with otel.instrument(metrics=False), otel.caller():
        Retry(attempts=2, backoff=Backoff.none(), clock=FakeClock()).call(
            fail_first(1, ConnectionError, returns="ok")
        )
    assert len(otel.events()) == 2
    assert collect_or_empty(otel.reader) == {}
    otel.exporter.clear()
    with otel.instrument(spans=False):
        with otel.caller():
            Retry(attempts=2, backoff=Backoff.none(), clock=FakeClock()).call(
                fail_first(1, ConnectionError, returns="ok")
            )
        assert _tracing.installed() is None
    assert otel.events() == []
    assert collect(otel.reader)["failsafe.retries.scheduled"] == [({"failsafe.policy": "retry"}, 1)]


def test_every_policy_event_has_a_span_event() -> None:
    """Each event of failsafe.events is recorded as a span event (none is forgotten)."""
    kinds = {
        getattr(ev, name)
        for name in ev.__all__
        if isinstance(getattr(ev, name), type)
        and issubclass(getattr(ev, name), Event)
        and getattr(ev, name) is not Event
    }
    assert kinds == set(fotel._RECORDED)
