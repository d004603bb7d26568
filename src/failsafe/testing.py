"""Test helpers for users of failsafe: fake time, a recording listener, fault injection.

The fault helpers (`fail_first`, `fail_every`, `with_latency`) inject with the machinery of
[`Chaos`][failsafe.chaos.Chaos], deciding by call number instead of by a random draw.

Everything here is public and stable, for your own tests:

```python
from failsafe import Retry, Backoff
from failsafe.testing import FakeClock, RecordingListener, fail_first

clock, events = FakeClock(), RecordingListener()
retry = Retry(backoff=Backoff.constant(1.0), clock=clock, listeners=[events])
assert retry.call(fail_first(2, ConnectionError, returns="ok")) == "ok"
assert clock.sleeps == [1.0, 1.0]        # recorded, never waited
```
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from failsafe import clock as _clock
from failsafe.chaos import _Fault, _injecting_async, _injecting_sync, _Latency
from failsafe.clock import AsyncTimeout
from failsafe.events import Event

__all__ = [
    "FakeClock",
    "FakeTimer",
    "Faulty",
    "RecordingListener",
    "fail_every",
    "fail_first",
    "fake_time",
    "with_latency",
    "with_latency_async",
]

E = TypeVar("E", bound=Event)
T = TypeVar("T")


class _FakeTimeout:
    """``asyncio.timeout`` on fake time, step for step as CPython's ``asyncio.Timeout``.

    The task's cancel count is read on entry; at the deadline the task is cancelled; on exit
    after that the cancel is always taken back (``uncancel``), and `TimeoutError` replaces
    the `CancelledError` only when no other cancel was asked for meanwhile. A deadline that
    has passed on entry fires on the loop's next iteration, as the real one does.
    """

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        self._clock = clock
        self._seconds = seconds
        self._state = "created"
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cancelling = 0
        self._timer: list[Any] | None = None
        self._handle: asyncio.Handle | None = None

    def expired(self) -> bool:
        """Return whether the deadline passed and the block was cancelled."""
        return self._state in ("expiring", "expired")

    def _fire(self) -> None:
        """The deadline passed (called by the clock, from whichever thread moved it)."""
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._on_timeout()
        else:
            loop.call_soon_threadsafe(self._on_timeout)

    def _on_timeout(self) -> None:
        if self._state != "entered" or self._task is None:
            return  # the block ended first
        self._task.cancel()
        self._state = "expiring"
        self._handle = None

    async def __aenter__(self) -> _FakeTimeout:
        if self._state != "created":
            raise RuntimeError("Timeout has already been entered")
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Timeout should be used inside a task")
        self._state = "entered"
        self._task = task
        self._loop = asyncio.get_running_loop()
        self._cancelling = task.cancelling()
        deadline = self._clock.monotonic() + self._seconds
        if deadline <= self._clock.monotonic():
            self._handle = self._loop.call_soon(self._on_timeout)
        else:
            self._timer = self._clock._schedule(deadline, self._fire)
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool | None:
        if self._timer is not None:
            self._timer[2] = None  # disarm
            self._timer = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._state == "expiring":
            self._state = "expired"
            assert self._task is not None
            if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc
        elif self._state == "entered":
            self._state = "exited"
        return None


class FakeClock:
    """A clock that never waits: sleeping advances its time at once and is recorded.

    Args:
        start: The initial monotonic time.
        wall_start: The initial wall-clock time (seconds since the epoch).

    Attributes:
        sleeps: Every delay passed to ``sleep`` or ``sleep_async``, in order.

    ``timeout_async`` cancels the enclosed task when fake time passes its deadline, so a
    coroutine that awaits ``clock.sleep_async(5)`` under ``Timeout(1, clock=clock)`` is
    cancelled at fake time 1, as it would be for real. Time is shared: with several tasks
    sleeping at once, each sleep advances the one clock. Thread-safe.
    """

    def __init__(self, start: float = 0.0, wall_start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_start - start
        self.sleeps: list[float] = []
        self._timers: list[list[Any]] = []
        self._seq = itertools.count()
        self._lock = threading.RLock()

    def monotonic(self) -> float:
        """Return the fake monotonic time."""
        return self._now

    def time(self) -> float:
        """Return the fake wall-clock time; it advances with ``monotonic``."""
        return self._now + self._wall_offset

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, firing any timeout whose deadline passes."""
        if seconds < 0:
            raise ValueError(f"cannot advance a clock by a negative amount ({seconds})")
        self._advance_to(self._now + seconds)

    def step_wall(self, seconds: float) -> None:
        """Step the wall clock (``time()``) by ``seconds``, either way; ``monotonic`` stays.

        This is what an NTP correction or a resumed virtual machine does to a real clock: use
        it to show that a policy measures its intervals on the monotonic clock.
        """
        with self._lock:
            self._wall_offset += seconds

    def _advance_to(self, target: float, task: asyncio.Task[Any] | None = None) -> None:
        while True:
            with self._lock:
                while self._timers and self._timers[0][2] is None:
                    heapq.heappop(self._timers)
                if not self._timers or self._timers[0][0] > target:
                    self._now = max(self._now, target)
                    return
                deadline, _, callback = heapq.heappop(self._timers)
                self._now = max(self._now, deadline)
            before = task.cancelling() if task is not None else 0
            callback()
            if task is not None and task.cancelling() > before:
                return  # the sleeping task was cancelled at this deadline: stop here

    def _schedule(self, deadline: float, callback: Callable[[], None]) -> list[Any]:
        with self._lock:
            timer = [deadline, next(self._seq), callback]
            heapq.heappush(self._timers, timer)
            return timer

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeTimer:
        """Call ``callback`` when fake time reaches ``when`` (on the thread that moves it there).

        For code that waits on something else with a deadline measured on this clock (a
        thread waiting for a condition, as a hedged call does under ``call``): arm a timer
        that wakes the waiter, and cancel it once the wait is over. A ``when`` already
        passed fires at the next move of time, however small.

        Returns:
            The timer: ``cancel()`` it to forget the callback.
        """
        return FakeTimer(self._schedule(when, callback))

    def sleep(self, seconds: float) -> None:
        """Record the sleep and advance time; never waits."""
        self.sleeps.append(seconds)
        self._advance_to(self._now + seconds)

    async def sleep_async(self, seconds: float) -> None:
        """Record the sleep, advance time, and let other tasks run once; never waits."""
        self.sleeps.append(seconds)
        self._advance_to(self._now + seconds, asyncio.current_task())
        await asyncio.sleep(0)

    def timeout_async(self, seconds: float) -> AsyncTimeout:
        """Return a timeout scope measured on this clock (as ``asyncio.timeout`` would be)."""
        return _FakeTimeout(self, seconds)

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r}, sleeps={len(self.sleeps)})"


