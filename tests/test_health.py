"""failsafe.health: the snapshot of every live policy, its gauge readings, and the ASGI app."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pybreaker
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from failsafe import (
    AdaptiveConcurrency,
    Bulkhead,
    CircuitBreaker,
    CircuitOpenError,
    ConfigurationError,
    KeyedCircuitBreaker,
    RateLimiter,
    RetryBudget,
    _registry,
)
from failsafe.adaptive_concurrency import AIMD
from failsafe.health import (
    GAUGES,
    MAX_KEYS_LISTED,
    GaugeReading,
    HealthApp,
    HealthEntry,
    HealthSnapshot,
    gauges,
    health,
    health_route,
)
from failsafe.rate_limiter import redis_rate_limit
from failsafe.testing import FakeClock


def _name(prefix: str = "p") -> str:
    """A policy name no other test uses (the registry holds every live policy)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _entry(name: str, snapshot: HealthSnapshot | None = None) -> HealthEntry:
    found = [e for e in (snapshot or health()).entries if e.name == name]
    assert len(found) == 1, found
    return found[0]


def _gauges(name: str) -> list[GaugeReading]:
    return [g for g in gauges() if g.attributes["failsafe.policy"] == name]


def _values(readings: list[GaugeReading]) -> dict[str, float]:
    return {g.name: g.value for g in readings}


def _fail(breaker: Any) -> None:
    def boom() -> None:
        raise ConnectionError("down")

    with contextlib.suppress(ConnectionError, CircuitOpenError):
        breaker.call(boom)


# -- circuit breakers ------------------------------------------------------------------------
def test_closed_breaker_is_listed_ok() -> None:
    """A closed breaker is listed with its failures counted and does not degrade the snapshot."""
    name = _name("cb")
    breaker = CircuitBreaker(name=name, threshold=3, clock=FakeClock())
    _fail(breaker)
    entry = _entry(name)
    assert entry.to_dict() == {
        "kind": "circuit_breaker",
        "name": name,
        "state": "closed",
        "degraded": False,
        "failure_count": 1,
        "enforced": True,
        "shared": False,
    }
    assert _gauges(name) == [
        GaugeReading(
            name="failsafe.circuit.state",
            unit="{state}",
            description=GAUGES["failsafe.circuit.state"][1],
            value=0.0,
            attributes={"failsafe.policy": name},
        )
    ]


def test_open_breaker_degrades_with_retry_after() -> None:
    """An open enforcing breaker says how long until it probes, and degrades the snapshot."""
    clock = FakeClock()
    name = _name("cb")
    breaker = CircuitBreaker(name=name, reset_timeout=30, clock=clock)
    breaker.open()
    clock.advance(10)
    snapshot = health()
    entry = _entry(name, snapshot)
    assert (entry.state, entry.degraded, entry.details["retry_after"]) == ("open", True, 20.0)
    assert snapshot.status == "degraded"
    assert _values(_gauges(name)) == {"failsafe.circuit.state": 2.0}


def test_half_open_breaker_degrades() -> None:
    """A half-open breaker is listed as such, with gauge value 1, and degrades the snapshot."""
    name = _name("cb")
    breaker = CircuitBreaker(name=name, clock=FakeClock())
    breaker.open()
    assert breaker.half_open()
    entry = _entry(name)
    assert (entry.state, entry.degraded) == ("half-open", True)
    assert "retry_after" not in entry.details
    assert _values(_gauges(name)) == {"failsafe.circuit.state": 1.0}


def test_metrics_only_breaker_never_degrades() -> None:
    """An open metrics-only breaker is listed as not enforced and leaves the status alone."""
    name = _name("cb")
    breaker = CircuitBreaker(name=name, metrics_only=True, clock=FakeClock())
    breaker.open()
    entry = _entry(name)
    assert (entry.state, entry.degraded, entry.details["enforced"]) == ("open", False, False)
    (reading,) = _gauges(name)
    assert reading.attributes == {"failsafe.policy": name, "failsafe.enforced": False}


