"""failsafe's events and gauges as Prometheus metrics (the ``prometheus`` extra).

Install with ``pip install 'failsafe-kit[prometheus]'``, then, once at start-up:

```python
from prometheus_client import CollectorRegistry

from failsafe.prometheus import instrument

registry = CollectorRegistry()  # or leave it out: prometheus_client's default registry
instrumentation = instrument(registry=registry)
...
instrumentation.uninstrument()
```

[`instrument`][failsafe.prometheus.instrument] adds a
[`PrometheusListener`][failsafe.prometheus.PrometheusListener] (counters and histograms of
every policy's decisions) to every policy and registers a
[`GaugeCollector`][failsafe.prometheus.GaugeCollector] (the state of the live breakers,
bulkheads, limiters, budgets and consumers, read at each scrape). The metrics are the
OpenTelemetry listener's (``failsafe.opentelemetry``) under Prometheus names: dots become
underscores, counters end in ``_total``, delays are histograms in seconds. Every metric has
the label ``policy`` (the policy's name):

| metric | labels | counts |
| --- | --- | --- |
| ``failsafe_attempts_failed_total`` | | attempts classified as failures |
| ``failsafe_retries_scheduled_total`` | | retries scheduled |
| ``failsafe_retries_exhausted_total`` | ``reason`` | calls whose retries gave up |
| ``failsafe_retry_delay_seconds`` | | histogram: the delay before each retry |
| ``failsafe_circuit_transitions_total`` | ``state`` | breaker state changes |
| ``failsafe_calls_rejected_total`` | ``reason``, ``enforced`` | calls a policy refused |
| ``failsafe_failovers_total`` | | moves to the next failover target |
| ``failsafe_timeouts_total`` | | calls that overran their timeout |
| ``failsafe_fallbacks_total`` | | failures a fallback replaced |
| ``failsafe_rate_limit_delay_seconds`` | | histogram: waits for a permit |
| ``failsafe_hedges_total`` | | hedged attempts started |
| ``failsafe_hedges_refused_total`` | ``reason`` | hedges due but not started (``budget``) |
| ``failsafe_chaos_injected_total`` | ``kind`` | calls a chaos policy altered |
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Self

from failsafe._extras import missing_extra

try:
    import prometheus_client
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.utils import floatToGoString
except ImportError as exc:
    raise missing_extra("prometheus", "failsafe.prometheus", exc) from exc

from failsafe import health as _health
from failsafe._enrichers import Enrichers, type_name
from failsafe.events import (
    AttemptFailed,
    BulkheadRejected,
    ChaosInjected,
    CircuitClosed,
    CircuitHalfOpened,
    CircuitOpened,
    CircuitRejected,
    ConcurrencyLimitRejected,
    Enricher,
    Event,
    FailedOver,
    FallbackUsed,
    HedgeRefused,
    HedgeStarted,
    RateLimitDelayed,
    RateLimitRejected,
    RetriesExhausted,
    RetryBudgetExhausted,
    RetryScheduled,
    TimedOut,
    add_listener,
    remove_listener,
)
from failsafe.exceptions import ConfigurationError

__all__ = [
    "DEFAULT_BUCKETS",
    "MAX_SERIES",
    "GaugeCollector",
    "Instrumentation",
    "PrometheusListener",
    "instrument",
]

_log = logging.getLogger("failsafe.prometheus")

DEFAULT_BUCKETS: Final[tuple[float, ...]] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""The delay histograms' upper bounds in seconds (a ``+Inf`` bucket is always added)."""

MAX_SERIES: Final = 10_000
"""The default bound on the label sets each metric holds before enriched labels read "other"."""

_OTHER: Final = "other"
_VALUE_LENGTH = 100  # a label value is cut to this many characters
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_NOT_A_LABEL_CHARACTER = re.compile(r"[^a-zA-Z0-9_]")

