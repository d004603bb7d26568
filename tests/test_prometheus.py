"""The Prometheus listener and gauge collector (failsafe.prometheus), on private registries."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry, generate_latest, make_asgi_app
from prometheus_client.parser import text_string_to_metric_families

import failsafe
from failsafe import (
    Backoff,
    Bulkhead,
    BulkheadFull,
    CircuitBreaker,
    CircuitOpenError,
    Failover,
    Fallback,
    KeyedCircuitBreaker,
    Pipeline,
    Retry,
    Timeout,
    TimeoutExceeded,
    events,
)
from failsafe import health as failsafe_health
from failsafe.events import Event
from failsafe.exceptions import ConfigurationError
from failsafe.health import GaugeReading
from failsafe.outcome import Outcome
from failsafe.prometheus import (
    DEFAULT_BUCKETS,
    GaugeCollector,
    Instrumentation,
    PrometheusListener,
    instrument,
)
from failsafe.testing import FakeClock, fail_first

FAILED = Outcome(exception=ConnectionError("secret-token-123"))


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    """The sample ``name{labels}`` (labels given exactly), or None when absent."""
    return registry.get_sample_value(name, labels)


def series(registry: CollectorRegistry, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every sample called ``name``, by its label set."""
    return {
        frozenset(sample.labels.items()): sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name
    }


@pytest.fixture
def registry() -> CollectorRegistry:
    """A fresh registry of the test's own."""
    return CollectorRegistry()


# -- events built by hand: one row per kind ------------------------------------------------
# (event, sample name, its labels, value); histograms are read by their _count and _sum
HAND_BUILT: list[tuple[Event, str, dict[str, str], float]] = [
    (
        events.AttemptFailed(policy="p", attempt=1, outcome=FAILED),
        "failsafe_attempts_failed_total",
        {},
        1,
    ),
    (
        events.RetryScheduled(policy="p", attempt=1, delay=0.25, outcome=FAILED),
        "failsafe_retries_scheduled_total",
        {},
        1,
    ),
    (
        events.RetryScheduled(policy="p", attempt=1, delay=0.25, outcome=FAILED),
        "failsafe_retry_delay_seconds_sum",
        {},
        0.25,
    ),
    (
        events.RetryScheduled(policy="p", attempt=1, delay=0.25, outcome=FAILED),
        "failsafe_retry_delay_seconds_bucket",
        {"le": "0.25"},
        1,
    ),
    (
        events.RetriesExhausted(policy="p", attempts=3, reason="deadline", outcome=FAILED),
        "failsafe_retries_exhausted_total",
        {"reason": "deadline"},
        1,
    ),
    (
        events.CircuitOpened(policy="p", key=None, reset_timeout=30.0, outcome=None),
        "failsafe_circuit_transitions_total",
        {"state": "open"},
        1,
    ),
    (
        events.CircuitHalfOpened(policy="p", key=None),
        "failsafe_circuit_transitions_total",
        {"state": "half-open"},
        1,
    ),
    (
        events.CircuitClosed(policy="p", key=None),
        "failsafe_circuit_transitions_total",
        {"state": "closed"},
        1,
    ),
    (
        events.CircuitRejected(policy="p", key=None, retry_after=1.0),
        "failsafe_calls_rejected_total",
        {"reason": "circuit_open", "enforced": "true"},
        1,
    ),
    (
        events.CircuitRejected(policy="p", key=None, retry_after=1.0, enforced=False),
        "failsafe_calls_rejected_total",
        {"reason": "circuit_open", "enforced": "false"},
        1,
    ),
    (
        events.BulkheadRejected(policy="p", max_concurrent=1, max_queued=0),
        "failsafe_calls_rejected_total",
        {"reason": "bulkhead_full", "enforced": "true"},
        1,
    ),
    (
        events.RetryBudgetExhausted(policy="p", attempt=2, outcome=FAILED),
        "failsafe_calls_rejected_total",
        {"reason": "retry_budget", "enforced": "true"},
        1,
    ),
    (
        events.RateLimitRejected(policy="p", key="t1", retry_after=0.5),
        "failsafe_calls_rejected_total",
        {"reason": "rate_limited", "enforced": "true"},
        1,
    ),
    (
        events.ConcurrencyLimitRejected(policy="p", limit=4, in_flight=4),
        "failsafe_calls_rejected_total",
        {"reason": "concurrency_limit", "enforced": "true"},
        1,
    ),
    (
        events.FailedOver(policy="p", from_target="a", to_target="b", outcome=FAILED),
        "failsafe_failovers_total",
        {},
        1,
    ),
    (events.TimedOut(policy="p", timeout=1.0, cancelled=False), "failsafe_timeouts_total", {}, 1),
    (events.FallbackUsed(policy="p", outcome=FAILED), "failsafe_fallbacks_total", {}, 1),
    (
        events.RateLimitDelayed(policy="p", key=None, delay=0.04),
        "failsafe_rate_limit_delay_seconds_sum",
        {},
        0.04,
    ),
    (
        events.RateLimitDelayed(policy="p", key=None, delay=0.04),
        "failsafe_rate_limit_delay_seconds_count",
        {},
        1,
    ),
    (
        events.HedgeStarted(policy="p", attempt=2, delay=0.05, target=None),
        "failsafe_hedges_total",
        {},
        1,
    ),
    (
        events.HedgeRefused(policy="p", attempt=2, reason="budget"),
        "failsafe_hedges_refused_total",
        {"reason": "budget"},
        1,
    ),
    (
        events.ChaosInjected(policy="p", kind="latency", detail="0.5 s"),
        "failsafe_chaos_injected_total",
        {"kind": "latency"},
        1,
    ),
]


