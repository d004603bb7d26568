"""failsafe.testing: the fake clock and the fault helpers behave as documented."""

from __future__ import annotations

import asyncio

import pytest

from failsafe.testing import FakeClock, fail_every, fail_first, with_latency, with_latency_async


def test_fake_clock_records_and_advances() -> None:
    """Sleeping on the fake clock advances both clocks and records the delay."""
    clock = FakeClock(start=10, wall_start=1000)
    clock.sleep(2.5)
    asyncio.run(clock.sleep_async(0.5))
    assert clock.monotonic() == 13
    assert clock.time() == 1003
    assert clock.sleeps == [2.5, 0.5]
    with pytest.raises(ValueError, match="negative"):
        clock.advance(-1)


def test_fake_timeout_leaves_unexpired_blocks_alone() -> None:
    """A fake timeout whose deadline is not reached does not cancel anything."""
    clock = FakeClock()

    async def main() -> str:
        scope = clock.timeout_async(5)
        async with scope:
            await clock.sleep_async(1)
        clock.advance(10)  # the disarmed timer must not fire later
        assert not scope.expired()
        return "done"

    assert asyncio.run(main()) == "done"


def test_fail_first_and_fail_every() -> None:
    """fail_first fails the first n calls; fail_every fails every k-th call."""
    first = fail_first(2, KeyError, returns="v")
    results = []
    for _ in range(4):
        try:
            results.append(first())
        except KeyError:
            results.append("E")
    assert results == ["E", "E", "v", "v"]

    every = fail_every(3, ValueError("x"), wrapped=lambda n: n * 2)
    out = []
    for n in range(6):
        try:
            out.append(every(n))
        except ValueError:
            out.append("E")
    assert out == [0, 2, "E", 6, 8, "E"]
    with pytest.raises(ValueError, match="k must be"):
        fail_every(0)


def test_latency_helpers_take_fake_time() -> None:
    """with_latency and with_latency_async spend fake time before calling through."""
    clock = FakeClock()
    assert with_latency(clock, 2, lambda: "s")() == "s"

    async def answer() -> str:
        return "a"

    assert asyncio.run(with_latency_async(clock, 3, answer)()) == "a"
    assert clock.monotonic() == 5


def test_call_at_fires_when_time_reaches_it_and_not_once_cancelled() -> None:
    """A timer armed with call_at runs as time passes its moment; a cancelled one never runs."""
    from failsafe.testing import FakeClock

    clock = FakeClock()
    rang: list[str] = []
    clock.call_at(2.0, lambda: rang.append("two"))
    cancelled = clock.call_at(1.0, lambda: rang.append("one"))
    cancelled.cancel()
    clock.advance(1.5)
    assert rang == []
    clock.advance(0.5)
    assert rang == ["two"]
    assert clock.monotonic() == 2.0