class _Watched(pybreaker.CircuitMemoryStorage):
    """A storage the breaker treats as shared; it fails the test when read while forbidden."""

    def __init__(self) -> None:
        super().__init__(pybreaker.STATE_CLOSED)
        self.forbidden = False
        self.down = False

    def _check(self) -> None:
        assert not self.forbidden, "the health snapshot talked to the shared storage"
        if self.down:
            raise ConnectionError("storage unreachable")

    @property
    def state(self) -> str:
        self._check()
        return str(super().state)

    @state.setter
    def state(self, state: str) -> None:
        self._check()
        pybreaker.CircuitMemoryStorage.state.fset(self, state)  # type: ignore[attr-defined]

    @property
    def counter(self) -> int:
        self._check()
        return int(super().counter)

    @property
    def opened_at(self) -> Any:
        self._check()
        return super().opened_at

    @opened_at.setter
    def opened_at(self, value: Any) -> None:
        self._check()
        pybreaker.CircuitMemoryStorage.opened_at.fset(self, value)  # type: ignore[attr-defined]

    def increment_counter(self) -> None:
        self._check()
        super().increment_counter()

    def reset_counter(self) -> None:
        self._check()
        super().reset_counter()


def test_shared_breaker_is_read_without_asking_its_storage() -> None:
    """A shared breaker is reported as last seen, and reading it sends nothing to the storage."""
    clock = FakeClock()
    storage = _Watched()
    name = _name("shared")
    breaker = CircuitBreaker(name=name, threshold=2, storage=storage, clock=clock)
    _fail(breaker)
    _fail(breaker)
    storage.forbidden = True
    entry = _entry(name)
    gauges()
    assert entry.state == "open"
    assert entry.details["shared"] is True
    assert entry.details["storage_available"] is True
    assert entry.details["retry_after"] == 30.0


def test_shared_breaker_during_an_outage_reports_its_local_state() -> None:
    """While its storage is down, a shared breaker is listed with storage_available False."""
    storage = _Watched()
    name = _name("shared")
    breaker = CircuitBreaker(name=name, threshold=1, storage=storage, clock=FakeClock())
    storage.down = True
    _fail(breaker)  # the failure is counted locally: the circuit opens in this process
    storage.down = False
    storage.forbidden = True  # and the retry time has not come: health must not try it
    entry = _entry(name)
    assert (entry.state, entry.details["storage_available"]) == ("open", False)


# -- keyed circuit breakers ----------------------------------------------------------------------
def test_keyed_breaker_counts_keys_per_state_and_lists_open_ones() -> None:
    """A keyed breaker counts its keys per state and lists the open ones with retry_after."""
    clock = FakeClock()
    name = _name("keyed")
    current = ["a"]
    keyed = KeyedCircuitBreaker(name=name, key=lambda: current[0], threshold=1, clock=clock)
    keyed.call(lambda: None)  # "a": a success, no breaker built
    current[0] = "b"
    _fail(keyed)
    clock.advance(5)
    snapshot = health()
    entry = _entry(name, snapshot).to_dict()
    assert entry["state"] == "open"
    assert entry["degraded"] is True
    assert entry["keys"] == 2
    assert entry["keys_by_state"] == {"closed": 1, "half-open": 0, "open": 1}
    assert entry["open_keys"] == [{"key": "b", "state": "open", "retry_after": 25.0}]
    assert entry["more_open_keys"] == 0
    assert snapshot.status == "degraded"
    readings = _gauges(name)
    keys = {g.attributes["failsafe.circuit.state"]: g.value for g in readings if "keys" in g.name}
    assert keys == {"closed": 1.0, "half-open": 0.0, "open": 1.0}
    states = [g for g in readings if g.name == "failsafe.circuit.state"]
    assert [(g.value, g.attributes["failsafe.circuit.key"]) for g in states] == [(2.0, "b")]