@pytest.mark.parametrize(
    ("event", "name", "labels", "expected"),
    HAND_BUILT,
    ids=[f"{type(row[0]).__name__}-{row[1]}" for row in HAND_BUILT],
)
def test_each_event_becomes_its_metric(
    registry: CollectorRegistry, event: Event, name: str, labels: dict[str, str], expected: float
) -> None:
    """Each kind of event is recorded in its documented metric, labelled with the policy."""
    listener = PrometheusListener(registry=registry)
    listener(event)
    assert value(registry, name, policy="p", **labels) == pytest.approx(expected)


WITHOUT_METRIC: list[Event] = [
    events.ConcurrencyLimitChanged(policy="p", previous=4, limit=6, reason="growth"),
    events.CircuitStorageUnavailable(policy="p", key=None, error="E", message="m"),
    events.CircuitStorageRestored(policy="p", key=None, wrote_back=False, outage=1.0),
    events.RateLimiterStorageUnavailable(policy="p", error="E", message="m"),
    events.RateLimiterStorageRestored(policy="p", outage=1.0),
]


def test_every_policy_event_is_in_a_table() -> None:
    """Each event of failsafe.events has its metric above, or is listed as recording none."""
    kinds = {
        kind
        for name in events.__all__
        if isinstance(kind := getattr(events, name), type)
        and issubclass(kind, Event)
        and kind is not Event
    }
    tabled = {type(row[0]) for row in HAND_BUILT} | {type(e) for e in WITHOUT_METRIC}
    assert kinds == tabled


@pytest.mark.parametrize("event", WITHOUT_METRIC, ids=lambda event: type(event).__name__)
def test_events_without_a_metric_record_nothing(registry: CollectorRegistry, event: Event) -> None:
    """Storage outages and limit moves leave every failsafe metric without a sample."""
    listener = PrometheusListener(registry=registry)
    listener(event)
    recorded = [s for family in registry.collect() for s in family.samples]
    assert recorded == []


def test_an_event_subclass_counts_as_its_base(registry: CollectorRegistry) -> None:
    """A subclass of a known event is recorded like the event it extends."""

    class MyTimeout(events.TimedOut):
        pass

    listener = PrometheusListener(registry=registry)
    listener(MyTimeout(policy="p", timeout=1.0, cancelled=True))
    listener(MyTimeout(policy="p", timeout=1.0, cancelled=True))
    assert value(registry, "failsafe_timeouts_total", policy="p") == 2


