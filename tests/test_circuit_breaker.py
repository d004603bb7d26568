"""CircuitBreaker: trip modes, half-open probes, manual control, keyed breakers, pybreaker parts."""

from __future__ import annotations

import pybreaker
import pytest

from failsafe import (
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    ConfigurationError,
    ConsecutiveFailures,
    Failover,
    FailureRate,
    KeyedCircuitBreaker,
    Pipeline,
    PolicyRejected,
)
from failsafe.events import CircuitClosed, CircuitHalfOpened, CircuitOpened, CircuitRejected
from failsafe.testing import FakeClock, RecordingListener
from tests.conftest import Driver


def boom() -> None:
    raise ConnectionError("down")


def ok() -> str:
    return "ok"


def trip(driver: Driver, breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises(ConnectionError):
            driver.call(breaker, boom)


def test_opens_after_consecutive_failures_and_rejects(driver: Driver) -> None:
    """Five failures in a row open the circuit; the next call is rejected without running."""
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, reset_timeout=30)
    trip(driver, breaker, 5)
    assert breaker.state is CircuitState.OPEN
    calls = []
    clock.advance(10)
    with pytest.raises(CircuitOpenError) as info:
        driver.call(breaker, lambda: calls.append(1))
    assert calls == []
    assert info.value.retry_after == pytest.approx(20)
    assert isinstance(info.value, PolicyRejected)


def test_a_success_resets_the_consecutive_count(driver: Driver) -> None:
    """Failures separated by a success never reach the threshold."""
    breaker = CircuitBreaker(trip=ConsecutiveFailures(threshold=3), clock=FakeClock())
    for _ in range(5):
        trip(driver, breaker, 2)
        assert driver.call(breaker, ok) == "ok"
    assert breaker.state is CircuitState.CLOSED
    assert breaker.failure_count == 0


def test_half_open_probe_success_closes(driver: Driver) -> None:
    """After the reset timeout one probe is admitted; its success closes the circuit."""
    clock = FakeClock()
    events = RecordingListener()
    breaker = CircuitBreaker(
        trip=ConsecutiveFailures(threshold=1), reset_timeout=5, clock=clock, listeners=[events]
    )
    trip(driver, breaker, 1)
    clock.advance(5)
    assert driver.call(breaker, ok) == "ok"
    assert breaker.state is CircuitState.CLOSED
    assert [type(e) for e in events.events] == [CircuitOpened, CircuitHalfOpened, CircuitClosed]


def test_half_open_probe_failure_reopens(driver: Driver) -> None:
    """A failed probe opens the circuit again for a full reset timeout."""
    clock = FakeClock()
    breaker = CircuitBreaker(trip=ConsecutiveFailures(threshold=1), reset_timeout=5, clock=clock)
    trip(driver, breaker, 1)
    clock.advance(6)
    trip(driver, breaker, 1)
    assert breaker.state is CircuitState.OPEN
    assert breaker.retry_after == pytest.approx(5)


def test_half_open_admits_a_bounded_number_of_probes() -> None:
    """While probes are in flight, calls beyond ``half_open_max_calls`` are rejected."""
    clock = FakeClock()
    breaker = CircuitBreaker(
        trip=ConsecutiveFailures(threshold=1), reset_timeout=1, half_open_max_calls=2, clock=clock
    )
    breaker.open()
    clock.advance(1)
    rejected: list[float] = []

    def probe(depth: int) -> str:
        if depth < 3:
            try:
                breaker.call(probe, depth + 1)
            except CircuitOpenError as exc:
                rejected.append(exc.retry_after)
        return "ok"

    assert breaker.call(probe, 1) == "ok"
    assert rejected == [0.0]  # probe 1 and 2 admitted (nested), probe 3 rejected
    assert breaker.state is CircuitState.CLOSED