class FakeTimer:
    """A callback armed on a [`FakeClock`][failsafe.testing.FakeClock] by ``call_at``."""

    __slots__ = ("_entry",)

    def __init__(self, entry: list[Any]) -> None:
        self._entry = entry

    def cancel(self) -> None:
        """Forget the callback (it will not be called); harmless once it has been."""
        self._entry[2] = None


_fake_time_lock = threading.Lock()
_fake_time_stack: list[FakeClock] = []


@contextmanager
def fake_time(clock: FakeClock | None = None) -> Iterator[FakeClock]:
    """Run everything that uses the default clock on fake time, for the block's duration.

    Inside the block, [`SYSTEM_CLOCK`][failsafe.clock.SYSTEM_CLOCK] (the default ``clock=``
    of every policy, transport and consumer) answers from ``clock``: a retry's backoff,
    an open circuit's rest and a coroutine's timeout pass in fake time, at once, whether the
    policy was built before the block or inside it. A policy given its own ``clock=`` keeps
    it. Blocks nest; the real clock is back when the outermost one ends.

    The switch is process-wide (as ``stamina.set_testing``): it is meant for test suites,
    not for code that runs beside other threads that need real time.

    Args:
        clock: The fake clock to use; by default a new
            [`FakeClock`][failsafe.testing.FakeClock] that starts at the real clock's
            current readings.

    Yields:
        The fake clock: assert on its ``sleeps``, move it with ``advance``.

    Example:
        ```python
        from failsafe import Retry
        from failsafe.testing import fail_first, fake_time

        retry = Retry(attempts=5)  # built with the default, real clock
        with fake_time() as clock:
            assert retry.call(fail_first(4, ConnectionError, returns="ok")) == "ok"
        assert len(clock.sleeps) == 4  # four backoffs, none waited for
        ```

    With pytest, the fixture ``failsafe_fake_time`` (installed with failsafe) does the same
    for one test and gives the clock.
    """
    if clock is None:
        clock = FakeClock(start=time.monotonic(), wall_start=time.time())
    with _fake_time_lock:
        _fake_time_stack.append(clock)
        _clock._stand_in(clock)
    try:
        yield clock
    finally:
        with _fake_time_lock:
            _fake_time_stack.remove(clock)
            _clock._stand_in(_fake_time_stack[-1] if _fake_time_stack else None)