# -- real policies on a fake clock ---------------------------------------------------------
def test_real_policies_decisions_become_metrics(registry: CollectorRegistry) -> None:
    """Retries, give-ups, delays, transitions, rejections, failovers, timeouts, fallbacks."""
    listener = PrometheusListener(registry=registry)
    clock = FakeClock()

    retry = Retry(attempts=3, backoff=Backoff.constant(0.5), clock=clock, listeners=[listener])
    with pytest.raises(ConnectionError):
        retry.call(fail_first(9, ConnectionError))

    breaker = CircuitBreaker(name="wh", threshold=1, clock=clock, listeners=[listener])
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

    assert value(registry, "failsafe_attempts_failed_total", policy="retry") == 3
    assert value(registry, "failsafe_retries_scheduled_total", policy="retry") == 2
    assert value(registry, "failsafe_retry_delay_seconds_count", policy="retry") == 2
    assert value(registry, "failsafe_retry_delay_seconds_sum", policy="retry") == 1.0
    assert (
        value(registry, "failsafe_retries_exhausted_total", policy="retry", reason="attempts") == 1
    )
    assert series(registry, "failsafe_circuit_transitions_total") == {
        frozenset({("policy", "wh"), ("state", "open")}): 1
    }
    assert series(registry, "failsafe_calls_rejected_total") == {
        frozenset({("policy", "wh"), ("reason", "circuit_open"), ("enforced", "true")}): 1,
        frozenset({("policy", "bulkhead"), ("reason", "bulkhead_full"), ("enforced", "true")}): 1,
    }
    assert value(registry, "failsafe_failovers_total", policy="failover") == 1
    assert value(registry, "failsafe_fallbacks_total", policy="fallback") == 1
    assert value(registry, "failsafe_timeouts_total", policy="timeout") == 1


def test_a_metrics_only_breakers_refusals_read_enforced_false(registry: CollectorRegistry) -> None:
    """A call a metrics-only breaker would have refused counts with enforced="false"."""
    listener = PrometheusListener(registry=registry)
    breaker = CircuitBreaker(
        name="trial", threshold=1, clock=FakeClock(), listeners=[listener], metrics_only=True
    )
    with pytest.raises(ConnectionError):
        breaker.call(fail_first(1, ConnectionError))
    assert breaker.call(lambda: "ran") == "ran"
    assert series(registry, "failsafe_calls_rejected_total") == {
        frozenset({("policy", "trial"), ("reason", "circuit_open"), ("enforced", "false")}): 1
    }


def test_buckets_set_the_delay_histograms_bounds(registry: CollectorRegistry) -> None:
    """The buckets option gives both delay histograms their upper bounds, plus +Inf."""
    listener = PrometheusListener(registry=registry, buckets=(1, 10))
    listener(events.RetryScheduled(policy="p", attempt=1, delay=5.0, outcome=FAILED))
    listener(events.RateLimitDelayed(policy="p", key=None, delay=0.5))
    bounds = {
        dict(labels)["le"]: count
        for labels, count in series(registry, "failsafe_retry_delay_seconds_bucket").items()
    }
    assert bounds == {"1.0": 0, "10.0": 1, "+Inf": 1}
    assert value(registry, "failsafe_rate_limit_delay_seconds_bucket", policy="p", le="1.0") == 1
    assert DEFAULT_BUCKETS[0] < DEFAULT_BUCKETS[-1]