def test_keyed_breaker_lists_at_most_100_keys_each_cut_to_100_chars() -> None:
    """Of 150 open keys, 100 are listed and gauged, 50 counted; a long key is cut to 100 chars."""
    name = _name("keyed")
    current: list[str] = [""]
    keyed = KeyedCircuitBreaker(name=name, key=lambda: current[0], threshold=1, clock=FakeClock())
    for i in range(150):
        current[0] = f"{i:03d}" + "x" * 200
        _fail(keyed)
    entry = _entry(name).to_dict()
    assert len(entry["open_keys"]) == MAX_KEYS_LISTED == 100
    assert entry["more_open_keys"] == 50
    assert {len(item["key"]) for item in entry["open_keys"]} == {100}
    states = [g for g in _gauges(name) if g.name == "failsafe.circuit.state"]
    assert len(states) == 100
    assert all(len(str(g.attributes["failsafe.circuit.key"])) == 100 for g in states)


def test_keyed_breaker_all_closed_gives_no_state_readings() -> None:
    """A keyed breaker whose keys are all closed is ok and gauges only its key counts."""
    name = _name("keyed")
    keyed = KeyedCircuitBreaker(name=name, key=lambda: "k", clock=FakeClock())
    keyed.call(lambda: None)
    entry = _entry(name)
    assert (entry.state, entry.degraded) == ("closed", False)
    assert [g.name for g in _gauges(name)] == ["failsafe.circuit.keys"] * 3


def test_keyed_metrics_only_breaker_never_degrades() -> None:
    """A metrics-only keyed breaker with an open key is not enforced and does not degrade."""
    name = _name("keyed")
    keyed = KeyedCircuitBreaker(
        name=name, key=lambda: "k", threshold=1, metrics_only=True, clock=FakeClock()
    )
    _fail(keyed)
    entry = _entry(name)
    assert (entry.state, entry.degraded, entry.details["enforced"]) == ("open", False, False)
    (state,) = [g for g in _gauges(name) if g.name == "failsafe.circuit.state"]
    assert state.attributes["failsafe.enforced"] is False


# -- the other kinds ------------------------------------------------------------------------------
def test_bulkhead_reports_calls_running_and_full() -> None:
    """Inside its only slot, a bulkhead is listed with one call in flight and as full."""
    name = _name("bulkhead")
    bulkhead = Bulkhead(name=name, max_concurrent=1)
    idle = _entry(name)
    inside = bulkhead.call(lambda: _entry(name))
    assert (idle.state, idle.details["in_flight"]) == ("ok", 0)
    assert inside.to_dict() == {
        "kind": "bulkhead",
        "name": name,
        "state": "full",
        "degraded": False,
        "in_flight": 1,
        "queued": 0,
        "max_concurrent": 1,
        "max_queued": 0,
    }
    during = bulkhead.call(lambda: _values(_gauges(name)))
    assert during == {"failsafe.bulkhead.in_flight": 1.0, "failsafe.bulkhead.queued": 0.0}


def test_token_bucket_reports_available_permits() -> None:
    """A local token bucket reports the permits it would grant now, as entry and gauge."""
    clock = FakeClock()
    name = _name("limiter")
    limiter = RateLimiter(name=name, rate=10, per=1.0, burst=3, clock=clock)
    assert limiter.available == 3
    assert limiter.try_acquire()
    assert limiter.try_acquire()
    entry = _entry(name).to_dict()
    assert entry["available"] == 1
    assert entry["state"] == "ok"
    assert (entry["algorithm"], entry["rate"], entry["per"], entry["burst"]) == (
        "token_bucket",
        10,
        1.0,
        3,
    )
    assert limiter.try_acquire()
    assert _entry(name).state == "limited"
    assert _values(_gauges(name)) == {"failsafe.rate_limit.available": 0.0}
    clock.advance(0.1)
    assert limiter.available == 1


