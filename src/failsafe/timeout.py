"""`Timeout`: bound how long an operation may take.

Two behaviours, because Python can interrupt a coroutine but not a running function:

- **Coroutines: pre-emptive.** At the deadline the coroutine is cancelled (as by
  `asyncio.timeout`) and the caller gets [`TimeoutExceeded`][failsafe.TimeoutExceeded].
- **Plain functions: cooperative.** The function runs to its end. While it runs, the time
  left is available from ``failsafe.current_context().remaining()`` so that it can bound its
  own I/O (failsafe's HTTP transport shrinks its request timeout to it). If it returns after
  the deadline, the late result is discarded and the caller gets `TimeoutExceeded`. If it
  raises, its exception passes through unchanged.

`TimeoutExceeded` is also a `TimeoutError`, so ``except TimeoutError`` catches it and the
default `Retry` retries it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from failsafe import _validators as _v
from failsafe._policy import AsyncRunner, Policy, SyncRunner
from failsafe._validators import number
from failsafe.clock import SYSTEM_CLOCK, Clock
from failsafe.context import _deadline
from failsafe.events import Listener, TimedOut, _emit
from failsafe.exceptions import TimeoutExceeded

__all__ = ["Timeout"]


@attrs.frozen(repr=False)
class Timeout(Policy):
    """Give the operation ``seconds`` to finish (pre-emptive for coroutines, cooperative otherwise).

    Args:
        seconds: The time allowed, > 0 (default 30 s, as Polly's).
        clock: Measures the time (a fake one in tests).
        listeners: Receive a [`TimedOut`][failsafe.events.TimedOut] event.
        name: Names this policy in events and reprs.

    Raises:
        ConfigurationError: At construction, if ``seconds`` is not a positive number.

    Example:
        ```python
        from failsafe import Timeout

        @Timeout(2.0)
        async def fetch() -> bytes: ...
        ```
    """

    seconds: float = attrs.field(default=30.0, validator=number(above=0))
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, kw_only=True)
    listeners: Sequence[Listener] = attrs.field(default=(), converter=_v.listeners, kw_only=True)
    name: str = attrs.field(default="timeout", kw_only=True)

    def _expired(self, cancelled: bool) -> TimeoutExceeded:
        _emit(self.listeners, TimedOut, policy=self.name, timeout=self.seconds, cancelled=cancelled)
        return TimeoutExceeded(self.seconds)

    def _bind_sync(self, nxt: SyncRunner) -> SyncRunner:
        seconds = self.seconds
        # the clock's methods are looked up at each use, never kept: fake_time() swaps them
        clock = self.clock
        get, set_, reset = _deadline.get, _deadline.set, _deadline.reset

        def timeout_sync(fn: Any, args: Any, kwargs: Any) -> Any:
            deadline = clock.monotonic() + seconds
            outer = get()
            if outer is not None and outer[0] <= deadline:  # an enclosing deadline is earlier
                value = nxt(fn, args, kwargs)
            else:
                token = set_((deadline, clock))
                try:
                    value = nxt(fn, args, kwargs)
                finally:
                    reset(token)
            if clock.monotonic() >= deadline:  # at the deadline is late, as asyncio.timeout has it
                raise self._expired(cancelled=False)
            return value

        return timeout_sync

    def _bind_async(self, nxt: AsyncRunner) -> AsyncRunner:
        seconds = self.seconds
        clock = self.clock  # its methods looked up at each use, as in timeout_sync
        get, set_, reset = _deadline.get, _deadline.set, _deadline.reset

        async def timeout_async(fn: Any, args: Any, kwargs: Any) -> Any:
            deadline = clock.monotonic() + seconds
            outer = get()
            token = set_((deadline, clock)) if outer is None or outer[0] > deadline else None
            scope = clock.timeout_async(seconds)
            try:
                async with scope:
                    return await nxt(fn, args, kwargs)
            except TimeoutError:
                if scope.expired():
                    raise self._expired(cancelled=True) from None
                raise
            finally:
                if token is not None:
                    reset(token)

        return timeout_async

    def describe(self) -> str:
        """Say in words what this timeout does."""
        return f"timeout {self.name!r}: {self.seconds:g}s"