def test_recording_from_many_threads_loses_no_count(registry: CollectorRegistry) -> None:
    """Eight threads recording at once add up to the exact total."""
    listener = PrometheusListener(registry=registry)
    event = events.AttemptFailed(policy="p", attempt=1, outcome=FAILED)

    def record() -> None:
        for _ in range(2_000):
            listener(event)

    threads = [threading.Thread(target=record) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert value(registry, "failsafe_attempts_failed_total", policy="p") == 16_000


# -- enrichers ---------------------------------------------------------------------------------
def test_enrichers_fill_the_declared_labels(registry: CollectorRegistry) -> None:
    """Declared labels take the enrichers' values; a dotted key fills its underscored label."""
    seen: list[Event | None] = []

    def tenant(event: Event | None) -> Mapping[str, str | bool | int | float]:
        seen.append(event)
        return {"tenant": "acme", "deploy.region": "eu", "undeclared": "x"}

    listener = PrometheusListener(
        registry=registry, enrichers=[tenant], labels=["tenant", "deploy_region"]
    )
    event = events.AttemptFailed(policy="p", attempt=1, outcome=FAILED)
    listener(event)
    assert seen == [event]
    assert series(registry, "failsafe_attempts_failed_total") == {
        frozenset({("policy", "p"), ("tenant", "acme"), ("deploy_region", "eu")}): 1
    }


def test_a_label_no_enricher_gave_is_empty_and_the_last_enricher_wins(
    registry: CollectorRegistry,
) -> None:
    """Missing labels read "", later enrichers override earlier ones, values become text."""
    listener = PrometheusListener(
        registry=registry,
        enrichers=[
            lambda e: {"tenant": "a"},
            lambda e: {"tenant": "b", "canary": True},
            lambda e: None,
        ],
        labels=["tenant", "canary", "zone"],
    )
    listener(events.TimedOut(policy="p", timeout=1.0, cancelled=False))
    assert (
        value(registry, "failsafe_timeouts_total", policy="p", tenant="b", canary="true", zone="")
        == 1
    )


def test_long_label_values_are_cut_and_odd_values_dropped(registry: CollectorRegistry) -> None:
    """A value is cut to 100 characters; a value that is no attribute type is left out."""
    listener = PrometheusListener(
        registry=registry,
        enrichers=[lambda e: {"tenant": "t" * 500, "zone": object()}],  # type: ignore[dict-item]
        labels=["tenant", "zone"],
    )
    listener(events.TimedOut(policy="p", timeout=1.0, cancelled=False))
    assert value(registry, "failsafe_timeouts_total", policy="p", tenant="t" * 100, zone="") == 1


def test_a_failing_enricher_is_logged_once_by_type_and_skipped(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """An enricher that raises leaves its labels empty; one warning names its exception type."""

    def broken(event: Event | None) -> Mapping[str, str]:
        raise KeyError("secret-token-123")

    listener = PrometheusListener(
        registry=registry, enrichers=[broken, lambda e: {"zone": "z1"}], labels=["tenant", "zone"]
    )
    with caplog.at_level(logging.DEBUG, logger="failsafe.prometheus"):
        for _ in range(3):
            listener(events.FallbackUsed(policy="p", outcome=FAILED))
    assert value(registry, "failsafe_fallbacks_total", policy="p", tenant="", zone="z1") == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "KeyError" in warnings[0].getMessage()
    assert all("secret-token-123" not in r.getMessage() for r in caplog.records)
    assert all(r.exc_info is None for r in caplog.records)


def test_enriched_labels_follow_failsafes_own(registry: CollectorRegistry) -> None:
    """An event with labels of its own gets them first, then the enriched ones."""
    listener = PrometheusListener(
        registry=registry, enrichers=[lambda e: {"tenant": "acme"}], labels=["tenant"]
    )
    listener(events.CircuitRejected(policy="p", key=None, retry_after=1.0, enforced=False))
    listener(events.RateLimitDelayed(policy="p", key=None, delay=0.5))
    assert series(registry, "failsafe_calls_rejected_total") == {
        frozenset(
            {("policy", "p"), ("reason", "circuit_open"), ("enforced", "false"), ("tenant", "acme")}
        ): 1
    }
    assert (
        value(registry, "failsafe_rate_limit_delay_seconds_count", policy="p", tenant="acme") == 1
    )


def test_an_enricher_failing_half_way_gives_nothing(registry: CollectorRegistry) -> None:
    """An enricher that raises while its mapping is read adds none of its labels."""

    class HalfWay(dict[str, str]):
        def items(self) -> Any:
            yield "tenant", "acme"
            raise RuntimeError("broken")

    listener = PrometheusListener(
        registry=registry,
        enrichers=[lambda e: HalfWay(), lambda e: {1: "x", "zone": "z1"}],  # type: ignore[dict-item]
        labels=["tenant", "zone"],
    )
    listener(events.TimedOut(policy="p", timeout=1.0, cancelled=False))
    assert value(registry, "failsafe_timeouts_total", policy="p", tenant="", zone="z1") == 1


def test_series_past_the_bound_fold_into_other(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """Beyond max_series label sets, new enriched values are recorded as "other", warned once."""
    tenant = {"now": ""}
    listener = PrometheusListener(
        registry=registry,
        enrichers=[lambda e: {"tenant": tenant["now"]}],
        labels=["tenant"],
        max_series=3,
    )
    event = events.AttemptFailed(policy="p", attempt=1, outcome=FAILED)
    with caplog.at_level(logging.WARNING, logger="failsafe.prometheus"):
        for name in ["t1", "t2", "t3", "t4", "t5", "t1", "t4"]:
            tenant["now"] = name
            listener(event)
    assert series(registry, "failsafe_attempts_failed_total") == {
        frozenset({("policy", "p"), ("tenant", "t1")}): 2,
        frozenset({("policy", "p"), ("tenant", "t2")}): 1,
        frozenset({("policy", "p"), ("tenant", "t3")}): 1,
        frozenset({("policy", "p"), ("tenant", "other")}): 3,
    }
    folded = [r for r in caplog.records if "max_series" in r.getMessage()]
    assert len(folded) == 1
    assert "failsafe_attempts_failed" in folded[0].getMessage()


def test_the_bound_is_per_metric(registry: CollectorRegistry) -> None:
    """A metric that has reached its bound does not fold another metric's label sets."""
    tenant = {"now": ""}
    listener = PrometheusListener(
        registry=registry,
        enrichers=[lambda e: {"tenant": tenant["now"]}],
        labels=["tenant"],
        max_series=1,
    )
    for name in ["t1", "t2"]:
        tenant["now"] = name
        listener(events.AttemptFailed(policy="p", attempt=1, outcome=FAILED))
    listener(events.TimedOut(policy="p", timeout=1.0, cancelled=False))
    assert value(registry, "failsafe_attempts_failed_total", policy="p", tenant="other") == 1
    assert value(registry, "failsafe_timeouts_total", policy="p", tenant="t2") == 1


# -- bad options -------------------------------------------------------------------------------
def _tenant(event: Event | None) -> Mapping[str, str]:
    return {"tenant": "a"}


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"labels": ["tenant-id"], "enrichers": [_tenant]}, "labels"),
        ({"labels": ["__tenant"], "enrichers": [_tenant]}, "labels"),
        ({"labels": ["policy"], "enrichers": [_tenant]}, "labels"),
        ({"labels": ["le"], "enrichers": [_tenant]}, "labels"),
        ({"labels": ["tenant", "tenant"], "enrichers": [_tenant]}, "labels"),
        ({"enrichers": [_tenant]}, "labels"),
        ({"labels": ["tenant"]}, "enrichers"),
        ({"labels": ["tenant"], "enrichers": ["tenant"]}, "enrichers"),
        ({"buckets": ()}, "buckets"),
        ({"buckets": (1, 0.5)}, "buckets"),
        ({"buckets": (-1, 1)}, "buckets"),
        ({"buckets": (float("nan"),)}, "buckets"),
        ({"buckets": ("fast",)}, "buckets"),
        ({"buckets": ("1", "2")}, "buckets"),
        ({"buckets": (True,)}, "buckets"),
        ({"buckets": 5}, "buckets"),
        ({"max_series": 0}, "max_series"),
        ({"max_series": True}, "max_series"),
    ],
)
def test_bad_options_fail_at_construction(
    registry: CollectorRegistry, options: dict[str, Any], option: str
) -> None:
    """A bad option raises ConfigurationError naming it, and registers nothing."""
    with pytest.raises(ConfigurationError) as raised:
        PrometheusListener(registry=registry, **options)
    assert raised.value.option == option
    assert list(registry.collect()) == []