def test_sliding_window_reports_available_permits() -> None:
    """A local sliding window reports the permits left in its window, freed as it slides."""
    clock = FakeClock()
    name = _name("window")
    limiter = RateLimiter.sliding_window(name=name, limit=3, window=1.0, clock=clock)
    limiter.try_acquire()
    clock.advance(0.5)
    limiter.try_acquire()
    entry = _entry(name).to_dict()
    assert (entry["algorithm"], entry["limit"], entry["window"], entry["available"]) == (
        "sliding_window",
        3,
        1.0,
        1,
    )
    clock.advance(0.6)  # the first permit left the window
    assert limiter.available == 2


def test_keyed_limiter_reports_keys_held() -> None:
    """A keyed local limiter reports the keys it holds, and no single availability."""
    name = _name("keyed-limiter")
    current = ["a"]
    limiter = RateLimiter(name=name, rate=5, key=lambda: current[0], clock=FakeClock())
    limiter.try_acquire()
    current[0] = "b"
    limiter.try_acquire()
    entry = _entry(name)
    assert limiter.available is None
    assert (entry.state, entry.details["keys_held"], entry.details["keyed"]) == (None, 2, True)
    assert "available" not in entry.details
    assert _values(_gauges(name)) == {"failsafe.rate_limit.keys": 2.0}


def test_shared_limiter_is_read_without_asking_redis(dead_url: str) -> None:
    """A limiter shared through Redis is listed from this process's view: Redis is never asked.

    The URL names a port where nothing listens, so an attempt to ask it would turn the
    storage unavailable: it stays available, and no availability is claimed.
    """
    name = _name("shared-limiter")
    storage = redis_rate_limit(dead_url, namespace=name)
    limiter = RateLimiter(name=name, rate=5, storage=storage, clock=FakeClock())
    entry = _entry(name).to_dict()
    assert entry["shared"] is True
    assert entry["storage_available"] is True
    assert entry["counted_in"] == "storage"
    assert "available" not in entry
    assert _gauges(name) == []
    assert limiter.storage_available
    storage.close()


def test_shared_limiter_during_an_outage_reports_local_counts(dead_url: str) -> None:
    """Once its storage failed, a shared limiter reports the permits it counts in process."""
    name = _name("shared-limiter")
    storage = redis_rate_limit(dead_url, namespace=name)
    limiter = RateLimiter(name=name, rate=5, burst=2, storage=storage, clock=FakeClock())
    assert limiter.try_acquire()  # Redis refuses the connection: counted locally
    entry = _entry(name).to_dict()
    assert (entry["storage_available"], entry["counted_in"], entry["available"]) == (
        False,
        "process",
        1,
    )
    storage.close()


@pytest.mark.redis
def test_shared_limiter_with_redis_up_claims_no_local_counts() -> None:
    """With the real Redis answering, a shared limiter is listed as counted in the storage."""
    from tests.redis_support import REDIS_URL

    name = _name("redis-limiter")
    storage = redis_rate_limit(REDIS_URL, namespace=f"failsafe-test-{name}")
    limiter = RateLimiter(name=name, rate=5, storage=storage, clock=FakeClock())
    try:
        assert limiter.try_acquire()
        entry = _entry(name).to_dict()
        assert (entry["storage_available"], entry["counted_in"]) == (True, "storage")
        assert "available" not in entry
    finally:
        storage.close()


def test_adaptive_concurrency_reports_limit_and_in_flight() -> None:
    """An adaptive limit is listed with its limit, bounds and the calls running under it."""
    name = _name("adaptive")
    limiter = AdaptiveConcurrency(
        name=name, algorithm=AIMD(), initial_limit=1, min_limit=1, max_limit=5
    )
    inside = limiter.call(lambda: _entry(name).to_dict())
    assert inside == {
        "kind": "adaptive_concurrency",
        "name": name,
        "state": "full",
        "degraded": False,
        "limit": 1,
        "in_flight": 1,
        "min_limit": 1,
        "max_limit": 5,
        "algorithm": "aimd",
    }
    assert _values(_gauges(name)) == {
        "failsafe.concurrency.limit": 1.0,
        "failsafe.concurrency.in_flight": 0.0,
    }


