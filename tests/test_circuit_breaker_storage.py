"""A breaker on a shared storage that fails: calls flow on a local state, then resynchronise.

The storage here is an in-memory stand-in for Redis (`SharedStorage`): it keeps what pybreaker's
``CircuitRedisStorage`` keeps (the opening time in whole seconds, handed out as a new object on
every read, as Redis does), counts the operations it serves, and can be cut, so that every
operation raises ``ConnectionError`` as a dead server would. Time is a `FakeClock`; the same
behaviour against the real Redis, a dead port and a cut proxy is in
``test_circuit_breaker_redis.py``.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import pybreaker
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from failsafe import (
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    ConfigurationError,
    ConsecutiveFailures,
    KeyedCircuitBreaker,
)
from failsafe.events import CircuitStorageRestored, CircuitStorageUnavailable
from failsafe.testing import FakeClock, RecordingListener
from tests.conftest import Driver


class SharedStorage(pybreaker.CircuitBreakerStorage):
    """A shared storage in process memory, shaped like Redis, that can be cut."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        super().__init__("shared")
        self.values: dict[str, int | str] = {}
        self.cut = False
        self.ops = 0
        self.clock = clock
        self.log: list[tuple[float, bool]] = []  # (monotonic time, failed) of each operation

    def _touch(self) -> None:
        self.ops += 1
        if self.clock is not None:
            self.log.append((self.clock.monotonic(), self.cut))
        if self.cut:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    @property
    def state(self) -> str:
        self._touch()
        return str(self.values.get("state", "closed"))

    @state.setter
    def state(self, state: str) -> None:
        self._touch()
        self.values["state"] = state

    def increment_counter(self) -> None:
        self._touch()
        self.values["fails"] = int(self.values.get("fails", 0)) + 1

    def reset_counter(self) -> None:
        self._touch()
        self.values["fails"] = 0

    def increment_success_counter(self) -> None:
        self._touch()
        self.values["successes"] = int(self.values.get("successes", 0)) + 1

    def reset_success_counter(self) -> None:
        self._touch()
        self.values["successes"] = 0

    @property
    def counter(self) -> int:
        self._touch()
        return int(self.values.get("fails", 0))

    @property
    def success_counter(self) -> int:
        self._touch()
        return int(self.values.get("successes", 0))

    @property
    def opened_at(self) -> datetime | None:
        self._touch()
        stamp = self.values.get("opened_at")
        return None if stamp is None else datetime.fromtimestamp(int(stamp), UTC)

    @opened_at.setter
    def opened_at(self, when: datetime) -> None:
        self._touch()
        self.values["opened_at"] = int(when.timestamp())

    def open_elsewhere(self, stamp: float) -> None:
        """Another process opened the circuit at wall time ``stamp``."""
        self.values.update(state="open", opened_at=int(stamp), successes=0)


def ok() -> str:
    return "ok"


def boom() -> None:
    raise TimeoutError("the warehouse is slow")


def build(
    storage: SharedStorage, clock: FakeClock, events: RecordingListener, **options: object
) -> CircuitBreaker:
    return CircuitBreaker(
        name="warehouse",
        storage=storage,
        clock=clock,
        listeners=[events],
        trip=ConsecutiveFailures(threshold=2),
        reset_timeout=30,
        storage_retry=5,
        **options,  # type: ignore[arg-type]
    )


def test_building_a_breaker_never_touches_the_storage() -> None:
    """A breaker can be built while its shared storage is down: construction does no I/O."""
    storage = SharedStorage()
    storage.cut = True
    breaker = CircuitBreaker(storage=storage)
    assert storage.ops == 0
    assert breaker.storage is storage


def test_calls_flow_when_the_storage_is_down(driver: Driver) -> None:
    """With the storage failing, calls run and return; one event says the storage is unavailable."""
    storage, clock, events = SharedStorage(), FakeClock(), RecordingListener()
    breaker = build(storage, clock, events)
    storage.cut = True
    assert [driver.call(breaker, ok) for _ in range(3)] == ["ok"] * 3
    assert events.kinds == ["CircuitStorageUnavailable"]
    lost = events.of_type(CircuitStorageUnavailable)[0]
    assert (lost.policy, lost.key, lost.error) == ("warehouse", None, "ConnectionError")
    assert "Connection refused" in lost.message
    assert breaker.storage_available is False
    assert breaker.state is CircuitState.CLOSED


