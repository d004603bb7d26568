"""`Bulkhead`: a concurrency limit with a bounded wait queue."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

import attrs

from failsafe import _registry
from failsafe import _validators as _v
from failsafe._policy import AsyncRunner, Policy, SyncRunner
from failsafe._validators import integer, number
from failsafe.clock import SYSTEM_CLOCK, Clock
from failsafe.events import BulkheadRejected, Listener, _emit
from failsafe.exceptions import BulkheadFull

__all__ = ["Bulkhead"]


class _Waiter:
    """One caller waiting for a slot: a thread (a held lock) or a task (a future)."""

    __slots__ = ("future", "granted", "lock", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.granted = False
        self.loop = loop
        if loop is None:
            self.lock: threading.Lock | None = threading.Lock()
            self.lock.acquire()
            self.future: asyncio.Future[None] | None = None
        else:
            self.lock = None
            self.future = loop.create_future()

    def wake(self) -> None:
        if self.lock is not None:
            self.lock.release()
        elif self.loop is not None and self.future is not None:
            self.loop.call_soon_threadsafe(_resolve, self.future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@attrs.define(kw_only=True, eq=False, repr=False)
class Bulkhead(Policy):
    """Let at most ``max_concurrent`` calls run at once; up to ``max_queued`` more wait.

    A call that finds every slot taken and the queue full is rejected at once with
    [`BulkheadFull`][failsafe.BulkheadFull]; so is a queued call that waited ``max_wait``
    seconds. Slots are handed to waiters in arrival order (no barging), and one bulkhead
    may be shared by threads and asyncio tasks at the same time.

    Args:
        max_concurrent: Calls allowed to run at once (>= 1).
        max_queued: Calls allowed to wait for a slot (>= 0).
        max_wait: Seconds a queued call waits before it is rejected (``None``: no limit).
            Threads wait on a real lock; tasks wait on ``clock``.
        clock: Times the wait of queued tasks (a fake one in tests).
        listeners: Receive a [`BulkheadRejected`][failsafe.events.BulkheadRejected] event.
        name: Names this policy in events, errors and reprs.

    Raises:
        ConfigurationError: At construction, on a count below its minimum.

    Thread-safety: the counters are guarded by a lock held only for the counting, never
    while a call runs or waits.
    """

    max_concurrent: int = attrs.field(default=10, validator=integer(1))
    max_queued: int = attrs.field(default=0, validator=integer(0))
    max_wait: float | None = attrs.field(default=None, validator=number(at_least=0, optional=True))
    clock: Clock = SYSTEM_CLOCK
    listeners: Sequence[Listener] = attrs.field(default=(), converter=_v.listeners)
    name: str = "bulkhead"
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _active: int = attrs.field(default=0, init=False)
    _waiters: deque[_Waiter] = attrs.field(factory=deque, init=False)

    def __attrs_post_init__(self) -> None:
        _registry.register(self)

    @property
    def active(self) -> int:
        """Calls running now."""
        return self._active

    @property
    def queued(self) -> int:
        """Calls waiting for a slot now."""
        return len(self._waiters)

    def _reject(self) -> BulkheadFull:
        _emit(
            self.listeners,
            BulkheadRejected,
            policy=self.name,
            max_concurrent=self.max_concurrent,
            max_queued=self.max_queued,
        )
        return BulkheadFull(self.name, self.max_concurrent, self.max_queued)

    def _enter(self, loop: asyncio.AbstractEventLoop | None) -> _Waiter | None:
        """Take a slot (``None``), or join the queue (a waiter); raise when both are full."""
        with self._lock:
            if self._active < self.max_concurrent and not self._waiters:
                self._active += 1
                return None
            if len(self._waiters) < self.max_queued:
                waiter = _Waiter(loop)
                self._waiters.append(waiter)
                return waiter
        raise self._reject()

    def _abandon(self, waiter: _Waiter) -> bool:
        """A waiter gives up; return whether it had been granted a slot after all."""
        with self._lock:
            if waiter.granted:
                return True
            self._waiters.remove(waiter)
            return False

    def _leave(self) -> None:
        """Free a slot, handing it straight to the first waiter if there is one."""
        with self._lock:
            if self._waiters:
                waiter = self._waiters.popleft()
                waiter.granted = True
            else:
                self._active -= 1
                return
        waiter.wake()

    def _bind_sync(self, nxt: SyncRunner) -> SyncRunner:
        enter, leave, abandon = self._enter, self._leave, self._abandon
        max_wait = self.max_wait

        def bulkhead_sync(fn: Any, args: Any, kwargs: Any) -> Any:
            waiter = enter(None)
            if waiter is not None:
                assert waiter.lock is not None
                timeout = -1 if max_wait is None else max_wait
                try:
                    acquired = waiter.lock.acquire(timeout=timeout)
                except BaseException:
                    # interrupted while queued (Ctrl-C, a signal handler that raises): leave
                    # the queue, or give back the slot handed over meanwhile, so that no slot
                    # goes to a waiter that is gone
                    if abandon(waiter):
                        leave()
                    raise
                if not acquired and not abandon(waiter):
                    raise self._reject()
            try:
                return nxt(fn, args, kwargs)
            finally:
                leave()

        return bulkhead_sync

    def _bind_async(self, nxt: AsyncRunner) -> AsyncRunner:
        enter, leave, abandon = self._enter, self._leave, self._abandon
        max_wait = self.max_wait
        clock = self.clock

        async def bulkhead_async(fn: Any, args: Any, kwargs: Any) -> Any:
            waiter = enter(asyncio.get_running_loop())
            if waiter is not None:
                assert waiter.future is not None
                try:
                    if max_wait is None:
                        await waiter.future
                    else:
                        async with clock.timeout_async(max_wait):
                            await waiter.future
                except TimeoutError:
                    if not abandon(waiter):
                        raise self._reject() from None
                except BaseException:  # cancelled while queued: give back a granted slot
                    if abandon(waiter):
                        leave()
                    raise
            try:
                return await nxt(fn, args, kwargs)
            finally:
                leave()

        return bulkhead_async

    def describe(self) -> str:
        """Say in words what this bulkhead does."""
        wait = "" if self.max_wait is None else f", waiting at most {self.max_wait:g}s"
        return (
            f"bulkhead {self.name!r}: {self.max_concurrent} at once, {self.max_queued} queued{wait}"
        )
