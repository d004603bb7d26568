"""Timeout: pre-emptive for coroutines, cooperative for plain functions, on the fake clock."""

from __future__ import annotations

import asyncio

import pytest

import failsafe
from failsafe import ConfigurationError, Pipeline, Timeout, TimeoutExceeded
from failsafe.events import TimedOut
from failsafe.testing import FakeClock, RecordingListener


def test_coroutine_is_cancelled_at_the_deadline() -> None:
    """An overrunning coroutine is cancelled at the deadline; the caller gets TimeoutExceeded."""
    clock = FakeClock()
    events = RecordingListener()
    reached_end = []

    async def slow() -> str:
        await clock.sleep_async(5)
        reached_end.append(True)
        return "late"

    with pytest.raises(TimeoutExceeded) as info:
        asyncio.run(Timeout(1, clock=clock, listeners=[events]).call_async(slow))
    assert isinstance(info.value, TimeoutError)
    assert info.value.timeout == 1
    assert reached_end == []
    assert clock.monotonic() == 1  # cancelled at the deadline, not after the full sleep
    assert events.of_type(TimedOut)[0].cancelled is True


def test_plain_function_late_result_becomes_timeout() -> None:
    """A plain function runs to its end; a result after the deadline becomes TimeoutExceeded."""
    clock = FakeClock()
    events = RecordingListener()

    def slow() -> str:
        clock.sleep(3)
        return "late"

    with pytest.raises(TimeoutExceeded):
        Timeout(2, clock=clock, listeners=[events]).call(slow)
    assert clock.monotonic() == 3  # it was not interrupted
    assert events.of_type(TimedOut)[0].cancelled is False


def test_plain_function_sees_the_time_left() -> None:
    """Inside a timeout the operation reads its remaining time from the call context."""
    clock = FakeClock()
    seen = []

    def op() -> None:
        clock.sleep(0.5)
        seen.append(failsafe.current_context().remaining())

    Timeout(2, clock=clock).call(op)
    assert seen == [1.5]
    assert failsafe.current_context().remaining() is None  # reset afterwards


def test_nested_timeouts_keep_the_earlier_deadline() -> None:
    """An inner, longer timeout does not extend the outer deadline seen by the operation."""
    clock = FakeClock()
    seen = []
    Pipeline(Timeout(1, clock=clock), Timeout(5, clock=clock)).call(
        lambda: seen.append(failsafe.current_context().remaining())
    )
    assert seen == [1]


def test_in_time_results_pass(driver: object) -> None:
    """A call that finishes in time returns its value through both entry points."""
    from tests.conftest import Driver

    assert isinstance(driver, Driver)
    assert driver.call(Timeout(1, clock=FakeClock()), lambda: 7) == 7


def test_user_timeout_error_is_not_mistaken_for_ours() -> None:
    """A TimeoutError raised by the coroutine itself passes through unchanged."""
    mine = TimeoutError("mine")

    async def fails() -> None:
        raise mine

    with pytest.raises(TimeoutError) as info:
        asyncio.run(Timeout(1, clock=FakeClock()).call_async(fails))
    assert info.value is mine


def test_exception_after_deadline_passes_unchanged() -> None:
    """A plain function that raises after its deadline: the caller gets its own exception."""
    clock = FakeClock()

    def late_failure() -> None:
        clock.sleep(5)
        raise KeyError("x")

    with pytest.raises(KeyError):
        Timeout(1, clock=clock).call(late_failure)


@pytest.mark.real_time
def test_the_real_clock_cancels_a_coroutine() -> None:
    """With the system clock a never-ending coroutine is cancelled after its (1 ms) timeout."""

    async def forever() -> None:
        await asyncio.get_running_loop().create_future()

    with pytest.raises(TimeoutExceeded):
        asyncio.run(Timeout(0.001).call_async(forever))


@pytest.mark.parametrize("seconds", [0, -1, float("nan"), float("inf"), "2", True])
def test_bad_timeout_names_the_option(seconds: object) -> None:
    """A timeout that is not a positive finite number fails at construction."""
    with pytest.raises(ConfigurationError, match="seconds"):
        Timeout(seconds)  # type: ignore[arg-type]


def test_default_timeout_is_thirty_seconds() -> None:
    """`Timeout()` works with no arguments and allows 30 s, as Polly's default."""
    assert Timeout().seconds == 30


def test_finishing_exactly_at_the_deadline_is_late_on_both_drivers(driver: object) -> None:
    """Sync and async agree: an operation that ends exactly at the deadline has timed out."""
    from tests.conftest import Driver

    assert isinstance(driver, Driver)
    clock = FakeClock()
    timeout = Timeout(2, clock=clock)
    if driver.is_async:

        async def exact() -> str:
            await clock.sleep_async(2)
            return "on the dot"

        with pytest.raises(TimeoutExceeded):
            asyncio.run(timeout.call_async(exact))
    else:

        def exact_sync() -> str:
            clock.sleep(2)
            return "on the dot"

        with pytest.raises(TimeoutExceeded):
            timeout.call(exact_sync)
    assert clock.monotonic() == 2