def test_success_threshold_needs_several_probes(driver: Driver) -> None:
    """With ``success_threshold=2`` the circuit stays half-open after one good probe."""
    clock = FakeClock()
    breaker = CircuitBreaker(
        trip=ConsecutiveFailures(threshold=1), reset_timeout=1, success_threshold=2, clock=clock
    )
    trip(driver, breaker, 1)
    clock.advance(1)
    driver.call(breaker, ok)
    assert breaker.state is CircuitState.HALF_OPEN
    driver.call(breaker, ok)
    assert breaker.state is CircuitState.CLOSED


def test_failure_rate_needs_minimum_calls_and_ratio(driver: Driver) -> None:
    """Failure-rate mode opens only at the ratio over at least ``minimum_calls`` calls."""
    clock = FakeClock()
    breaker = CircuitBreaker(
        trip=FailureRate(threshold=0.5, window=10, minimum_calls=4), clock=clock
    )
    trip(driver, breaker, 3)  # 3 of 3 fail, but fewer than 4 calls
    assert breaker.state is CircuitState.CLOSED
    driver.call(breaker, ok)  # 3 of 4: still needs a failure to be recorded to judge
    assert breaker.state is CircuitState.CLOSED
    trip(driver, breaker, 1)  # 4 of 5 = 80%
    assert breaker.state is CircuitState.OPEN


def test_failure_rate_forgets_old_failures(driver: Driver) -> None:
    """Failures older than the window no longer count."""
    clock = FakeClock()
    breaker = CircuitBreaker(
        trip=FailureRate(threshold=0.5, window=10, minimum_calls=4), clock=clock
    )
    trip(driver, breaker, 3)
    clock.advance(11)
    for _ in range(3):
        driver.call(breaker, ok)
    trip(driver, breaker, 1)  # 1 of 4 in the window
    assert breaker.state is CircuitState.CLOSED


def test_result_failures_count_but_are_returned(driver: Driver) -> None:
    """A result matched by ``on_result`` counts as a failure and is still returned."""
    breaker = CircuitBreaker(
        trip=ConsecutiveFailures(threshold=2), on_result=lambda r: r == 503, clock=FakeClock()
    )
    assert driver.call(breaker, lambda: 503) == 503
    assert driver.call(breaker, lambda: 503) == 503
    assert breaker.state is CircuitState.OPEN


def test_unclassified_exceptions_count_neither_way(driver: Driver) -> None:
    """An exception outside ``on`` passes through and leaves the count alone."""
    breaker = CircuitBreaker(on=ConnectionError, trip=ConsecutiveFailures(threshold=2))
    trip(driver, breaker, 1)
    with pytest.raises(KeyError):
        driver.call(breaker, lambda: {}["x"])
    assert breaker.failure_count == 1


def test_manual_open_and_close(driver: Driver) -> None:
    """``open()`` rejects calls at once; ``close()`` lets them flow and forgets failures."""
    events = RecordingListener()
    breaker = CircuitBreaker(clock=FakeClock(), listeners=[events])
    breaker.open()
    with pytest.raises(CircuitOpenError):
        driver.call(breaker, ok)
    breaker.close()
    assert driver.call(breaker, ok) == "ok"
    assert events.kinds == ["CircuitOpened", "CircuitRejected", "CircuitClosed"]
    assert events.of_type(CircuitRejected)[0].retry_after == pytest.approx(30)


def test_pybreaker_listeners_get_state_changes_and_outcomes(driver: Driver) -> None:
    """The pybreaker listener protocol is honoured: state_change, failure, success."""
    seen: list[tuple[str, ...]] = []

    class Spy(pybreaker.CircuitBreakerListener):
        def state_change(self, cb, old_state, new_state):  # type: ignore[no-untyped-def]
            seen.append(("state", old_state.name, new_state.name))

        def failure(self, cb, exc):  # type: ignore[no-untyped-def]
            seen.append(("failure", type(exc).__name__))

        def success(self, cb):  # type: ignore[no-untyped-def]
            seen.append(("success", cb.current_state))

    clock = FakeClock()
    breaker = CircuitBreaker(
        trip=ConsecutiveFailures(threshold=1), reset_timeout=1, clock=clock, listeners=[Spy()]
    )
    trip(driver, breaker, 1)
    clock.advance(1)
    driver.call(breaker, ok)
    assert seen == [  # pybreaker's own order: the failure, then the state change it caused
        ("failure", "ConnectionError"),
        ("state", "closed", "open"),
        ("state", "open", "half-open"),
        ("success", "closed"),
        ("state", "half-open", "closed"),
    ]


