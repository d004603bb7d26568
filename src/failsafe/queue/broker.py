"""The broker protocols every adapter implements, and the values they hand out.

A broker keeps, for each queue name, three places: the **work queue** consumers receive
from, the **DLQ** where a message waits for its delayed redelivery (it moves back to the work
queue when due), and the **parking queue** where a message the policy gave up on stays until
a person replays or purges it. Adapters: `InMemoryBroker` (tests, on a fake clock),
`SQLiteBroker` (the embedded default) and `RabbitMQBroker` (``failsafe-kit[rabbitmq]``).

`Broker` is the blocking protocol (used by `Consumer`), `AsyncBroker` the asyncio one (used by
`AsyncConsumer`). [`as_async`][failsafe.queue.as_async] and
[`as_blocking`][failsafe.queue.as_blocking] turn one into the other.

Every method that settles a delivery (`ack`, `release`, `defer`, `park`) returns only once
the broker has durably recorded the outcome; until then the delivery stays reserved, and if
its consumer dies the broker hands it out again (at-least-once).

The DLQ tools read dead letters a page at a time (`dead_letter_page`, issue #15): a
`DeadLetterFilter` says which, a `DeadLetterCursor` where the last page ended, and
`count_dead_letters` how many match, counting no further than a bound. A listing of 100
dead letters therefore reads and decodes about 100 of them however many are parked.
`replay_batch` and `purge_batch` act on the next batch of a selection the same way, the
choice and the move in one step (one transaction on SQLite), so a command that replays a
large selection walks it batch by batch and never holds it whole.

The DLQ methods (`dead_letters`, `dead_letter_page`, `count_dead_letters`, `replay`,
`replay_batch`, `purge`, `purge_batch`) never create a queue: for a queue the broker does
not know they raise `NoSuchQueue` (a typo in ``failsafe queue dlq list --queue`` used to
declare the misspelt queue on RabbitMQ).

A broker that holds delayed messages it cannot list (RabbitMQ: reading a TTL queue would
take its messages off their timers) may offer ``count_unlisted_delayed(queue)``, returning
an `UnlistedDelayed`: how many wait there, and why they cannot be listed. It is not part
of the protocols (``BlockingView`` forwards it and returns ``None`` for a broker without
it).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import Any, Final, Protocol, runtime_checkable

import attrs

from failsafe.exceptions import ConfigurationError, FailsafeError
from failsafe.queue.envelope import Envelope

__all__ = [
    "AsyncBroker",
    "Broker",
    "BrokerError",
    "BrokerUnavailable",
    "COUNT_LIMIT",
    "DeadLetter",
    "DeadLetterCount",
    "DeadLetterBatch",
    "DeadLetterCursor",
    "DeadLetterFilter",
    "DeadLetterPage",
    "Delivery",
    "NoSuchQueue",
    "Place",
    "SettleConflict",
    "UnlistedDelayed",
    "error_type_matches",
]

COUNT_LIMIT: Final = 1_000_000
"""The default bound of `Broker.count_dead_letters`: rows counted at most before it stops."""


class BrokerError(FailsafeError):
    """A broker refused or failed an operation (the message says which and why)."""


class BrokerUnavailable(BrokerError, ConnectionError):
    """The broker cannot be reached (consumers reconnect with backoff)."""


class NoSuchQueue(BrokerError, LookupError):
    """The broker has no queue of this name; the DLQ methods never create one.

    Attributes:
        queue: The name asked for.
        broker: Which broker was asked (a file path, or ``RabbitMQ at URL`` with the
            password masked).
    """

    def __init__(self, queue: str, broker: str) -> None:
        self.queue = queue
        self.broker = broker
        super().__init__(f"no such queue {queue!r} on {broker}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.queue, self.broker))


class SettleConflict(BrokerError):
    """A delivery could not be settled because the broker no longer holds it for us.

    Its reservation ran out (or the connection that received it closed) and the broker has
    handed, or will hand, the message out again: the outcome is left to that delivery.
    """


class Place(enum.StrEnum):
    """Where a message that is not in its work queue waits."""

    DELAYED = "delayed"  # in the DLQ, due back in the work queue at ``due_at``
    PARKED = "parked"  # given up on, kept until replayed or purged


@attrs.frozen(kw_only=True)
class Delivery:
    """One message handed to one consumer, reserved for it until settled.

    Attributes:
        queue: The work queue it came from.
        message: The envelope.
        deliveries: How many times the broker has handed out this copy (>= 1; more after a
            consumer died holding it). Used as a floor under the envelope's counts.
        token: The adapter's handle on the reservation.
    """

    queue: str
    message: Envelope
    deliveries: int = 1
    token: Any = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen(kw_only=True)
class DeadLetter:
    """A message in the DLQ or the parking queue, as the DLQ tools list it.

    Attributes:
        queue: The work queue it belongs to.
        message: The envelope (with its counts and last error).
        place: `Place.DELAYED` or `Place.PARKED`.
        since: Wall-clock time it got there.
        due_at: For a delayed message, when it goes back to the work queue.
    """

    queue: str
    message: Envelope
    place: Place
    since: float
    due_at: float | None = None


def error_type_matches(kind: str | None, wanted: Iterable[str]) -> bool:
    """Whether an error type ``kind`` is one of ``wanted``, by its full or its last name.

    A wanted name with a dot matches the full name only (``app.errors.OrderNotFound``); one
    without a dot matches the full name or its last dotted part (``OrderNotFound`` matches
    ``app.errors.OrderNotFound``, ``errors.OrderNotFound`` does not). ``None`` (no error)
    matches nothing.
    """
    if kind is None:
        return False
    short = kind.rsplit(".", 1)[-1]
    return any(w == kind or ("." not in w and w == short) for w in wanted)


def _names(field: str, value: Iterable[str]) -> tuple[str, ...]:
    """``value`` as a tuple of distinct non-empty strings (a bare string is refused)."""
    if isinstance(value, str | bytes) or not all(isinstance(item, str) and item for item in value):
        raise ConfigurationError(field, f"must be a sequence of non-empty strings, got {value!r}")
    return tuple(dict.fromkeys(value))


def _error_types(value: Iterable[str]) -> tuple[str, ...]:
    return _names("error_types", value)


def _ids(value: Iterable[str]) -> tuple[str, ...]:
    return _names("ids", value)


def _id_prefixes(value: Iterable[str]) -> tuple[str, ...]:
    return _names("id_prefixes", value)


def _place(value: Place | str | None) -> Place | None:
    if value is None:
        return None
    try:
        return Place(value)
    except ValueError:
        raise ConfigurationError(
            "place", f"must be Place.DELAYED, Place.PARKED or None, got {value!r}"
        ) from None


def _until(inst: object, attr: Any, value: object) -> None:
    if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
        raise ConfigurationError("until", f"must be a wall-clock time or None, got {value!r}")


@attrs.frozen(kw_only=True)
class DeadLetterFilter:
    """Which dead letters a listing, a count or a DLQ command takes: every condition given.

    Attributes:
        place: `Place.DELAYED` or `Place.PARKED` (or its value); ``None``: both.
        until: Only those that got to their place at or before this wall-clock time
            (``DeadLetter.since <= until``); ``None``: whenever. ``--older-than 1h`` is
            ``until=now - 3600``.
        error_types: Only those whose last error's type is one of these, by its full name
            or its last dotted part (see `error_type_matches`); empty: any, and those
            without an error too.
        ids: Only these message ids.
        id_prefixes: Only the message ids that begin with one of these. Together with
            ``ids``, one condition: the id is one of ``ids`` or begins with one of
            ``id_prefixes``; both empty: any id. (``failsafe queue dlq`` takes a prefix of
            8 characters or more for an id that it names alone; a filter takes any.)

    Raises:
        ConfigurationError: For a bad place, a time that is not a number, or a bare string
            where a sequence of names is wanted.

    Example:
        ```python
        from failsafe.queue import Place
        from failsafe.queue.broker import DeadLetterFilter

        stale = DeadLetterFilter(place=Place.PARKED, until=1_700_000_000.0,
                                 error_types=["OrderNotFound"])
        ```
    """

    place: Place | None = attrs.field(default=None, converter=_place)
    until: float | None = attrs.field(default=None, validator=_until)
    error_types: tuple[str, ...] = attrs.field(default=(), converter=_error_types)
    ids: tuple[str, ...] = attrs.field(default=(), converter=_ids)
    id_prefixes: tuple[str, ...] = attrs.field(default=(), converter=_id_prefixes)

    def matches(self, letter: DeadLetter) -> bool:
        """Whether ``letter`` meets every condition (what the adapters compute, in Python)."""
        if self.place is not None and letter.place is not self.place:
            return False
        if self.until is not None and letter.since > self.until:
            return False
        if (self.ids or self.id_prefixes) and not self.names_id(letter.message.id):
            return False
        if self.error_types:
            error = letter.message.last_error
            return error_type_matches(error.type if error is not None else None, self.error_types)
        return True

    def names_id(self, message_id: str) -> bool:
        """Whether ``message_id`` is one of ``ids`` or begins with one of ``id_prefixes``.

        ``False`` when both are empty (`matches` then takes any id).
        """
        return message_id in self.ids or message_id.startswith(self.id_prefixes)


@attrs.frozen
class DeadLetterCursor:
    """Where a page of dead letters ended: pass it as ``after`` to get the next page.

    Opaque: only the adapter that made it reads ``key``, and refuses a cursor of another
    adapter with `ConfigurationError`. A cursor stays valid when the letters of its page
    are replayed or purged meanwhile: the next page starts after them all the same.
    """

    adapter: str
    key: tuple[Any, ...]


@attrs.frozen(kw_only=True)
class DeadLetterPage:
    """One page of a dead-letter listing, oldest first.

    Attributes:
        letters: At most the ``limit`` asked for (fewer, even none, does not mean the end).
        cursor: Pass it as ``after`` for the next page; ``None`` when there is no more.
        truncated: The broker stopped at its own bound on how far it looks (RabbitMQ's
            ``dlq_browse_limit``): more dead letters may match beyond it, unreachable by
            listing (``cursor`` is then ``None``).
    """

    letters: tuple[DeadLetter, ...]
    cursor: DeadLetterCursor | None
    truncated: bool = False


@attrs.frozen(kw_only=True)
class DeadLetterBatch:
    """What one `Broker.replay_batch` or `Broker.purge_batch` did.

    Attributes:
        ids: The ids of the dead letters replayed (or purged), oldest first.
        cursor: Pass it as ``after`` for the next batch; ``None`` when the selection is
            done.
        truncated: As `DeadLetterPage.truncated`: the broker stopped at its bound on how
            far it looks, and more may match beyond it.
    """

    ids: tuple[str, ...]
    cursor: DeadLetterCursor | None
    truncated: bool = False


@attrs.frozen(kw_only=True)
class DeadLetterCount:
    """How many dead letters match a filter, by place.

    Attributes:
        delayed: Those in the DLQ.
        parked: Those in the parking queue.
        exact: ``False`` when counting stopped at its bound (``at_most``, or the broker's
            own): then there are at least ``delayed`` + ``parked`` (more than ``at_most``).
    """

    delayed: int = 0
    parked: int = 0
    exact: bool = True

    @property
    def total(self) -> int:
        """``delayed + parked``."""
        return self.delayed + self.parked


@attrs.frozen(kw_only=True)
class UnlistedDelayed:
    """Delayed messages a broker holds but cannot list (``count_unlisted_delayed``).

    Attributes:
        messages: How many wait in the DLQ (on RabbitMQ: in the queue's delay queues).
        reason: Why they cannot be listed, as a clause (``they cannot be listed on
            RabbitMQ: ...``).
    """

    messages: int
    reason: str


@runtime_checkable
class Broker(Protocol):
    """A blocking broker adapter: what `Consumer` and the DLQ tools need.

    Implementations are thread-safe. Queue names are non-empty strings; adapters may refuse
    names their broker cannot hold (with `ConfigurationError`). The DLQ methods
    (`dead_letters` to `purge_batch`) raise `NoSuchQueue` for a queue the broker does not
    know, and never create one.
    """

    def declare(self, queue: str) -> None:
        """Create ``queue`` with its DLQ and parking queue if missing (idempotent)."""
        ...

    def publish(self, queue: str, message: Envelope, *, delay: float = 0.0) -> None:
        """Enqueue ``message``; return once the broker has it durably.

        ``delay`` > 0 puts it in the DLQ, due back in the work queue after that many seconds.
        """
        ...

    def receive(self, queue: str, *, limit: int = 1, wait: float = 0.0) -> list[Delivery]:
        """Reserve up to ``limit`` messages that are ready now.

        Waits up to ``wait`` seconds for the first one; returns ``[]`` if none came.
        Delayed messages whose time has come are ready.
        """
        ...

    def ack(self, delivery: Delivery) -> None:
        """Settle: the message was handled; remove it."""
        ...

    def release(self, delivery: Delivery) -> None:
        """Settle: give the message back unhandled (ready again at once, counts unchanged)."""
        ...

    def defer(self, delivery: Delivery, message: Envelope, delay: float) -> None:
        """Settle by moving ``message`` (the delivery's, with updated counts) to the DLQ.

        It is due back in the work queue after ``delay`` seconds.
        """
        ...

    def park(self, delivery: Delivery, message: Envelope) -> None:
        """Settle by moving ``message`` to the parking queue, where it stays until replayed."""
        ...

    def dead_letters(
        self, queue: str, *, place: Place | None = None, limit: int = 1000
    ) -> list[DeadLetter]:
        """List messages of ``queue`` in the DLQ and the parking queue, oldest first.

        An adapter whose broker cannot list delayed messages without disturbing them lists
        only parked ones (its documentation says so). The first page of `dead_letter_page`,
        as a list.
        """
        ...

    def dead_letter_page(
        self,
        queue: str,
        *,
        where: DeadLetterFilter | None = None,
        after: DeadLetterCursor | None = None,
        limit: int = 100,
    ) -> DeadLetterPage:
        """Read one page of ``queue``'s dead letters that match ``where``, oldest first.

        Reads and decodes about ``limit`` dead letters (plus, on a broker that cannot skip
        ahead, those it steps over), however many there are. ``after``: the ``cursor`` of
        the previous page (``None``: from the oldest). Letters that arrive while a listing
        is walked may or may not be seen; none is listed twice by one walk.

        Raises:
            ConfigurationError: For a ``limit`` below 1 or another adapter's cursor.
            NoSuchQueue: If the broker has no queue ``queue``.
        """
        ...

    def count_dead_letters(
        self, queue: str, *, where: DeadLetterFilter | None = None, at_most: int = COUNT_LIMIT
    ) -> DeadLetterCount:
        """Count ``queue``'s dead letters that match ``where``, by place.

        Stops after ``at_most`` of them (the count is then not ``exact``), so its cost is
        bounded; without a filter on the error type it reads no message body.
        """
        ...

    def replay(self, queue: str, ids: Sequence[str]) -> int:
        """Move the listed dead letters back to the work queue now, with fresh counts.

        Returns how many were moved (ids not found are ignored).
        """
        ...

    def replay_batch(
        self,
        queue: str,
        *,
        where: DeadLetterFilter | None = None,
        after: DeadLetterCursor | None = None,
        limit: int = 100,
    ) -> DeadLetterBatch:
        """Replay the next ``limit`` dead letters matching ``where`` (oldest first).

        As `replay` (fresh counts, back in the work queue now), for the letters that
        `dead_letter_page` with the same arguments would list, chosen and moved in one step
        (one transaction where the broker has them). Walk a large selection by passing each
        batch's ``cursor`` as the next ``after``.
        """
        ...

    def purge(self, queue: str, ids: Sequence[str]) -> int:
        """Delete the listed dead letters for good; return how many were deleted."""
        ...

    def purge_batch(
        self,
        queue: str,
        *,
        where: DeadLetterFilter | None = None,
        after: DeadLetterCursor | None = None,
        limit: int = 100,
    ) -> DeadLetterBatch:
        """Delete the next ``limit`` dead letters matching ``where`` for good.

        As `replay_batch`, deleting instead of replaying.
        """
        ...

    def delivery_limit(self, queue: str) -> int | None:
        """The broker's own cap on deliveries of one message, if it has one."""
        ...

    def close(self) -> None:
        """Release connections; reserved deliveries go back to their queues."""
        ...


@runtime_checkable
class AsyncBroker(Protocol):
    """The asyncio twin of `Broker`: the same methods, as coroutines (``close`` is ``aclose``)."""

    async def declare(self, queue: str) -> None:
        """See `Broker.declare`."""
        ...

    async def publish(self, queue: str, message: Envelope, *, delay: float = 0.0) -> None:
        """See `Broker.publish`."""
        ...

    async def receive(self, queue: str, *, limit: int = 1, wait: float = 0.0) -> list[Delivery]:
        """See `Broker.receive`."""
        ...

    async def ack(self, delivery: Delivery) -> None:
        """See `Broker.ack`."""
        ...

    async def release(self, delivery: Delivery) -> None:
        """See `Broker.release`."""
        ...

    async def defer(self, delivery: Delivery, message: Envelope, delay: float) -> None:
        """See `Broker.defer`."""
        ...

    async def park(self, delivery: Delivery, message: Envelope) -> None:
        """See `Broker.park`."""
        ...

    async def dead_letters(
        self, queue: str, *, place: Place | None = None, limit: int = 1000
    ) -> list[DeadLetter]:
        """See `Broker.dead_letters`."""
        ...

    async def dead_letter_page(
        self,
        queue: str,
        *,
        where: DeadLetterFilter | None = None,
        after: DeadLetterCursor | None = None,
        limit: int = 100,
    ) -> DeadLetterPage:
        """See `Broker.dead_letter_page`."""
        ...

    async def count_dead_letters(
        self, queue: str, *, where: DeadLetterFilter | None = None, at_most: int = COUNT_LIMIT
    ) -> DeadLetterCount:
        """See `Broker.count_dead_letters`."""
        ...

    async def replay(self, queue: str, ids: Sequence[str]) -> int:
        """See `Broker.replay`."""
        ...

    async def replay_batch(
        self,
        queue: str,
        *,
        where: DeadLetterFilter | None = None,
        after: DeadLetterCursor | None = None,
        limit: int = 100,
    ) -> DeadLetterBatch:
        """See `Broker.replay_batch`."""
        ...

    async def purge(self, queue: str, ids: Sequence[str]) -> int:
        """See `Broker.purge`."""
        ...

    async def purge_batch(
        self,
        queue: str,
        *,
        where: DeadLetterFilter | None = None,
        after: DeadLetterCursor | None = None,
        limit: int = 100,
    ) -> DeadLetterBatch:
        """See `Broker.purge_batch`."""
        ...

    async def delivery_limit(self, queue: str) -> int | None:
        """See `Broker.delivery_limit`."""
        ...

    async def aclose(self) -> None:
        """See `Broker.close`."""
        ...
