"""What a consumer tells the gauges: in_flight, running, dlq_depth, and the registry."""

from __future__ import annotations

import asyncio
import gc
import logging
import queue as queue_module
import threading
import uuid
from typing import Any

import pytest

from failsafe import _registry
from failsafe.exceptions import ConfigurationError
from failsafe.queue import (
    AsyncConsumer,
    BrokerUnavailable,
    Consumer,
    Envelope,
    InMemoryBroker,
    Redelivery,
    Unrecoverable,
    as_async,
)
from failsafe.queue.broker import COUNT_LIMIT, DeadLetterCount, DeadLetterFilter
from failsafe.testing import FakeClock

QUEUE = "orders.paid"
SECRET = "amqp://admin:hunter2@broker/"  # text a broker error may hold: never logged


def _lost(message: Envelope) -> None:
    raise Unrecoverable("order not found")


async def _alost(message: Envelope) -> None:
    raise Unrecoverable("order not found")


def test_consumers_are_registered_with_their_name_and_queue() -> None:
    """Both consumers are listed by the registry, by name and queue, until dropped."""
    broker = InMemoryBroker()
    name = f"payments-{uuid.uuid4().hex[:8]}"
    sync = Consumer(broker, QUEUE, _lost, name=name)
    asynchronous = AsyncConsumer(as_async(broker), "refunds", _alost, name="refunds-worker")
    listed = _registry.registered()
    assert sync in listed
    assert asynchronous in listed
    assert (sync.name, sync.queue) == (name, QUEUE)
    assert (asynchronous.name, asynchronous.queue) == ("refunds-worker", "refunds")
    assert (sync.in_flight, sync.running, sync.dlq_depth) == (0, False, None)
    assert (asynchronous.in_flight, asynchronous.running, asynchronous.dlq_depth) == (
        0,
        False,
        None,
    )
    del sync, listed
    gc.collect()
    assert [c for c in _registry.registered() if getattr(c, "name", None) == name] == []


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"dlq_refresh": 0}, "dlq_refresh"),
        ({"dlq_refresh": -1.0}, "dlq_refresh"),
        ({"dlq_refresh": "30"}, "dlq_refresh"),
        ({"dlq_refresh": float("nan")}, "dlq_refresh"),
        ({"name": ""}, "name"),
        ({"name": 7}, "name"),
    ],
)
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_bad_options_are_refused_by_name(
    options: dict[str, Any], option: str, is_async: bool
) -> None:
    """A bad ``dlq_refresh`` or ``name`` is a ConfigurationError naming it, at construction."""
    broker = InMemoryBroker()

    def build() -> object:
        if is_async:
            return AsyncConsumer(as_async(broker), QUEUE, _alost, **options)
        return Consumer(broker, QUEUE, _lost, **options)

    with pytest.raises(ConfigurationError) as raised:
        build()
    assert raised.value.option == option


def test_in_flight_counts_handlers_that_are_running() -> None:
    """While two handlers block, in_flight is 2 and run() is running; then 0, stopped, started."""
    broker = InMemoryBroker(clock=FakeClock())
    started = threading.Semaphore(0)
    release = threading.Event()

    def handler(message: Envelope) -> None:
        started.release()
        assert release.wait(10)

    consumer = Consumer(broker, QUEUE, handler, concurrency=2, poll=0.05, clock=broker.clock)
    for n in range(3):
        broker.publish(QUEUE, Envelope(body=b"{}", id=f"m{n}"))
    assert not consumer.started
    runner = threading.Thread(target=consumer.run)
    runner.start()
    try:
        assert started.acquire(timeout=10)
        assert started.acquire(timeout=10)
        assert consumer.running
        assert consumer.in_flight == 2
    finally:
        release.set()
        assert started.acquire(timeout=10)  # the third message, once a slot freed
        consumer.stop()
        runner.join(10)
    assert not runner.is_alive()
    assert (consumer.in_flight, consumer.running, consumer.started) == (0, False, True)
    assert broker.messages(QUEUE) == []