class RecordingListener:
    """A listener that keeps every event it receives, for assertions.

    Attributes:
        events: The events received, in order.
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event, /) -> None:
        """Record one event."""
        with self._lock:
            self.events.append(event)

    def of_type(self, kind: type[E]) -> list[E]:
        """Return the recorded events of one type."""
        return [e for e in self.events if isinstance(e, kind)]

    @property
    def kinds(self) -> list[str]:
        """The recorded events' class names, in order (handy in assertions)."""
        return [type(e).__name__ for e in self.events]

    def clear(self) -> None:
        """Forget the recorded events."""
        with self._lock:
            self.events.clear()


class Faulty(Generic[T]):
    """A callable that fails on chosen calls and otherwise returns a value (or calls a function).

    Build one with [`fail_first`][failsafe.testing.fail_first] or
    [`fail_every`][failsafe.testing.fail_every]. Works as a plain function; ``.async_``
    is the same behaviour as a coroutine function sharing the call count.

    It is the fault injection of [`Chaos.fault`][failsafe.chaos.Chaos.fault], deciding by
    call number (``should_fail(n)`` for the n-th call) instead of by a random draw.

    Attributes:
        calls: How many times it was called.

    Raises:
        ConfigurationError: At construction, naming ``error``, when ``error`` is not an
            exception class or instance.
    """

    def __init__(
        self,
        should_fail: Callable[[int], bool],
        error: BaseException | type[BaseException],
        returns: T | None = None,
        wrapped: Callable[..., T] | None = None,
    ) -> None:
        self._should_fail = should_fail
        self._error = error
        self._returns = returns
        self._wrapped = wrapped
        self.calls = 0
        self._lock = threading.Lock()
        fault = _Fault(error, option="error")
        self._run = _injecting_sync(self._fails, fault, _clock.SYSTEM_CLOCK, self._answer)

    def _fails(self, fn: object) -> bool:
        """Count the call; whether it is one of those that fail."""
        with self._lock:
            self.calls += 1
            n = self.calls
        return self._should_fail(n)

    def _answer(self, fn: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        if self._wrapped is not None:
            return self._wrapped(*args, **kwargs)
        return self._returns  # type: ignore[return-value]

    def __call__(self, *args: Any, **kwargs: Any) -> T:
        """Count the call, then fail or answer as configured."""
        return self._run(self, args, kwargs)  # type: ignore[no-any-return]

    async def async_(self, *args: Any, **kwargs: Any) -> T:
        """The same behaviour, as a coroutine function."""
        return self(*args, **kwargs)


def fail_first(
    n: int,
    error: BaseException | type[BaseException] = ConnectionError,
    *,
    returns: T | None = None,
    wrapped: Callable[..., T] | None = None,
) -> Faulty[T]:
    """Fail the first ``n`` calls with ``error``, then return ``returns`` (or call ``wrapped``)."""
    return Faulty(lambda call: call <= n, error, returns, wrapped)


def fail_every(
    k: int,
    error: BaseException | type[BaseException] = ConnectionError,
    *,
    returns: T | None = None,
    wrapped: Callable[..., T] | None = None,
) -> Faulty[T]:
    """Fail every ``k``-th call (the k-th, 2k-th, ...) with ``error``; the others succeed."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return Faulty(lambda call: call % k == 0, error, returns, wrapped)


def _always(fn: object) -> bool:
    return True


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return fn(*args, **kwargs)


def with_latency(clock: FakeClock, seconds: float, fn: Callable[..., T]) -> Callable[..., T]:
    """Wrap ``fn`` so that each call first takes ``seconds`` of fake time.

    The latency injection of [`Chaos.latency`][failsafe.chaos.Chaos.latency], on every call.

    Raises:
        ConfigurationError: Naming ``seconds``, when it is negative or not a finite number.
    """
    run = _injecting_sync(_always, _Latency(seconds), clock, _call)

    def slow(*args: Any, **kwargs: Any) -> T:
        return run(fn, args, kwargs)  # type: ignore[no-any-return]

    return slow


def with_latency_async(
    clock: FakeClock, seconds: float, fn: Callable[..., Awaitable[T]]
) -> Callable[..., Awaitable[T]]:
    """Wrap a coroutine function so that each call first awaits ``seconds`` of fake time.

    The latency injection of [`Chaos.latency`][failsafe.chaos.Chaos.latency], on every call.

    Raises:
        ConfigurationError: Naming ``seconds``, when it is negative or not a finite number.
    """
    run = _injecting_async(_always, _Latency(seconds), clock, _call)

    async def slow(*args: Any, **kwargs: Any) -> T:
        return await run(fn, args, kwargs)  # type: ignore[no-any-return]

    return slow
