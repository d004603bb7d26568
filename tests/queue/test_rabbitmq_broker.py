"""The broker contract, and the RabbitMQ adapter's own promises, on the real server.

These tests need the RabbitMQ server at 127.0.0.1:5672 (guest/guest). They never skip: if
the server cannot be reached they fail, saying so. Every queue a test declares is deleted
at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any, cast

import aio_pika
import attrs
import pytest

import failsafe.queue.rabbitmq
from failsafe.exceptions import ConfigurationError
from failsafe.queue import (
    AsyncBroker,
    BlockingView,
    Broker,
    BrokerError,
    BrokerUnavailable,
    Envelope,
    ErrorInfo,
    NoSuchQueue,
    Place,
    SettleConflict,
    as_blocking,
)
from failsafe.queue.broker import DeadLetterCount, DeadLetterFilter, UnlistedDelayed
from failsafe.queue.rabbitmq import RabbitMQBroker, _channel_open
from failsafe.testing import FakeClock
from tests.queue.broker_contract import BrokerContract

HOST, PORT = "127.0.0.1", 5672
URL = f"amqp://guest:guest@{HOST}:{PORT}/"

pytestmark = [pytest.mark.rabbitmq, pytest.mark.real_time]


@pytest.fixture(scope="module", autouse=True)
def _rabbitmq_is_up() -> None:
    """Fail (never skip) every test here when the server is not there."""
    try:
        socket.create_connection((HOST, PORT), timeout=3).close()
    except OSError as exc:
        pytest.fail(
            f"RabbitMQ is not reachable at {HOST}:{PORT} ({exc}): these tests need the real "
            "server running (guest/guest)",
            pytrace=False,
        )


async def _delete_queues(names: Iterable[str]) -> None:
    names = sorted(set(names))
    if not names:
        return
    connection = await aio_pika.connect(URL)
    try:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)
    finally:
        await connection.close()


def _name(prefix: str = "rmq") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


# -- the contract --------------------------------------------------------------------------
@pytest.mark.rabbitmq
@pytest.mark.real_time
class TestRabbitMQBroker(BrokerContract):
    """The shared contract, on the real server (delays on RabbitMQ's TTL timers)."""

    real_time = True
    lists_delayed = False

    @pytest.fixture
    def broker(self) -> Iterator[Broker]:
        self._views: list[BlockingView] = []
        broker = self._open()
        yield broker
        names: set[str] = set()
        for view in self._views:
            view.close()
            names |= cast(RabbitMQBroker, view.broker).declared
        asyncio.run(_delete_queues(names))

    def _open(self) -> BlockingView:
        view = as_blocking(lambda: RabbitMQBroker(URL))
        self._views.append(view)
        return view

    def elapse(self, broker: Broker, seconds: float) -> None:
        time.sleep(seconds)

    def lose_consumer(self, broker: Broker) -> Broker:
        broker.close()  # the connection closes with the deliveries unacknowledged
        return self._open()


# -- the adapter's own promises ------------------------------------------------------------
class Session:
    """Brokers and raw aio-pika connections opened by one test, and its queues, cleaned up."""

    def __init__(self) -> None:
        self.brokers: list[RabbitMQBroker] = []
        self.connections: list[aio_pika.abc.AbstractConnection] = []
        self.queues: set[str] = set()

    def broker(self, url: str = URL, **options: Any) -> RabbitMQBroker:
        broker = RabbitMQBroker(url, **options)
        self.brokers.append(broker)
        return broker

    async def raw(self) -> aio_pika.abc.AbstractChannel:
        connection = await aio_pika.connect(URL)
        self.connections.append(connection)
        return await connection.channel()

    def queue(self) -> str:
        name = _name()
        self.queues |= {name, f"{name}.parked"}
        return name

    async def close_brokers(self) -> None:
        for broker in self.brokers:
            await broker.aclose()
            self.queues |= broker.declared

    async def close(self) -> None:
        await self.close_brokers()
        for connection in self.connections:
            await connection.close()
        await _delete_queues(self.queues)


def run(test: Callable[[Session], Coroutine[Any, Any, None]]) -> None:
    """Run an async test body with a session, cleaning up after it (pass or fail)."""

    async def main() -> None:
        session = Session()
        try:
            await asyncio.wait_for(test(session), 15.0)
        finally:
            await session.close()

    asyncio.run(main())


def test_plain_aio_pika_message_is_an_envelope() -> None:
    """A message with no failsafe headers (and maybe no message_id) reads as an envelope."""

    async def body(s: Session) -> None:
        queue = s.queue()
        broker = s.broker()
        assert isinstance(broker, AsyncBroker)
        await broker.declare(queue)
        channel = await s.raw()
        await channel.default_exchange.publish(
            aio_pika.Message(b"plain", headers={"tenant": "shop", "n": 5, "ok": True}),
            routing_key=queue,
        )
        await channel.default_exchange.publish(
            aio_pika.Message(b"{}", message_id="m-7", content_type="application/json"),
            routing_key=queue,
        )
        first, second = await _take(broker, queue, 2)
        plain = first.message
        assert plain.body == b"plain"
        assert len(plain.id) == 32
        assert plain.content_type == "application/octet-stream"
        assert dict(plain.headers) == {"tenant": "shop", "n": "5", "ok": "true"}
        assert (plain.immediate_attempts, plain.delayed_attempts) == (0, 0)
        assert plain.first_seen is None
        assert plain.last_error is None
        assert first.deliveries == 1
        assert (second.message.id, second.message.content_type) == ("m-7", "application/json")
        # the derived id is stable: the redelivered copy has the same one
        await broker.release(first)
        [again] = await _take(broker, queue, 1)
        assert again.message.id == plain.id
        assert again.deliveries == 2  # RabbitMQ 3.10 counts the requeue
        # deferring writes the derived id as its message_id; counts travel in headers
        later = attrs.evolve(again.message, delayed_attempts=1, first_seen=1_700_000_000.25)
        await broker.defer(again, later, 0.05)
        [back] = await _take(broker, queue, 1)
        assert back.message == later
        assert back.deliveries == 1

    run(body)


class Proxy:
    """A TCP proxy in front of RabbitMQ whose connections can be cut (a network drop)."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(HOST, PORT)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def drop(self) -> None:
        """Cut every connection going through (new ones still get through)."""
        writers, self._writers = self._writers, []
        for writer in writers:
            writer.transport.abort()

    async def close(self) -> None:
        self.drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def test_redelivery_after_a_reconnect_is_counted() -> None:
    """The network drops: the old delivery is stale, the message comes back counted."""

    async def body(s: Session) -> None:
        proxy = Proxy()
        await proxy.start()
        try:
            queue = s.queue()
            url = f"amqp://guest:guest@{HOST}:{proxy.port}/"
            broker = s.broker(url, reconnect_interval=0.2)
            await broker.declare(queue)
            sent, waiting = Envelope(body=b"x"), Envelope(body=b"y")
            await broker.publish(queue, sent)
            await broker.publish(queue, waiting)
            [held] = await _take(broker, queue, 1)
            assert held.deliveries == 1
            buffer = broker._consumers[queue].buffer
            for _ in range(100):  # let the second one arrive in the local buffer
                if buffer.qsize():
                    break
                await asyncio.sleep(0.01)
            assert buffer.qsize() == 1
            proxy.drop()
            for _ in range(500):  # until the client has noticed (the channels are closed)
                if not _channel_open(held.token.message):
                    break
                await asyncio.sleep(0.01)
            # the buffered copy is stale (its channel died): skipped; both come back, counted
            again = await _take(broker, queue, 2, wait=10.0)
            assert sorted(d.message.id for d in again) == sorted([sent.id, waiting.id])
            assert all(d.deliveries >= 2 for d in again)
            with pytest.raises(SettleConflict):
                await broker.ack(held)
            for delivery in again:
                await broker.ack(delivery)  # the conflict left the channel open
            await broker.publish(queue, Envelope(body=b"after"))
            [after] = await _take(broker, queue, 1)
            assert after.message.body == b"after"
            await broker.ack(after)
        finally:
            await s.close_brokers()
            await proxy.close()

    run(body)


def test_queue_with_other_arguments_is_refused_by_name() -> None:
    """An existing queue with other arguments is a BrokerError naming it; the broker carries on."""

    async def body(s: Session) -> None:
        queue = s.queue()
        channel = await s.raw()
        await channel.declare_queue(queue, durable=True)  # a classic queue
        broker = s.broker()
        with pytest.raises(BrokerError, match=f"{queue}'.*different arguments"):
            await broker.declare(queue)
        other = s.queue()
        await broker.declare(other)
        limited = s.broker(delivery_limit=5)
        with pytest.raises(BrokerError, match=f"{other}'.*different arguments"):
            await limited.declare(other)
        await broker.publish(other, Envelope(body=b"still fine"))
        assert [d.message.body for d in await _take(broker, other, 1)] == [b"still fine"]

    run(body)


def test_unreachable_server_is_broker_unavailable_at_once() -> None:
    """Nothing listening: BrokerUnavailable (a ConnectionError) naming the server, quickly."""

    async def body(s: Session) -> None:
        broker = s.broker("amqp://guest:secret@127.0.0.1:1/", connect_timeout=5.0)
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable, match=r"127\.0\.0\.1:1\b") as caught:
            await broker.declare("orders")
        assert time.monotonic() - started < 4.0  # refused at once, not the connect timeout
        assert isinstance(caught.value, ConnectionError)
        assert "secret" not in str(caught.value)

    run(body)


def test_deferred_message_returns_from_its_delay_queue() -> None:
    """defer() goes through ``{queue}.delay.{ms}`` and comes back with the updated counts."""

    async def body(s: Session) -> None:
        queue = s.queue()
        broker = s.broker()
        await broker.publish(queue, Envelope(body=b"x", headers={"traceparent": "00-a-01"}))
        [delivery] = await _take(broker, queue, 1)
        error = ErrorInfo(type="builtins.OSError", message="disk full", at=1_700_000_000.125)
        later = attrs.evolve(
            delivery.message, immediate_attempts=4, delayed_attempts=2, last_error=error
        )
        await broker.defer(delivery, later, 0.3)
        assert f"{queue}.delay.300" in broker.declared
        assert await broker.receive(queue) == []
        [back] = await _take(broker, queue, 1, wait=5.0)
        assert back.message == later
        assert back.deliveries == 1
        await broker.ack(back)

    run(body)


def test_two_delays_use_two_delay_queues_and_come_back_in_due_order() -> None:
    """Each distinct delay has its queue; the shorter delay comes back first."""

    async def body(s: Session) -> None:
        queue = s.queue()
        broker = s.broker()
        slow, quick = Envelope(body=b"slow"), Envelope(body=b"quick")
        await broker.publish(queue, slow, delay=0.8)
        await broker.publish(queue, quick, delay=0.2)
        assert {f"{queue}.delay.800", f"{queue}.delay.200"} <= broker.declared
        got = await _take(broker, queue, 2, wait=5.0)
        assert [d.message.id for d in got] == [quick.id, slow.id]

    run(body)


def test_delivery_limit_parks_instead_of_dropping() -> None:
    """Past RabbitMQ's x-delivery-limit the message lands in the parking queue, listed."""

    async def body(s: Session) -> None:
        queue = s.queue()
        broker = s.broker(delivery_limit=1)
        assert await broker.delivery_limit(queue) == 1
        sent = Envelope(body=b"poison")
        await broker.publish(queue, sent)
        [first] = await _take(broker, queue, 1)
        await broker.release(first)
        [second] = await _take(broker, queue, 1)
        assert second.deliveries == 2
        await broker.release(second)  # past the limit: RabbitMQ dead-letters it to .parked
        letters: list[Any] = []
        for _ in range(50):
            letters = await broker.dead_letters(queue)
            if letters:
                break
            await asyncio.sleep(0.05)
        [letter] = letters
        assert letter.message.id == sent.id
        assert letter.place is Place.PARKED
        assert await broker.receive(queue) == []
        assert await broker.replay(queue, [sent.id]) == 1
        [replayed] = await _take(broker, queue, 1)
        assert replayed.message.id == sent.id

    run(body)


def test_parked_at_is_the_clock_time_of_parking() -> None:
    """``since`` of a parked message is the broker clock's time when it was parked."""

    async def body(s: Session) -> None:
        queue = s.queue()
        broker = s.broker(clock=FakeClock(wall_start=1_750_000_000.5))
        await broker.publish(queue, Envelope(body=b"x"))
        [delivery] = await _take(broker, queue, 1)
        await broker.park(delivery, delivery.message)
        [letter] = await broker.dead_letters(queue)
        assert letter.since == 1_750_000_000.5
        assert await broker.dead_letters(queue, place=Place.DELAYED) == []

    run(body)


def test_reserved_headers_are_refused_on_publish() -> None:
    """An application header in failsafe's or RabbitMQ's own namespace is refused, named."""

    async def body(s: Session) -> None:
        broker = s.broker()
        queue = s.queue()
        for header in ("x-failsafe-immediate-attempts", "x-death", "x-delivery-count"):
            with pytest.raises(ConfigurationError, match="headers"):
                await broker.publish(queue, Envelope(body=b"x", headers={header: "1"}))

    run(body)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("prefetch", 0),
        ("prefetch", 70_000),
        ("delivery_limit", 0),
        ("connect_timeout", 0),
        ("timeout", -1.0),
        ("reconnect_interval", float("nan")),
    ],
)
def test_bad_options_are_refused_at_construction(option: str, value: Any) -> None:
    """A bad option is a ConfigurationError naming it, before any connection."""
    with pytest.raises(ConfigurationError, match=option):
        RabbitMQBroker(URL, **{option: value})


