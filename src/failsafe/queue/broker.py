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
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from failsafe.exceptions import FailsafeError
from failsafe.queue.envelope import Envelope

__all__ = [
    "AsyncBroker",
    "Broker",
    "BrokerError",
    "BrokerUnavailable",
    "DeadLetter",
    "Delivery",
    "Place",
    "SettleConflict",
]


class BrokerError(FailsafeError):
    """A broker refused or failed an operation (the message says which and why)."""


class BrokerUnavailable(BrokerError, ConnectionError):
    """The broker cannot be reached (consumers reconnect with backoff)."""


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


@runtime_checkable
class Broker(Protocol):
    """A blocking broker adapter: what `Consumer` and the DLQ tools need.

    Implementations are thread-safe. Queue names are non-empty strings; adapters may refuse
    names their broker cannot hold (with `ConfigurationError`).
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
        only parked ones (its documentation says so).
        """
        ...

    def replay(self, queue: str, ids: Sequence[str]) -> int:
        """Move the listed dead letters back to the work queue now, with fresh counts.

        Returns how many were moved (ids not found are ignored).
        """
        ...

    def purge(self, queue: str, ids: Sequence[str]) -> int:
        """Delete the listed dead letters for good; return how many were deleted."""
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

    async def replay(self, queue: str, ids: Sequence[str]) -> int:
        """See `Broker.replay`."""
        ...

    async def purge(self, queue: str, ids: Sequence[str]) -> int:
        """See `Broker.purge`."""
        ...

    async def delivery_limit(self, queue: str) -> int | None:
        """See `Broker.delivery_limit`."""
        ...

    async def aclose(self) -> None:
        """See `Broker.close`."""
        ...