def test_retry_budget_reports_what_it_would_grant() -> None:
    """A retry budget reports the retries it would grant now, and exhausted once spent."""
    name = _name("budget")
    budget = RetryBudget(name=name, ratio=0.5, min_per_second=0.2, window=10, clock=FakeClock())
    assert budget.try_withdraw()
    entry = _entry(name).to_dict()
    assert entry == {
        "kind": "retry_budget",
        "name": name,
        "state": "ok",
        "degraded": False,
        "available": 1.0,
        "ratio": 0.5,
        "min_per_second": 0.2,
        "window": 10,
    }
    assert budget.try_withdraw()
    assert _entry(name).state == "exhausted"
    assert _values(_gauges(name)) == {"failsafe.retry_budget.available": 0.0}


class _Consumer:
    """Stands in for a queue consumer: read through the properties the health code expects."""

    def __init__(self, name: str, *, dlq_depth: int | None = None) -> None:
        self.name = name
        self.queue = f"{name}-queue"
        self.in_flight = 0
        self.dlq_depth = dlq_depth
        self.running = False
        _registry.register(self)


def test_consumer_is_recognised_by_its_properties() -> None:
    """A queue consumer is listed with its queue, messages in flight and dead-letter depth."""
    name = _name("consumer")
    consumer = _Consumer(name, dlq_depth=4)
    consumer.running, consumer.in_flight = True, 2
    entry = _entry(name)
    assert entry.to_dict() == {
        "kind": "queue_consumer",
        "name": name,
        "state": "running",
        "degraded": False,
        "queue": f"{name}-queue",
        "in_flight": 2,
        "dlq_depth": 4,
        "running": True,
    }
    readings = _gauges(name)
    assert _values(readings) == {
        "failsafe.queue.consumer.in_flight": 2.0,
        "failsafe.queue.dlq.depth": 4.0,
    }
    assert {g.attributes["messaging.destination.name"] for g in readings} == {f"{name}-queue"}


def test_consumer_that_stopped_degrades_and_one_never_started_does_not() -> None:
    """A consumer seen running that stopped degrades the snapshot; a never-started one does not."""
    name = _name("consumer")
    consumer = _Consumer(name)
    waiting = _entry(name)
    assert (waiting.state, waiting.degraded) == ("not-started", False)
    consumer.running = True
    assert _entry(name).state == "running"
    consumer.running = False
    snapshot = health()
    stopped = _entry(name, snapshot)
    assert (stopped.state, stopped.degraded, snapshot.status) == ("stopped", True, "degraded")


def test_consumer_without_known_dlq_depth_has_no_depth_gauge() -> None:
    """A consumer whose dead-letter depth is unknown gives no depth reading, and null in JSON."""
    name = _name("consumer")
    _consumer = _Consumer(name)
    assert _entry(name).details["dlq_depth"] is None
    assert [g.name for g in _gauges(name)] == ["failsafe.queue.consumer.in_flight"]


def test_real_consumer_is_listed() -> None:
    """A queue consumer built on the in-memory broker is listed as a queue_consumer."""
    from failsafe.queue import Consumer, Envelope, InMemoryBroker

    def handle(message: Envelope) -> None:
        return None

    name = _name("consumer")
    consumer = Consumer(InMemoryBroker(), "orders.paid", handle, name=name)
    entry = _entry(name).to_dict()
    assert (entry["kind"], entry["state"], entry["queue"], entry["running"]) == (
        "queue_consumer",
        "not-started",
        "orders.paid",
        False,
    )
    assert consumer.name == name


# -- the snapshot as a whole ---------------------------------------------------------------------
class _Broken(_Consumer):
    @property
    def in_flight(self) -> int:
        raise ValueError("password=hunter2")

    @in_flight.setter
    def in_flight(self, value: int) -> None:
        pass


