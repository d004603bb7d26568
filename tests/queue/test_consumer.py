"""Consumer and AsyncConsumer over the in-memory broker, on a fake clock.

Reports for review go to a real ErrorDesk (SQLite store) through ``ErrorSink.local``, so a
test sees the record a person would see.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from failsafe import Backoff
from failsafe.errors import (
    AsyncErrorSink,
    ErrorDesk,
    ErrorSink,
    Handlers,
    Query,
    RetryWorker,
    SQLiteStore,
    Status,
)
from failsafe.exceptions import ConfigurationError
from failsafe.queue import (
    AsyncConsumer,
    Consumer,
    ConsumerDied,
    DeliveryLimitWarning,
    Envelope,
    InMemoryBroker,
    Place,
    Redelivery,
    Unrecoverable,
    as_async,
    replay_handler,
)
from failsafe.queue.events import (
    MessageDeadLettered,
    MessageHandled,
    MessageReceived,
    MessageRetried,
    MessageSentForReview,
    RedeliveryScheduled,
)
from failsafe.testing import FakeClock, RecordingListener

QUEUE = "orders.paid"
POLICY = Redelivery(immediate=2, delayed=3, delay=60.0, immediate_backoff=Backoff.constant(0.5))


class OrderNotFound(Exception):
    """The domain's permanent failure, configured as unrecoverable in some tests."""


@attrs.define
class World:
    clock: FakeClock
    broker: InMemoryBroker
    desk: ErrorDesk
    listener: RecordingListener
    is_async: bool

    def consumer(self, handler: Callable[[Envelope], object], **options: Any) -> Any:
        options.setdefault("redelivery", POLICY)
        options.setdefault("clock", self.clock)
        options.setdefault("listeners", [self.listener])
        if self.is_async:

            async def ahandler(message: Envelope) -> object:
                return handler(message)

            sink = AsyncErrorSink.local(self.desk, source="orders")
            return AsyncConsumer(as_async(self.broker), QUEUE, ahandler, errors=sink, **options)
        return Consumer(
            self.broker,
            QUEUE,
            handler,
            errors=ErrorSink.local(self.desk, source="orders"),
            **options,
        )

    def drain(self, consumer: Any) -> int:
        if self.is_async:
            return int(asyncio.run(consumer.process_available()))
        return int(consumer.process_available())

    def publish(self, body: dict[str, Any] | None = None, **fields: Any) -> Envelope:
        message = Envelope(body=json.dumps(body or {"orderId": "o-1"}).encode(), **fields)
        self.broker.publish(QUEUE, message)
        return message

    def records(self) -> list[Any]:
        return list(self.desk.store.find(Query(limit=500)).records)

    def events(self, kind: type) -> list[Any]:
        return [e for e in self.listener.events if isinstance(e, kind)]


