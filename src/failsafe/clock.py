"""The one seam through which failsafe reads time and waits.

Every policy takes a ``clock``. Production code uses [`SYSTEM_CLOCK`][failsafe.clock.SYSTEM_CLOCK];
tests pass [`failsafe.testing.FakeClock`][failsafe.testing.FakeClock], which never waits.
Nothing else in failsafe calls `time.monotonic`, `time.sleep` or `asyncio.sleep`.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

__all__ = ["SYSTEM_CLOCK", "AsyncTimeout", "Clock", "SystemClock"]


class AsyncTimeout(AbstractAsyncContextManager["AsyncTimeout"], Protocol):
    """An async context manager that cancels its block when a deadline passes.

    On exit after the deadline it raises `TimeoutError`; `expired()` then tells that the
    deadline caused it (and not a `TimeoutError` raised by the block itself).
    """

    def expired(self) -> bool:
        """Return whether the deadline passed and the block was cancelled."""
        ...


@runtime_checkable
class Clock(Protocol):
    """Time, as failsafe's policies see it.

    ``monotonic`` measures intervals, ``time`` is wall-clock seconds since the epoch (used where
    several processes share state, such as a breaker's opening time in Redis).
    """

    def monotonic(self) -> float:
        """Return seconds from an arbitrary origin that never goes backwards."""
        ...

    def time(self) -> float:
        """Return wall-clock seconds since the Unix epoch."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""
        ...

    async def sleep_async(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds``."""
        ...

    def timeout_async(self, seconds: float) -> AsyncTimeout:
        """Return a context manager that cancels the enclosed block after ``seconds``."""
        ...


class SystemClock:
    """The real clock: `time.monotonic`, `time.time`, `time.sleep`, `asyncio.sleep`.

    Thread-safe and stateless; use the shared [`SYSTEM_CLOCK`][failsafe.clock.SYSTEM_CLOCK].
    Under [`failsafe.testing.fake_time`][failsafe.testing.fake_time] its methods answer from
    a fake clock instead, so that everything built with the default clock (before or inside
    the block) reads fake time and never waits.
    """

    __slots__ = ()

    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)

    def sleep(self, seconds: float) -> None:
        """Block for ``seconds`` (policies never call this with zero)."""
        time.sleep(seconds)

    async def sleep_async(self, seconds: float) -> None:
        """Suspend the task for ``seconds``."""
        await asyncio.sleep(seconds)

    # asyncio.timeout itself, not a method around it: Timeout calls this on every coroutine
    timeout_async = staticmethod(asyncio.timeout)

    def __repr__(self) -> str:
        return "SystemClock()"


_METHODS = ("monotonic", "time", "sleep", "sleep_async", "timeout_async")
_REAL = {name: SystemClock.__dict__[name] for name in _METHODS}


def _stand_in(clock: Clock | None) -> None:
    """Make every `SystemClock` answer from ``clock`` (``None``: from the real time again).

    Policies call their clock's methods at each use (they never keep a bound method), so
    the change reaches policies built before it. Used by `failsafe.testing.fake_time`.
    """
    for name in _METHODS:
        real = _REAL[name]
        setattr(SystemClock, name, real if clock is None else staticmethod(getattr(clock, name)))


def _standing_in() -> bool:
    return SystemClock.__dict__["monotonic"] is not _REAL["monotonic"]


SYSTEM_CLOCK: Clock = SystemClock()
"""The shared real clock, the default of every policy."""