def test_bad_url_is_refused_at_construction() -> None:
    """Only amqp:// and amqps:// URLs."""
    with pytest.raises(ConfigurationError, match="url"):
        RabbitMQBroker("http://127.0.0.1:5672/")


def test_importing_failsafe_queue_does_not_import_aio_pika() -> None:
    """aio-pika is an optional extra: only failsafe.queue.rabbitmq imports it."""
    code = "import sys, failsafe.queue; assert 'aio_pika' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


async def _take(broker: RabbitMQBroker, queue: str, n: int, wait: float = 3.0) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + wait
    while len(got) < n:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(got)} of {n} messages arrived within {wait} s"
        got.extend(await broker.receive(queue, limit=n - len(got), wait=remaining))
    return got


# -- the DLQ tools on a larger parking queue (issue #15) ------------------------------------
async def _park_raw(s: Session, queue: str, n: int, error: str = "ValueError") -> list[str]:
    """Publish ``n`` messages straight to ``queue``'s parking queue, as `park` writes them."""
    connection = await aio_pika.connect(URL)
    s.connections.append(connection)
    confirmed = await connection.channel(publisher_confirms=True)
    ids = [f"p{i:04d}" for i in range(n)]
    await asyncio.gather(
        *(
            confirmed.default_exchange.publish(
                aio_pika.Message(
                    b"{}",
                    message_id=i,
                    headers={
                        "x-failsafe-delayed-attempts": 5,
                        "x-failsafe-error-type": error,
                        "x-failsafe-error-message": "x",
                        "x-failsafe-error-at": "1.0",
                        "x-failsafe-parked-at": repr(1_700_000_000.0 + k),
                    },
                ),
                routing_key=f"{queue}.parked",
            )
            for k, i in enumerate(ids)
        )
    )
    await confirmed.close()
    return ids