@pytest.fixture(params=["sync", "async"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    clock = FakeClock()
    desk = ErrorDesk(SQLiteStore(tmp_path / "errors.db"), clock=clock)
    yield World(
        clock, InMemoryBroker(clock=clock), desk, RecordingListener(), request.param == "async"
    )
    desk.store.close()


class Flaky:
    """A handler that fails with ``error`` the first ``times`` calls, then succeeds."""

    def __init__(self, times: int, error: BaseException | None = None) -> None:
        self.times = times
        self.error = error or ConnectionError("orders service down")
        self.calls: list[str] = []

    def __call__(self, message: Envelope) -> None:
        self.calls.append(message.id)
        if len(self.calls) <= self.times:
            raise self.error


def test_success_acks_once(world: World) -> None:
    """A handled message is acked: gone from the queue, one MessageHandled event."""
    handler = Flaky(0)
    sent = world.publish()
    consumer = world.consumer(handler)
    assert world.drain(consumer) == 1
    assert handler.calls == [sent.id]
    assert world.broker.messages(QUEUE) == []
    assert world.broker.dead_letters(QUEUE) == []
    assert [e.attempt for e in world.events(MessageHandled)] == [1]


def test_immediate_retries_in_process(world: World) -> None:
    """Two transient failures are retried at once (after the backoff), then acked."""
    handler = Flaky(2)
    world.publish()
    consumer = world.consumer(handler)
    world.drain(consumer)
    assert len(handler.calls) == 3
    assert world.clock.sleeps == [0.5, 0.5]
    assert [e.attempt for e in world.events(MessageRetried)] == [2, 3]
    assert {e.error for e in world.events(MessageRetried)} == {"ConnectionError"}
    assert [e.attempt for e in world.events(MessageHandled)] == [3]
    assert world.broker.dead_letters(QUEUE) == []


def test_round_exhausted_goes_to_the_dlq(world: World) -> None:
    """After the round's 3 attempts the message waits in the DLQ for 60 s, counts updated."""
    handler = Flaky(3)
    sent = world.publish()
    consumer = world.consumer(handler)
    world.drain(consumer)
    [letter] = world.broker.dead_letters(QUEUE)
    assert letter.place is Place.DELAYED
    assert letter.due_at == world.clock.time() + 60.0
    assert letter.message.delayed_attempts == 1
    assert letter.message.immediate_attempts == 0
    assert letter.message.first_seen is not None
    assert letter.message.last_error is not None
    assert letter.message.last_error.type == "ConnectionError"
    assert letter.message.last_error.message == "orders service down"
    [scheduled] = world.events(RedeliveryScheduled)
    assert (scheduled.round, scheduled.delay, scheduled.message_id) == (1, 60.0, sent.id)
    assert scheduled.due_at == letter.due_at
    # not due yet: nothing to do
    world.clock.advance(59.0)
    assert world.drain(consumer) == 0
    world.clock.advance(1.0)
    assert world.drain(consumer) == 1
    assert len(handler.calls) == 4  # the 4th call succeeded in round 2
    assert world.broker.dead_letters(QUEUE) == []
    assert world.records() == []


def test_every_round_fails_then_review_and_parking(world: World) -> None:
    """3 rounds of delayed redelivery, then the error sink (needs_review) and the parking queue."""
    handler = Flaky(10**6)
    sent = world.publish({"orderId": "o-7", "status": "paid"})
    consumer = world.consumer(handler)
    world.drain(consumer)
    for _ in range(3):
        world.clock.advance(60.0)
        assert world.drain(consumer) == 1
    assert len(handler.calls) == POLICY.max_attempts == 12
    [letter] = world.broker.dead_letters(QUEUE)
    assert letter.place is Place.PARKED
    assert letter.message.delayed_attempts == 3
    assert letter.message.immediate_attempts == 3
    [record] = world.records()
    assert record.status is Status.NEEDS_REVIEW
    assert record.kind == "queue.orders.paid"
    assert record.correlation_id == sent.id
    assert record.error_type == "ConnectionError"
    assert record.payload["queue"] == QUEUE
    assert record.payload["message"]["id"] == sent.id
    assert json.loads(record.payload["message"]["body"]) == {"orderId": "o-7", "status": "paid"}
    assert "gave up after 3" in record.payload["reason"]
    [reviewed] = world.events(MessageSentForReview)
    assert reviewed.report_id is not None
    assert [e.reason for e in world.events(MessageDeadLettered)] == [reviewed.reason]
    # parked for good: time passing changes nothing
    world.clock.advance(3600.0)
    assert world.drain(consumer) == 0


def test_unrecoverable_goes_straight_to_review(world: World) -> None:
    """`Unrecoverable` skips every retry: one call, a review record, parked."""
    handler = Flaky(1, Unrecoverable("order o-404 not found"))
    world.publish()
    consumer = world.consumer(handler)
    world.drain(consumer)
    assert len(handler.calls) == 1
    assert world.clock.sleeps == []
    [letter] = world.broker.dead_letters(QUEUE)
    assert letter.place is Place.PARKED
    assert letter.message.delayed_attempts == 0
    [record] = world.records()
    assert record.status is Status.NEEDS_REVIEW
    assert record.payload["reason"] == "unrecoverable"
    assert record.error_message == "order o-404 not found"


def test_configured_exception_types_are_unrecoverable(world: World) -> None:
    """Exception types named in ``unrecoverable`` go to review at once too."""
    handler = Flaky(5, OrderNotFound("o-9"))
    world.publish()
    consumer = world.consumer(
        handler, redelivery=attrs.evolve(POLICY, unrecoverable=(OrderNotFound,))
    )
    world.drain(consumer)
    assert len(handler.calls) == 1
    [record] = world.records()
    assert record.error_type == "OrderNotFound"


def test_consumer_deaths_count_as_attempts(world: World) -> None:
    """A message that killed its consumer 3 times is not handled a 4th time in that round."""
    handler = Flaky(0)
    sent = world.publish()
    for _ in range(3):
        assert len(world.broker.receive(QUEUE)) == 1
        world.broker.crash()
    consumer = world.consumer(handler)
    world.drain(consumer)
    assert handler.calls == []  # the round's 3 attempts were spent by the dead consumers
    [letter] = world.broker.dead_letters(QUEUE)
    assert letter.place is Place.DELAYED
    assert letter.message.last_error is not None
    assert letter.message.last_error.type == "failsafe.queue.redelivery.ConsumerDied"
    world.clock.advance(60.0)
    world.drain(consumer)
    assert handler.calls == [sent.id]


def test_one_death_leaves_the_rest_of_the_round(world: World) -> None:
    """After one consumer death, the redelivered copy gets the round's remaining 2 attempts."""
    handler = Flaky(10)
    world.publish()
    world.broker.receive(QUEUE)
    world.broker.crash()
    consumer = world.consumer(handler)
    world.drain(consumer)
    assert len(handler.calls) == 2
    assert [e.attempt for e in world.events(MessageRetried)] == [3]
    [received] = world.events(MessageReceived)
    assert received.deliveries == 2


def test_consumer_died_moves_through_the_rounds() -> None:
    """A consumer's death is not a verdict on the message: it takes the next round."""
    policy = Redelivery()
    assert not policy.is_unrecoverable(ConsumerDied("x"))
    assert policy.is_unrecoverable(Unrecoverable("x"))


def test_malformed_json_body_goes_to_review(world: World) -> None:
    """A handler that calls ``message.json()`` on a non-JSON body gets MalformedMessage: review."""
    calls: list[str] = []

    def handler(message: Envelope) -> None:
        calls.append(message.id)
        message.json()

    world.broker.publish(QUEUE, Envelope(body=b"\xff not json"))
    consumer = world.consumer(handler)
    world.drain(consumer)
    assert len(calls) == 1
    [record] = world.records()
    assert record.error_type == "MalformedMessage"
    assert record.payload["message"]["body_base64"]


def test_review_without_a_sink_still_parks(tmp_path: Path) -> None:
    """With no error sink the message is parked (never dropped)."""
    clock = FakeClock()
    broker = InMemoryBroker(clock=clock)
    broker.publish(QUEUE, Envelope(body=b"{}"))
    consumer = Consumer(broker, QUEUE, Flaky(1, Unrecoverable("no")), clock=clock)
    consumer.process_available()
    [letter] = broker.dead_letters(QUEUE)
    assert letter.place is Place.PARKED


def test_failing_sink_still_parks(world: World) -> None:
    """If the report cannot be recorded, the message is parked all the same."""

    class Broken:
        def report(self, *args: Any, **kwargs: Any) -> str:
            raise OSError("disk full")

    world.publish()
    consumer = Consumer(
        world.broker, QUEUE, Flaky(1, Unrecoverable("no")), errors=Broken(), clock=world.clock
    )
    consumer.process_available()
    [letter] = world.broker.dead_letters(QUEUE)
    assert letter.place is Place.PARKED


def test_big_bodies_are_clipped_in_the_report_not_the_message(world: World) -> None:
    """The review record carries the first 16 KiB of a body; the parked message all of it."""
    big = {"orderId": "o-1", "notes": "x" * 40_000}
    world.publish(big)
    consumer = world.consumer(Flaky(1, Unrecoverable("no")))
    world.drain(consumer)
    [record] = world.records()
    assert record.payload["message"]["body_truncated"] is True
    assert len(record.payload["message"]["body"]) == 16 * 1024
    [letter] = world.broker.dead_letters(QUEUE)
    assert json.loads(letter.message.body) == big


def test_replayed_message_starts_fresh(world: World) -> None:
    """A parked message replayed by a person gets a whole new series of rounds."""
    handler = Flaky(1, Unrecoverable("order not yet created"))
    sent = world.publish()
    consumer = world.consumer(handler)
    world.drain(consumer)
    assert world.broker.replay(QUEUE, [sent.id]) == 1
    world.drain(consumer)
    assert handler.calls == [sent.id, sent.id]
    assert world.broker.dead_letters(QUEUE) == []


def test_handler_exceptions_pass_through_unwrapped(world: World) -> None:
    """The exception recorded is the handler's own, with its message."""
    world.publish()
    consumer = world.consumer(Flaky(10, KeyError("stock")))
    world.drain(consumer)
    [letter] = world.broker.dead_letters(QUEUE)
    assert letter.message.last_error is not None
    assert letter.message.last_error.type == "KeyError"
    assert letter.message.last_error.message == "'stock'"


def test_backoff_delay_per_round(tmp_path: Path) -> None:
    """A Backoff as ``delay`` sets each round's wait from the round number."""
    clock = FakeClock()
    broker = InMemoryBroker(clock=clock)
    policy = Redelivery(
        immediate=0,
        delayed=3,
        delay=Backoff.exponential(10, multiplier=3, maximum=60, jitter="none"),
    )
    broker.publish(QUEUE, Envelope(body=b"{}"))
    listener = RecordingListener()
    consumer = Consumer(
        broker, QUEUE, Flaky(99), redelivery=policy, clock=clock, listeners=[listener]
    )
    consumer.process_available()
    for _ in range(3):
        clock.advance(60.0)
        consumer.process_available()
    delays = [e.delay for e in listener.events if isinstance(e, RedeliveryScheduled)]
    assert delays == [10.0, 30.0, 60.0]


def test_delivery_limit_below_the_round_warns() -> None:
    """A broker delivery limit lower than the attempts per round is warned about."""
    broker = InMemoryBroker(clock=FakeClock(), delivery_limit=2)
    consumer = Consumer(broker, QUEUE, Flaky(0), redelivery=POLICY)
    with pytest.warns(
        DeliveryLimitWarning, match=r"delivery limit \(2\).*attempts per round \(3\)"
    ):
        consumer.process_available()


def test_delivery_limit_high_enough_is_quiet() -> None:
    """No warning when the broker's limit covers a round."""
    broker = InMemoryBroker(clock=FakeClock(), delivery_limit=20)
    Consumer(broker, QUEUE, Flaky(0), redelivery=POLICY).process_available()


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"poll": 0}, "poll"),
        ({"redelivery": "often"}, "redelivery"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], option: str) -> None:
    """Bad consumer options raise ConfigurationError naming the option."""
    with pytest.raises(ConfigurationError, match=option):
        Consumer(InMemoryBroker(), QUEUE, Flaky(0), **options)


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"immediate": -1}, "immediate"),
        ({"delayed": 1.5}, "delayed"),
        ({"delay": -1}, "delay"),
        ({"delay": float("nan")}, "delay"),
        ({"unrecoverable": ("nope",)}, "unrecoverable"),
        ({"immediate_backoff": 0.5}, "immediate_backoff"),
        ({"rng": 7}, "rng"),
    ],
)
def test_bad_policy_is_refused(options: dict[str, Any], option: str) -> None:
    """Bad Redelivery options raise ConfigurationError (or TypeError) naming the option."""
    with pytest.raises((ConfigurationError, TypeError), match=option):
        Redelivery(**options)