# OpenTelemetry attribute (failsafe.health.gauges(), failsafe.opentelemetry) -> Prometheus label
_ATTRIBUTE_LABELS: Final = {
    "failsafe.policy": "policy",
    "failsafe.reason": "reason",
    "failsafe.enforced": "enforced",
    "failsafe.circuit.state": "state",
    "failsafe.circuit.key": "key",
    "failsafe.chaos.kind": "kind",
    "messaging.destination.name": "queue",
}
# labels a gauge always has, whichever policies are alive (so that a series keeps its label
# set from one scrape to the next), with what a reading without the attribute means: a
# breaker enforces its decisions unless it is metrics-only; a plain breaker has no key
_GAUGE_LABELS: Final[Mapping[str, Mapping[str, str]]] = {
    "failsafe_circuit_state": {"enforced": "true", "key": ""},
    "failsafe_circuit_keys": {"state": ""},
    "failsafe_queue_consumer_in_flight": {"queue": ""},
    "failsafe_queue_dlq_depth": {"queue": ""},
}
# how two readings of one series merge (policies that share a name): a state by the worst,
# a dead-letter depth (the same queue, seen twice) by the larger; the rest add up
_GAUGE_MERGE: Final[Mapping[str, Callable[[float, float], float]]] = {
    "failsafe_circuit_state": max,
    "failsafe_queue_dlq_depth": max,
}


def _add(a: float, b: float) -> float:
    return a + b


# names the metrics use themselves, plus those Prometheus keeps for histograms and summaries
_RESERVED: Final = frozenset({*_ATTRIBUTE_LABELS.values(), "le", "quantile"})

_STATE = {CircuitOpened: "open", CircuitHalfOpened: "half-open", CircuitClosed: "closed"}
_REJECTED = {
    CircuitRejected: "circuit_open",
    BulkheadRejected: "bulkhead_full",
    RetryBudgetExhausted: "retry_budget",
    RateLimitRejected: "rate_limited",
    ConcurrencyLimitRejected: "concurrency_limit",
}


# how prometheus_client writes a bucket's bound (``le="0.25"``), typed
_go_float: Callable[[float], str] = floatToGoString