def test_bad_gauge_collector_options_fail_at_construction() -> None:
    """The gauge collector checks its labels and enrichers as the listener does."""
    with pytest.raises(ConfigurationError) as raised:
        GaugeCollector(labels=["state"], enrichers=[_tenant])
    assert raised.value.option == "labels"


def test_one_listener_per_registry(registry: CollectorRegistry) -> None:
    """A second listener on the same registry is refused, naming the registry option."""
    PrometheusListener(registry=registry)
    with pytest.raises(ConfigurationError) as raised:
        PrometheusListener(registry=registry)
    assert raised.value.option == "registry"


def test_a_registry_refuses_a_second_gauge_collector(registry: CollectorRegistry) -> None:
    """Two gauge collectors in one registry would expose each gauge twice: refused."""
    registry.register(GaugeCollector())
    with pytest.raises(ValueError, match="Duplicated"):
        registry.register(GaugeCollector())


# -- gauges ------------------------------------------------------------------------------------
def test_the_gauges_show_live_policies_state(registry: CollectorRegistry) -> None:
    """Open, metrics-only and keyed breakers and a busy bulkhead read as labelled gauges."""
    registry.register(GaugeCollector())
    clock = FakeClock()
    plain = CircuitBreaker(name="prom-plain", threshold=1, clock=clock)
    plain.open()
    trial = CircuitBreaker(name="prom-trial", threshold=1, clock=clock, metrics_only=True)
    trial.open()
    keyed = KeyedCircuitBreaker(name="prom-keyed", key=lambda: "t1", threshold=1, clock=clock)
    with pytest.raises(ConnectionError):
        keyed.call(fail_first(1, ConnectionError))
    bulkhead = Bulkhead(name="prom-pool", max_concurrent=2)

    def inside() -> dict[frozenset[tuple[str, str]], float]:
        return series(registry, "failsafe_bulkhead_in_flight")

    during = bulkhead.call(inside)

    state = series(registry, "failsafe_circuit_state")
    assert state[frozenset({("policy", "prom-plain"), ("enforced", "true"), ("key", "")})] == 2
    assert state[frozenset({("policy", "prom-trial"), ("enforced", "false"), ("key", "")})] == 2
    assert state[frozenset({("policy", "prom-keyed"), ("enforced", "true"), ("key", "t1")})] == 2
    assert value(registry, "failsafe_circuit_keys", policy="prom-keyed", state="open") == 1
    assert value(registry, "failsafe_circuit_keys", policy="prom-keyed", state="closed") == 0
    assert during[frozenset({("policy", "prom-pool")})] == 1
    assert value(registry, "failsafe_bulkhead_in_flight", policy="prom-pool") == 0
    del plain, trial, keyed, bulkhead


