"""FakeClock.timeout_async behaves exactly as asyncio.timeout: the same scenarios, both clocks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from failsafe.clock import AsyncTimeout
from failsafe.testing import FakeClock

Scope = Callable[[float], AsyncTimeout]
Scenario = Callable[[Scope], Awaitable[Any]]


async def _forever() -> None:
    await asyncio.Event().wait()


async def expires(scope: Scope) -> Any:
    task = asyncio.current_task()
    assert task is not None
    timeout = scope(0)
    try:
        async with timeout:
            await _forever()
    except TimeoutError:
        return ("TimeoutError", timeout.expired(), task.cancelling())
    return "no timeout"


async def body_maps_the_cancel_to_its_own_error(scope: Scope) -> Any:
    task = asyncio.current_task()
    assert task is not None
    seen = []
    try:
        async with scope(0):
            try:
                await _forever()
            except asyncio.CancelledError:
                raise ValueError("mine") from None
    except ValueError as exc:
        seen.append((str(exc), task.cancelling()))
    # the next timeout in the same task must still work
    seen.append(await expires(scope))
    return seen


async def timeout_inside_cancellation_cleanup(scope: Scope) -> Any:
    async def worker() -> Any:
        task = asyncio.current_task()
        assert task is not None
        try:
            await _forever()
        except asyncio.CancelledError:
            try:
                async with scope(0):
                    await _forever()
            except TimeoutError:
                return ("TimeoutError in clean-up", task.cancelling())
            except asyncio.CancelledError:
                return ("CancelledError in clean-up", task.cancelling())
        return "not cancelled"

    task = asyncio.ensure_future(worker())
    await asyncio.sleep(0)
    task.cancel()
    return await task


async def body_finishes_first(scope: Scope) -> Any:
    task = asyncio.current_task()
    assert task is not None
    timeout = scope(0)
    async with timeout:
        value = 1
    await asyncio.sleep(0)  # the pending timeout must not fire afterwards
    await asyncio.sleep(0)
    return (value, timeout.expired(), task.cancelling())


async def body_raises_timeout_error_itself(scope: Scope) -> Any:
    timeout = scope(3600)
    try:
        async with timeout:
            raise TimeoutError("from the body")
    except TimeoutError as exc:
        return (str(exc), timeout.expired())
    return "nothing"


async def cancelled_from_outside(scope: Scope) -> Any:
    async def worker() -> None:
        async with scope(3600):
            await _forever()

    task = asyncio.ensure_future(worker())
    await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return ("CancelledError", task.cancelled())
    return "finished"


async def nested_outer_expires(scope: Scope) -> Any:
    task = asyncio.current_task()
    assert task is not None
    outer, inner = scope(0), scope(3600)
    try:
        async with outer, inner:
            await _forever()
    except TimeoutError:
        return ("TimeoutError", outer.expired(), inner.expired(), task.cancelling())
    return "nothing"


async def nested_inner_expires(scope: Scope) -> Any:
    outer, inner = scope(3600), scope(0)
    caught = []
    async with outer:
        try:
            async with inner:
                await _forever()
        except TimeoutError:
            caught.append("inner")
        await asyncio.sleep(0)
    return (caught, outer.expired(), inner.expired())


SCENARIOS: list[Scenario] = [
    expires,
    body_maps_the_cancel_to_its_own_error,
    timeout_inside_cancellation_cleanup,
    body_finishes_first,
    body_raises_timeout_error_itself,
    cancelled_from_outside,
    nested_outer_expires,
    nested_inner_expires,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
def test_fake_timeout_matches_asyncio_timeout(scenario: Scenario) -> None:
    """The scenario ends the same way under asyncio.timeout and FakeClock.timeout_async."""
    real = asyncio.run(scenario(asyncio.timeout))
    fake = asyncio.run(scenario(FakeClock().timeout_async))
    assert fake == real


def test_the_expected_outcomes_of_the_tricky_scenarios() -> None:
    """Pins what CPython does, so that the comparison above cannot pass by both being wrong."""
    clock = FakeClock()
    assert asyncio.run(timeout_inside_cancellation_cleanup(clock.timeout_async)) == (
        "TimeoutError in clean-up",
        1,
    )
    assert asyncio.run(body_maps_the_cancel_to_its_own_error(clock.timeout_async)) == [
        ("mine", 0),
        ("TimeoutError", True, 0),
    ]


def test_fake_timeout_fires_on_fake_time() -> None:
    """A deadline in the future fires when a fake sleep passes it, and not before."""
    clock = FakeClock()

    async def main() -> Any:
        timeout = clock.timeout_async(2)
        try:
            async with timeout:
                await clock.sleep_async(1.5)
                assert not timeout.expired()
                await clock.sleep_async(10)
        except TimeoutError:
            return clock.monotonic()
        return None

    assert asyncio.run(main()) == 2.0


def test_fake_timeout_fired_by_another_thread_cancels_on_the_loop() -> None:
    """A clock moved from another thread cancels the task through the loop, thread-safely."""
    import threading

    clock = FakeClock()

    async def main() -> bool:
        timeout = clock.timeout_async(5)
        try:
            async with timeout:
                mover = threading.Thread(target=clock.advance, args=(10,))
                mover.start()
                await asyncio.to_thread(mover.join)
                await _forever()
        except TimeoutError:
            return timeout.expired()
        return False

    assert asyncio.run(main()) is True
