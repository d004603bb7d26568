"""AsyncConsumer.run on the real RabbitMQ server: every worker receives for itself there."""

from __future__ import annotations

import asyncio
import uuid
from typing import cast

import aio_pika
import pytest

from failsafe.queue import (
    AsyncConsumer,
    Consumer,
    Envelope,
    Place,
    Redelivery,
    Unrecoverable,
    as_blocking,
)
from failsafe.queue.rabbitmq import RabbitMQBroker

pytestmark = [pytest.mark.rabbitmq, pytest.mark.real_time]

URL = "amqp://guest:guest@127.0.0.1:5672/"


async def _delete(names: frozenset[str]) -> None:
    connection = await aio_pika.connect(URL)
    channel = await connection.channel()
    for name in names:
        await channel.queue_delete(name)
    await connection.close()


def test_run_handles_every_message_once_and_stops() -> None:
    """40 messages, 8 workers: each handled once, failures reviewed, nothing left behind."""
    queue = f"consumer.{uuid.uuid4().hex[:10]}"
    seen: list[str] = []

    async def main() -> frozenset[str]:
        broker = RabbitMQBroker(URL, prefetch=8)
        assert broker.concurrent_receive
        try:
            await broker.declare(queue)
            sent = [Envelope(body=f'{{"n": {i}}}'.encode()) for i in range(40)]
            for message in sent:
                await broker.publish(queue, message)
            done = asyncio.Event()

            async def handler(message: Envelope) -> None:
                seen.append(message.id)
                if len(seen) == len(sent):
                    done.set()
                if message.json()["n"] == 7:
                    raise Unrecoverable("order 7 not found")
                await asyncio.sleep(0)  # let the other workers run

            consumer = AsyncConsumer(
                broker, queue, handler, redelivery=Redelivery(), concurrency=8, poll=0.1
            )
            runner = asyncio.create_task(consumer.run())
            await asyncio.wait_for(done.wait(), 20)
            consumer.stop()
            await asyncio.wait_for(runner, 10)  # idle workers are cancelled at once
            assert sorted(seen) == sorted(m.id for m in sent)
            [parked] = await broker.dead_letters(queue)
            assert parked.place is Place.PARKED
            assert parked.message.id == sent[7].id
            assert await broker.receive(queue, limit=10, wait=0.5) == []
            return broker.declared
        finally:
            await broker.aclose()

    declared = asyncio.run(main())
    asyncio.run(_delete(declared))


def test_stop_past_grace_gives_the_message_back() -> None:
    """A handler still busy after ``grace`` is cancelled; its message returns to the queue."""
    queue = f"consumer.{uuid.uuid4().hex[:10]}"

    async def main() -> frozenset[str]:
        broker = RabbitMQBroker(URL)
        try:
            await broker.declare(queue)
            sent = Envelope(body=b'{"n": 1}')
            await broker.publish(queue, sent)
            started = asyncio.Event()

            async def handler(message: Envelope) -> None:
                started.set()
                await asyncio.Event().wait()  # never finishes

            consumer = AsyncConsumer(broker, queue, handler, concurrency=2, grace=0.2)
            runner = asyncio.create_task(consumer.run())
            await asyncio.wait_for(started.wait(), 20)
            consumer.stop()
            await asyncio.wait_for(runner, 10)
            [back] = await broker.receive(queue, wait=5.0)
            assert back.message.id == sent.id
            await broker.ack(back)
            return broker.declared
        finally:
            await broker.aclose()

    declared = asyncio.run(main())
    asyncio.run(_delete(declared))


def test_process_available_on_a_fresh_broker_handles_a_waiting_message() -> None:
    """Right after connecting, ``process_available()`` handles the message already queued.

    It used to return 0: it received from a consumer whose prefetch had not arrived yet.
    """
    queue = f"consumer.{uuid.uuid4().hex[:10]}"

    async def main() -> frozenset[str]:
        publisher = RabbitMQBroker(URL)
        try:
            await publisher.publish(queue, Envelope(body=b'{"n": 1}', id="waiting-1"))
        finally:
            await publisher.aclose()
        seen: list[str] = []

        async def handler(message: Envelope) -> None:
            seen.append(message.id)

        broker = RabbitMQBroker(URL)  # a new connection: nothing prefetched
        try:
            consumer = AsyncConsumer(broker, queue, handler)
            assert await consumer.process_available() == 1
            assert seen == ["waiting-1"]
            assert await consumer.process_available() == 0
            return broker.declared
        finally:
            await broker.aclose()

    declared = asyncio.run(main())
    asyncio.run(_delete(declared))


def test_blocking_process_available_on_a_fresh_broker_handles_what_waits() -> None:
    """The blocking ``Consumer`` over ``as_blocking``: the first call handles all 3 queued."""
    queue = f"consumer.{uuid.uuid4().hex[:10]}"
    publisher = as_blocking(lambda: RabbitMQBroker(URL))
    try:
        sent = [Envelope(body=f'{{"n": {i}}}'.encode()) for i in range(3)]
        for message in sent:
            publisher.publish(queue, message)
    finally:
        publisher.close()
    seen: list[str] = []
    broker = as_blocking(lambda: RabbitMQBroker(URL))
    try:
        consumer = Consumer(broker, queue, lambda message: seen.append(message.id))
        assert consumer.process_available() == 3
        assert seen == [m.id for m in sent]
        declared = cast(RabbitMQBroker, broker.broker).declared
    finally:
        broker.close()
    asyncio.run(_delete(declared))