def test_bad_queue_name_is_refused() -> None:
    """An empty queue name is refused at construction."""
    with pytest.raises(ConfigurationError, match="queue"):
        Consumer(InMemoryBroker(), "", Flaky(0))


def test_handler_must_be_callable() -> None:
    """A handler that is not callable is refused at construction."""
    with pytest.raises(ConfigurationError, match="handler"):
        Consumer(InMemoryBroker(), QUEUE, "handle")  # type: ignore[arg-type]


# -- run() and stop() ---------------------------------------------------------------------------
@pytest.mark.real_time
def test_run_handles_with_concurrency_and_stops_gracefully() -> None:
    """run() handles messages on several threads at once; stop() lets in-flight ones finish."""
    broker = InMemoryBroker()
    started = threading.Barrier(4, timeout=5)  # three handlers and this test
    finish = threading.Event()
    handled: list[str] = []

    def handler(message: Envelope) -> None:
        started.wait()  # three handlers in flight at once, or this times out
        finish.wait(5)
        handled.append(message.id)

    sent = [Envelope(body=b"{}") for _ in range(3)]
    for m in sent:
        broker.publish(QUEUE, m)
    consumer = Consumer(broker, QUEUE, handler, concurrency=3, poll=0.05)
    runner = threading.Thread(target=consumer.run)
    runner.start()
    started.wait()  # all three handlers are in flight
    consumer.stop()
    finish.set()
    runner.join(5)
    assert not runner.is_alive()
    assert sorted(handled) == sorted(m.id for m in sent)
    assert broker.messages(QUEUE) == []