def test_async_in_flight_counts_handlers_that_are_running() -> None:
    """An AsyncConsumer's in_flight counts handlers awaiting; running spans run()."""
    clock = FakeClock()
    broker = InMemoryBroker(clock=clock)
    for n in range(2):
        broker.publish(QUEUE, Envelope(body=b"{}", id=f"m{n}"))

    async def main() -> None:
        started = asyncio.Semaphore(0)
        release = asyncio.Event()

        async def handler(message: Envelope) -> None:
            started.release()
            await release.wait()

        consumer = AsyncConsumer(
            as_async(broker), QUEUE, handler, concurrency=2, poll=0.05, clock=clock
        )
        assert not consumer.started
        runner = asyncio.create_task(consumer.run())
        await started.acquire()
        await started.acquire()
        assert consumer.running
        assert consumer.started
        assert consumer.in_flight == 2
        release.set()
        consumer.stop()
        await runner
        assert (consumer.in_flight, consumer.running, consumer.started) == (0, False, True)

    asyncio.run(main())
    assert broker.messages(QUEUE) == []


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_dlq_depth_is_counted_at_most_every_dlq_refresh(is_async: bool) -> None:
    """dlq_depth is counted at the first drain, then again only once dlq_refresh has passed."""
    clock = FakeClock()
    broker = InMemoryBroker(clock=clock)
    consumer: Any = (
        AsyncConsumer(as_async(broker), QUEUE, _alost, clock=clock, dlq_refresh=30.0)
        if is_async
        else Consumer(broker, QUEUE, _lost, clock=clock, dlq_refresh=30.0)
    )

    def drain() -> None:
        if is_async:
            asyncio.run(consumer.process_available())
        else:
            consumer.process_available()

    assert consumer.dlq_depth is None
    broker.publish(QUEUE, Envelope(body=b"{}"))
    drain()  # counted before handling: nothing parked yet
    assert consumer.dlq_depth == 0
    assert len(broker.dead_letters(QUEUE)) == 1
    clock.advance(29.0)
    drain()
    assert consumer.dlq_depth == 0  # not yet due: the last count stands
    clock.advance(1.0)
    drain()
    assert consumer.dlq_depth == 1


class CountingBroker(InMemoryBroker):
    """An in-memory broker that reports each count, and can be made to fail them."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.counts: queue_module.Queue[int] = queue_module.Queue()
        self.calls: list[tuple[DeadLetterFilter | None, int]] = []
        self.failing = False

    def count_dead_letters(
        self, queue: str, *, where: DeadLetterFilter | None = None, at_most: int = COUNT_LIMIT
    ) -> DeadLetterCount:
        self.calls.append((where, at_most))
        if self.failing:
            raise BrokerUnavailable(f"cannot reach {SECRET}")
        count = super().count_dead_letters(queue, where=where, at_most=at_most)
        self.counts.put(count.parked)
        return count


def test_dlq_depth_counts_parked_messages_only_bounded() -> None:
    """The count asks for parked messages only, bounded, and ignores delayed ones."""
    clock = FakeClock()
    broker = CountingBroker(clock=clock)
    broker.publish(QUEUE, Envelope(body=b"{}", id="later"), delay=60.0)
    consumer = Consumer(broker, QUEUE, _lost, clock=clock)
    consumer.process_available()
    assert consumer.dlq_depth == 0
    assert broker.calls == [(DeadLetterFilter(place="parked"), COUNT_LIMIT)]


def test_run_refreshes_dlq_depth_on_the_consumers_clock() -> None:
    """run() counts when it starts and again each time dlq_refresh passes on its clock."""
    clock = FakeClock()
    broker = CountingBroker(clock=clock)
    consumer = Consumer(broker, QUEUE, _lost, poll=0.01, clock=clock, dlq_refresh=30.0)
    runner = threading.Thread(target=consumer.run)
    runner.start()
    try:
        assert broker.counts.get(timeout=10) == 0
        broker.publish(QUEUE, Envelope(body=b"{}"))
        clock.advance(30.0)
        assert broker.counts.get(timeout=10) in (0, 1)  # the message may not be parked yet
        while consumer.dlq_depth != 1:
            clock.advance(30.0)
            broker.counts.get(timeout=10)
    finally:
        consumer.stop()
        runner.join(10)
    assert consumer.dlq_depth == 1
    assert not runner.is_alive()


def test_a_failing_count_keeps_the_last_value_and_logs_its_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failed count leaves dlq_depth as it was; the debug log names the type, not the text."""
    clock = FakeClock()
    broker = CountingBroker(clock=clock)
    broker.publish(QUEUE, Envelope(body=b"{}"))
    consumer = Consumer(broker, QUEUE, _lost, clock=clock, dlq_refresh=10.0)
    consumer.process_available()
    clock.advance(10.0)
    consumer.process_available()
    assert consumer.dlq_depth == 1
    broker.failing = True
    clock.advance(10.0)
    with caplog.at_level(logging.DEBUG, logger="failsafe.queue"):
        consumer.process_available()
    assert consumer.dlq_depth == 1
    [record] = [r for r in caplog.records if "parked messages" in r.getMessage()]
    assert record.levelno == logging.DEBUG
    assert "BrokerUnavailable" in record.getMessage()
    assert SECRET not in caplog.text