def test_uses_the_given_pybreaker_storage() -> None:
    """The state lives in the pybreaker storage passed in, so another breaker can share it."""
    storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
    clock = FakeClock()
    a = CircuitBreaker(storage=storage, clock=clock, trip=ConsecutiveFailures(threshold=2))
    b = CircuitBreaker(storage=storage, clock=clock, trip=ConsecutiveFailures(threshold=2))
    with pytest.raises(ConnectionError):
        a.call(boom)
    with pytest.raises(ConnectionError):
        b.call(boom)
    assert storage.state == "open"
    with pytest.raises(CircuitOpenError):
        a.call(ok)


def test_keyed_breakers_follow_the_failover_target(driver: Driver) -> None:
    """A keyed breaker inside a failover keeps one circuit per target and skips open ones."""
    clock = FakeClock()
    keyed = KeyedCircuitBreaker(trip=ConsecutiveFailures(threshold=1), clock=clock)
    calls: list[str] = []

    def call_target() -> str:
        import failsafe

        target = failsafe.current_context().target
        assert isinstance(target, str)
        calls.append(target)
        if target == "w1":
            raise ConnectionError("w1 down")
        return target

    failover = Failover(["w1", "w2"], policy=Pipeline(keyed))
    assert driver.call(failover, call_target) == "w2"
    assert driver.call(failover, call_target) == "w2"
    assert calls == ["w1", "w2", "w2"]  # the second call skipped w1: its circuit is open
    assert keyed.get("w1").state is CircuitState.OPEN
    assert keyed.get("w2").state is CircuitState.CLOSED
    assert set(keyed.breakers) == {"w1", "w2"}
    assert keyed.get("w1") is keyed.get("w1")


def test_keyed_breaker_without_a_key_says_so() -> None:
    """Outside a failover and without ``key=``, a keyed breaker explains what is missing."""
    with pytest.raises(ConfigurationError, match="key"):
        KeyedCircuitBreaker().call(ok)


def test_keyed_breaker_with_a_key_function() -> None:
    """``key=`` chooses the breaker from anything the caller knows."""
    tenant = ["a"]
    keyed = KeyedCircuitBreaker(key=lambda: tenant[0], trip=ConsecutiveFailures(threshold=1))
    with pytest.raises(ConnectionError):
        keyed.call(boom)
    tenant[0] = "b"
    assert keyed.call(ok) == "ok"
    assert keyed.get("a").state is CircuitState.OPEN


@pytest.mark.parametrize(
    ("build", "option"),
    [
        (lambda: CircuitBreaker(reset_timeout=0), "reset_timeout"),
        (lambda: CircuitBreaker(half_open_max_calls=0), "half_open_max_calls"),
        (lambda: ConsecutiveFailures(threshold=0), "threshold"),
        (lambda: FailureRate(threshold=1.5), "threshold"),
        (lambda: FailureRate(window=-1), "window"),
        (lambda: CircuitBreaker(trip=5), "trip"),  # type: ignore[arg-type]
        (lambda: CircuitBreaker(storage={}), "storage"),  # type: ignore[arg-type]
        (lambda: KeyedCircuitBreaker(reset_timeout=-2), "reset_timeout"),
    ],
)
def test_bad_configuration_names_the_option(build: object, option: str) -> None:
    """Bad breaker options fail at construction, naming the option."""
    with pytest.raises(ConfigurationError) as info:
        build()  # type: ignore[operator]
    assert info.value.option == option