def test_reading_that_raises_is_an_error_entry_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A policy whose reading raises is listed with the exception's type only, logged once."""
    name, other = _name("broken"), _name("cb")
    _broken = _Broken(name)
    _breaker = CircuitBreaker(name=other)
    with caplog.at_level(logging.WARNING, logger="failsafe.health"):
        first = health()
        health()
        readings = gauges()
    entry = _entry(name, first)
    assert entry.to_dict() == {
        "kind": "queue_consumer",
        "name": name,
        "degraded": False,
        "error": "ValueError",
    }
    assert _entry(other, first).state == "closed"
    assert not [g for g in readings if g.attributes["failsafe.policy"] == name]
    logged = [r for r in caplog.records if name in r.getMessage()]
    assert len(logged) == 1
    assert "hunter2" not in json.dumps(first.to_dict()) + caplog.text


def test_dropped_policy_leaves_the_snapshot() -> None:
    """A policy the program no longer holds is not listed once it is collected."""
    name = _name("gone")
    bulkhead: Bulkhead | None = Bulkhead(name=name)
    assert _entry(name).kind == "bulkhead"
    del bulkhead
    gc.collect()
    assert not [e for e in health().entries if e.name == name]
    assert not _gauges(name)


def test_same_name_twice_lists_both() -> None:
    """Two policies with one name are both listed (entries are a list, not a mapping)."""
    name = _name("twice")
    first, second = Bulkhead(name=name, max_concurrent=1), Bulkhead(name=name, max_concurrent=2)
    listed = [e.details["max_concurrent"] for e in health().entries if e.name == name]
    assert listed == [first.max_concurrent, second.max_concurrent]


def test_limit_bounds_the_entries_and_counts_the_rest() -> None:
    """With limit=1, one entry is listed, the rest counted, and an omitted one still degrades."""
    _first = Bulkhead(name=_name("first"))
    breaker = CircuitBreaker(name=_name("last"))
    breaker.open()
    total = len(health().entries)
    snapshot = health(limit=1)
    assert len(snapshot.entries) == 1
    assert snapshot.omitted == total - 1 >= 1
    assert breaker.name not in {e.name for e in snapshot.entries}
    assert snapshot.status == "degraded"


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "10"])
def test_bad_limit_is_a_configuration_error(limit: Any) -> None:
    """A limit that is not an integer >= 1 is refused, naming the option."""
    with pytest.raises(ConfigurationError) as info:
        health(limit=limit)
    assert info.value.option == "limit"
    with pytest.raises(ConfigurationError):
        HealthApp(limit=limit)


def test_bad_ready_when_degraded_is_a_configuration_error() -> None:
    """ready_when_degraded must be a bool, not a truthy string."""
    with pytest.raises(ConfigurationError) as info:
        HealthApp(ready_when_degraded="false")  # type: ignore[arg-type]
    assert info.value.option == "ready_when_degraded"


def test_taken_at_is_iso_utc() -> None:
    """taken_at is ISO-8601 UTC with a Z (its value is the wall clock: only the form is pinned)."""
    taken_at = health().taken_at
    assert taken_at.endswith("Z")
    assert taken_at[10] == "T"


def test_every_gauge_follows_the_contract() -> None:
    """Every reading names a known gauge, with its unit and description, and its policy."""
    holders: list[Any] = [
        CircuitBreaker(name=_name()),
        Bulkhead(name=_name()),
        RateLimiter(name=_name(), rate=1),
        AdaptiveConcurrency(name=_name()),
        RetryBudget(name=_name()),
        _Consumer(_name(), dlq_depth=0),
    ]
    readings = gauges()
    assert {g.attributes["failsafe.policy"] for g in readings} >= {h.name for h in holders}
    for reading in readings:
        unit, description = GAUGES[reading.name]
        assert (reading.unit, reading.description) == (unit, description)
        assert isinstance(reading.attributes["failsafe.policy"], str)
        assert isinstance(reading.value, float)
        assert hash(reading) == hash(reading)  # frozen: usable as a key, attributes aside


# -- JSON, for every kind and any name or key --------------------------------------------------
_texts = st.text(max_size=300)
_keys = st.one_of(
    _texts, st.integers(), st.tuples(st.integers(), _texts), st.binary(max_size=50), st.none()
)


