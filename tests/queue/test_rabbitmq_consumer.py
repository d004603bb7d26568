"""AsyncConsumer.run on the real RabbitMQ server: every worker receives for itself there."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import pytest

from failsafe.queue import AsyncConsumer, Envelope, Place, Redelivery, Unrecoverable
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
