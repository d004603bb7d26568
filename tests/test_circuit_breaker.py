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