def _text(value: object) -> str:
    """A label value: ``true``/``false`` for booleans, else its text cut to 100 characters."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    text = value if isinstance(value, str) else str(value)
    return text[:_VALUE_LENGTH]


def _label_name(attribute: str) -> str:
    """The Prometheus label for an attribute: the known ones renamed, others sanitised."""
    known = _ATTRIBUTE_LABELS.get(attribute)
    if known is not None:
        return known
    name = _NOT_A_LABEL_CHARACTER.sub("_", attribute.removeprefix("failsafe."))
    return name if _LABEL.fullmatch(name) else f"_{name}"


class _Enrichment:
    """The declared extra labels and the enrichers that fill them (shared by both collectors).

    ``values(event)`` calls every enricher and returns one value per declared label, in
    declaration order: what the enrichers returned for it (the last one wins), else ``""``.
    An enricher's key matches a label with its dots read as underscores (``"deploy.region"``
    fills ``deploy_region``); keys matching no declared label are ignored, and so are values
    that are not ``str``, ``bool``, ``int`` or ``float``. An enricher that raises (or returns
    something other than a mapping) is skipped whole; its first failure is logged at
    WARNING, later ones at DEBUG, with the exception's type (never its message, which may
    hold a secret). Its labels then read ``""``.
    """

    def __init__(self, enrichers: Iterable[Enricher], labels: Iterable[str]) -> None:
        self.enrichers = Enrichers(enrichers)
        self.labels: tuple[str, ...] = tuple(labels)
        for label in self.labels:
            if not isinstance(label, str) or not _LABEL.fullmatch(label):
                raise ConfigurationError(
                    "labels", f"{label!r} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"
                )
            if label.startswith("__"):
                raise ConfigurationError("labels", f"{label!r}: names starting __ are reserved")
            if label in _RESERVED:
                raise ConfigurationError(
                    "labels", f"{label!r} is one of failsafe's own labels: choose another name"
                )
        if len(set(self.labels)) != len(self.labels):
            raise ConfigurationError("labels", f"a name is declared twice: {self.labels!r}")
        if self.enrichers and not self.labels:
            raise ConfigurationError(
                "labels",
                "enrichers need the label names they fill, declared up front"
                " (labels=('tenant',)): Prometheus fixes a metric's labels when it is created",
            )
        if self.labels and not self.enrichers:
            raise ConfigurationError(
                "enrichers", f"labels {self.labels!r} are declared but no enricher fills them"
            )

    def values(self, event: Event | None) -> tuple[str, ...]:
        """One value per declared label for ``event`` (``None``: a scrape of the gauges)."""
        found = dict.fromkeys(self.labels, "")
        if not self.enrichers:
            return ()
        for key, value in self.enrichers(event).items():
            if key not in found:
                key = key.replace(".", "_")
                if key not in found:
                    continue  # undeclared: Prometheus cannot add a label now
            found[key] = _text(value)
        return tuple(found.values())


class _Series:
    """One metric's values by label values, bounded by ``max_series`` (recorded under a lock).

    A row is a list of floats: ``[value]`` for a counter; ``[sum, count, bucket...]`` for a
    histogram, one (non-cumulative) count per bucket and one for ``+Inf``. Once the metric
    holds ``max_series`` label sets, a new set is recorded with its enriched labels (the last
    ``enriched`` values) replaced by ``"other"``; a warning says so once.
    """

    __slots__ = (
        "by_policy",
        "counts_of",
        "doc",
        "enriched",
        "histogram",
        "labels",
        "lock",
        "max_series",
        "name",
        "rows",
        "size",
        "warned",
    )

    def __init__(
        self,
        name: str,
        doc: str,
        labels: tuple[str, ...],
        *,
        enriched: int,
        max_series: int,
        lock: threading.Lock,
        buckets: int = 0,
        counts_of: _Series | None = None,
    ) -> None:
        self.name = name
        self.counts_of = counts_of
        self.doc = doc
        self.labels = labels
        self.enriched = enriched
        self.max_series = max_series
        self.lock = lock
        self.histogram = buckets > 0
        self.size = 2 + buckets + 1 if buckets else 1
        self.rows: dict[tuple[str, ...], list[float]] = {}
        # the same rows by policy name, when the policy is the only label (a str key hashes
        # once for good; a tuple hashes again at each lookup)
        self.by_policy: dict[str, list[float]] = {}
        self.warned = False

    def add(self, values: tuple[str, ...]) -> list[float]:
        """The row of label values not found in ``rows``: made now, within the bound."""
        with self.lock:
            found = self.rows.get(values)
            if found is not None:
                return found
            if self.enriched and len(self.rows) >= self.max_series:
                values = values[: -self.enriched] + (_OTHER,) * self.enriched
                if not self.warned:
                    self.warned = True
                    _log.warning(
                        "failsafe.prometheus: %s holds %d label sets (max_series); new values"
                        " of the enriched labels are recorded as %r from now on",
                        self.name,
                        self.max_series,
                        _OTHER,
                    )
                found = self.rows.get(values)
                if found is not None:
                    return found
            found = [0.0] * self.size
            # recording reads without the lock: one dict operation is atomic
            self.rows[values] = found
            if len(self.labels) == 1:
                self.by_policy[values[0]] = found
            return found

    def family(self, bounds: Sequence[str]) -> Metric:
        """The metric family with a snapshot of every row (taken under the lock)."""
        with self.lock:
            if self.counts_of is not None:  # a counter of the histogram's observations
                rows = [(values, [row[1]]) for values, row in self.counts_of.rows.items()]
            else:
                rows = [(values, list(row)) for values, row in self.rows.items()]
        if not self.histogram:
            counter = CounterMetricFamily(self.name, self.doc, labels=self.labels)
            for values, row in rows:
                counter.add_metric(values, row[0])
            return counter
        histogram = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for values, row in rows:
            histogram.add_metric(
                values,
                list(zip(bounds, itertools.accumulate(row[2:]), strict=True)),
                sum_value=row[0],
            )
        return histogram


class PrometheusListener:
    """A listener recording failsafe's events as Prometheus counters and histograms.

    Built, it registers itself in ``registry`` as a collector of its metrics
    (``registry.unregister(listener)`` removes them); give it to policies
    (``Retry(listeners=[listener])``) or to all of them with
    [`add_listener`][failsafe.events.add_listener]. [`instrument`][failsafe.prometheus.instrument]
    does both, and registers the gauges too. The metrics and their labels are listed in
    the module's description above; events of other kinds (a breaker's storage outage,
    an adaptive limit's move, which the gauge ``failsafe_concurrency_limit`` shows) are not
    recorded.

    The counts are kept in this process's memory and read at each scrape (as prometheus_client
    keeps its own metrics): prometheus_client's multiprocess mode does not add them up
    across processes, so under a pre-forking server scrape each process.

    Args:
        registry: Where the metrics are registered (default: prometheus_client's global
            ``REGISTRY``, the one ``start_http_server`` and ``make_asgi_app`` serve).
        enrichers: Callables adding the caller's labels (a tenant, a region) to each
            event's metrics; each gets the event and returns a mapping of label to value
            (see [`Enricher`][failsafe.events.Enricher]).
        labels: The label names the enrichers fill, declared up front (Prometheus fixes a
            metric's labels when it is created). A declared label no enricher returned reads
            ``""``; a key an enricher returns that is not declared is ignored (its dots are
            read as underscores first: ``"deploy.region"`` fills ``deploy_region``).
        buckets: Upper bounds (seconds) of the two delay histograms' buckets.
        max_series: The most label sets a metric holds before new values of the enriched
            labels are recorded as ``"other"`` (a warning is logged the first time). The
            ``policy`` label and failsafe's own labels are never folded: they come from the
            program, not from the traffic.

    Raises:
        ConfigurationError: A label name is not a Prometheus one, repeats, or is one of
            failsafe's own (``policy``, ``reason``, ``enforced``, ``state``, ``key``,
            ``kind``, ``queue``) or Prometheus's (``le``, ``quantile``); enrichers come
            without labels or labels without
            enrichers; ``buckets`` is not an increasing run of positive numbers;
            ``max_series`` is not a positive integer; or ``registry`` already holds
            failsafe's metrics (one listener per registry).

    Thread-safety: safe to call from any thread or task at once; a scrape reads a
    consistent snapshot of each metric. Label values are cut to 100 characters; booleans
    read ``true``/``false``.
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry = prometheus_client.REGISTRY,
        enrichers: Sequence[Enricher] = (),
        labels: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        max_series: int = MAX_SERIES,
    ) -> None:
        self._enrichment = _Enrichment(enrichers, labels)
        if not isinstance(max_series, int) or isinstance(max_series, bool) or max_series < 1:
            raise ConfigurationError("max_series", f"must be an integer >= 1, got {max_series!r}")
        self._bounds = _buckets(buckets)
        self._le = [*(_go_float(bound) for bound in self._bounds), "+Inf"]
        extra = self._enrichment.labels
        self._lock = threading.Lock()
        made: list[_Series] = []

        def series(name: str, doc: str, *names: str, histogram: bool = False) -> _Series:
            made.append(
                _Series(
                    name,
                    doc,
                    ("policy", *names, *extra),
                    enriched=len(extra),
                    max_series=max_series,
                    lock=self._lock,
                    buckets=len(self._bounds) if histogram else 0,
                )
            )
            return made[-1]

        self._failed = series("failsafe_attempts_failed", "Attempts that failed")
        self._exhausted = series(
            "failsafe_retries_exhausted", "Calls whose retries gave up", "reason"
        )
        self._delay = series(
            "failsafe_retry_delay_seconds", "Delay before each retry", histogram=True
        )
        # every scheduled retry is one observation of its delay: the counter is the
        # histogram's count, read at each scrape (one row to update per retry, not two)
        made.append(
            _Series(
                "failsafe_retries_scheduled",
                "Retries scheduled",
                self._delay.labels,
                enriched=len(extra),
                max_series=max_series,
                lock=self._lock,
                counts_of=self._delay,
            )
        )
        self._transitions = series(
            "failsafe_circuit_transitions", "Circuit breaker state changes", "state"
        )
        self._rejected = series(
            "failsafe_calls_rejected", "Calls a policy refused to run", "reason", "enforced"
        )
        self._failovers = series("failsafe_failovers", "Moves to the next target")
        self._timeouts = series("failsafe_timeouts", "Calls that overran their timeout")
        self._fallbacks = series("failsafe_fallbacks", "Failures replaced by a fallback")
        self._limit_delay = series(
            "failsafe_rate_limit_delay_seconds", "Waits for a rate limiter's permit", histogram=True
        )
        self._hedges = series("failsafe_hedges", "Hedged attempts started")
        self._hedges_refused = series(
            "failsafe_hedges_refused", "Hedges that were due but not started", "reason"
        )
        self._chaos = series("failsafe_chaos_injected", "Calls a chaos policy altered", "kind")
        self._series: tuple[_Series, ...] = tuple(made)
        self._enrich = self._enrichment.values if extra else None
        self._acquire, self._release = self._lock.acquire, self._lock.release
        self._failed_by_policy = self._failed.by_policy
        self._delay_by_policy = self._delay.by_policy
        counter = self._counter
        self._handlers: dict[type[Event], _Handler] = {
            AttemptFailed: counter(self._failed),
            RetryScheduled: self._observe(self._delay),
            RetriesExhausted: counter(self._exhausted, _reason),
            FailedOver: counter(self._failovers),
            TimedOut: counter(self._timeouts),
            FallbackUsed: counter(self._fallbacks),
            RateLimitDelayed: self._observe(self._limit_delay),
            HedgeStarted: counter(self._hedges),
            HedgeRefused: counter(self._hedges_refused, _hedge_reason),
            ChaosInjected: counter(self._chaos, _chaos_kind),
            **{kind: counter(self._transitions, _constant(s)) for kind, s in _STATE.items()},
            **{kind: counter(self._rejected, _rejection(r)) for kind, r in _REJECTED.items()},
        }
        try:
            registry.register(self)
        except ValueError as exc:  # prometheus_client's DuplicateTimeseries
            raise ConfigurationError(
                "registry",
                "already holds failsafe's event metrics: build one PrometheusListener per"
                " registry (or unregister the other one first)",
            ) from exc

    def __call__(self, event: Event, /) -> None:
        """Record one event."""
        kind = type(event)
        # a retried call's two events, recorded here without enrichers: one call less each
        if kind is AttemptFailed and self._enrich is None:
            row = self._failed_by_policy.get(event.policy) or self._failed.add((event.policy,))
            self._acquire()
            try:
                row[0] += 1
            finally:
                self._release()
            return
        if isinstance(event, RetryScheduled) and self._enrich is None:
            delay = event.delay
            row = self._delay_by_policy.get(event.policy) or self._delay.add((event.policy,))
            bucket = 2 + bisect.bisect_left(self._bounds, delay)
            self._acquire()
            try:
                row[0] += delay
                row[1] += 1
                row[bucket] += 1
            finally:
                self._release()
            return
        handler = self._handlers.get(kind)
        if handler is None:
            handler = self._resolve(kind)
        handler(event)

    def collect(self) -> Iterable[Metric]:
        """The metrics' current values (prometheus_client calls this at each scrape)."""
        return [series.family(self._le) for series in self._series]

    def describe(self) -> Iterable[Metric]:
        """The metrics' names, for the registry's check against duplicates."""
        return [
            HistogramMetricFamily(s.name, s.doc, labels=s.labels)
            if s.histogram
            else CounterMetricFamily(s.name, s.doc, labels=s.labels)
            for s in self._series
        ]

    def __repr__(self) -> str:
        return f"PrometheusListener(labels={self._enrichment.labels!r})"

    # -- one handler per kind of event ---------------------------------------------------
    # Each handler is a closure over its rows, so that recording an event is a dict lookup
    # and one short critical section; the variants without enrichers skip building labels.
    def _resolve(self, kind: type[Event]) -> _Handler:
        """The handler of an event subclass (its nearest known base's), cached."""
        handler = next(
            (self._handlers[base] for base in kind.__mro__ if base in self._handlers),
            _ignore,
        )
        self._handlers[kind] = handler  # bounded by the event classes the program defines
        return handler

    def _counter(
        self, series: _Series, labels: Callable[[Any], tuple[str, ...]] | None = None
    ) -> _Handler:
        """Count an event in ``series``; ``labels`` gives the labels after ``policy``."""
        rows, add, enrich = series.rows, series.add, self._enrich
        acquire, release = self._lock.acquire, self._lock.release

        if labels is None and enrich is None:
            plain = series.by_policy

            def record(event: Event) -> None:
                row = plain.get(event.policy) or add((event.policy,))
                acquire()
                try:
                    row[0] += 1
                finally:
                    release()

        elif labels is None:
            assert enrich is not None

            def record(event: Event) -> None:
                key = (event.policy, *enrich(event))
                row = rows.get(key) or add(key)
                acquire()
                try:
                    row[0] += 1
                finally:
                    release()

        else:
            more = labels
            extra = enrich or _no_labels

            def record(event: Event) -> None:
                key = (event.policy, *more(event), *extra(event))
                row = rows.get(key) or add(key)
                acquire()
                try:
                    row[0] += 1
                finally:
                    release()

        return record

    def _observe(self, series: _Series) -> _Handler:
        """Observe an event's ``delay`` in the histogram ``series``."""
        rows, add, enrich = series.rows, series.add, self._enrich
        plain = series.by_policy
        acquire, release = self._lock.acquire, self._lock.release
        bounds, extra = self._bounds, enrich or _no_labels

        def record(event: RetryScheduled | RateLimitDelayed) -> None:
            if enrich is None:
                row = plain.get(event.policy) or add((event.policy,))
            else:
                key = (event.policy, *extra(event))
                row = rows.get(key) or add(key)
            bucket = 2 + bisect.bisect_left(bounds, event.delay)
            acquire()
            try:
                row[0] += event.delay
                row[1] += 1
                row[bucket] += 1
            finally:
                release()

        return record


