"""Turn a blocking broker into an asyncio one, and back.

[`as_async`][failsafe.queue.as_async] runs a `Broker`'s calls in worker threads (directly for
the in-memory broker, which never blocks); [`as_blocking`][failsafe.queue.as_blocking] runs an
`AsyncBroker` on an event loop of its own in a background thread, so `Consumer` and the DLQ
command line can use the RabbitMQ adapter.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from failsafe import _tracing
from failsafe.clock import SYSTEM_CLOCK, Clock
from failsafe.queue import _trace
from failsafe.queue.broker import (
    COUNT_LIMIT,
    AsyncBroker,
    Broker,
    DeadLetter,
    DeadLetterBatch,
    DeadLetterCount,
    DeadLetterCursor,
    DeadLetterFilter,
    DeadLetterPage,
    Delivery,
    Place,
    UnlistedDelayed,
)
from failsafe.queue.envelope import Envelope

__all__ = ["AsyncView", "BlockingView", "as_async", "as_blocking"]

T = TypeVar("T")

_POLL = 0.005  # seconds between looks at a non-blocking broker while waiting


class AsyncView:
    """An `AsyncBroker` over a blocking `Broker` (see `as_async`).

    Attributes:
        broker: The blocking broker underneath.
    """

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._direct = bool(getattr(broker, "_nonblocking", False))

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._direct:
            return fn(*args, **kwargs)
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def declare(self, queue: str) -> None:
        """See `Broker.declare`."""
        await self._run(self.broker.declare, queue)

    async def publish(self, queue: str, message: Envelope, *, delay: float = 0.0) -> None:
        """See `Broker.publish`."""
        await self._run(self.broker.publish, queue, message, delay=delay)

    async def receive(self, queue: str, *, limit: int = 1, wait: float = 0.0) -> list[Delivery]:
        """See `Broker.receive`.

        A broker that never blocks is polled on its own clock instead of waited on, so the
        event loop is never blocked.
        """
        if not self._direct:
            return await asyncio.to_thread(self.broker.receive, queue, limit=limit, wait=wait)
        clock: Clock = getattr(self.broker, "clock", SYSTEM_CLOCK)
        end = clock.monotonic() + wait
        while True:
            got = self.broker.receive(queue, limit=limit, wait=0.0)
            left = end - clock.monotonic()
            if got or left <= 0:
                return got
            await clock.sleep_async(min(left, _POLL))

    async def ack(self, delivery: Delivery) -> None:
        """See `Broker.ack`."""
        await self._run(self.broker.ack, delivery)

    async def release(self, delivery: Delivery) -> None:
        """See `Broker.release`."""
        await self._run(self.broker.release, delivery)

    async def defer(self, delivery: Delivery, message: Envelope, delay: float) -> None:
        """See `Broker.defer`."""
        await self._run(self.broker.defer, delivery, message, delay)

    async def park(self, delivery: Delivery, message: Envelope) -> None:
        """See `Broker.park`."""
        await self._run(self.broker.park, delivery, message)

    async def dead_letters(
        self, queue: str, *, place: Place | None = None, limit: int = 1000
    ) -> list[DeadLetter]:
        """See `Broker.dead_letters`."""
        return await self._run(self.broker.dead_letters, queue, place=place, limit=limit)

    async def dead_letter_page(
        self,
        queue: str,
        *,
        where: DeadLetterFilter | None = None,
        after: DeadLetterCursor | None = None,
        limit: int = 100,
    ) -> DeadLetterPage:
        """See `Broker.dead_letter_page`."""
        return await self._run(
            self.broker.dead_letter_page, queue, where=where, after=after, limit=limit
        )

    async def count_dead_letters(
        self, queue: str, *, where: DeadLetterFilter | None = None, at_most: int = COUNT_LIMIT
    ) -> DeadLetterCount:
        """See `Broker.count_dead_letters`."""
        return await self._run(self.broker.count_dead_letters, queue, where=where, at_most=at_most)

    async def replay(self, queue: str, ids: Sequence[str]) -> int:
        """See `Broker.replay`."""
        return await self._run(self.broker.replay, queue, ids)

    async def purge(self, queue: str, ids: Sequence[str]) -> int:
        """See `Broker.purge`."""
        return await self._run(self.broker.purge, queue, ids)

    async def replay_batch(
        self,
        queue: str,
        *,
        where: DeadLetterFilter | None = None,
        after: DeadLetterCursor | None = None,
        limit: int = 100,
    ) -> DeadLetterBatch:
        """See `Broker.replay_batch`."""
        return await self._run(
            self.broker.replay_batch, queue, where=where, after=after, limit=limit
        )

    async def purge_batch(
        self,
        queue: str,
        *,
        where: DeadLetterFilter | None = None,
        after: DeadLetterCursor | None = None,
        limit: int = 100,
    ) -> DeadLetterBatch:
        """See `Broker.purge_batch`."""
        return await self._run(
            self.broker.purge_batch, queue, where=where, after=after, limit=limit
        )

    async def delivery_limit(self, queue: str) -> int | None:
        """See `Broker.delivery_limit`."""
        return await self._run(self.broker.delivery_limit, queue)

    async def aclose(self) -> None:
        """Close the broker underneath."""
        await self._run(self.broker.close)

    def __repr__(self) -> str:
        return f"as_async({self.broker!r})"


def as_async(broker: Broker) -> AsyncView:
    """The asyncio view of a blocking broker: each call runs in a worker thread.

    Example:
        ```python
        from failsafe.queue import InMemoryBroker, as_async

        broker = as_async(InMemoryBroker())
        ```
    """
    return AsyncView(broker)


class BlockingView:
    """A blocking `Broker` over an `AsyncBroker` (see `as_blocking`).

    Attributes:
        broker: The asyncio broker underneath.
    """

    def __init__(self, broker: AsyncBroker | Callable[[], AsyncBroker]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="failsafe-broker-loop", daemon=True
        )
        self._thread.start()
        if callable(broker) and not isinstance(broker, AsyncBroker):
            factory = broker

            async def build() -> AsyncBroker:
                return factory()

            self.broker = self._call(build())
        else:
            self.broker = broker

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def declare(self, queue: str) -> None:
        """See `Broker.declare`."""
        self._call(self.broker.declare(queue))

    def publish(self, queue: str, message: Envelope, *, delay: float = 0.0) -> None:
        """See `Broker.publish`.

        With tracing installed, the producer span is started here, in the caller's thread
        (the broker runs on the loop thread, which does not see the caller's span).
        """
        tracing = _tracing.installed()
        if tracing is None or not isinstance(message, Envelope):
            self._call(self.broker.publish(queue, message, delay=delay))
            return
        system = _trace.system_of(self.broker)
        with _trace.publishing(tracing, system, queue, (message,)) as traced:
            self._call(self.broker.publish(queue, traced[0], delay=delay))

    def receive(self, queue: str, *, limit: int = 1, wait: float = 0.0) -> list[Delivery]:
        """See `Broker.receive`."""
        return self._call(self.broker.receive(queue, limit=limit, wait=wait))

    def ack(self, delivery: Delivery) -> None:
        """See `Broker.ack`."""
        self._call(self.broker.ack(delivery))

    def release(self, delivery: Delivery) -> None:
        """See `Broker.release`."""
        self._call(self.broker.release(delivery))

    def defer(self, delivery: Delivery, message: Envelope, delay: float) -> None:
        """See `Broker.defer`."""
        self._call(self.broker.defer(delivery, message, delay))

    def park(self, delivery: Delivery, message: Envelope) -> None:
        """See `Broker.park`."""
        self._call(self.broker.park(delivery, message))

    def dead_letters(
        self, queue: str, *, place: Place | None = None, limit: int = 1000
    ) -> list[DeadLetter]:
        """See `Broker.dead_letters`."""
        return self._call(self.broker.dead_letters(queue, place=place, limit=limit))

    def dead_letter_page(
        self,
        queue: str,
        *,
        where: DeadLetterFilter | None = None,
        after: DeadLetterCursor | None = None,
        limit: int = 100,
    ) -> DeadLetterPage:
        """See `Broker.dead_letter_page`."""
        return self._call(
            self.broker.dead_letter_page(queue, where=where, after=after, limit=limit)
        )

    def count_dead_letters(
        self, queue: str, *, where: DeadLetterFilter | None = None, at_most: int = COUNT_LIMIT
    ) -> DeadLetterCount:
        """See `Broker.count_dead_letters`."""
        return self._call(self.broker.count_dead_letters(queue, where=where, at_most=at_most))

    def replay(self, queue: str, ids: Sequence[str]) -> int:
        """See `Broker.replay`."""
        return self._call(self.broker.replay(queue, ids))

    def purge(self, queue: str, ids: Sequence[str]) -> int:
        """See `Broker.purge`."""
        return self._call(self.broker.purge(queue, ids))

    def replay_batch(
        self,
        queue: str,
        *,
        where: DeadLetterFilter | None = None,
        after: DeadLetterCursor | None = None,
        limit: int = 100,
    ) -> DeadLetterBatch:
        """See `Broker.replay_batch`."""
        return self._call(self.broker.replay_batch(queue, where=where, after=after, limit=limit))

    def purge_batch(
        self,
        queue: str,
        *,
        where: DeadLetterFilter | None = None,
        after: DeadLetterCursor | None = None,
        limit: int = 100,
    ) -> DeadLetterBatch:
        """See `Broker.purge_batch`."""
        return self._call(self.broker.purge_batch(queue, where=where, after=after, limit=limit))

    def delivery_limit(self, queue: str) -> int | None:
        """See `Broker.delivery_limit`."""
        return self._call(self.broker.delivery_limit(queue))

    def count_unlisted_delayed(self, queue: str) -> UnlistedDelayed | None:
        """The broker's ``count_unlisted_delayed(queue)``; ``None`` for one without it.

        A broker that can list its delayed messages has no such method (see
        `failsafe.queue.broker`); RabbitMQ's counts the messages in its delay queues.
        """
        count: Callable[[str], Coroutine[Any, Any, UnlistedDelayed]] | None = getattr(
            self.broker, "count_unlisted_delayed", None
        )
        return None if count is None else self._call(count(queue))

    def close(self) -> None:
        """Close the broker underneath, then stop the loop thread."""
        if not self._loop.is_running():
            return
        try:
            self._call(self.broker.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __repr__(self) -> str:
        return f"as_blocking({self.broker!r})"


def as_blocking(broker: AsyncBroker | Callable[[], AsyncBroker]) -> BlockingView:
    """A blocking view of an asyncio broker, run on an event loop in a background thread.

    Pass the broker, or a function that builds it (called on that loop, for adapters that
    must be built inside a running loop). Call ``close()`` when done.
    """
    return BlockingView(broker)