async def _ready(s: Session, name: str) -> int:
    channel = await s.raw()
    declared = await channel.declare_queue(name, passive=True)
    return declared.declaration_result.message_count or 0


def test_a_page_takes_no_more_than_it_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    """A page of 5 of 30 parked has 5 messages delivered to it, and leaves all 30 there."""
    delivered: list[object] = []
    arrived = failsafe.queue.rabbitmq._Reader._arrived

    async def counting(self: Any, message: Any) -> None:
        delivered.append(message)
        await arrived(self, message)

    monkeypatch.setattr(failsafe.queue.rabbitmq._Reader, "_arrived", counting)

    async def body(s: Session) -> None:
        queue = s.queue()
        broker = s.broker()
        await broker.declare(queue)
        ids = await _park_raw(s, queue, 30)
        page = await broker.dead_letter_page(queue, limit=5)
        assert [x.message.id for x in page.letters] == ids[:5]
        assert len(delivered) == 5
        second = await broker.dead_letter_page(queue, after=page.cursor, limit=5)
        assert [x.message.id for x in second.letters] == ids[5:10]
        assert len(delivered) == 5 + 10  # the first page's again, stepped over by id
        assert await broker.count_dead_letters(queue) == DeadLetterCount(parked=30)

    run(body)


def test_the_browse_limit_bounds_a_pass() -> None:
    """A pass reads ``dlq_browse_limit`` messages at most, and says it was truncated."""

    async def body(s: Session) -> None:
        queue = s.queue()
        broker = s.broker(dlq_browse_limit=10)
        await broker.declare(queue)
        ids = await _park_raw(s, queue, 20)
        nothing = DeadLetterFilter(error_types=["KeyError"])
        page = await broker.dead_letter_page(queue, where=nothing, limit=5)
        assert (page.letters, page.cursor, page.truncated) == ((), None, True)
        counted = await broker.count_dead_letters(queue, where=nothing)
        assert (counted.total, counted.exact) == (0, False)
        assert await broker.count_dead_letters(queue) == DeadLetterCount(parked=20)
        assert await broker.replay(queue, [ids[15]]) == 0  # beyond the limit: not reached
        assert await broker.replay(queue, [ids[5]]) == 1

    run(body)