_Handler = Callable[[Any], None]


def _no_labels(event: Event | None) -> tuple[str, ...]:
    return ()


def _reason(event: RetriesExhausted) -> tuple[str, ...]:
    return (_text(event.reason),)


def _chaos_kind(event: ChaosInjected) -> tuple[str, ...]:
    return (_text(event.kind),)


def _hedge_reason(event: HedgeRefused) -> tuple[str, ...]:
    return (_text(event.reason),)


def _constant(*values: str) -> Callable[[Event], tuple[str, ...]]:
    def labels(event: Event) -> tuple[str, ...]:
        return values

    return labels


def _rejection(reason: str) -> Callable[[Event], tuple[str, ...]]:
    enforced, advisory = (reason, "true"), (reason, "false")

    def labels(event: Event) -> tuple[str, ...]:
        # a metrics-only breaker's CircuitRejected says it ran the call anyway
        return advisory if getattr(event, "enforced", True) is False else enforced

    return labels


def _ignore(event: Event) -> None:
    """The handler of events no metric counts."""


def _buckets(buckets: Sequence[float]) -> list[float]:
    """Validated histogram bounds (``ConfigurationError`` naming ``buckets``)."""
    if isinstance(buckets, str | bytes) or not all(
        isinstance(bound, int | float) and not isinstance(bound, bool)
        for bound in (buckets if isinstance(buckets, Iterable) else [None])
    ):
        raise ConfigurationError("buckets", f"must be a sequence of numbers, got {buckets!r}")
    bounds = [float(bound) for bound in buckets]
    if bounds and bounds[-1] == float("inf"):
        bounds.pop()  # prometheus_client adds +Inf itself
    ok = (
        bool(bounds)
        and all(0 < bound < float("inf") for bound in bounds)
        and all(a < b for a, b in itertools.pairwise(bounds))
    )
    if not ok:
        raise ConfigurationError(
            "buckets",
            f"must be increasing finite numbers > 0 (at least one), got {tuple(buckets)!r}",
        )
    return bounds


