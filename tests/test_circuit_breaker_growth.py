"""CircuitBreaker(max_reset_timeout=): a short first open period that grows after failed probes."""

from __future__ import annotations

import pytest

from failsafe import (
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    ConfigurationError,
    KeyedCircuitBreaker,
)
from failsafe.events import CircuitOpened
from failsafe.testing import FakeClock, RecordingListener


def _down() -> None:
    raise ConnectionError("down")


def _fail(breaker: CircuitBreaker) -> None:
    with pytest.raises(ConnectionError):
        breaker.call(_down)


def test_each_failed_probe_doubles_the_open_period_up_to_the_cap() -> None:
    """Open periods 2, 4, 8, 10, 10 s while probes fail; a close starts again from 2 s."""
    clock, events = FakeClock(), RecordingListener()
    breaker = CircuitBreaker(
        threshold=1, reset_timeout=2, max_reset_timeout=10, clock=clock, listeners=[events]
    )
    _fail(breaker)
    periods = [breaker.retry_after]
    for _ in range(4):
        clock.advance(breaker.retry_after)
        _fail(breaker)  # the probe fails: open again, for longer
        periods.append(breaker.retry_after)
    assert periods == [2, 4, 8, 10, 10]
    assert [e.reset_timeout for e in events.of_type(CircuitOpened)] == [2, 4, 8, 10, 10]

    clock.advance(10)
    assert breaker.call(lambda: "back") == "back"
    assert breaker.state is CircuitState.CLOSED
    _fail(breaker)
    assert breaker.retry_after == 2  # a close started the growth over


def test_the_grown_period_holds_calls_off_until_it_ends() -> None:
    """After a failed probe the circuit rejects for the grown period, not the first one."""
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, reset_timeout=1, max_reset_timeout=60, clock=clock)
    _fail(breaker)
    clock.advance(1)
    _fail(breaker)  # failed probe: 2 s now
    clock.advance(1)
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(lambda: "up")
    assert info.value.retry_after == 1
    clock.advance(1)
    assert breaker.call(lambda: "up") == "up"


def test_without_a_cap_the_period_stays_constant() -> None:
    """The default (no max_reset_timeout) keeps every open period at reset_timeout."""
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, reset_timeout=3, clock=clock)
    _fail(breaker)
    for _ in range(3):
        clock.advance(3)
        _fail(breaker)
        assert breaker.retry_after == 3


def test_keyed_breakers_grow_per_key() -> None:
    """Each key's breaker counts its own failed probes."""
    clock = FakeClock()
    keyed = KeyedCircuitBreaker(
        key=lambda: "a", threshold=1, reset_timeout=1, max_reset_timeout=8, clock=clock
    )
    a = keyed.get("a")
    b = keyed.get("b")
    _fail(a)
    clock.advance(1)
    _fail(a)
    _fail(b)
    assert (a.retry_after, b.retry_after) == (2, 1)


@pytest.mark.parametrize("value", [1, 0, -1, float("inf"), "10"])
def test_a_bad_cap_names_the_option(value: object) -> None:
    """max_reset_timeout below reset_timeout, not positive or not a number is refused."""
    with pytest.raises(ConfigurationError, match="max_reset_timeout"):
        CircuitBreaker(reset_timeout=2, max_reset_timeout=value)  # type: ignore[arg-type]


def test_describe_says_it_grows() -> None:
    """The repr tells the growth and its cap."""
    text = repr(CircuitBreaker(reset_timeout=2, max_reset_timeout=30))
    assert "doubling after each failed probe, up to 30s" in text


def test_half_open_makes_the_next_call_a_probe_now() -> None:
    """half_open() on an open circuit admits a probe at once; its failure doubles the rest."""
    clock, events = FakeClock(), RecordingListener()
    breaker = CircuitBreaker(
        threshold=1, reset_timeout=5, max_reset_timeout=60, clock=clock, listeners=[events]
    )
    assert breaker.half_open() is False  # closed: nothing to do
    _fail(breaker)
    assert breaker.half_open() is True
    assert breaker.state is CircuitState.HALF_OPEN
    assert events.kinds[-1] == "CircuitHalfOpened"
    _fail(breaker)  # the probe fails
    assert breaker.retry_after == 10
    assert breaker.half_open() is True
    assert breaker.call(lambda: "back") == "back"
    assert breaker.state is CircuitState.CLOSED