def test_replay_batches_leave_no_duplicates() -> None:
    """300 replayed in batches of 100 are in the work queue once each, none left parked.

    Without the fence before the channel closes, RabbitMQ 3.10 put back some acknowledged
    messages (rabbitmq/rabbitmq-server#10327): duplicates of the replayed copies.
    """

    async def body(s: Session) -> None:
        queue = s.queue()
        broker = s.broker()
        await broker.declare(queue)
        ids = await _park_raw(s, queue, 300)
        moved: list[str] = []
        cursor = None
        while True:
            batch = await broker.replay_batch(queue, after=cursor, limit=100)
            moved += batch.ids
            if batch.cursor is None:
                break
            cursor = batch.cursor
        assert sorted(moved) == ids
        assert await _ready(s, f"{queue}.parked") == 0
        assert await _ready(s, queue) == 300

    run(body)


# -- the DLQ tools never declare; what waits in the delay queues; receive without waiting ----
async def _exists(s: Session, name: str) -> bool:
    channel = await s.raw()  # a channel of its own: a failed passive declare closes it
    try:
        await channel.declare_queue(name, passive=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return False
    return True


def test_the_dlq_tools_declare_no_queue() -> None:
    """On a queue RabbitMQ lacks, every DLQ tool raises NoSuchQueue and creates nothing."""

    async def body(s: Session) -> None:
        queue = s.queue()
        broker = s.broker()
        calls: list[Callable[[], Coroutine[Any, Any, object]]] = [
            lambda: broker.dead_letters(queue),
            lambda: broker.dead_letters(queue, place=Place.DELAYED),
            lambda: broker.dead_letter_page(
                queue, where=DeadLetterFilter(id_prefixes=["3f2a9c1b"])
            ),
            lambda: broker.count_dead_letters(queue),
            lambda: broker.count_dead_letters(queue, where=DeadLetterFilter(place=Place.DELAYED)),
            lambda: broker.replay(queue, ["m-1"]),
            lambda: broker.replay_batch(queue),
            lambda: broker.purge(queue, ["m-1"]),
            lambda: broker.purge_batch(queue),
            lambda: broker.count_unlisted_delayed(queue),
        ]
        for call in calls:
            with pytest.raises(NoSuchQueue) as caught:
                await call()
            assert str(caught.value) == (
                f"no such queue {queue!r} on RabbitMQ at amqp://guest:***@127.0.0.1:5672/"
            )
            assert isinstance(caught.value, LookupError)
        assert broker.declared == frozenset()
        for name in (queue, f"{queue}.parked", f"{queue}.delays"):
            assert not await _exists(s, name), name
        # a work queue without a parking queue (not made by failsafe): no dead letters
        channel = await s.raw()
        await channel.declare_queue(queue, durable=True)
        assert await broker.dead_letters(queue) == []
        assert await broker.count_dead_letters(queue) == DeadLetterCount()
        assert (await broker.replay_batch(queue)).ids == ()
        unlisted = await broker.count_unlisted_delayed(queue)
        assert unlisted.messages == 0
        assert not await _exists(s, f"{queue}.parked")

    run(body)


def test_count_unlisted_delayed_finds_every_delay_queue_through_the_index() -> None:
    """Another broker counts what waits in each delay queue; the index keeps each delay once."""

    async def body(s: Session) -> None:
        queue = s.queue()
        first, second = s.broker(), s.broker()
        await first.publish(queue, Envelope(body=b"a"), delay=30.0)
        await first.publish(queue, Envelope(body=b"b"), delay=60.0)
        await second.publish(queue, Envelope(body=b"c"), delay=60.0)  # indexes 60 s again
        await second.publish(queue, Envelope(body=b"d"), delay=60.0)
        channel = await s.raw()
        await channel.default_exchange.publish(  # not a delay: dropped from the index
            aio_pika.Message(b"nonsense"), routing_key=f"{queue}.delays"
        )
        assert await _ready(s, f"{queue}.delays") == 4
        reader = s.broker()  # knows no delay of its own
        assert await reader.count_unlisted_delayed(queue) == UnlistedDelayed(
            messages=4,
            reason="they cannot be listed on RabbitMQ: a delay queue is read only by taking "
            "its messages, which would disturb their timers",
        )
        assert reader.declared == frozenset()
        assert await _ready(s, f"{queue}.delays") == 2  # 30000 and 60000, once each
        assert (await reader.count_unlisted_delayed(queue)).messages == 4  # read again
        assert await reader.dead_letters(queue, place=Place.DELAYED) == []

    run(body)


def test_receive_without_waiting_takes_a_message_already_there() -> None:
    """A fresh broker's ``receive(wait=0)`` gets what is queued, and starts no consumer."""

    async def body(s: Session) -> None:
        queue = s.queue()
        publisher = s.broker()
        sent = [Envelope(body=b"1"), Envelope(body=b"2"), Envelope(body=b"3")]
        for message in sent:
            await publisher.publish(queue, message)
        fresh = s.broker()
        [first] = await fresh.receive(queue)  # the very first call on a new connection
        assert first.message.id == sent[0].id
        assert first.deliveries == 1
        assert await _ready(s, queue) == 2  # taken by basic.get: no prefetch took the others
        rest = await fresh.receive(queue, limit=5)
        assert [d.message.id for d in rest] == [sent[1].id, sent[2].id]
        assert await fresh.receive(queue) == []
        await fresh.release(first)
        [again] = await fresh.receive(queue)
        assert (again.message.id, again.deliveries) == (sent[0].id, 2)
        for delivery in [again, *rest]:
            await fresh.ack(delivery)
        assert await _ready(s, queue) == 0

    run(body)