class GaugeCollector:
    """A Prometheus collector of failsafe's gauges, read at each scrape.

    Each scrape reads `failsafe.health.gauges()` (the state of every live circuit breaker,
    bulkhead, rate limiter, adaptive concurrency limit, retry budget and queue consumer) and
    yields one gauge per name, dots turned into underscores (``failsafe.circuit.state`` is
    ``failsafe_circuit_state``). Attributes become labels: ``failsafe.policy`` is
    ``policy``, ``failsafe.circuit.key`` ``key``, ``failsafe.circuit.state`` ``state``,
    ``messaging.destination.name`` ``queue`` and ``failsafe.enforced`` ``enforced``; any
    other attribute keeps its name with dots as underscores. A gauge keeps the same labels
    from one scrape to the next, whichever policies are alive: ``failsafe_circuit_state``
    always has ``enforced`` (``true`` unless the breaker is metrics-only) and ``key``
    (``""`` for a plain breaker), ``failsafe_circuit_keys`` ``state``, the queue gauges
    ``queue``; any other label a reading lacks reads ``""``. The enrichers are called once
    per scrape with ``None`` and their labels added to every sample.

    Policies that share a name (give each its own) would give the same series twice; they
    are merged into one sample: a breaker state by the worst, a dead-letter depth by the
    largest, the other gauges by their sum.

    Register it yourself (``registry.register(GaugeCollector())``) or let
    [`instrument`][failsafe.prometheus.instrument] do it. A registry refuses a second one.

    Args:
        enrichers: As [`PrometheusListener`][failsafe.prometheus.PrometheusListener]'s,
            called with ``None``.
        labels: The label names the enrichers fill.

    Raises:
        ConfigurationError: As the listener's, for ``enrichers`` and ``labels``.

    Thread-safety: each scrape reads the gauges afresh; scrapes may run at once.
    """

    def __init__(self, *, enrichers: Sequence[Enricher] = (), labels: Sequence[str] = ()) -> None:
        self._enrichment = _Enrichment(enrichers, labels)

    def describe(self) -> Iterable[Metric]:
        """The gauges' names, for the registry's check against duplicates."""
        return [
            GaugeMetricFamily(name.replace(".", "_"), description)
            for name, (_, description) in _health.GAUGES.items()
        ]

    def collect(self) -> Iterable[Metric]:
        """Read the gauges now (prometheus_client calls this at each scrape).

        A failure to read them is logged (the exception's type) and yields no gauge, so the
        rest of the registry is still served.
        """
        try:
            readings = _health.gauges()
        except Exception as exc:
            _log.warning(
                "failsafe.prometheus: reading failsafe's gauges raised %s; none are exposed"
                " in this scrape",
                type_name(exc),
            )
            return []
        extra_names = self._enrichment.labels
        extra_values = self._enrichment.values(None) if extra_names else ()
        grouped: dict[str, tuple[str, list[tuple[dict[str, str], float]]]] = {}
        for reading in readings:
            name = reading.name.replace(".", "_")
            samples = grouped.setdefault(name, (reading.description, []))[1]
            samples.append(
                (
                    {_label_name(k): _text(v) for k, v in reading.attributes.items()},
                    float(reading.value),
                )
            )
        families: list[Metric] = []
        for name, (doc, samples) in grouped.items():
            defaults = _GAUGE_LABELS.get(name, {})
            names: dict[str, None] = {"policy": None, **dict.fromkeys(defaults)}
            for attributes, _ in samples:
                names.update(dict.fromkeys(attributes))
            own = list(names)
            added = [
                (n, v) for n, v in zip(extra_names, extra_values, strict=True) if n not in names
            ]
            merge = _GAUGE_MERGE.get(name, _add)
            values: dict[tuple[str, ...], float] = {}
            for attributes, value in samples:
                key = (
                    *(attributes.get(n, defaults.get(n, "")) for n in own),
                    *(v for _, v in added),
                )
                # policies sharing a name would give one series twice: they are merged
                values[key] = merge(values[key], value) if key in values else value
            family = GaugeMetricFamily(name, doc, labels=[*own, *(n for n, _ in added)])
            for key, value in values.items():
                family.add_metric(key, value)
            families.append(family)
        return families

    def __repr__(self) -> str:
        return f"GaugeCollector(labels={self._enrichment.labels!r})"