@settings(max_examples=40, deadline=None)
@given(
    names=st.lists(_texts, min_size=1, max_size=4),
    keys=st.lists(_keys, max_size=5),
    spent=st.integers(0, 5),
    depth=st.one_of(st.none(), st.integers(0, 10**9)),
)
def test_to_dict_is_always_json(
    names: list[str], keys: list[Any], spent: int, depth: int | None
) -> None:
    """Whatever the names, keys and states, to_dict() is strict JSON (no NaN) and round-trips."""
    clock = FakeClock()
    held: list[Any] = []
    for name in names:
        breaker = CircuitBreaker(name=name, clock=clock)
        if spent % 2:
            breaker.open()
        current: list[Any] = [None]

        def current_key(c: list[Any] = current) -> Any:
            return c[0]

        keyed = KeyedCircuitBreaker(name=name, key=current_key, threshold=1, clock=clock)
        for key in keys:
            current[0] = key
            _fail(keyed)
        limiter = RateLimiter(name=name, rate=3, clock=clock)
        for _ in range(spent):
            limiter.try_acquire()
        budget = RetryBudget(name=name, min_per_second=0, clock=clock)
        held += [
            breaker,
            keyed,
            limiter,
            budget,
            Bulkhead(name=name),
            AdaptiveConcurrency(name=name),
            _Consumer(name, dlq_depth=depth),
        ]
    data = health().to_dict()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text) == data
    assert len([e for e in data["entries"] if e["name"] in names]) >= len(held)


# -- the ASGI app on a real server ---------------------------------------------------------------
@contextlib.contextmanager
def _serve(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a loopback socket, in a thread of this process."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="critical", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    waiting = threading.Event()
    for _ in range(500):
        if server.started or not thread.is_alive():
            break
        waiting.wait(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.mark.real_time
def test_health_app_serves_json_alone_under_uvicorn() -> None:
    """Served alone, it answers GET with the snapshot as JSON, HEAD without a body, 405 else."""
    name = _name("served")
    _bulkhead = Bulkhead(name=name)
    with _serve(HealthApp()) as url:
        got = httpx.get(f"{url}/")
        head = httpx.head(url)
        post = httpx.post(url)
    assert got.status_code == 200
    assert got.headers["content-type"] == "application/json"
    assert got.headers["cache-control"] == "no-store"
    body = got.json()
    assert body["status"] in ("ok", "degraded")
    assert [e["kind"] for e in body["entries"] if e["name"] == name] == ["bulkhead"]
    assert (head.status_code, head.content) == (200, b"")
    assert int(head.headers["content-length"]) > 0
    assert (post.status_code, post.headers["allow"]) == (405, "GET, HEAD")


@pytest.mark.real_time
def test_health_app_in_starlette_answers_503_only_when_asked() -> None:
    """In Starlette, degraded is 200 by default and 503 with ready_when_degraded=False."""
    from starlette.applications import Starlette
    from starlette.routing import Mount, Route

    breaker = CircuitBreaker(name=_name("down"))
    breaker.open()
    app = Starlette(
        routes=[
            health_route("/health"),
            Route("/ready", HealthApp(ready_when_degraded=False)),
            Mount("/mounted", app=HealthApp(limit=1)),
        ]
    )
    with _serve(app) as url:
        lenient = httpx.get(f"{url}/health")
        strict = httpx.get(f"{url}/ready")
        mounted = httpx.get(f"{url}/mounted/")
    assert (lenient.status_code, lenient.json()["status"]) == (200, "degraded")
    assert (strict.status_code, strict.json()["status"]) == (503, "degraded")
    assert mounted.status_code == 200
    assert len(mounted.json()["entries"]) == 1


def test_health_app_refuses_other_connections() -> None:
    """A websocket connection is not served (the app speaks HTTP and lifespan only)."""

    async def nothing() -> dict[str, Any]:
        return {}

    async def ignore(message: Any) -> None:
        return None

    with pytest.raises(RuntimeError, match="HTTP only"):
        asyncio.run(HealthApp()({"type": "websocket"}, nothing, ignore))
