"""`InMemoryBroker`: a broker in a dict, on an injected clock, for tests and examples.

It keeps the same promises as the real adapters (it passes the same contract suite) except
durability: everything is gone with the process. `crash()` plays a consumer dying with
messages in hand, so tests can check what happens to them.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from typing import ClassVar

import attrs

from failsafe import _tracing
from failsafe import _validators as _v
from failsafe.clock import SYSTEM_CLOCK, Clock
from failsafe.exceptions import ConfigurationError
from failsafe.queue import _trace
from failsafe.queue.broker import (
    COUNT_LIMIT,
    DeadLetter,
    DeadLetterBatch,
    DeadLetterCount,
    DeadLetterCursor,
    DeadLetterFilter,
    DeadLetterPage,
    Delivery,
    NoSuchQueue,
    Place,
    SettleConflict,
)
from failsafe.queue.envelope import Envelope

__all__ = ["InMemoryBroker"]

_READY = "ready"


@attrs.define(eq=False)
class _Entry:
    queue: str
    message: Envelope
    place: str  # "ready" (in the work queue: visible or reserved), or a Place value
    visible_at: float  # ready: when it may be received; delayed: when it is due
    since: float
    seq: int
    deliveries: int = 0
    token: int | None = None  # the current reservation


def _key(after: DeadLetterCursor | None) -> tuple[float, int] | None:
    """The ``(since, seq)`` a cursor of this broker holds (``None``: from the start)."""
    if after is None:
        return None
    if not isinstance(after, DeadLetterCursor) or after.adapter != "memory" or len(after.key) != 2:
        raise ConfigurationError("after", f"must be a cursor from an InMemoryBroker, got {after!r}")
    since, seq = after.key
    return float(since), int(seq)


def check_queue_name(queue: object) -> str:
    """Refuse a queue name that is not a non-empty string of printable characters (internal)."""
    if not isinstance(queue, str) or not queue or not queue.isprintable() or len(queue) > 200:
        raise ConfigurationError(
            "queue", f"must be a non-empty printable string of at most 200 characters: {queue!r}"
        )
    return queue


class InMemoryBroker:
    """A broker kept in memory: the `Broker` protocol with no I/O at all.

    Args:
        clock: Time for delays and reservations (a ``FakeClock`` in tests).
        lease: Seconds a received message stays reserved before it is handed out again
            (as if its consumer died); ``None``: until settled or `crash()`.
        delivery_limit: A cap on deliveries to report from `delivery_limit()` (a stand-in
            for a broker that has one; this broker itself never drops a message).

    Thread-safe. `as_async(InMemoryBroker())` gives the asyncio view of the same broker.
    """

    _nonblocking = True  # as_async() calls it directly, without a thread

    #: The ``messaging.system`` of its spans.
    messaging_system: ClassVar[str] = "failsafe.memory"

    def __init__(
        self,
        *,
        clock: Clock = SYSTEM_CLOCK,
        lease: float | None = None,
        delivery_limit: int | None = None,
    ) -> None:
        _v.check("lease", lease, _v.number(above=0, optional=True))
        if delivery_limit is not None:
            _v.check("delivery_limit", delivery_limit, _v.integer(1))
        self.clock = clock
        self.lease = lease
        self._limit = delivery_limit
        self._entries: dict[int, _Entry] = {}
        self._queues: set[str] = set()
        self._seq = itertools.count(1)
        self._tokens = itertools.count(1)
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self.closed = False

    # -- the protocol --------------------------------------------------------------------
    def declare(self, queue: str) -> None:
        """Create ``queue`` (a no-op when it exists)."""
        with self._lock:
            self._queues.add(check_queue_name(queue))

    def publish(self, queue: str, message: Envelope, *, delay: float = 0.0) -> None:
        """Enqueue ``message`` (in the DLQ, due after ``delay``, when ``delay`` > 0).

        With tracing installed, in a producer span whose ``traceparent`` the message
        carries (unless it has one already).

        Raises:
            ConfigurationError: If ``queue`` or ``delay`` is bad, or ``message`` is not an
                `Envelope`.
        """
        check_queue_name(queue)
        _v.check("delay", delay, _v.number(at_least=0))
        if not isinstance(message, Envelope):  # as the other adapters refuse it
            raise ConfigurationError("message", f"must be an Envelope, got {message!r}")
        tracing = _tracing.installed()
        if tracing is None:
            self._put(queue, message, delay)
            return
        with _trace.publishing(tracing, self.messaging_system, queue, (message,)) as traced:
            self._put(queue, traced[0], delay)

    def _put(self, queue: str, message: Envelope, delay: float) -> None:
        now = self.clock.time()
        with self._lock:
            self._queues.add(queue)
            place = Place.DELAYED.value if delay > 0 else _READY
            seq = next(self._seq)
            self._entries[seq] = _Entry(queue, message, place, now + delay, now, seq)
            self._arrived.notify_all()

    def receive(self, queue: str, *, limit: int = 1, wait: float = 0.0) -> list[Delivery]:
        """Reserve up to ``limit`` ready messages (waiting up to ``wait`` real seconds)."""
        _v.check("limit", limit, _v.integer(1))
        _v.check("wait", wait, _v.number(at_least=0))
        with self._lock:
            taken = self._take(queue, limit)
            if not taken and wait > 0:
                self._arrived.wait(wait)
                taken = self._take(queue, limit)
            return taken

    def _take(self, queue: str, limit: int) -> list[Delivery]:
        now = self.clock.time()
        ready = sorted(
            (
                e
                for e in self._entries.values()
                if e.queue == queue
                and e.place in (_READY, Place.DELAYED.value)
                and e.visible_at <= now
            ),
            key=lambda e: (e.visible_at, e.seq),
        )[:limit]
        out = []
        for entry in ready:
            entry.place = _READY
            entry.deliveries += 1
            entry.token = next(self._tokens)
            entry.visible_at = now + self.lease if self.lease is not None else float("inf")
            out.append(
                Delivery(
                    queue=queue,
                    message=entry.message,
                    deliveries=entry.deliveries,
                    token=(entry.seq, entry.token),
                )
            )
        return out

    def _held(self, delivery: Delivery) -> _Entry:
        seq, token = delivery.token
        entry = self._entries.get(seq)
        if entry is None or entry.token != token or entry.place != _READY:
            raise SettleConflict(
                f"message {delivery.message.id} on {delivery.queue!r} is no longer reserved "
                "for this delivery (its reservation ended)"
            )
        return entry

    def ack(self, delivery: Delivery) -> None:
        """Remove the delivered message."""
        with self._lock:
            entry = self._held(delivery)
            del self._entries[entry.seq]

    def release(self, delivery: Delivery) -> None:
        """Make the delivered message ready again at once (its delivery not counted)."""
        with self._lock:
            entry = self._held(delivery)
            entry.token = None
            entry.deliveries -= 1
            entry.visible_at = self.clock.time()
            self._arrived.notify_all()

    def defer(self, delivery: Delivery, message: Envelope, delay: float) -> None:
        """Move the delivered message, as ``message``, to the DLQ for ``delay`` seconds."""
        _v.check("delay", delay, _v.number(at_least=0))
        with self._lock:
            entry = self._held(delivery)
            now = self.clock.time()
            self._move(entry, message, Place.DELAYED.value, now)
            entry.visible_at = now + delay

    def park(self, delivery: Delivery, message: Envelope) -> None:
        """Move the delivered message, as ``message``, to the parking queue."""
        with self._lock:
            entry = self._held(delivery)
            self._move(entry, message, Place.PARKED.value, self.clock.time())

    def _move(self, entry: _Entry, message: Envelope, place: str, now: float) -> None:
        if message.id != entry.message.id:
            raise ConfigurationError(
                "message", f"must keep the delivered message's id {entry.message.id!r}"
            )
        entry.message = message
        entry.place = place
        entry.token = None
        entry.deliveries = 0
        entry.since = now
        entry.visible_at = float("inf")

    def dead_letters(
        self, queue: str, *, place: Place | None = None, limit: int = 1000
    ) -> list[DeadLetter]:
        """List delayed and parked messages of ``queue``, oldest first."""
        where = DeadLetterFilter(place=place)
        return list(self.dead_letter_page(queue, where=where, limit=limit).letters)

    def dead_letter_page(
        self,
        queue: str,
        *,
        where: DeadLetterFilter | None = None,
        after: DeadLetterCursor | None = None,
        limit: int = 100,
    ) -> DeadLetterPage:
        """One page of ``queue``'s dead letters matching ``where``, oldest first.

        Keyset pagination on ``(since, seq)``, as the SQLite broker does (in memory every
        entry is looked at: this broker is for tests).
        """
        with self._lock:
            self._require(queue)
            chosen, cursor = self._choose(queue, where, after, limit)
            letters = tuple(self._letter(e) for e in chosen)
        return DeadLetterPage(letters=letters, cursor=cursor)

    def replay_batch(
        self,
        queue: str,
        *,
        where: DeadLetterFilter | None = None,
        after: DeadLetterCursor | None = None,
        limit: int = 100,
    ) -> DeadLetterBatch:
        """Replay the next ``limit`` dead letters matching ``where`` (see `replay`)."""
        with self._lock:
            self._require(queue)
            chosen, cursor = self._choose(queue, where, after, limit)
            self._replay(chosen)
        return DeadLetterBatch(ids=tuple(e.message.id for e in chosen), cursor=cursor)

    def purge_batch(
        self,
        queue: str,
        *,
        where: DeadLetterFilter | None = None,
        after: DeadLetterCursor | None = None,
        limit: int = 100,
    ) -> DeadLetterBatch:
        """Delete the next ``limit`` dead letters matching ``where`` for good."""
        with self._lock:
            self._require(queue)
            chosen, cursor = self._choose(queue, where, after, limit)
            for entry in chosen:
                del self._entries[entry.seq]
        return DeadLetterBatch(ids=tuple(e.message.id for e in chosen), cursor=cursor)

    def _choose(
        self,
        queue: str,
        where: DeadLetterFilter | None,
        after: DeadLetterCursor | None,
        limit: int,
    ) -> tuple[list[_Entry], DeadLetterCursor | None]:
        """The next ``limit`` dead letters matching ``where`` after ``after`` (under the lock)."""
        _v.check("limit", limit, _v.integer(1))
        where = where if where is not None else DeadLetterFilter()
        start = _key(after)
        found = sorted(
            (
                e
                for e in self._entries.values()
                if e.queue == queue
                and e.place != _READY
                and (start is None or (e.since, e.seq) > start)
                and where.matches(self._letter(e))
            ),
            key=lambda e: (e.since, e.seq),
        )
        chosen = found[:limit]
        cursor = None
        if len(found) > limit:
            cursor = DeadLetterCursor("memory", (chosen[-1].since, chosen[-1].seq))
        return chosen, cursor

    def count_dead_letters(
        self, queue: str, *, where: DeadLetterFilter | None = None, at_most: int = COUNT_LIMIT
    ) -> DeadLetterCount:
        """Count ``queue``'s dead letters matching ``where``, by place (up to ``at_most``)."""
        _v.check("at_most", at_most, _v.integer(1))
        where = where if where is not None else DeadLetterFilter()
        counts = {Place.DELAYED: 0, Place.PARKED: 0}
        seen = 0
        with self._lock:
            self._require(queue)
            for e in sorted(self._entries.values(), key=lambda e: (e.since, e.seq)):
                if e.queue != queue or e.place == _READY:
                    continue
                letter = self._letter(e)
                if where.matches(letter):
                    if seen == at_most:
                        return DeadLetterCount(
                            delayed=counts[Place.DELAYED], parked=counts[Place.PARKED], exact=False
                        )
                    counts[letter.place] += 1
                    seen += 1
        return DeadLetterCount(delayed=counts[Place.DELAYED], parked=counts[Place.PARKED])

    @staticmethod
    def _letter(e: _Entry) -> DeadLetter:
        return DeadLetter(
            queue=e.queue,
            message=e.message,
            place=Place(e.place),
            since=e.since,
            due_at=e.visible_at if e.place == Place.DELAYED.value else None,
        )

    def replay(self, queue: str, ids: Sequence[str]) -> int:
        """Move the listed dead letters back to the work queue now, with fresh counts."""
        with self._lock:
            self._require(queue)
            return self._replay(self._dead(queue, set(ids)))

    def _replay(self, entries: list[_Entry]) -> int:
        """Move ``entries`` to their work queue with fresh counts (under the lock)."""
        now = self.clock.time()
        for entry in entries:
            entry.message = attrs.evolve(entry.message, immediate_attempts=0, delayed_attempts=0)
            entry.place = _READY
            entry.visible_at = now
            entry.since = now
        if entries:
            self._arrived.notify_all()
        return len(entries)

    def purge(self, queue: str, ids: Sequence[str]) -> int:
        """Delete the listed dead letters for good."""
        with self._lock:
            self._require(queue)
            doomed = self._dead(queue, set(ids))
            for entry in doomed:
                del self._entries[entry.seq]
            return len(doomed)

    def _require(self, queue: str) -> None:
        """Raise `NoSuchQueue` unless ``queue`` was declared or published to (under the lock)."""
        if queue not in self._queues:
            raise NoSuchQueue(queue, "the in-memory broker")

    def _dead(self, queue: str, ids: set[str]) -> list[_Entry]:
        return [
            e
            for e in self._entries.values()
            if e.queue == queue and e.place != _READY and e.message.id in ids
        ]

    def delivery_limit(self, queue: str) -> int | None:
        """The cap given at construction (``None``: no cap)."""
        return self._limit

    def close(self) -> None:
        """Give every reserved message back (as a broker does when a connection closes)."""
        self.crash()
        self.closed = True

    # -- for tests -------------------------------------------------------------------------
    def crash(self) -> int:
        """Play the consumers dying: every reserved message is ready again; return how many.

        Their deliveries stay counted, as a real broker's delivery counter does.
        """
        with self._lock:
            now = self.clock.time()
            n = 0
            for entry in self._entries.values():
                if entry.place == _READY and entry.token is not None:
                    entry.token = None
                    entry.visible_at = now
                    n += 1
            self._arrived.notify_all()
            return n

    def messages(self, queue: str) -> list[Envelope]:
        """Every message of ``queue`` in its work queue (ready or reserved), in order."""
        with self._lock:
            return [
                e.message
                for e in sorted(self._entries.values(), key=lambda e: e.seq)
                if e.queue == queue and e.place == _READY
            ]

    def __repr__(self) -> str:
        return f"InMemoryBroker(messages={len(self._entries)}, clock={self.clock!r})"