def test_reset_timeout_is_exact_on_the_fake_clock() -> None:
    """Advancing exactly ``reset_timeout`` admits a probe, whatever the clock's fraction."""
    clock = FakeClock()
    clock.advance(7e-7)  # the storage keeps microseconds: this used to round up
    breaker = CircuitBreaker(reset_timeout=30, clock=clock)
    breaker.open()
    clock.advance(30)
    assert breaker.call(ok) == "ok"
    assert breaker.state is CircuitState.CLOSED


def test_failing_pybreaker_listener_never_changes_the_outcome(driver: Driver) -> None:
    """A pybreaker listener that raises is logged; the call's own result or error stands."""

    class Broken(pybreaker.CircuitBreakerListener):
        def failure(self, cb, exc):  # type: ignore[no-untyped-def]
            raise RuntimeError("listener bug")

        def success(self, cb):  # type: ignore[no-untyped-def]
            raise RuntimeError("listener bug")

        def state_change(self, cb, old_state, new_state):  # type: ignore[no-untyped-def]
            raise RuntimeError("listener bug")

    breaker = CircuitBreaker(trip=ConsecutiveFailures(threshold=1), listeners=[Broken()])
    assert driver.call(breaker, ok) == "ok"
    with pytest.raises(ConnectionError):
        driver.call(breaker, boom)
    assert breaker.state is CircuitState.OPEN


def test_keyed_breaker_without_a_key_raises_when_awaited() -> None:
    """``call_async`` of a keyed breaker reports a missing key when awaited, like any error."""
    import asyncio

    async def answer() -> str:
        return "x"

    coro = KeyedCircuitBreaker().call_async(answer)  # building the coroutine does not raise
    with pytest.raises(ConfigurationError, match="key"):
        asyncio.run(coro)


# -- issue 11: a raising on= / on_result= test --------------------------------------------------


def _raising_on(exc: BaseException) -> bool:
    if isinstance(exc, KeyError):
        raise RuntimeError("bug in on=")
    return True


def test_a_raising_on_test_during_a_probe_frees_the_slot(driver: Driver) -> None:
    """When ``on=`` raises during a probe, its error reaches the caller and the circuit reopens."""
    clock = FakeClock()
    breaker = CircuitBreaker(
        trip=ConsecutiveFailures(threshold=1), reset_timeout=5, on=_raising_on, clock=clock
    )
    breaker.open()
    clock.advance(5)
    with pytest.raises(RuntimeError, match="bug in on=") as info:
        driver.call(breaker, lambda: {}["missing"])
    assert isinstance(info.value.__context__, KeyError)  # the call's own error, chained
    assert breaker.state is CircuitState.OPEN  # a failed probe: open again, slot released
    assert breaker.retry_after == 5.0
    clock.advance(5)
    assert driver.call(breaker, ok) == "ok"  # the next probe is admitted and closes it
    assert breaker.state is CircuitState.CLOSED


def test_a_raising_on_result_test_during_a_probe_frees_the_slot(driver: Driver) -> None:
    """When ``on_result=`` raises during a probe, its error reaches the caller; no wedge."""
    clock = FakeClock()
    breaker = CircuitBreaker(
        trip=ConsecutiveFailures(threshold=1),
        reset_timeout=5,
        on_result=lambda r: r["status"] >= 500,
        clock=clock,
    )
    breaker.open()
    clock.advance(5)
    with pytest.raises(TypeError):
        driver.call(breaker, lambda: None)  # None["status"]: the test itself fails
    assert breaker.state is CircuitState.OPEN
    clock.advance(5)
    assert driver.call(breaker, lambda: {"status": 200}) == {"status": 200}
    assert breaker.state is CircuitState.CLOSED


