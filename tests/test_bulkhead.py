"""Bulkhead: a concurrency limit with a bounded queue, for threads and tasks."""

from __future__ import annotations

import asyncio
import threading

import pytest

from failsafe import Bulkhead, BulkheadFull, ConfigurationError, PolicyRejected
from failsafe.events import BulkheadRejected
from failsafe.testing import FakeClock, RecordingListener


def test_full_bulkhead_rejects_at_once() -> None:
    """With every slot busy and no queue, a call is rejected without running."""
    events = RecordingListener()
    bulkhead = Bulkhead(max_concurrent=1, listeners=[events], name="products")
    ran = []

    def inner() -> None:
        ran.append("inner")

    def outer() -> None:
        with pytest.raises(BulkheadFull) as info:
            bulkhead.call(inner)
        assert info.value.bulkhead == "products"
        assert isinstance(info.value, PolicyRejected)

    bulkhead.call(outer)
    assert ran == []
    assert events.kinds == ["BulkheadRejected"]
    assert bulkhead.active == 0


@pytest.mark.real_time
def test_queued_thread_runs_when_a_slot_frees() -> None:
    """A call that finds the bulkhead busy waits in the queue and runs after the first leaves."""
    bulkhead = Bulkhead(max_concurrent=1, max_queued=1)
    inside = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def first() -> None:
        order.append("first-start")
        inside.set()
        assert release.wait(5)
        order.append("first-end")

    t1 = threading.Thread(target=bulkhead.call, args=(first,))
    t1.start()
    assert inside.wait(5)
    t2 = threading.Thread(target=bulkhead.call, args=(lambda: order.append("second"),))
    t2.start()
    while bulkhead.queued == 0:  # wait until the second call is queued
        threading.Event().wait(0.001)
    with pytest.raises(BulkheadFull):  # slot busy and queue full
        bulkhead.call(lambda: order.append("third"))
    release.set()
    t1.join(5)
    t2.join(5)
    assert order == ["first-start", "first-end", "second"]
    assert (bulkhead.active, bulkhead.queued) == (0, 0)


def test_async_waiters_time_out_on_the_clock() -> None:
    """A queued task that waits longer than ``max_wait`` (fake time) is rejected."""
    clock = FakeClock()
    bulkhead = Bulkhead(max_concurrent=1, max_queued=1, max_wait=2, clock=clock)

    async def main() -> None:
        gate = asyncio.Event()

        async def hold() -> None:
            await gate.wait()

        holder = asyncio.create_task(bulkhead.call_async(hold))
        await asyncio.sleep(0)

        async def other() -> str:
            return "ran"

        waiter = asyncio.create_task(bulkhead.call_async(other))
        await asyncio.sleep(0)
        assert bulkhead.queued == 1
        clock.advance(2)
        with pytest.raises(BulkheadFull):
            await waiter
        assert bulkhead.queued == 0
        gate.set()
        await holder
        assert await bulkhead.call_async(other) == "ran"

    asyncio.run(main())
    assert bulkhead.active == 0


def test_async_tasks_are_admitted_in_order() -> None:
    """Queued tasks get slots in arrival order (no barging)."""
    bulkhead = Bulkhead(max_concurrent=1, max_queued=5)
    order: list[int] = []

    async def main() -> None:
        gate = asyncio.Event()

        async def work(i: int) -> None:
            if i == 0:
                await gate.wait()
            order.append(i)

        tasks = [asyncio.create_task(bulkhead.call_async(work, i)) for i in range(5)]
        await asyncio.sleep(0)
        assert (bulkhead.active, bulkhead.queued) == (1, 4)
        gate.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert order == [0, 1, 2, 3, 4]


def test_cancelled_waiter_gives_back_its_place() -> None:
    """A task cancelled while queued leaves the queue and the counters stay right."""
    bulkhead = Bulkhead(max_concurrent=1, max_queued=2)

    async def main() -> None:
        gate = asyncio.Event()

        async def hold() -> None:
            await gate.wait()

        holder = asyncio.create_task(bulkhead.call_async(hold))
        await asyncio.sleep(0)
        waiter = asyncio.create_task(bulkhead.call_async(hold))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert bulkhead.queued == 0
        gate.set()
        await holder

    asyncio.run(main())
    assert (bulkhead.active, bulkhead.queued) == (0, 0)


def test_rejection_event_is_emitted_for_async() -> None:
    """The async driver rejects a full bulkhead with BulkheadFull and an event too."""
    events = RecordingListener()
    bulkhead = Bulkhead(max_concurrent=1, listeners=[events])

    async def main() -> None:
        async def inner() -> None:
            with pytest.raises(BulkheadFull):
                await bulkhead.call_async(asyncio.sleep, 0)

        await bulkhead.call_async(inner)

    asyncio.run(main())
    assert len(events.of_type(BulkheadRejected)) == 1


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"max_concurrent": 0}, "max_concurrent"),
        ({"max_queued": -1}, "max_queued"),
        ({"max_wait": -1}, "max_wait"),
    ],
)
def test_bad_configuration_names_the_option(kwargs: dict[str, int], option: str) -> None:
    """Counts below their minimum fail at construction, naming the option."""
    with pytest.raises(ConfigurationError) as info:
        Bulkhead(**kwargs)  # type: ignore[arg-type]
    assert info.value.option == option


class Interrupted(BaseException):
    """What the test's signal handler raises in the queued thread."""


@pytest.mark.real_time
def test_an_interrupted_queued_thread_gives_back_its_place() -> None:
    """A queued thread interrupted by a raising signal handler leaves the queue; no slot is lost."""
    import os
    import signal

    bulkhead = Bulkhead(max_concurrent=1, max_queued=1)
    inside, release = threading.Event(), threading.Event()

    def holder() -> None:
        inside.set()
        assert release.wait(5)

    def on_signal(signum: int, frame: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGUSR1, on_signal)
    try:
        t1 = threading.Thread(target=bulkhead.call, args=(holder,))
        t1.start()
        assert inside.wait(5)

        def interrupt_when_queued() -> None:
            while bulkhead.queued == 0:
                threading.Event().wait(0.001)
            os.kill(os.getpid(), signal.SIGUSR1)  # handled in the main thread, queued below

        interrupter = threading.Thread(target=interrupt_when_queued)
        interrupter.start()
        with pytest.raises(Interrupted):
            bulkhead.call(lambda: "never")
        interrupter.join(5)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert bulkhead.queued == 0
    release.set()
    t1.join(5)
    assert (bulkhead.active, bulkhead.queued) == (0, 0)
    assert bulkhead.call(lambda: "runs") == "runs"  # the slot came back, not to a dead waiter