@pytest.mark.real_time
def test_async_run_with_concurrency_and_graceful_stop() -> None:
    """AsyncConsumer.run() handles several messages at once and stop() lets them finish."""
    broker = InMemoryBroker()
    sent = [Envelope(body=b"{}") for _ in range(3)]
    for m in sent:
        broker.publish(QUEUE, m)
    handled: list[str] = []

    async def main() -> None:
        in_flight = 0
        all_in = asyncio.Event()
        finish = asyncio.Event()

        async def handler(message: Envelope) -> None:
            nonlocal in_flight
            in_flight += 1
            if in_flight == 3:
                all_in.set()
            await finish.wait()
            handled.append(message.id)

        consumer = AsyncConsumer(as_async(broker), QUEUE, handler, concurrency=3, poll=0.05)
        runner = asyncio.create_task(consumer.run())
        await asyncio.wait_for(all_in.wait(), 5)  # three handlers in flight at once
        consumer.stop()
        finish.set()
        await asyncio.wait_for(runner, 5)

    asyncio.run(main())
    assert sorted(handled) == sorted(m.id for m in sent)
    assert broker.messages(QUEUE) == []


@pytest.mark.real_time
def test_async_stop_past_grace_releases_the_message() -> None:
    """A handler still running after ``grace`` is cancelled and its message given back."""
    broker = InMemoryBroker()
    sent = Envelope(body=b"{}")
    broker.publish(QUEUE, sent)

    async def main() -> None:
        started = asyncio.Event()

        async def handler(message: Envelope) -> None:
            started.set()
            await asyncio.Event().wait()  # never finishes

        consumer = AsyncConsumer(as_async(broker), QUEUE, handler, poll=0.05, grace=0.05)
        runner = asyncio.create_task(consumer.run())
        await asyncio.wait_for(started.wait(), 5)
        consumer.stop()
        await asyncio.wait_for(runner, 5)

    asyncio.run(main())
    [back] = broker.receive(QUEUE)
    assert back.message == sent
    assert back.deliveries == 1  # released, not counted as a death