def test_a_raising_test_counts_as_a_failure_when_closed(driver: Driver) -> None:
    """Outside probes too, a call whose test raised is counted as a failure."""
    events = RecordingListener()
    breaker = CircuitBreaker(
        trip=ConsecutiveFailures(threshold=2), on=_raising_on, listeners=[events]
    )
    for _ in range(2):
        with pytest.raises(RuntimeError):
            driver.call(breaker, lambda: {}["missing"])
    assert breaker.state is CircuitState.OPEN
    opened = events.of_type(CircuitOpened)[0]
    assert opened.outcome is not None
    assert isinstance(opened.outcome.exception, RuntimeError)


def test_a_test_interrupted_by_a_base_exception_frees_the_probe() -> None:
    """A test interrupted by a ``BaseException`` judges nothing, yet releases the probe's slot."""
    clock = FakeClock()

    def interrupted(exc: BaseException) -> bool:
        raise KeyboardInterrupt

    breaker = CircuitBreaker(
        trip=ConsecutiveFailures(threshold=1), reset_timeout=5, on=interrupted, clock=clock
    )
    breaker.open()
    clock.advance(5)
    with pytest.raises(KeyboardInterrupt):
        breaker.call(boom)
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.call(ok) == "ok"  # the slot was freed: this probe is admitted
    assert breaker.state is CircuitState.CLOSED


# -- issue 11: an exact failure rate ------------------------------------------------------------


@pytest.mark.parametrize(
    ("threshold", "failures", "calls"),
    [
        *[(0.14, 7, 50), (0.07, 7, 100), (0.28, 7, 25), (0.55, 55, 100), (0.68, 51, 75)],
        *[(0.3, 3, 10), (0.29, 29, 100), (0.1, 1, 10), (1, 4, 4)],  # exact in floats too
    ],
)
def test_a_failure_rate_equal_to_the_threshold_opens(
    driver: Driver, threshold: float, failures: int, calls: int
) -> None:
    """``failures / calls == threshold`` opens the circuit (0.14 * 50 is 7.000000000000001)."""
    breaker = CircuitBreaker(
        trip=FailureRate(threshold=threshold, window=60, minimum_calls=calls), clock=FakeClock()
    )
    for _ in range(calls - failures):
        driver.call(breaker, ok)
    trip(driver, breaker, failures)
    assert breaker.state is CircuitState.OPEN


@pytest.mark.parametrize(
    ("threshold", "failures", "calls"), [(0.14, 6, 50), (0.3, 2, 10), (0.29, 28, 100)]
)
def test_a_failure_rate_below_the_threshold_stays_closed(
    threshold: float, failures: int, calls: int
) -> None:
    """One failure fewer than the threshold's share leaves the circuit closed."""
    breaker = CircuitBreaker(
        trip=FailureRate(threshold=threshold, window=60, minimum_calls=calls), clock=FakeClock()
    )
    for _ in range(calls - failures):
        breaker.call(ok)
    for _ in range(failures):
        with pytest.raises(ConnectionError):
            breaker.call(boom)
    assert breaker.state is CircuitState.CLOSED


# -- issue 11: clock steps (memory storage) -----------------------------------------------------


def test_a_forward_wall_clock_step_does_not_half_open_early(driver: Driver) -> None:
    """In one process the open period is monotonic: a wall step forward does not end it."""
    clock = FakeClock()
    breaker = CircuitBreaker(reset_timeout=30, clock=clock)
    breaker.open()
    clock.step_wall(3600)
    with pytest.raises(CircuitOpenError) as info:
        driver.call(breaker, ok)
    assert info.value.retry_after == 30.0
    clock.advance(30)
    assert driver.call(breaker, ok) == "ok"


def test_a_backward_wall_clock_step_does_not_prolong_the_opening(driver: Driver) -> None:
    """A wall step backward leaves the circuit open ``reset_timeout``, not an hour more."""
    clock = FakeClock()
    breaker = CircuitBreaker(reset_timeout=30, clock=clock)
    breaker.open()
    clock.step_wall(-3600)
    clock.advance(30)
    assert driver.call(breaker, ok) == "ok"
    assert breaker.state is CircuitState.CLOSED