def test_the_storage_is_left_alone_until_storage_retry_passes() -> None:
    """After a failure the storage gets no operation for ``storage_retry`` seconds, then one try."""
    storage, clock, events = SharedStorage(), FakeClock(), RecordingListener()
    breaker = build(storage, clock, events)
    storage.cut = True
    breaker.call(ok)
    tried = storage.ops
    assert tried == 1  # the first read failed; everything after it went to the local state
    clock.advance(4.9)
    for _ in range(10):
        breaker.call(ok)
    with pytest.raises(TimeoutError):
        breaker.call(boom)
    assert storage.ops == tried
    clock.advance(0.1)
    breaker.call(ok)  # retry time: one attempt, which fails again
    assert storage.ops == tried + 1
    breaker.call(ok)
    assert storage.ops == tried + 1  # and another storage_retry of quiet
    assert events.kinds == ["CircuitStorageUnavailable"]  # one event per outage


def test_the_local_state_still_protects_the_dependency(driver: Driver) -> None:
    """During the outage failures are counted locally: the circuit opens and rejects calls."""
    storage, clock, events = SharedStorage(), FakeClock(), RecordingListener()
    breaker = build(storage, clock, events)
    storage.cut = True
    for _ in range(2):
        with pytest.raises(TimeoutError):
            driver.call(breaker, boom)
    ran: list[int] = []
    with pytest.raises(CircuitOpenError) as info:
        driver.call(breaker, lambda: ran.append(1))
    assert ran == []
    assert info.value.retry_after == pytest.approx(30)
    assert events.kinds == ["CircuitStorageUnavailable", "CircuitOpened", "CircuitRejected"]


def test_the_local_state_starts_from_the_last_values_read() -> None:
    """A circuit another process opened stays open here when the storage goes down after."""
    storage, clock, events = SharedStorage(), FakeClock(), RecordingListener()
    breaker = build(storage, clock, events)
    storage.open_elsewhere(clock.time())
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)  # read the open state while the storage answered
    storage.cut = True
    clock.advance(10)
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(ok)
    assert info.value.retry_after == pytest.approx(20)
    clock.advance(20)  # reset_timeout after the opening: a probe, on the local state
    assert breaker.call(ok) == "ok"
    assert breaker.state is CircuitState.CLOSED


def test_a_failure_in_the_middle_of_a_transition_never_reaches_the_caller() -> None:
    """The storage failing between the reads and writes of one transition is absorbed locally."""
    storage, clock, events = SharedStorage(), FakeClock(), RecordingListener()
    breaker = build(storage, clock, events)
    with pytest.raises(TimeoutError):
        breaker.call(boom)

    def cut_then_fail() -> None:
        storage.cut = True  # after the state was read, before the failure is written
        raise TimeoutError("the warehouse is slow")

    with pytest.raises(TimeoutError):
        breaker.call(cut_then_fail)
    assert breaker.state is CircuitState.OPEN  # 1 failure known from the storage + 1 here
    assert events.kinds == ["CircuitStorageUnavailable", "CircuitOpened"]


def test_a_circuit_opened_during_the_outage_is_written_back() -> None:
    """When the storage returns, a circuit that opened locally is written to it for the others."""
    storage, clock, events = SharedStorage(), FakeClock(), RecordingListener()
    breaker = build(storage, clock, events)
    other = build(storage, clock, RecordingListener())  # another process on the same storage
    storage.cut = True
    for _ in range(2):
        with pytest.raises(TimeoutError):
            breaker.call(boom)
    opened_at = clock.time()
    storage.cut = False
    assert other.state is CircuitState.CLOSED  # the others did not learn it yet
    clock.advance(5)
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    restored = events.of_type(CircuitStorageRestored)[0]
    assert (restored.wrote_back, restored.outage) == (True, 5.0)
    assert breaker.storage_available is True
    assert other.state is CircuitState.OPEN
    assert storage.values["opened_at"] == int(opened_at)
    assert events.kinds == [
        "CircuitStorageUnavailable",
        "CircuitOpened",
        "CircuitStorageRestored",
        "CircuitRejected",
    ]
    with pytest.raises(CircuitOpenError) as info:
        other.call(ok)
    assert info.value.retry_after == pytest.approx(25)


