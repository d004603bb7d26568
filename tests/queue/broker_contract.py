"""The contract every broker adapter passes; each adapter's test module subclasses it.

A subclass provides three things:

- the ``broker`` fixture: a fresh blocking `Broker` (an asyncio adapter is given through
  `as_blocking`), closed after the test;
- ``elapse(broker, seconds)``: let that much time pass for the broker's delays (advance a
  fake clock, or wait for real on a broker whose delays run on its own clock);
- ``lose_consumer(broker)``: play the consumer holding deliveries dying (its connection
  dropped, its process killed); return a broker to carry on with (the same one, or a new
  connection to the same server).

Queue names are unique per test, so real servers need no cleaning between tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from failsafe.exceptions import ConfigurationError
from failsafe.queue import (
    Broker,
    Delivery,
    Envelope,
    ErrorInfo,
    NoSuchQueue,
    Place,
    SettleConflict,
)
from failsafe.queue.broker import DeadLetterCount, DeadLetterCursor, DeadLetterFilter

DELAY = 0.5  # seconds: the delays the contract uses (short, for brokers on real time)


def msg(body: bytes = b'{"orderId": "o-1", "status": "paid"}', **fields: Any) -> Envelope:
    return Envelope(body=body, **fields)


class BrokerContract:
    """Behaviour every broker must have."""

    @pytest.fixture
    def broker(self) -> Iterator[Broker]:
        raise NotImplementedError

    def elapse(self, broker: Broker, seconds: float) -> None:
        raise NotImplementedError

    def lose_consumer(self, broker: Broker) -> Broker:
        raise NotImplementedError

    @pytest.fixture
    def queue(self, broker: Broker) -> str:
        name = f"contract.{uuid.uuid4().hex[:12]}"
        broker.declare(name)
        return name

    def take(self, broker: Broker, queue: str, limit: int = 1, wait: float = 0.0) -> list[Delivery]:
        return broker.receive(queue, limit=limit, wait=wait)

    def take_due(self, broker: Broker, queue: str, seconds: float) -> list[Delivery]:
        """Let ``seconds`` pass, then take what is due (a real-time broker may need a moment)."""
        self.elapse(broker, seconds)
        return broker.receive(queue, limit=10, wait=2.0 if self.real_time else 0.0)

    real_time = False  # True: delays run on real time (the broker's own timers)

    # -- publish and receive -------------------------------------------------------------------
    def test_published_message_is_received_whole(self, broker: Broker, queue: str) -> None:
        """Body, id, content type, headers and counts come back as published."""
        sent = msg(
            body=b"\x00\xffbinary",
            content_type="application/octet-stream",
            headers={"traceparent": "00-abc-01", "tenant": "shop"},
            delayed_attempts=2,
            first_seen=1_700_000_000.5,
            last_error=ErrorInfo(type="OSError", message="disk full", at=1_700_000_001.0),
        )
        broker.publish(queue, sent)
        [delivery] = self.take(broker, queue, wait=2.0)
        assert delivery.message == sent
        assert delivery.queue == queue
        assert delivery.deliveries == 1

    def test_empty_queue_gives_nothing(self, broker: Broker, queue: str) -> None:
        """Receiving from an empty queue returns an empty list, not an error."""
        assert self.take(broker, queue) == []

    def test_messages_come_in_publish_order(self, broker: Broker, queue: str) -> None:
        """One publisher's messages are received in the order published."""
        sent = [msg(body=f"m{i}".encode()) for i in range(5)]
        for m in sent:
            broker.publish(queue, m)
        got: list[Delivery] = []
        while len(got) < 5:
            batch = self.take(broker, queue, limit=5, wait=2.0)
            assert batch, f"only {len(got)} of 5 messages arrived"
            got.extend(batch)
        assert [d.message.id for d in got] == [m.id for m in sent]

    def test_limit_caps_one_receive(self, broker: Broker, queue: str) -> None:
        """``limit`` caps how many messages one receive reserves."""
        for i in range(3):
            broker.publish(queue, msg(body=str(i).encode()))
        first = self.take(broker, queue, limit=2, wait=2.0)
        assert 1 <= len(first) <= 2
        rest = []
        for _ in range(3):
            rest.extend(self.take(broker, queue, limit=5, wait=1.0))
            if len(first) + len(rest) == 3:
                break
        assert sorted(d.message.body for d in first + rest) == [b"0", b"1", b"2"]

    def test_queues_are_separate(self, broker: Broker, queue: str) -> None:
        """A message published to one queue is never received from another."""
        other = f"{queue}.other"
        broker.declare(other)
        broker.publish(other, msg())
        assert self.take(broker, queue, wait=0.3 if self.real_time else 0.0) == []
        assert len(self.take(broker, other, wait=2.0)) == 1

    def test_declare_twice_is_harmless(self, broker: Broker, queue: str) -> None:
        """Declaring an existing queue keeps its messages."""
        broker.publish(queue, msg())
        broker.declare(queue)
        assert len(self.take(broker, queue, wait=2.0)) == 1

    def test_bad_queue_name_is_refused(self, broker: Broker) -> None:
        """An empty queue name is a configuration error naming ``queue``."""
        with pytest.raises(ConfigurationError, match="queue"):
            broker.declare("")

    # -- settling ------------------------------------------------------------------------------
    def test_reserved_message_is_not_received_twice(self, broker: Broker, queue: str) -> None:
        """While one consumer holds a message, no other receive gets it."""
        broker.publish(queue, msg())
        assert len(self.take(broker, queue, wait=2.0)) == 1
        assert self.take(broker, queue, wait=0.3 if self.real_time else 0.0) == []

    def test_ack_removes_the_message(self, broker: Broker, queue: str) -> None:
        """An acked message is gone: not received again, not a dead letter."""
        broker.publish(queue, msg())
        [delivery] = self.take(broker, queue, wait=2.0)
        broker.ack(delivery)
        assert self.take(broker, queue, wait=0.3 if self.real_time else 0.0) == []
        assert broker.dead_letters(queue) == []

    def test_release_gives_the_message_back(self, broker: Broker, queue: str) -> None:
        """A released message is received again at once, unchanged."""
        sent = msg()
        broker.publish(queue, sent)
        [delivery] = self.take(broker, queue, wait=2.0)
        broker.release(delivery)
        [again] = self.take(broker, queue, wait=2.0)
        assert again.message == sent

    def test_settling_twice_is_a_conflict(self, broker: Broker, queue: str) -> None:
        """A delivery settled once cannot be settled again; the broker stays usable."""
        broker.publish(queue, msg())
        [delivery] = self.take(broker, queue, wait=2.0)
        broker.ack(delivery)
        with pytest.raises(SettleConflict):
            broker.ack(delivery)
        broker.publish(queue, msg(body=b"next"))
        [after] = self.take(broker, queue, wait=2.0)
        assert after.message.body == b"next"

    def test_lost_consumer_message_comes_back_counted(self, broker: Broker, queue: str) -> None:
        """A message whose consumer died is delivered again, its delivery counted."""
        sent = msg()
        broker.publish(queue, sent)
        [delivery] = self.take(broker, queue, wait=2.0)
        assert delivery.deliveries == 1
        broker = self.lose_consumer(broker)
        [again] = self.take(broker, queue, wait=3.0)
        assert again.message.id == sent.id
        assert again.deliveries == 2
        broker.ack(again)

    # -- the DLQ -------------------------------------------------------------------------------
    def test_deferred_message_waits_then_returns(self, broker: Broker, queue: str) -> None:
        """A deferred message is invisible until due, then received with its new counts."""
        broker.publish(queue, msg())
        [delivery] = self.take(broker, queue, wait=2.0)
        error = ErrorInfo(type="ConnectionError", message="orders down", at=1_700_000_000.0)
        later = attrs.evolve(delivery.message, delayed_attempts=1, last_error=error)
        broker.defer(delivery, later, DELAY)
        assert self.take(broker, queue) == []
        [back] = self.take_due(broker, queue, DELAY)
        assert back.message == later
        assert back.deliveries == 1
        broker.ack(back)

    def test_deferred_message_is_listed_as_delayed(self, broker: Broker, queue: str) -> None:
        """Where the broker can list the DLQ, a deferred message shows with its due time."""
        broker.publish(queue, msg())
        [delivery] = self.take(broker, queue, wait=2.0)
        broker.defer(delivery, attrs.evolve(delivery.message, delayed_attempts=1), 30.0)
        letters = broker.dead_letters(queue, place=Place.DELAYED)
        if not self.lists_delayed:
            assert letters == []
            return
        [letter] = letters
        assert letter.place is Place.DELAYED
        assert letter.message.delayed_attempts == 1
        assert letter.due_at is not None
        assert letter.due_at >= letter.since + 29.0

    lists_delayed = True  # False: the broker cannot list delayed messages (RabbitMQ)

    def test_publish_with_delay_goes_through_the_dlq(self, broker: Broker, queue: str) -> None:
        """A message published with a delay is received only once due."""
        broker.publish(queue, msg(), delay=DELAY)
        assert self.take(broker, queue) == []
        assert len(self.take_due(broker, queue, DELAY)) == 1

    def test_parked_message_stays_parked(self, broker: Broker, queue: str) -> None:
        """A parked message is listed with its last error and never received."""
        broker.publish(queue, msg())
        [delivery] = self.take(broker, queue, wait=2.0)
        error = ErrorInfo(type="app.OrderNotFound", message="o-1", at=1_700_000_000.0)
        parked = attrs.evolve(delivery.message, last_error=error, delayed_attempts=3)
        broker.park(delivery, parked)
        [letter] = broker.dead_letters(queue)
        assert letter.place is Place.PARKED
        assert letter.message == parked
        assert letter.due_at is None
        assert self.take_due(broker, queue, DELAY) == []
        # listing does not consume: it is still there
        assert [d.message.id for d in broker.dead_letters(queue, place=Place.PARKED)] == [parked.id]

    def test_replay_moves_parked_back_with_fresh_counts(self, broker: Broker, queue: str) -> None:
        """Replay puts a parked message back in the work queue, counts reset, error kept."""
        broker.publish(queue, msg())
        [delivery] = self.take(broker, queue, wait=2.0)
        error = ErrorInfo(type="app.OrderNotFound", message="o-1", at=1_700_000_000.0)
        broker.park(delivery, attrs.evolve(delivery.message, delayed_attempts=3, last_error=error))
        assert broker.replay(queue, ["no-such-id"]) == 0
        assert broker.replay(queue, [delivery.message.id]) == 1
        [back] = self.take(broker, queue, wait=2.0)
        assert back.message.id == delivery.message.id
        assert (back.message.immediate_attempts, back.message.delayed_attempts) == (0, 0)
        assert back.message.last_error == error
        assert broker.dead_letters(queue) == []

    def test_purge_deletes_only_the_listed(self, broker: Broker, queue: str) -> None:
        """Purge removes the named dead letters and keeps the others."""
        for i in range(3):
            broker.publish(queue, msg(body=str(i).encode()))
        deliveries: list[Delivery] = []
        while len(deliveries) < 3:
            batch = self.take(broker, queue, limit=3, wait=2.0)
            assert batch
            deliveries.extend(batch)
        for d in deliveries:
            broker.park(d, d.message)
        doomed = [deliveries[0].message.id, deliveries[2].message.id]
        assert broker.purge(queue, doomed) == 2
        assert [x.message.id for x in broker.dead_letters(queue)] == [deliveries[1].message.id]
        assert broker.purge(queue, doomed) == 0

    def test_dead_letters_filter_by_place(self, broker: Broker, queue: str) -> None:
        """``place`` narrows the listing to parked (or delayed) messages."""
        broker.publish(queue, msg(body=b"a"))
        broker.publish(queue, msg(body=b"b"))
        got: list[Delivery] = []
        while len(got) < 2:
            batch = self.take(broker, queue, limit=2, wait=2.0)
            assert batch
            got.extend(batch)
        a, b = sorted(got, key=lambda d: d.message.body)
        broker.park(a, a.message)
        broker.defer(b, b.message, 30.0)
        parked = broker.dead_letters(queue, place=Place.PARKED)
        assert [x.message.body for x in parked] == [b"a"]

    # -- paged listing and batches (issue #15) -------------------------------------------------
    def park_all(self, broker: Broker, queue: str, errors: list[str | None]) -> list[str]:
        """Park one message per entry of ``errors`` (its last error's type), in order.

        A little time passes between them, so that each has its own ``since``.
        """
        ids = []
        for n, error in enumerate(errors):
            sent = msg(body=f"m{n}".encode())
            broker.publish(queue, sent)
            [delivery] = self.take(broker, queue, wait=2.0)
            last = None if error is None else ErrorInfo(type=error, message="x", at=1.0)
            broker.park(delivery, attrs.evolve(delivery.message, last_error=last))
            ids.append(sent.id)
            self.elapse(broker, 0.02 if self.real_time else 1.0)
        return ids

    def walk(
        self, broker: Broker, queue: str, size: int, where: DeadLetterFilter | None = None
    ) -> list[list[str]]:
        """The ids of every page of a listing, page by page."""
        pages: list[list[str]] = []
        cursor = None
        while True:
            page = broker.dead_letter_page(queue, where=where, after=cursor, limit=size)
            assert len(page.letters) <= size
            assert not page.truncated
            pages.append([letter.message.id for letter in page.letters])
            cursor = page.cursor
            if cursor is None:
                return pages
            assert len(pages) < 20, "the listing does not end"

    def test_pages_list_every_dead_letter_once_oldest_first(
        self, broker: Broker, queue: str
    ) -> None:
        """Pages of 3 over 7 parked messages list each once, in the order they were parked."""
        ids = self.park_all(broker, queue, [None] * 7)
        pages = self.walk(broker, queue, 3)
        assert [len(p) for p in pages][:3] == [3, 3, 1]
        assert [i for page in pages for i in page] == ids
        assert [x.message.id for x in broker.dead_letters(queue, limit=4)] == ids[:4]

    def test_a_page_filters_by_error_type_id_and_time(self, broker: Broker, queue: str) -> None:
        """Error type (full or last part), ids and ``until`` narrow a page; all must hold."""
        ids = self.park_all(
            broker,
            queue,
            ["app.errors.OrderNotFound", "ValueError", None, "app.errors.OrderNotFound"],
        )

        def listed(**where: Any) -> list[str]:
            page = broker.dead_letter_page(queue, where=DeadLetterFilter(**where), limit=10)
            return [letter.message.id for letter in page.letters]

        assert listed(error_types=["OrderNotFound"]) == [ids[0], ids[3]]
        assert listed(error_types=["app.errors.OrderNotFound"]) == [ids[0], ids[3]]
        assert listed(error_types=["errors.OrderNotFound"]) == []
        assert listed(error_types=["ValueError", "OrderNotFound"]) == [ids[0], ids[1], ids[3]]
        assert listed(ids=[ids[2], ids[1], "nope"]) == [ids[1], ids[2]]
        assert listed(ids=[ids[0], ids[1]], error_types=["ValueError"]) == [ids[1]]
        assert listed(place=Place.PARKED) == ids
        [second] = broker.dead_letter_page(
            queue, where=DeadLetterFilter(ids=[ids[1]]), limit=1
        ).letters
        assert listed(until=second.since) == ids[:2]
        assert listed(until=second.since, error_types=["OrderNotFound"]) == ids[:1]

    def test_a_cursor_survives_replaying_its_page(self, broker: Broker, queue: str) -> None:
        """Replaying each page before asking for the next still reaches every letter once."""
        ids = self.park_all(broker, queue, [None] * 5)
        seen: list[str] = []
        cursor = None
        while True:
            page = broker.dead_letter_page(queue, after=cursor, limit=2)
            seen += [letter.message.id for letter in page.letters]
            assert broker.replay(queue, [letter.message.id for letter in page.letters]) == len(
                page.letters
            )
            if page.cursor is None:
                break
            cursor = page.cursor
        assert seen == ids
        assert broker.dead_letters(queue) == []

    def test_count_dead_letters_by_place_and_bounded(self, broker: Broker, queue: str) -> None:
        """The count matches the filter, by place, and stops at ``at_most`` (then not exact)."""
        self.park_all(broker, queue, ["ValueError", "KeyError", "ValueError"])
        assert broker.count_dead_letters(queue) == DeadLetterCount(parked=3)
        where = DeadLetterFilter(error_types=["ValueError"])
        assert broker.count_dead_letters(queue, where=where) == DeadLetterCount(parked=2)
        capped = broker.count_dead_letters(queue, at_most=2)
        assert (capped.total, capped.exact) == (2, False)
        assert broker.count_dead_letters(queue, where=DeadLetterFilter(place=Place.DELAYED)) == (
            DeadLetterCount()
        )

    def test_replay_batch_walks_only_the_selection(self, broker: Broker, queue: str) -> None:
        """Batches of 2 replay exactly the matching letters, with fresh counts; others stay."""
        ids = self.park_all(broker, queue, ["ValueError", "KeyError", "ValueError", "ValueError"])
        where = DeadLetterFilter(error_types=["ValueError"])
        moved: list[str] = []
        cursor = None
        while True:
            batch = broker.replay_batch(queue, where=where, after=cursor, limit=2)
            assert len(batch.ids) <= 2
            moved += batch.ids
            if batch.cursor is None:
                break
            cursor = batch.cursor
        assert moved == [ids[0], ids[2], ids[3]]
        assert [x.message.id for x in broker.dead_letters(queue)] == [ids[1]]
        back: list[Delivery] = []
        while len(back) < 3:
            got = self.take(broker, queue, limit=3, wait=2.0)
            assert got, f"only {len(back)} of 3 replayed messages came back"
            back += got
        assert sorted(d.message.id for d in back) == sorted(moved)
        assert all(d.message.delayed_attempts == 0 for d in back)

    def test_purge_batch_deletes_only_the_selection(self, broker: Broker, queue: str) -> None:
        """``purge_batch`` deletes the matching letters in batches and keeps the rest."""
        ids = self.park_all(broker, queue, ["KeyError", "ValueError", "KeyError"])
        where = DeadLetterFilter(error_types=["KeyError"])
        first = broker.purge_batch(queue, where=where, limit=1)
        assert first.ids == (ids[0],)
        assert first.cursor is not None
        rest = broker.purge_batch(queue, where=where, after=first.cursor, limit=5)
        assert (rest.ids, rest.cursor) == ((ids[2],), None)
        assert [x.message.id for x in broker.dead_letters(queue)] == [ids[1]]

    def test_a_cursor_of_another_broker_is_refused(self, broker: Broker, queue: str) -> None:
        """A cursor made by another adapter is a configuration error naming ``after``."""
        foreign = DeadLetterCursor("elsewhere", (1,))
        with pytest.raises(ConfigurationError, match="after"):
            broker.dead_letter_page(queue, after=foreign)

    # -- unknown queues and id prefixes --------------------------------------------------------
    def test_dlq_methods_refuse_an_unknown_queue_and_create_none(
        self, broker: Broker, queue: str
    ) -> None:
        """Every DLQ method raises NoSuchQueue for a queue never declared, and creates none."""
        unknown = f"{queue}.typo"
        calls = {
            "dead_letters": lambda: broker.dead_letters(unknown),
            "dead_letters(delayed)": lambda: broker.dead_letters(unknown, place=Place.DELAYED),
            "dead_letter_page": lambda: broker.dead_letter_page(unknown),
            "count_dead_letters": lambda: broker.count_dead_letters(unknown),
            "count (filtered)": lambda: broker.count_dead_letters(
                unknown, where=DeadLetterFilter(error_types=["KeyError"])
            ),
            "replay": lambda: broker.replay(unknown, ["m-1"]),
            "replay_batch": lambda: broker.replay_batch(unknown),
            "purge": lambda: broker.purge(unknown, ["m-1"]),
            "purge_batch": lambda: broker.purge_batch(unknown),
        }
        for _ in range(2):  # the second round proves the first created nothing
            for name, call in calls.items():
                with pytest.raises(NoSuchQueue) as caught:
                    call()
                assert caught.value.queue == unknown, name
                assert f"no such queue {unknown!r} on " in str(caught.value), name
        assert broker.dead_letters(queue) == []  # a known, empty queue is no error

    def park_ids(self, broker: Broker, queue: str, ids: list[str]) -> None:
        """Park one message per id, in order, a little time apart."""
        for message_id in ids:
            broker.publish(queue, msg(id=message_id))
            [delivery] = self.take(broker, queue, wait=2.0)
            broker.park(delivery, delivery.message)
            self.elapse(broker, 0.02 if self.real_time else 1.0)

    def test_a_page_filters_by_id_prefix(self, broker: Broker, queue: str) -> None:
        """``id_prefixes`` takes the ids that begin with one; with ``ids``, either matches."""
        ids = ["order-0001-a", "order-0001-b", "order-0002-a", "order-00010", "other-0001"]
        self.park_ids(broker, queue, ids)

        def listed(**where: Any) -> list[str]:
            page = broker.dead_letter_page(queue, where=DeadLetterFilter(**where), limit=10)
            return [letter.message.id for letter in page.letters]

        assert listed(id_prefixes=["order-0001"]) == [ids[0], ids[1], ids[3]]
        assert listed(id_prefixes=["order-0001-"]) == ids[:2]
        assert listed(id_prefixes=["order-0001-b"]) == [ids[1]]  # a whole id is a prefix too
        assert listed(id_prefixes=["order-0003"]) == []
        assert listed(id_prefixes=["order-0002", "other"]) == [ids[2], ids[4]]
        assert listed(ids=[ids[4]], id_prefixes=["order-0001-"]) == [ids[0], ids[1], ids[4]]
        assert listed(id_prefixes=["order-0001"], place=Place.DELAYED) == []
        where = DeadLetterFilter(id_prefixes=["order-0001"])
        assert broker.count_dead_letters(queue, where=where) == DeadLetterCount(parked=3)
        first = broker.purge_batch(queue, where=where, limit=2)
        assert first.ids == (ids[0], ids[1])
        assert [x.message.id for x in broker.dead_letters(queue)] == [ids[2], ids[3], ids[4]]