def test_gauges_carry_the_enrichers_labels_called_without_an_event(
    registry: CollectorRegistry,
) -> None:
    """Each scrape calls the enrichers with None and adds their labels to every gauge."""
    seen: list[Event | None] = []

    def region(event: Event | None) -> Mapping[str, str]:
        seen.append(event)
        return {"region": "eu"}

    registry.register(GaugeCollector(enrichers=[region], labels=["region"]))
    bulkhead = Bulkhead(name="prom-enriched", max_concurrent=2)
    assert value(registry, "failsafe_bulkhead_queued", policy="prom-enriched", region="eu") == 0
    assert seen
    assert set(seen) == {None}
    del bulkhead


def test_policies_sharing_a_name_merge_into_one_sample(registry: CollectorRegistry) -> None:
    """Same-named breakers show the worst state; same-named bulkheads add their calls up."""
    registry.register(GaugeCollector())
    clock = FakeClock()
    closed = CircuitBreaker(name="prom-twin", threshold=1, clock=clock)
    opened = CircuitBreaker(name="prom-twin", threshold=1, clock=clock)
    opened.open()
    pools = [Bulkhead(name="prom-twin-pool", max_concurrent=2) for _ in range(2)]

    def inside() -> float | None:
        return pools[1].call(
            lambda: value(registry, "failsafe_bulkhead_in_flight", policy="prom-twin-pool")
        )

    assert pools[0].call(inside) == 2
    twins = [
        v
        for labels, v in series(registry, "failsafe_circuit_state").items()
        if ("policy", "prom-twin") in labels
    ]
    assert twins == [2]
    assert closed.state != opened.state


