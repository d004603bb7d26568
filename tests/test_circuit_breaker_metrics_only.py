"""A metrics-only breaker: it never refuses a call, and its states move as an enforcing one's."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from failsafe import (
    CircuitBreaker,
    CircuitOpenError,
    ConfigurationError,
    FailureRate,
    KeyedCircuitBreaker,
)
from failsafe.events import CircuitRejected
from failsafe.testing import FakeClock, RecordingListener
from tests.conftest import Driver


def _down() -> None:
    raise ConnectionError("down")


def test_it_runs_every_call_and_says_which_it_would_have_refused(driver: Driver) -> None:
    """Open, the call still runs; a CircuitRejected with enforced=False says it would not have."""
    clock, events = FakeClock(), RecordingListener()
    breaker = CircuitBreaker(
        threshold=2, reset_timeout=10, clock=clock, listeners=[events], metrics_only=True
    )
    ran: list[int] = []

    def down() -> None:
        ran.append(1)
        raise ConnectionError

    for _ in range(4):
        with pytest.raises(ConnectionError):
            driver.call(breaker, down)
    assert len(ran) == 4
    rejected = events.of_type(CircuitRejected)
    assert [(e.enforced, e.retry_after) for e in rejected] == [(False, 10.0), (False, 10.0)]
    assert driver.call(breaker, lambda: "ok") == "ok"  # still open: ran, not counted
    assert breaker.failure_count == 2


def test_an_enforcing_breaker_says_enforced() -> None:
    """The usual breaker's rejections carry enforced=True."""
    events = RecordingListener()
    breaker = CircuitBreaker(threshold=1, clock=FakeClock(), listeners=[events])
    with pytest.raises(ConnectionError):
        breaker.call(_down)
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: None)
    assert [e.enforced for e in events.of_type(CircuitRejected)] == [True]


def test_calls_it_would_have_refused_do_not_move_it() -> None:
    """While open, successes do not close it; past reset_timeout a probe decides, as usual."""
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, reset_timeout=5, clock=clock, metrics_only=True)
    with pytest.raises(ConnectionError):
        breaker.call(_down)
    for _ in range(3):
        assert breaker.call(lambda: 1) == 1
    assert breaker.state.value == "open"
    clock.advance(5)
    assert breaker.call(lambda: 2) == 2  # the probe
    assert breaker.state.value == "closed"


def test_the_option_must_be_a_bool() -> None:
    """metrics_only="false" is refused at construction, naming the option."""
    with pytest.raises(ConfigurationError, match="metrics_only"):
        CircuitBreaker(metrics_only="false")  # type: ignore[arg-type]


def test_a_keyed_breaker_gives_it_to_each_key() -> None:
    """KeyedCircuitBreaker(metrics_only=True) never refuses a key's call either."""
    keyed = KeyedCircuitBreaker(threshold=1, key=lambda: "k", metrics_only=True, clock=FakeClock())
    for _ in range(3):
        with pytest.raises(ConnectionError):
            keyed.call(_down)
    assert keyed.get("k").state.value == "open"
    assert keyed.call(lambda: "ran") == "ran"


def test_the_repr_says_so() -> None:
    """describe() tells a reader that this breaker never refuses."""
    assert "metrics only (never refuses a call)" in repr(CircuitBreaker(metrics_only=True))


steps = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.floats(min_value=0.5, max_value=8)),
        st.tuples(st.just("call"), st.booleans()),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(steps=steps, rate=st.booleans(), probes=st.integers(1, 3))
def test_its_states_follow_an_enforcing_breakers(
    steps: list[tuple[str, object]], rate: bool, probes: int
) -> None:
    """For any calls and pauses, a metrics-only breaker is in the enforcing one's state."""
    clocks = FakeClock(), FakeClock()
    options: dict[str, object] = {"reset_timeout": 5, "half_open_max_calls": probes}
    if rate:
        options["trip"] = FailureRate(threshold=0.5, minimum_calls=3, window=10)
    else:
        options["threshold"] = 3
    enforcing = CircuitBreaker(clock=clocks[0], **options)  # type: ignore[arg-type]
    trial = CircuitBreaker(clock=clocks[1], metrics_only=True, **options)  # type: ignore[arg-type]
    for kind, value in steps:
        if kind == "advance":
            assert isinstance(value, float)
            for clock in clocks:
                clock.advance(value)
            continue
        fn = _down if value else (lambda: None)
        refused = False
        try:
            enforcing.call(fn)
        except CircuitOpenError:
            refused = True
        except ConnectionError:
            pass
        try:
            trial.call(fn)
        except ConnectionError:
            assert value  # it ran: only the failing function raises
        assert trial.state == enforcing.state, (kind, value, refused)


def test_the_async_driver_never_refuses_either() -> None:
    """Under call_async the open metrics-only breaker awaits the coroutine."""
    breaker = CircuitBreaker(threshold=1, clock=FakeClock(), metrics_only=True)

    async def down() -> None:
        raise ConnectionError

    async def ok() -> str:
        return "awaited"

    async def main() -> str:
        with pytest.raises(ConnectionError):
            await breaker.call_async(down)
        return await breaker.call_async(ok)

    assert asyncio.run(main()) == "awaited"
    assert breaker.state.value == "open"