def test_otherwise_the_shared_state_is_adopted() -> None:
    """A breaker that stayed closed through the outage takes the shared state as it finds it."""
    storage, clock, events = SharedStorage(), FakeClock(), RecordingListener()
    breaker = build(storage, clock, events)
    storage.cut = True
    with pytest.raises(TimeoutError):
        breaker.call(boom)  # counted locally, closed
    storage.cut = False
    storage.open_elsewhere(clock.time())  # meanwhile another process opened it
    clock.advance(5)
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(ok)
    assert info.value.retry_after == pytest.approx(25)
    assert events.kinds == [
        "CircuitStorageUnavailable",
        "CircuitStorageRestored",
        "CircuitRejected",
    ]
    assert events.of_type(CircuitStorageRestored)[0].wrote_back is False
    assert storage.values.get("fails", 0) == 0  # the local count was dropped, not written


def test_a_failed_restoration_waits_another_interval() -> None:
    """A retry that finds the storage still down keeps the local state and waits again."""
    storage, clock, events = SharedStorage(), FakeClock(), RecordingListener()
    breaker = build(storage, clock, events)
    storage.cut = True
    breaker.call(ok)
    clock.advance(5)
    breaker.call(ok)
    storage.cut = False
    clock.advance(4)
    breaker.call(ok)
    assert breaker.storage_available is False
    clock.advance(1)
    breaker.call(ok)
    assert breaker.storage_available is True
    assert events.kinds == ["CircuitStorageUnavailable", "CircuitStorageRestored"]
    assert events.of_type(CircuitStorageRestored)[0].outage == 10.0


def test_manual_control_and_inspection_work_during_the_outage() -> None:
    """Manual control and inspection never raise while the storage is down."""
    storage, clock, events = SharedStorage(), FakeClock(), RecordingListener()
    breaker = build(storage, clock, events)
    storage.cut = True
    breaker.open()
    assert breaker.state is CircuitState.OPEN
    assert breaker.retry_after == 30.0
    assert breaker.failure_count == 0
    breaker.close()
    assert breaker.current_state == "closed"
    assert events.kinds == ["CircuitStorageUnavailable", "CircuitOpened", "CircuitClosed"]


def test_a_listener_may_use_the_breaker_when_told_of_the_outage() -> None:
    """Storage events are published outside the breaker's lock, so a listener can call it."""
    storage, clock = SharedStorage(), FakeClock()
    seen: list[str] = []

    def listener(event: object) -> None:
        if isinstance(event, CircuitStorageUnavailable):
            breaker.open()  # would deadlock if the lock were held
            seen.append(breaker.current_state)

    breaker = CircuitBreaker(storage=storage, clock=clock, listeners=[listener])
    storage.cut = True
    breaker.call(ok)
    assert seen == ["open"]
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)


def test_threads_meeting_an_outage_all_go_on_and_it_is_reported_once() -> None:
    """Many threads calling as the storage goes down: none fails, one event is emitted."""
    storage, clock, events = SharedStorage(), FakeClock(), RecordingListener()
    breaker = build(storage, clock, events)
    storage.cut = True
    barrier = threading.Barrier(8)
    results: list[object] = []

    def worker() -> None:
        barrier.wait()
        for _ in range(50):
            try:
                results.append(breaker.call(ok))
            except BaseException as exc:  # anything at all would be a bug
                results.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["ok"] * 400
    assert events.kinds == ["CircuitStorageUnavailable"]


def test_keyed_breakers_report_their_key() -> None:
    """Each keyed breaker guards its own storage and names its key in the storage events."""
    clock, events = FakeClock(), RecordingListener()
    storages: dict[object, SharedStorage] = {}

    def factory(key: object) -> SharedStorage:
        storages[key] = SharedStorage()
        storages[key].cut = key == "w1"
        return storages[key]

    keyed = KeyedCircuitBreaker(
        name="warehouse",
        key=lambda: "w1",
        storage_factory=factory,
        clock=clock,
        listeners=[events],
    )
    assert keyed.call(ok) == "ok"
    lost = events.of_type(CircuitStorageUnavailable)[0]
    assert (lost.policy, lost.key) == ("warehouse", "w1")


def test_memory_storage_has_no_guard() -> None:
    """The pybreaker memory storage is used as is: its state is read straight from its fields."""
    storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
    breaker = CircuitBreaker(storage=storage)
    assert breaker._store is storage
    assert breaker._guard is None
    assert breaker.storage_available is True