class Instrumentation:
    """What [`instrument`][failsafe.prometheus.instrument] set up, to take it down again.

    Also a context manager: leaving the ``with`` block uninstruments.

    Attributes:
        registry: The registry holding the metrics.
        listener: The listener given to every policy.
        gauges: The gauge collector registered next to it.
    """

    def __init__(
        self, registry: CollectorRegistry, listener: PrometheusListener, gauges: GaugeCollector
    ) -> None:
        self.registry = registry
        self.listener = listener
        self.gauges = gauges
        self._lock = threading.Lock()
        self._active = True

    @property
    def active(self) -> bool:
        """Whether the listener and the gauges are still installed."""
        return self._active

    def uninstrument(self) -> None:
        """Remove the listener from every policy and both collectors from the registry.

        Calling it again does nothing.
        """
        with self._lock:
            if not self._active:
                return
            self._active = False
        with contextlib.suppress(ValueError):  # the user removed it already
            remove_listener(self.listener)
        for collector in (self.listener, self.gauges):
            with contextlib.suppress(KeyError):  # the user unregistered it already
                self.registry.unregister(collector)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.uninstrument()

    def __repr__(self) -> str:
        return f"Instrumentation(listener={self.listener!r}, active={self._active})"


def instrument(
    *,
    registry: CollectorRegistry | None = None,
    enrichers: Sequence[Enricher] = (),
    labels: Sequence[str] = (),
    buckets: Sequence[float] = DEFAULT_BUCKETS,
    max_series: int = MAX_SERIES,
) -> Instrumentation:
    """Record every policy's events and expose failsafe's gauges in a Prometheus registry.

    Builds a [`PrometheusListener`][failsafe.prometheus.PrometheusListener] (registered in
    ``registry``), gives it to every policy with
    [`add_listener`][failsafe.events.add_listener], and registers a
    [`GaugeCollector`][failsafe.prometheus.GaugeCollector] in the same registry.

    Args:
        registry: The registry (default: prometheus_client's global ``REGISTRY``).
        enrichers: Callables adding the caller's labels; see the listener.
        labels: The label names the enrichers fill.
        buckets: Upper bounds (seconds) of the delay histograms' buckets.
        max_series: The bound on each metric's label sets; see the listener.

    Returns:
        The handle whose ``uninstrument()`` takes everything out again.

    Raises:
        ConfigurationError: As the listener's; ``registry`` already instrumented.
    """
    registry = prometheus_client.REGISTRY if registry is None else registry
    listener = PrometheusListener(
        registry=registry,
        enrichers=enrichers,
        labels=labels,
        buckets=buckets,
        max_series=max_series,
    )
    gauges = GaugeCollector(enrichers=enrichers, labels=labels)
    try:
        registry.register(gauges)
    except ValueError as exc:  # another GaugeCollector is registered there
        registry.unregister(listener)
        raise ConfigurationError(
            "registry", "already holds failsafe's gauges (a GaugeCollector registered before)"
        ) from exc
    add_listener(listener)
    return Instrumentation(registry, listener, gauges)
