"""PanicProbes: the endpoint to try when every circuit is open, at a bounded rate."""

from __future__ import annotations

from failsafe import KeyedCircuitBreaker
from failsafe.http._panic import PanicProbes
from failsafe.testing import FakeClock


def choose(panic: PanicProbes, breakers: KeyedCircuitBreaker, keys: list[str]) -> str | None:
    """The endpoint a request would send its last resort to (and that request ends)."""
    in_flight, sends = panic.join(breakers, keys)
    if in_flight is None:
        return None
    assert sends
    panic.finish(in_flight)
    return in_flight.key


def _breakers(clock: FakeClock) -> KeyedCircuitBreaker:
    return KeyedCircuitBreaker(threshold=1, reset_timeout=30, clock=clock)


def test_no_choice_while_some_circuit_is_closed() -> None:
    """With one endpoint's circuit closed, nothing panics: the failure was something else."""
    clock = FakeClock()
    breakers = _breakers(clock)
    breakers.get("a").open()
    assert choose(PanicProbes(rate=1, burst=5, clock=clock), breakers, ["a", "b"]) is None


def test_the_endpoint_that_rested_longest_is_chosen() -> None:
    """Every circuit open: the one opened first (nearest to its probe) is tried."""
    clock = FakeClock()
    breakers = _breakers(clock)
    breakers.get("b").open()
    clock.advance(10)
    breakers.get("a").open()
    assert choose(PanicProbes(rate=1, burst=5, clock=clock), breakers, ["a", "b"]) == "b"


def test_the_bucket_bounds_the_requests_and_refills_with_time() -> None:
    """A burst of 3, then one a second at rate 1: a dead cluster gets bounded extra load."""
    clock = FakeClock()
    breakers = _breakers(clock)
    for key in ("a", "b"):
        breakers.get(key).open()
    panic = PanicProbes(rate=1, burst=3, clock=clock)
    chosen = [choose(panic, breakers, ["a", "b"]) for _ in range(5)]
    assert chosen == ["a", "a", "a", None, None]
    clock.advance(1)
    assert choose(panic, breakers, ["a", "b"]) == "a"
    assert choose(panic, breakers, ["a", "b"]) is None
    clock.advance(100)  # the bucket holds at most its burst
    assert [choose(panic, breakers, ["a", "b"]) for _ in range(4)].count("a") == 3


def test_one_last_resort_in_flight_the_others_join_it() -> None:
    """The first request sends (a token spent); the next ones wait for it, spending none."""
    clock = FakeClock()
    breakers = _breakers(clock)
    for key in ("a", "b"):
        breakers.get(key).open()
    panic = PanicProbes(rate=1, burst=1, clock=clock)
    first, sends = panic.join(breakers, ["a", "b"])
    assert first is not None
    assert (first.key, sends) == ("a", True)
    for _ in range(3):
        assert panic.join(breakers, ["a", "b"]) == (first, False)
    assert not first.done.is_set()
    panic.finish(first)
    assert first.done.is_set()
    assert panic.in_flight is None
    assert panic.join(breakers, ["a", "b"]) == (None, False)  # the one token is spent
    clock.advance(1)
    again, sends = panic.join(breakers, ["a", "b"])
    assert again is not None
    assert again is not first
    assert sends


def test_no_last_resort_to_join_while_some_circuit_is_closed() -> None:
    clock = FakeClock()
    breakers = _breakers(clock)
    breakers.get("a").open()
    assert PanicProbes(rate=1, burst=1, clock=clock).join(breakers, ["a", "b"]) == (None, False)