@pytest.mark.real_time
def test_run_keeps_going_when_the_broker_fails() -> None:
    """A receive that raises is retried with backoff; messages flow once it answers again."""

    class Flappy(InMemoryBroker):
        failures = 2

        def receive(self, queue: str, *, limit: int = 1, wait: float = 0.0) -> list[Any]:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("broker restarting")
            return super().receive(queue, limit=limit, wait=wait)

    clock = FakeClock()  # the reconnect pauses run on it: no real sleeping
    broker = Flappy(clock=clock)
    broker.publish(QUEUE, Envelope(body=b"{}"))
    done = threading.Event()
    consumer = Consumer(broker, QUEUE, lambda m: done.set(), clock=clock, poll=0.05)
    runner = threading.Thread(target=consumer.run)
    runner.start()
    assert done.wait(5)
    consumer.stop()
    runner.join(5)
    assert broker.failures == 0
    assert 0 < sum(clock.sleeps) <= 0.1 + 0.2  # two backoff pauses: at most 0.1 s and 0.2 s
    assert broker.messages(QUEUE) == []


def test_a_persons_retry_replays_the_parked_message(tmp_path: Path) -> None:
    """Review -> a person's retry -> the worker replays the message -> the consumer handles it."""
    clock = FakeClock()
    broker = InMemoryBroker(clock=clock)
    desk = ErrorDesk(SQLiteStore(tmp_path / "errors.db"), clock=clock)
    orders: dict[str, str] = {}

    def mark_paid(message: Envelope) -> None:
        order = message.json()["orderId"]
        if order not in orders:
            raise Unrecoverable(f"order {order} not found")
        orders[order] = "paid"

    consumer = Consumer(
        broker, QUEUE, mark_paid, errors=ErrorSink.local(desk, source="orders"), clock=clock
    )
    sent = Envelope(body=b'{"orderId": "o-9"}')
    broker.publish(QUEUE, sent)
    consumer.process_available()
    [record] = desk.find(Query()).records
    assert record.status is Status.NEEDS_REVIEW
    orders["o-9"] = "reserved"  # the warehouse employee found the lost order
    handlers = Handlers()
    handlers.register(record.kind, replay_handler(broker))
    desk.retry(record.id, actor="employee", note="order restored")
    assert RetryWorker(desk, handlers).run_once() == 1
    assert desk.get(record.id).status is Status.RESOLVED
    assert "replayed message" in desk.get(record.id).attempts[-1].detail
    assert consumer.process_available() == 1
    assert orders == {"o-9": "paid"}
    assert broker.dead_letters(QUEUE) == []
    # a second retry finds nothing parked, and says so without failing
    assert "no longer parked" in str(replay_handler(broker)(desk.get(record.id)))
    desk.store.close()


def test_replay_handler_refuses_foreign_records(tmp_path: Path) -> None:
    """A record without a queue and a message id is refused with a clear error."""
    desk = ErrorDesk(SQLiteStore(tmp_path / "errors.db"))
    ErrorSink.local(desk, source="x").report("stock.decrement", "review", payload={"a": 1})
    [record] = desk.find(Query()).records
    with pytest.raises(ValueError, match=r"needs 'queue' and 'message\.id'"):
        replay_handler(InMemoryBroker())(record)
    desk.store.close()