def test_the_storage_still_records_the_wall_clock_opening() -> None:
    """``storage.opened_at`` keeps the wall-clock opening time, for inspection and pybreaker."""
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock)
    breaker.open()
    opened = breaker.storage.opened_at
    assert opened is not None
    assert opened.timestamp() == clock.time()


def test_an_opening_by_another_breaker_on_the_same_memory_storage_is_bounded() -> None:
    """Another breaker's opening is timed on the wall clock, a future stamp counting as now."""
    storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
    clock = FakeClock()
    a = CircuitBreaker(storage=storage, clock=clock, reset_timeout=30)
    b = CircuitBreaker(storage=storage, clock=clock, reset_timeout=30)
    b.open()
    clock.step_wall(-3600)  # the stamp is now an hour in the future
    with pytest.raises(CircuitOpenError) as info:
        a.call(ok)
    assert info.value.retry_after == 30.0
    clock.advance(30)
    assert a.call(ok) == "ok"


# -- issue 11: threshold= -----------------------------------------------------------------------


def test_threshold_is_short_for_consecutive_failures(driver: Driver) -> None:
    """``CircuitBreaker(threshold=3)`` is ``trip=ConsecutiveFailures(threshold=3)``."""
    breaker = CircuitBreaker(threshold=3, clock=FakeClock())
    assert breaker.trip == ConsecutiveFailures(threshold=3)
    trip(driver, breaker, 2)
    assert breaker.state is CircuitState.CLOSED
    trip(driver, breaker, 1)
    assert breaker.state is CircuitState.OPEN


def test_without_threshold_or_trip_the_default_is_five_in_a_row() -> None:
    """With neither option the breaker opens after 5 consecutive failures."""
    breaker = CircuitBreaker()
    assert breaker.trip == ConsecutiveFailures(threshold=5)
    assert breaker.threshold is None


def test_without_storage_each_breaker_gets_a_memory_storage_of_its_own() -> None:
    """``storage=None`` (the default) gives each breaker a new pybreaker memory storage."""
    import pybreaker

    first, second = CircuitBreaker(), CircuitBreaker(storage=None)
    assert isinstance(first.storage, pybreaker.CircuitMemoryStorage)
    assert isinstance(second.storage, pybreaker.CircuitMemoryStorage)
    assert first.storage is not second.storage
    assert first.storage_available


@pytest.mark.parametrize(
    "trip_option", [ConsecutiveFailures(threshold=5), ConsecutiveFailures(), FailureRate()]
)
def test_threshold_and_trip_together_are_refused(trip_option: object) -> None:
    """Giving ``threshold`` and an explicit ``trip`` (even an equal one) names ``threshold``."""
    with pytest.raises(ConfigurationError) as info:
        CircuitBreaker(threshold=5, trip=trip_option)  # type: ignore[arg-type]
    assert info.value.option == "threshold"
    assert "trip" in str(info.value)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "5"])
def test_a_bad_threshold_names_the_option(bad: object) -> None:
    """``threshold`` must be an integer >= 1."""
    with pytest.raises(ConfigurationError) as info:
        CircuitBreaker(threshold=bad)  # type: ignore[arg-type]
    assert info.value.option == "threshold"


def test_keyed_breakers_accept_threshold() -> None:
    """``KeyedCircuitBreaker(threshold=2)`` gives each key's breaker that trip."""
    keyed = KeyedCircuitBreaker(key=lambda: "a", threshold=2)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            keyed.call(boom)
    assert keyed.get("a").state is CircuitState.OPEN
    with pytest.raises(ConfigurationError) as info:
        KeyedCircuitBreaker(threshold=2, trip=FailureRate())
    assert info.value.option == "threshold"