def test_gauge_attributes_map_to_labels(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Queue, state and unknown attributes become labels; samples of one gauge share labels."""
    readings = [
        GaugeReading(
            name="failsafe.queue.dlq.depth",
            unit="{message}",
            description="parked",
            value=4,
            attributes={"failsafe.policy": "orders", "messaging.destination.name": "orders"},
        ),
        GaugeReading(
            name="failsafe.queue.dlq.depth",
            unit="{message}",
            description="parked",
            value=1,
            attributes={
                "failsafe.policy": "refunds",
                "messaging.destination.name": "refunds",
                "failsafe.shard.id": 3,
            },
        ),
    ]
    monkeypatch.setattr(failsafe_health, "gauges", lambda: readings)
    registry.register(GaugeCollector())
    assert series(registry, "failsafe_queue_dlq_depth") == {
        frozenset({("policy", "orders"), ("queue", "orders"), ("shard_id", "")}): 4,
        frozenset({("policy", "refunds"), ("queue", "refunds"), ("shard_id", "3")}): 1,
    }


def test_a_failed_gauge_reading_leaves_the_rest_served(
    registry: CollectorRegistry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """If reading the gauges raises, the scrape still serves the event metrics."""

    def broken() -> list[GaugeReading]:
        raise RuntimeError("secret-token-123")

    monkeypatch.setattr(failsafe_health, "gauges", broken)
    with instrument(registry=registry) as instrumentation:
        instrumentation.listener(events.TimedOut(policy="p", timeout=1.0, cancelled=False))
        with caplog.at_level(logging.WARNING, logger="failsafe.prometheus"):
            scraped = generate_latest(registry).decode()
    assert 'failsafe_timeouts_total{policy="p"} 1.0' in scraped
    assert "RuntimeError" in caplog.text
    assert "secret-token-123" not in caplog.text


# -- instrument() ------------------------------------------------------------------------------
def test_instrument_records_every_policy_and_uninstrument_takes_all_out(
    registry: CollectorRegistry,
) -> None:
    """instrument() listens to every policy and serves gauges; uninstrument() undoes both."""
    instrumentation = instrument(registry=registry)
    breaker = CircuitBreaker(name="prom-instrumented", threshold=1, clock=FakeClock())
    try:
        with pytest.raises(ConnectionError):
            breaker.call(fail_first(1, ConnectionError))
        assert instrumentation.active
        assert (
            value(
                registry,
                "failsafe_circuit_transitions_total",
                policy="prom-instrumented",
                state="open",
            )
            == 1
        )
        assert (
            value(
                registry,
                "failsafe_circuit_state",
                policy="prom-instrumented",
                enforced="true",
                key="",
            )
            == 2
        )
    finally:
        instrumentation.uninstrument()
    assert not instrumentation.active
    assert list(registry.collect()) == []
    instrumentation.uninstrument()  # idempotent
    breaker.close()  # no listener left: recording nowhere, raising nothing
    assert instrumentation.listener not in failsafe.events._global


def test_instrument_twice_on_one_registry_is_refused_until_uninstrumented(
    registry: CollectorRegistry,
) -> None:
    """A second instrument() on the same registry fails; after uninstrument() it works."""
    with instrument(registry=registry) as first:
        assert isinstance(first, Instrumentation)
        with pytest.raises(ConfigurationError) as raised:
            instrument(registry=registry)
        assert raised.value.option == "registry"
    second = instrument(registry=registry)
    second.uninstrument()
    assert list(registry.collect()) == []


def test_instrument_refuses_a_registry_with_gauges_and_leaves_it_as_it_was(
    registry: CollectorRegistry,
) -> None:
    """A registry holding a gauge collector already makes instrument() fail, listener removed."""
    gauges = GaugeCollector()
    registry.register(gauges)
    listeners_before = failsafe.events._global
    with pytest.raises(ConfigurationError) as raised:
        instrument(registry=registry)
    assert raised.value.option == "registry"
    assert failsafe.events._global == listeners_before
    registry.unregister(gauges)
    PrometheusListener(registry=registry)  # the failed attempt left no event metric behind


def test_the_listener_can_be_unregistered_by_hand(registry: CollectorRegistry) -> None:
    """The listener is a collector: registry.unregister(listener) removes its metrics."""
    listener = PrometheusListener(registry=registry)
    listener(events.TimedOut(policy="p", timeout=1.0, cancelled=False))
    registry.unregister(listener)
    assert list(registry.collect()) == []


# -- a real scrape over HTTP -------------------------------------------------------------------
class ThreadServer:
    """uvicorn serving an ASGI app on a loopback port, in a thread of the test's process.

    Not the subprocess servers of tests/http: the registry must be the one the test's
    policies record into, so the app runs in this process.
    """

    def __init__(self, app: Callable[..., Any]) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="critical", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        pause = threading.Event()
        for _ in range(500):
            if self.server.started:
                return
            pause.wait(0.01)
        raise RuntimeError("uvicorn did not start")

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def metrics_server(registry: CollectorRegistry) -> Iterator[ThreadServer]:
    """``prometheus_client.make_asgi_app(registry)`` served on loopback."""
    server = ThreadServer(make_asgi_app(registry))
    yield server
    server.close()


@pytest.mark.real_time
def test_a_real_scrape_shows_a_retried_call_and_an_open_breaker(
    registry: CollectorRegistry, metrics_server: ThreadServer
) -> None:
    """GET /metrics over HTTP parses to the retry's counts and the open breaker's state 2."""
    clock = FakeClock()
    with instrument(registry=registry, enrichers=[lambda e: {"tenant": "acme"}], labels=["tenant"]):
        retry = Retry(
            name="prom-scrape-retry", attempts=3, backoff=Backoff.constant(0.2), clock=clock
        )
        assert retry.call(fail_first(1, ConnectionError, returns="ok")) == "ok"
        breaker = CircuitBreaker(name="prom-scrape-breaker", threshold=1, clock=clock)
        with pytest.raises(ConnectionError):
            breaker.call(fail_first(1, ConnectionError))

        answer = httpx.get(f"{metrics_server.url}/metrics", timeout=10)
    assert answer.status_code == 200
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }
    retry_labels = {("policy", "prom-scrape-retry"), ("tenant", "acme")}
    assert samples[("failsafe_attempts_failed_total", frozenset(retry_labels))] == 1
    assert samples[("failsafe_retries_scheduled_total", frozenset(retry_labels))] == 1
    assert samples[("failsafe_retry_delay_seconds_sum", frozenset(retry_labels))] == 0.2
    assert (
        "failsafe_retries_exhausted_total",
        frozenset({*retry_labels, ("reason", "attempts")}),
    ) not in samples
    breaker_state = frozenset(
        {("policy", "prom-scrape-breaker"), ("enforced", "true"), ("key", ""), ("tenant", "acme")}
    )
    assert samples[("failsafe_circuit_state", breaker_state)] == 2
    transition = frozenset(
        {("policy", "prom-scrape-breaker"), ("state", "open"), ("tenant", "acme")}
    )
    assert samples[("failsafe_circuit_transitions_total", transition)] == 1
    del breaker


# -- the extra -------------------------------------------------------------------------------
@pytest.mark.real_time  # a child interpreter (subprocess waits with a real sleep loop)
def test_without_prometheus_client_the_import_names_the_extra() -> None:
    """Importing failsafe.prometheus without prometheus_client says to install the extra."""
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "try:\n    import failsafe.prometheus\n"
        "except ImportError as exc:\n    print(exc.name); print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    name, message = done.stdout.strip().split("\n", 1)
    assert name == "prometheus_client"
    assert "pip install 'failsafe-kit[prometheus]'" in message


@pytest.mark.real_time  # a child interpreter
def test_import_failsafe_does_not_import_prometheus_client() -> None:
    """The core never loads prometheus_client; only failsafe.prometheus does."""
    code = "import sys, failsafe, failsafe.health\nprint('prometheus_client' in sys.modules)\n"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"
