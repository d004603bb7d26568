"""``python -m bench.queue_bench [--quick] [--markdown]``: failsafe.queue against bare brokers.

Three measures, each with its target:

1. **Consumer throughput on RabbitMQ**: ``N`` messages wait in one quorum queue (declared by
   `RabbitMQBroker`); a bare aio-pika consumer (``basic.qos`` prefetch 32, each message acked
   in its callback) and failsafe's `AsyncConsumer` (the default `Redelivery`, concurrency 32,
   the broker's prefetch 32, a no-op handler) each drain it, taking turns over several rounds;
   the ratio is the median of the per-round ratios. Target: >= 0.8 of the bare consumer.
2. **SQLite broker rate**: ``N`` messages published one by one (each its own transaction),
   then handled by a `Consumer` (no-op handler; each message received, handled under the
   policy and acked). Rate = N / (publish time + consume time). The same with
   ``publish_many`` (one transaction) for comparison. Target: >= 2,000 messages/s.
3. **Redelivery punctuality**: messages are deferred with short real delays (0.3 to 0.7 s);
   a receiver waits for them and records how late each arrived after its due time.
   Target: p99 lateness <= 100 ms on SQLite and on RabbitMQ.

``run(quick)`` returns the lines to print (a header, then Markdown tables).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aio_pika

from failsafe.queue import AsyncConsumer, Consumer, Envelope, Redelivery
from failsafe.queue.rabbitmq import RabbitMQBroker
from failsafe.queue.sqlite import SQLiteBroker

URL = "amqp://guest:guest@127.0.0.1:5672/"
PREFETCH = 32
BODY = b'{"orderId": "o-1", "status": "paid"}'


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


# -- 1. RabbitMQ consumer throughput ----------------------------------------------------------
async def _fill(channel: aio_pika.abc.AbstractChannel, queue: str, n: int) -> None:
    exchange = channel.default_exchange
    batch = 500
    for start in range(0, n, batch):
        await asyncio.gather(
            *(
                exchange.publish(
                    aio_pika.Message(
                        BODY,
                        message_id=uuid.uuid4().hex,
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=queue,
                )
                for _ in range(min(batch, n - start))
            )
        )


async def _bare(connection: aio_pika.abc.AbstractConnection, queue: str, n: int) -> float:
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=PREFETCH)
    q = await channel.get_queue(queue, ensure=False)
    done = asyncio.Event()
    count = 0

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal count
        await message.ack()
        count += 1
        if count == n:
            done.set()

    started = time.perf_counter()
    tag = await q.consume(on_message)
    await done.wait()
    elapsed = time.perf_counter() - started
    await q.cancel(tag)
    await channel.close()
    return elapsed


async def _failsafe(queue: str, n: int) -> float:
    broker = RabbitMQBroker(URL, prefetch=PREFETCH)
    done = asyncio.Event()
    count = 0

    async def handler(message: Envelope) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    consumer = AsyncConsumer(
        broker, queue, handler, redelivery=Redelivery(), concurrency=PREFETCH, poll=0.2
    )
    await broker.connect()
    await broker.declare(queue)
    started = time.perf_counter()
    task = asyncio.create_task(consumer.run())
    await done.wait()  # the n-th message handled (its ack, at most 31 others' too, follow)
    elapsed = time.perf_counter() - started
    consumer.stop()
    await task
    await broker.aclose()
    return elapsed


async def _rabbit_throughput(n: int, rounds: int) -> dict[str, float]:
    queue = f"bench.{uuid.uuid4().hex[:8]}"
    setup = RabbitMQBroker(URL)
    await setup.declare(queue)  # the quorum work queue both consumers read
    connection = await aio_pika.connect(URL)
    channel = await connection.channel(publisher_confirms=True)
    bare_rates: list[float] = []
    fs_rates: list[float] = []
    ratios: list[float] = []
    try:
        for r in range(rounds + 1):  # round 0 warms both up
            order = ["bare", "failsafe"] if r % 2 == 0 else ["failsafe", "bare"]
            rates: dict[str, float] = {}
            for who in order:
                await _fill(channel, queue, n)
                if who == "bare":
                    rates[who] = n / await _bare(connection, queue, n)
                else:
                    rates[who] = n / await _failsafe(queue, n)
            if r == 0:
                continue
            bare_rates.append(rates["bare"])
            fs_rates.append(rates["failsafe"])
            ratios.append(rates["failsafe"] / rates["bare"])
    finally:
        await channel.close()
        cleanup = await connection.channel()
        for name in (queue, f"{queue}.parked"):
            await cleanup.queue_delete(name)
        await connection.close()
        await setup.aclose()
    return {
        "bare": statistics.median(bare_rates),
        "failsafe": statistics.median(fs_rates),
        "ratio": statistics.median(ratios),
    }


# -- 2. SQLite broker rate ------------------------------------------------------------------
def _sqlite_rate(n: int, many: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        broker = SQLiteBroker(Path(folder) / "queue.db")
        queue = "orders.paid"
        broker.declare(queue)
        messages = [Envelope(body=BODY) for _ in range(n)]
        started = time.perf_counter()
        if many:
            broker.publish_many(queue, messages)
        else:
            for message in messages:
                broker.publish(queue, message)
        published = time.perf_counter()
        consumer = Consumer(broker, queue, lambda message: None, concurrency=32)
        handled = consumer.process_available()
        ended = time.perf_counter()
        broker.close()
    if handled != n:
        raise SystemExit(f"SQLite bench: handled {handled} of {n} messages")
    return {
        "publish": n / (published - started),
        "consume": n / (ended - published),
        "total": n / (ended - started),
    }


# -- 3. punctuality --------------------------------------------------------------------------
DELAYS = (0.3, 0.4, 0.5, 0.6, 0.7)


def _sqlite_lateness(per_delay: int) -> list[float]:
    with tempfile.TemporaryDirectory() as folder:
        broker = SQLiteBroker(Path(folder) / "queue.db")
        queue = "punctual"
        broker.declare(queue)
        due: dict[str, float] = {}
        for delay in DELAYS:
            for _ in range(per_delay):
                message = Envelope(body=BODY)
                broker.publish(queue, message, delay=delay)
                due[message.id] = time.time() + delay
        late: list[float] = []
        deadline = time.monotonic() + max(DELAYS) + 5
        while due and time.monotonic() < deadline:
            for delivery in broker.receive(queue, limit=50, wait=0.5):
                late.append(time.time() - due.pop(delivery.message.id))
                broker.ack(delivery)
        broker.close()
    if due:
        raise SystemExit(f"SQLite punctuality: {len(due)} messages never came back")
    return late


async def _rabbit_lateness(per_delay: int) -> list[float]:
    broker = RabbitMQBroker(URL, prefetch=100)
    queue = f"bench.punctual.{uuid.uuid4().hex[:8]}"
    await broker.declare(queue)
    due: dict[str, float] = {}
    for delay in DELAYS:
        for _ in range(per_delay):
            message = Envelope(body=BODY)
            await broker.publish(queue, message, delay=delay)
            due[message.id] = time.time() + delay
    late: list[float] = []
    deadline = time.monotonic() + max(DELAYS) + 5
    while due and time.monotonic() < deadline:
        for delivery in await broker.receive(queue, limit=50, wait=0.5):
            late.append(time.time() - due.pop(delivery.message.id))
            await broker.ack(delivery)
    await broker.aclose()
    connection = await aio_pika.connect(URL)
    channel = await connection.channel()
    for name in [queue, f"{queue}.parked"] + [f"{queue}.delay.{int(d * 1000)}" for d in DELAYS]:
        await channel.queue_delete(name)
    await connection.close()
    if due:
        raise SystemExit(f"RabbitMQ punctuality: {len(due)} messages never came back")
    return late


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def run(quick: bool, markdown: bool = True) -> list[str]:
    """Run every measure; return a header line and Markdown tables."""
    n_rabbit, rounds = (2_000, 2) if quick else (5_000, 9)
    n_sqlite = 2_000 if quick else 10_000
    per_delay = 10 if quick else 40
    started = time.perf_counter()
    rabbit = asyncio.run(_rabbit_throughput(n_rabbit, rounds))
    single = _sqlite_rate(n_sqlite, many=False)
    many = _sqlite_rate(n_sqlite, many=True)
    sqlite_late = _sqlite_lateness(per_delay)
    rabbit_late = asyncio.run(_rabbit_lateness(per_delay))
    elapsed = time.perf_counter() - started

    lines = [
        "### failsafe.queue",
        "",
        f"Queue: aio-pika {aio_pika.__version__}, RabbitMQ on loopback, SQLite"
        f" {__import__('sqlite3').sqlite_version}; RabbitMQ: {rounds} rounds x"
        f" {n_rabbit:,} messages per consumer (prefetch {PREFETCH}); SQLite: {n_sqlite:,}"
        f" messages; punctuality: {per_delay * len(DELAYS)} messages per broker, delays"
        f" {DELAYS[0]}-{DELAYS[-1]} s. Ran in {elapsed:.0f} s.",
        "",
        "| measure | failsafe | reference | result | target |",
        "| --- | --- | --- | --- | --- |",
        f"| RabbitMQ consumer, msg/s | {rabbit['failsafe']:,.0f} | bare aio-pika"
        f" {rabbit['bare']:,.0f} | {rabbit['ratio']:.2f} of it | >= 0.80"
        f" {_verdict(rabbit['ratio'] >= 0.8)} |",
        f"| SQLite publish one by one + consume, msg/s | {single['total']:,.0f} (publish"
        f" {single['publish']:,.0f}, consume {single['consume']:,.0f}) | | | >= 2,000"
        f" {_verdict(single['total'] >= 2000)} |",
        f"| SQLite publish_many + consume, msg/s | {many['total']:,.0f} (publish"
        f" {many['publish']:,.0f}, consume {many['consume']:,.0f}) | | | |",
    ]
    for name, late in (("SQLite", sqlite_late), ("RabbitMQ", rabbit_late)):
        p50, p99, worst = (percentile(late, p) * 1000 for p in (50, 99, 100))
        lines.append(
            f"| {name} redelivery lateness, ms | p50 {p50:.0f}, p99 {p99:.0f}, max"
            f" {worst:.0f} | | | p99 <= 100 {_verdict(p99 <= 100)} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.queue_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer messages and rounds")
    args = parser.parse_args(argv)
    print("\n".join(run(args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