def test_dlq_refresh_none_never_counts() -> None:
    """With dlq_refresh=None the broker is never asked and dlq_depth stays None."""
    clock = FakeClock()
    broker = CountingBroker(clock=clock)
    broker.publish(QUEUE, Envelope(body=b"{}"))
    consumer = Consumer(broker, QUEUE, _lost, clock=clock, dlq_refresh=None)
    consumer.process_available()
    clock.advance(3600.0)
    consumer.process_available()
    assert consumer.dlq_depth is None
    assert broker.calls == []


@pytest.mark.rabbitmq
@pytest.mark.real_time
def test_rabbitmq_consumer_refreshes_dlq_depth_while_running() -> None:
    """On RabbitMQ (workers pulling), run() counts the parking queue every dlq_refresh."""
    import aio_pika

    from failsafe.queue.rabbitmq import RabbitMQBroker

    url = "amqp://guest:guest@127.0.0.1:5672/"
    queue = f"gauges.{uuid.uuid4().hex[:10]}"

    class Counting(RabbitMQBroker):
        """The RabbitMQ adapter, saying when a count found the parked message."""

        found = asyncio.Event()

        async def count_dead_letters(
            self, queue: str, *, where: DeadLetterFilter | None = None, at_most: int = COUNT_LIMIT
        ) -> DeadLetterCount:
            count = await super().count_dead_letters(queue, where=where, at_most=at_most)
            if count.parked == 1:
                self.found.set()
            return count

    async def main() -> frozenset[str]:
        broker = Counting(url)
        try:
            await broker.declare(queue)
            handled = asyncio.Event()

            async def handler(message: Envelope) -> None:
                handled.set()
                raise Unrecoverable("order not found")

            consumer = AsyncConsumer(
                broker, queue, handler, redelivery=Redelivery(), poll=0.1, dlq_refresh=0.05
            )
            assert broker.concurrent_receive
            runner = asyncio.create_task(consumer.run())
            await broker.publish(queue, Envelope(body=b"{}"))
            await asyncio.wait_for(handled.wait(), 10)
            await asyncio.wait_for(broker.found.wait(), 10)
            assert consumer.dlq_depth == 1
            assert consumer.running
            consumer.stop()
            await asyncio.wait_for(runner, 10)
            assert not consumer.running
            return broker.declared
        finally:
            await broker.aclose()

    declared = asyncio.run(main())

    async def delete() -> None:
        connection = await aio_pika.connect(url)
        channel = await connection.channel()
        for name in declared:
            await channel.queue_delete(name)
        await connection.close()

    asyncio.run(delete())