def test_storage_retry_is_validated() -> None:
    """``storage_retry`` must be a positive number, named in the error."""
    with pytest.raises(ConfigurationError) as info:
        CircuitBreaker(storage_retry=0)
    assert info.value.option == "storage_retry"


# -- clock steps with a shared storage --------------------------------------------------------


def test_a_future_opening_from_another_process_keeps_the_circuit_open_reset_timeout_at_most() -> (
    None
):
    """An opening stamped an hour ahead (a fast clock elsewhere) counts from when it was seen."""
    storage, clock, events = SharedStorage(), FakeClock(), RecordingListener()
    breaker = build(storage, clock, events)
    storage.open_elsewhere(clock.time() + 3600)
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(ok)
    assert info.value.retry_after == 30.0
    clock.advance(29)
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    clock.advance(1)
    assert breaker.call(ok) == "ok"  # the probe, reset_timeout after the stamp was first seen


def test_a_backward_wall_step_does_not_prolong_this_processs_opening() -> None:
    """This process's opening is timed on the monotonic clock while the storage holds its stamp."""
    storage, clock, events = SharedStorage(), FakeClock(), RecordingListener()
    breaker = build(storage, clock, events)
    breaker.open()
    clock.step_wall(-3600)
    clock.advance(30)
    assert breaker.call(ok) == "ok"


def test_a_forward_wall_step_does_not_shorten_this_processs_opening() -> None:
    """A forward wall-clock step leaves this process's open circuit open for reset_timeout."""
    storage, clock, events = SharedStorage(), FakeClock(), RecordingListener()
    breaker = build(storage, clock, events)
    breaker.open()
    clock.step_wall(3600)
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(ok)
    assert info.value.retry_after == 30.0


# -- a state machine: random outages never reach the caller ------------------------------------


class OutageMachine(RuleBasedStateMachine):
    """One breaker on a shared storage that is cut and restored at random, time moving on."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.storage = SharedStorage(self.clock)
        self.events = RecordingListener()
        self.breaker = CircuitBreaker(
            storage=self.storage,
            clock=self.clock,
            listeners=[self.events],
            trip=ConsecutiveFailures(threshold=2),
            reset_timeout=3,
            storage_retry=2,
        )

    @rule(fails=st.booleans(), use_async=st.booleans())
    def call(self, fails: bool, use_async: bool) -> None:
        def fn() -> str:
            if fails:
                raise TimeoutError("slow")
            return "ok"

        async def afn() -> str:
            return fn()

        try:  # a storage error (ConnectionError) would escape these and fail the machine
            if use_async:
                assert asyncio.run(self.breaker.call_async(afn)) == "ok"
            else:
                assert self.breaker.call(fn) == "ok"
        except (TimeoutError, CircuitOpenError):
            pass

    @rule()
    def cut(self) -> None:
        self.storage.cut = True

    @rule()
    def restore(self) -> None:
        self.storage.cut = False

    @precondition(lambda self: not self.storage.cut)
    @rule()
    def another_process_opens_it(self) -> None:
        self.storage.open_elsewhere(self.clock.time())

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 3.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def inspect(self) -> None:
        assert self.breaker.state in set(CircuitState)
        assert self.breaker.retry_after >= 0

    @invariant()
    def storage_events_alternate(self) -> None:
        kinds = [k for k in self.events.kinds if k.startswith("CircuitStorage")]
        expected = ["CircuitStorageUnavailable", "CircuitStorageRestored"] * len(kinds)
        assert kinds == expected[: len(kinds)]
        assert self.breaker.storage_available is (not kinds or kinds[-1] == expected[1])

    @invariant()
    def a_failed_storage_is_left_alone_for_storage_retry(self) -> None:
        last_failure: float | None = None
        for when, failed in self.storage.log:
            if last_failure is not None:  # the operation after a failure is a retry, 2 s on
                assert when >= last_failure + 2, f"storage failed at {last_failure}, used at {when}"
            last_failure = when if failed else None

    @invariant()
    def while_available_the_breaker_reads_the_storage(self) -> None:
        if self.breaker.storage_available and not self.storage.cut:
            assert self.breaker.current_state == self.storage.values.get("state", "closed")


TestOutageMachine = OutageMachine.TestCase
TestOutageMachine.settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None, suppress_health_check=list(HealthCheck)
)
TestOutageMachine.__doc__ = "Random outages of the storage never reach the caller nor wedge it."
