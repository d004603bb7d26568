"""`Hedging`: when an attempt is slow, start another; the first acceptable outcome wins.

The tail-latency technique of "The Tail at Scale" (Dean and Barroso), Polly v8's hedging
strategy, gRPC's hedging policy and Envoy's request hedging. The call starts; if it has not
finished after ``delay`` seconds, a second attempt starts (against the next target, when
there are targets) while the first one goes on; the first *acceptable* outcome is the
call's, and the attempts still running lose:

- under ``call_async`` they are cancelled, and awaited, so that nothing outlives the call;
- under ``call`` every attempt runs on one of the policy's threads (Python cannot stop a
  running function): a loser runs to its end, and what it returns then is handed to
  ``on_discard``. It can ask [`abandoned`][failsafe.hedging.abandoned] to stop early.

An attempt that fails (an outcome matched by ``on`` / ``on_result``) before the delay
starts the next attempt at once, as Polly does. When no attempt is acceptable, the caller
gets the first attempt's outcome (Polly's choice: what the call would have given without
hedging). Any other outcome (a success, or an exception ``on`` does not match, such as a
bug or an HTTP 4xx) is final: it is the call's at once.
"""

from __future__ import annotations

import asyncio
import bisect
import contextvars
import logging
import math
import threading
from array import array
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from inspect import isawaitable
from typing import Any, Final, Protocol

import attrs

from failsafe import _validators as _v
from failsafe._policy import AsyncRunner, Policy, SyncRunner, _is_async_callable
from failsafe._validators import integer, number
from failsafe.budget import RetryBudget
from failsafe.clock import SYSTEM_CLOCK, Clock, SystemClock, _standing_in
from failsafe.context import _deadline, _target
from failsafe.events import (
    AttemptFailed,
    HedgeRefused,
    HedgeStarted,
    Listener,
    _emit,
    _listening,
)
from failsafe.exceptions import ConfigurationError, UsageError
from failsafe.outcome import Outcome
from failsafe.predicates import TRANSIENT, Classifier, Predicate, ResultTest, classify

__all__ = ["MAX_HEDGES", "MAX_WINDOW", "Hedging", "Percentile", "abandoned"]

MAX_HEDGES: Final = 10
"""The most hedges a call may make (``max_hedges``), as in Polly."""

MAX_WINDOW: Final = 100_000
"""The most latencies a [`Percentile`][failsafe.hedging.Percentile] keeps (``window``)."""

_MAX_THREADS: Final = 1024
_log = logging.getLogger("failsafe.hedging")


# -- the delay ---------------------------------------------------------------------------------
def _window(inst: object, attr: Any, value: object) -> None:
    integer(1)(inst, attr, value)
    assert isinstance(value, int)
    if value > MAX_WINDOW:
        raise ConfigurationError(attr.name, f"must be at most {MAX_WINDOW:,}, got {value!r}")


@attrs.define(eq=False, repr=False)
class Percentile:
    """A hedging delay that follows the recent latencies: their ``percent``-th percentile.

    Each hedged call adds one sample: how long its first attempt took, or, when another
    attempt won first, how long the first one had run by then (a lower bound, which keeps
    it above the delay, so that the share of calls hedged stays ``100 - percent`` percent).
    A first attempt that failed adds none. Until ``min_samples`` are kept, the delay is
    ``fallback``.

    Give one to a [`Hedging`][failsafe.Hedging] (``Hedging(delay=Percentile(95))``, or
    ``Hedging.percentile(95)``); share one between policies to pool their latencies.

    Args:
        percent: Which percentile, in (0, 100] (95: hedge the slowest 5% of calls).
        window: How many recent latencies are kept (1 to
            [`MAX_WINDOW`][failsafe.hedging.MAX_WINDOW]; default 10,000, 160 KB): the bound
            of its memory, and how fast it forgets an old latency profile. A smaller window
            follows a change sooner but wanders more: against the hedging benchmark's server
            the p93 of 1,000 samples moved between 3.1 and 4.1 ms (its 10th and 90th
            percentiles over a run), that of 10,000 within 0.1 ms.
        min_samples: Latencies needed before the percentile is used (default: 100, or the
            window when it is smaller).
        fallback: The delay, in seconds, until then.
        minimum: The smallest delay given (a thread hand-off or an event-loop turn costs
            about a millisecond: hedging sooner only doubles the load).

    Raises:
        ConfigurationError: At construction, naming a bad option.

    Thread-safety: safe to share between threads and tasks; a lock guards the samples (an
    insertion into a sorted list of at most ``window`` floats).
    """

    percent: float = attrs.field(default=95.0, validator=number(above=0, at_most=100))
    window: int = attrs.field(default=10_000, kw_only=True, validator=_window)
    min_samples: int | None = attrs.field(default=None, kw_only=True)
    fallback: float = attrs.field(default=0.1, kw_only=True, validator=number(at_least=0))
    minimum: float = attrs.field(default=0.001, kw_only=True, validator=number(at_least=0))
    _needed: int = attrs.field(init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    # the last `window` samples in arrival order (a ring once full), and the same, sorted:
    # 16 bytes a sample (160 KB at the default window), no object per sample
    _order: array[float] = attrs.field(factory=lambda: array("d"), init=False)
    _next: int = attrs.field(default=0, init=False)
    _sorted: array[float] = attrs.field(factory=lambda: array("d"), init=False)

    def __attrs_post_init__(self) -> None:
        if self.min_samples is None:
            self._needed = min(100, self.window)
        else:
            integer(1)(self, attrs.fields(Percentile).min_samples, self.min_samples)
            if self.min_samples > self.window:
                raise ConfigurationError(
                    "min_samples",
                    f"must be at most the window ({self.window}), got {self.min_samples}",
                )
            self._needed = self.min_samples

    def record(self, seconds: float) -> None:
        """Add one latency; the oldest is forgotten once ``window`` are kept."""
        if not (seconds >= 0 and math.isfinite(seconds)):  # also refuses NaN
            return
        with self._lock:
            order = self._order
            if len(order) < self.window:
                order.append(seconds)
            else:  # the ring is full: the oldest sample makes room
                old = order[self._next]
                order[self._next] = seconds
                self._next = (self._next + 1) % self.window
                del self._sorted[bisect.bisect_left(self._sorted, old)]
            bisect.insort(self._sorted, seconds)

    def delay(self) -> float:
        """The delay a call starting now waits before its first hedge, in seconds."""
        with self._lock:
            count = len(self._sorted)
            if count < self._needed:
                return self.fallback
            # nearest rank: the smallest sample with at least percent% of them at or below it
            rank = max(1, math.ceil(self.percent / 100 * count))
            value = self._sorted[rank - 1]
        return value if value > self.minimum else self.minimum

    @property
    def samples(self) -> int:
        """How many latencies are kept now (at most ``window``)."""
        return len(self._order)

    def __repr__(self) -> str:
        return (
            f"Percentile({self.percent:g}, window={self.window}, samples={self.samples}, "
            f"fallback={self.fallback:g})"
        )


def _delay(inst: object, attr: Any, value: object) -> None:
    if isinstance(value, Percentile):
        return
    number(at_least=0)(inst, attr, value)


def _targets(value: Sequence[object] | None) -> tuple[object, ...] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ConfigurationError("targets", f"must be a sequence of targets, got {value!r}")
    if not value:
        raise ConfigurationError("targets", "must name at least one target (or be None)")
    return tuple(value)


# -- the state of one call ---------------------------------------------------------------------
class _Attempt:
    """One attempt of a hedged call: its number, target, times and outcome."""

    __slots__ = ("acceptable", "ended", "number", "outcome", "race", "started", "target")

    def __init__(self, race: _Race, number: int, target: object, started: float) -> None:
        self.race = race
        self.number = number
        self.target = target
        self.started = started
        self.ended: float | None = None
        self.outcome: Outcome[Any] | None = None
        self.acceptable = False


_REFUSED: Final = object()  # no hedge starts (a sentinel: a target may be None)

_current: ContextVar[_Attempt | None] = ContextVar("failsafe_hedge_attempt", default=None)


def abandoned() -> bool:
    """Whether the hedged attempt running here has lost: another one's outcome was taken.

    Only a plain function under ``call`` can find itself abandoned (a coroutine that loses
    is cancelled instead). One that works in steps can ask between them and stop, so that
    a loser does not go on loading the dependency. ``False`` outside a hedged attempt.
    failsafe's HTTP transport asks before each attempt, so a losing request is not retried.

    Example:
        ```python
        from failsafe.hedging import abandoned

        def export(pages: list[str]) -> list[str]:
            done = []
            for page in pages:
                if abandoned():
                    break  # another attempt won: stop loading the service
                done.append(page.upper())
            return done
        ```
    """
    attempt = _current.get()
    return attempt is not None and attempt.race.over


def _attempt_number() -> int:
    """The number of the hedged attempt running here (1 for the first), 0 outside one."""
    attempt = _current.get()
    return 0 if attempt is None else attempt.number


def _enter(attempt: _Attempt, sets_target: bool) -> None:
    """Run in an attempt's own context: publish the attempt, and its target."""
    _current.set(attempt)
    if sets_target:
        _target.set(attempt.target)


class _Race:
    """The decisions of one hedged call, shared by both drivers: no I/O, no waiting.

    The drivers start attempts, wait, and hand each finished attempt to `Hedging._judge`;
    this keeps what they decide on. ``over`` turns true, once, when the call's outcome is
    chosen.
    """

    __slots__ = ("attempts", "delay", "may_hedge", "over", "running", "total")

    def __init__(self, delay: float, total: int) -> None:
        self.delay = delay
        self.total = total  # attempts allowed, the first included
        self.attempts: list[_Attempt] = []
        self.running = 0
        self.may_hedge = True  # false once a hedge was refused (budget, threads)
        self.over = False

    def due(self) -> float | None:
        """When the next hedge starts (a ``clock.monotonic()`` instant), or ``None``."""
        if not self.may_hedge or len(self.attempts) >= self.total:
            return None
        return self.attempts[-1].started + self.delay

    def can_start(self) -> bool:
        """Whether another attempt may start at all (a failure starts one at once)."""
        return self.may_hedge and len(self.attempts) < self.total

    def others(self, chosen: _Attempt | None) -> list[_Attempt]:
        """The finished attempts not chosen (their returned values are discarded)."""
        return [a for a in self.attempts if a is not chosen and a.outcome is not None]


# -- the policy --------------------------------------------------------------------------------
@attrs.define(kw_only=True, eq=False, repr=False)
class Hedging(Policy):
    """Start another attempt when one is slow; the first acceptable outcome wins.

    The first attempt starts at once. Each ``delay`` seconds after the latest attempt
    started, while none has finished, another starts, up to ``max_hedges`` more. An attempt
    that fails (``on`` / ``on_result``; by default transient errors) starts the next one at
    once. The first acceptable outcome is returned (or raised: an exception ``on`` does not
    match is final, as is a success); the attempts still running lose (see below). When
    every attempt failed, the caller gets the *first* attempt's outcome (as Polly), with a
    note when it is an exception.

    Args:
        delay: Seconds to wait before each hedge (``0``: all attempts at once), or a
            [`Percentile`][failsafe.hedging.Percentile] of recent latencies (default:
            ``Percentile(95)``, 0.1 s until it has 100 samples).
        max_hedges: Attempts started beyond the first (1 to
            [`MAX_HEDGES`][failsafe.hedging.MAX_HEDGES]; default 1: one hedge removes most
            of the tail, a second helps only when two attempts in a row are slow).
        targets: Attempt k runs against ``targets[(k - 1) % len(targets)]``, which the
            operation reads from ``failsafe.current_context().target`` (as with
            [`Failover`][failsafe.Failover]). ``None``: every attempt runs against whatever
            the context says.
        on: Which exceptions are failures (default
            [`TRANSIENT`][failsafe.predicates.TRANSIENT]).
        on_result: A test on returned values; a true result is a failure.
        on_discard: Called with each returned value that is not the call's (a loser's,
            another attempt's failed result), to release it. Under ``call`` a loser's value
            is discarded on the loser's thread when it ends; under ``call_async`` it may be
            a coroutine function. An exception it raises is logged and dropped.
        budget: A [`RetryBudget`][failsafe.RetryBudget]: each call records a call, each
            hedge withdraws from it; when it is spent the call starts no more hedges and
            waits for what runs, so hedges cannot multiply an outage's load (a
            [`HedgeRefused`][failsafe.events.HedgeRefused] event says so).
        max_threads: Under ``call``, the most attempts of this policy running at once on
            its threads, losers still running included (2 to 1,024; default 64). A call that
            finds none free runs on the caller's thread without hedging (it never queues); a
            hedge that finds none free is not started.
        clock: Times the delays (a [`FakeClock`][failsafe.testing.FakeClock] in tests).
        listeners: Receive [`HedgeStarted`][failsafe.events.HedgeStarted] per hedge,
            [`HedgeRefused`][failsafe.events.HedgeRefused] when the budget refuses one, and
            [`AttemptFailed`][failsafe.events.AttemptFailed] per failed attempt.
        name: Names this policy in events, threads and reprs.

    Raises:
        ConfigurationError: At construction, naming a bad option.
        UsageError: At once, never hedged, for a coroutine function given to ``call``.

    Losers: under ``call_async`` a losing attempt is cancelled and awaited before the call
    returns (an attempt that ignores cancellation holds the call up). Under ``call`` it runs
    to its end on its thread (``abandoned()`` tells it that it lost) and its value goes to
    ``on_discard``; the contextvars of the caller are copied to every attempt's thread.

    Thread-safety: one policy may serve any number of threads and tasks; each call keeps
    its own attempts. The thread count is guarded by a lock held only for the counting.

    Example:
        ```python
        from failsafe import Hedging

        hedging = Hedging(delay=0.05, max_hedges=1)

        @hedging
        def get_stock(sku: str) -> int: ...
        ```
    """

    delay: float | Percentile = attrs.field(factory=Percentile, validator=_delay)
    max_hedges: int = attrs.field(default=1, validator=integer(1))
    targets: Sequence[object] | None = attrs.field(default=None, converter=_targets)
    on: Classifier = TRANSIENT
    on_result: ResultTest | None = None
    on_discard: Callable[[Any], object] | None = None
    budget: RetryBudget | None = None
    max_threads: int = attrs.field(default=64, validator=integer(2))
    clock: Clock = SYSTEM_CLOCK
    listeners: Sequence[Listener] = attrs.field(default=(), converter=_v.listeners)
    name: str = "hedging"
    _predicate: Predicate = attrs.field(init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _threads: int = attrs.field(default=0, init=False)
    _pool: ThreadPoolExecutor | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        if self.max_hedges > MAX_HEDGES:
            raise ConfigurationError(
                "max_hedges", f"must be at most {MAX_HEDGES}, got {self.max_hedges!r}"
            )
        if self.max_threads > _MAX_THREADS:
            raise ConfigurationError(
                "max_threads", f"must be at most {_MAX_THREADS}, got {self.max_threads!r}"
            )
        if self.budget is not None and not isinstance(self.budget, RetryBudget):
            raise ConfigurationError("budget", f"must be a RetryBudget, got {self.budget!r}")
        self._predicate = classify(self.on, self.on_result)

    @staticmethod
    def percentile(
        percent: float = 95.0,
        *,
        window: int = 10_000,
        min_samples: int | None = None,
        fallback: float = 0.1,
        minimum: float = 0.001,
    ) -> Percentile:
        """A delay that follows recent latencies: ``Hedging(delay=Hedging.percentile(95))``.

        The same as [`Percentile(...)`][failsafe.hedging.Percentile], which documents the
        arguments.
        """
        return Percentile(
            percent, window=window, min_samples=min_samples, fallback=fallback, minimum=minimum
        )

    @property
    def threads(self) -> int:
        """Attempts of this policy running on its threads now (losers still running too)."""
        return self._threads

    # -- decisions, shared by both drivers ------------------------------------------------
    def _target_for(self, number: int) -> object:
        """The target of attempt ``number`` (1 for the first)."""
        targets = self.targets
        if targets is None:
            return _target.get()
        return targets[(number - 1) % len(targets)]

    def _race(self) -> _Race:
        delay = self.delay
        seconds = delay.delay() if isinstance(delay, Percentile) else float(delay)
        return _Race(seconds, 1 + self.max_hedges)

    def _add(self, race: _Race, now: float, target: object) -> _Attempt:
        attempt = _Attempt(race, len(race.attempts) + 1, target, now)
        race.attempts.append(attempt)
        race.running += 1
        return attempt

    def _may_hedge(self, race: _Race, now: float, *, timer: bool) -> object:
        """The target of a hedge that starts now (the delay passed, or an attempt failed).

        `_REFUSED` when none may: checks the count, an enclosing deadline and the budget.
        Emits ``HedgeStarted``, or ``HedgeRefused`` when the budget refuses the hedge (both
        drivers decide here, so both emit it).
        """
        if not race.can_start():
            return _REFUSED
        enclosing = _deadline.get()  # no attempt starts at an enclosing Timeout's deadline
        if enclosing is not None and enclosing[1].monotonic() >= enclosing[0]:
            race.may_hedge = False
            return _REFUSED
        if self.budget is not None and not self.budget.try_withdraw():
            race.may_hedge = False
            _emit(
                self.listeners,
                HedgeRefused,
                policy=self.name,
                attempt=len(race.attempts) + 1,
                reason="budget",
            )
            return _REFUSED
        number = len(race.attempts) + 1
        target = self._target_for(number)
        if _listening(self.listeners):
            elapsed = now - race.attempts[-1].started
            # the delay that was due, not the time read later (a thread may be slow to wake)
            waited = race.delay if timer else min(max(0.0, elapsed), race.delay)
            _emit(
                self.listeners,
                HedgeStarted,
                policy=self.name,
                attempt=number,
                delay=waited,
                target=target,
            )
        return target

    def _judge(self, attempt: _Attempt, outcome: Outcome[Any], tests: _Tests) -> bool:
        """Record a finished attempt's outcome; return whether it is acceptable (final)."""
        matches_exception, matches_result = tests
        attempt.outcome = outcome
        exc = outcome.exception
        if exc is not None:
            failed = isinstance(exc, Exception) and bool(matches_exception(exc))
        else:
            failed = matches_result is not None and bool(matches_result(outcome.result))
        attempt.acceptable = not failed
        if failed:
            _emit(
                self.listeners,
                AttemptFailed,
                policy=self.name,
                attempt=attempt.number,
                outcome=outcome,
            )
        return not failed

    def _conclude(self, race: _Race, now: float) -> None:
        """The call's outcome is chosen: feed a `Percentile` its first attempt's latency."""
        race.over = True
        delay = self.delay
        if not isinstance(delay, Percentile):
            return
        first = race.attempts[0]
        if first.outcome is None:  # still running: it took at least this long
            delay.record(now - first.started)
        elif first.acceptable and first.ended is not None:
            delay.record(first.ended - first.started)

    def _finish(self, race: _Race, chosen: _Attempt | None) -> Any:
        """Return the chosen attempt's value, or raise its exception."""
        assert chosen is not None
        outcome = chosen.outcome
        assert outcome is not None
        exc = outcome.exception
        if isinstance(exc, UsageError) and self.budget is not None:
            self.budget._forget_call()  # a misuse is no call of the dependency
        if exc is None:
            return outcome.result
        if not chosen.acceptable:
            note = (
                f"failsafe: hedging {self.name!r}: none of {len(race.attempts)} attempt(s) "
                "succeeded; this is the first attempt's error"
            )
            if note not in getattr(exc, "__notes__", ()):
                exc.add_note(note)
        raise exc

    def _discard(self, value: Any) -> object:
        """Hand a dropped value to ``on_discard``; log what it raises."""
        discard = self.on_discard
        if discard is None:
            return None
        try:
            return discard(value)
        except Exception:
            _log.exception("failsafe hedging %r: on_discard failed on %r", self.name, value)
            return None

    async def _discard_async(self, value: Any) -> None:
        released = self._discard(value)
        if isawaitable(released):
            try:
                await released
            except Exception:
                _log.exception("failsafe hedging %r: on_discard failed on %r", self.name, value)

    # -- threads -------------------------------------------------------------------------------
    def _take_thread(self) -> ThreadPoolExecutor | None:
        """A thread for an attempt, or ``None`` when ``max_threads`` attempts run."""
        with self._lock:
            if self._threads >= self.max_threads:
                return None
            self._threads += 1
            if self._pool is None:
                # never more work than workers (counted here): nothing waits in its queue
                self._pool = ThreadPoolExecutor(
                    max_workers=self.max_threads, thread_name_prefix=f"failsafe-{self.name}"
                )
            return self._pool

    def _give_thread(self) -> None:
        with self._lock:
            self._threads -= 1

    # -- drivers -------------------------------------------------------------------------------
    def _bind_sync(self, nxt: SyncRunner) -> SyncRunner:
        tests: _Tests = self._predicate._raw_tests()
        clock = self.clock
        budget = self.budget
        sets_target = self.targets is not None or type(self)._target_for is not _base_target_for
        policy = self

        def run_attempt(call: _SyncCall, attempt: _Attempt, context: contextvars.Context) -> None:
            """On a pool thread: run one attempt, then report it (or discard it, if late)."""
            try:
                try:
                    value = context.run(nxt, call.fn, call.args, call.kwargs)
                except BaseException as exc:  # reported to the caller's thread
                    outcome: Outcome[Any] = Outcome(exception=exc)
                else:
                    outcome = Outcome(value)
                attempt.ended = clock.monotonic()
                if not call.report(attempt, outcome) and outcome.exception is None:
                    policy._discard(outcome.result)  # a loser's value: nobody else will
            finally:
                policy._give_thread()

        def start(call: _SyncCall, race: _Race, pool: ThreadPoolExecutor, target: object) -> None:
            attempt = policy._add(race, clock.monotonic(), target)
            context = contextvars.copy_context()
            context.run(_enter, attempt, sets_target)
            try:
                pool.submit(run_attempt, call, attempt, context)
            except BaseException:  # the pool is shutting down (interpreter exit)
                policy._give_thread()
                race.attempts.pop()
                race.running -= 1
                raise

        def hedging_sync(fn: Any, args: Any, kwargs: Any) -> Any:
            if _is_async_callable(fn):
                return nxt(fn, args, kwargs)  # raises UsageError at once: never hedged
            pool = policy._take_thread()
            if pool is None:  # every thread busy: run here, unhedged, never queued
                return policy._inline(nxt, fn, args, kwargs, sets_target)
            if budget is not None:
                budget.record_call()
            race = policy._race()
            call = _SyncCall(race, fn, args, kwargs)
            try:
                start(call, race, pool, policy._target_for(1))
            except BaseException:
                if budget is not None:
                    budget._forget_call()
                raise
            chosen: _Attempt | None = None
            try:
                chosen = policy._decide_sync(call, race, tests, start)
            finally:  # (chosen is None when interrupted: every attempt left is a loser)
                with call.cond:
                    policy._conclude(race, clock.monotonic())
                    others = race.others(chosen)
                for other in others:
                    assert other.outcome is not None
                    if other.outcome.exception is None:
                        policy._discard(other.outcome.result)
            return policy._finish(race, chosen)

        return hedging_sync

    def _decide_sync(
        self,
        call: _SyncCall,
        race: _Race,
        tests: _Tests,
        start: Callable[[_SyncCall, _Race, ThreadPoolExecutor, object], None],
    ) -> _Attempt:
        """The caller's loop under ``call``: wait, hedge, judge; return the chosen attempt."""
        clock = self.clock
        while True:
            finished = call.wait(race.due(), clock)
            if not finished:  # the delay passed with every attempt still running
                chosen = call.hedge(self, race, clock, start, timer=True)
            else:
                for attempt in finished:
                    race.running -= 1
                    assert attempt.outcome is not None
                    if self._judge(attempt, attempt.outcome, tests):
                        return attempt
                chosen = call.hedge(self, race, clock, start, timer=False)
            if chosen is not None:
                return chosen

    def _inline(self, nxt: SyncRunner, fn: Any, args: Any, kwargs: Any, sets_target: bool) -> Any:
        """Run the call on the caller's thread, unhedged (no thread of the policy is free)."""
        if not sets_target:
            return nxt(fn, args, kwargs)
        token = _target.set(self._target_for(1))
        try:
            return nxt(fn, args, kwargs)
        finally:
            _target.reset(token)

    def _bind_async(self, nxt: AsyncRunner) -> AsyncRunner:
        tests: _Tests = self._predicate._raw_tests()
        clock = self.clock
        budget = self.budget
        sets_target = self.targets is not None or type(self)._target_for is not _base_target_for
        policy = self

        async def one(attempt: _Attempt, fn: Any, args: Any, kwargs: Any) -> Any:
            _enter(attempt, sets_target)  # the task runs in a copy of the caller's context
            try:
                return await nxt(fn, args, kwargs)
            finally:
                attempt.ended = clock.monotonic()

        async def hedging_async(fn: Any, args: Any, kwargs: Any) -> Any:
            if budget is not None:
                budget.record_call()
            loop = asyncio.get_running_loop()
            race = policy._race()
            tasks: dict[asyncio.Task[Any], _Attempt] = {}
            running: set[asyncio.Task[Any]] = set()

            def start(target: object) -> None:
                attempt = policy._add(race, clock.monotonic(), target)
                task = loop.create_task(one(attempt, fn, args, kwargs))
                tasks[task] = attempt
                running.add(task)

            def hedge(timer: bool) -> bool:
                started = False
                while (
                    target := policy._may_hedge(race, clock.monotonic(), timer=timer)
                ) is not _REFUSED:
                    start(target)
                    started, timer = True, True
                    if race.delay != 0:  # else all at once
                        break
                return started

            chosen: _Attempt | None = None
            try:
                start(policy._target_for(1))
                if race.delay == 0:
                    hedge(timer=True)
                while chosen is None:
                    done = await _wait_async(running, race.due(), clock)
                    if not done:  # the delay passed with every attempt still running
                        hedge(timer=True)
                        continue
                    running.difference_update(done)
                    for task in sorted(done, key=lambda t: tasks[t].number):
                        race.running -= 1
                        attempt = tasks[task]
                        if policy._judge(attempt, _outcome_of(task), tests):
                            chosen = attempt
                            break
                    else:
                        if not hedge(timer=False) and not running:
                            chosen = race.attempts[0]  # none acceptable: the first's outcome
            finally:
                policy._conclude(race, clock.monotonic())
                if running:  # the losers (or every attempt, when this task is cancelled)
                    for task in running:
                        task.cancel()
                    await asyncio.wait(running)
                for task, attempt in tasks.items():
                    if attempt is chosen or task.cancelled():
                        continue
                    if task.exception() is None:  # retrieved: never "never retrieved"
                        await policy._discard_async(task.result())
            return policy._finish(race, chosen)

        return hedging_async

    def describe(self) -> str:
        """Say in words what this hedging does."""
        delay = self.delay
        when = (
            f"after the p{delay.percent:g} of recent latencies"
            if isinstance(delay, Percentile)
            else ("all at once" if delay == 0 else f"after {delay:g}s")
        )
        parts = [f"hedging {self.name!r}: up to {self.max_hedges} more attempt(s) {when}"]
        if self.targets is not None:
            parts.append(f"across {len(self.targets)} targets")
        parts.append(f"on {self._predicate}")
        if self.budget is not None:
            parts.append("with a retry budget")
        return ", ".join(parts)


_base_target_for = Hedging._target_for
_Tests = tuple[Callable[[BaseException], object], Callable[[Any], object] | None]


def _outcome_of(task: asyncio.Task[Any]) -> Outcome[Any]:
    if task.cancelled():  # cancelled by someone else: final, as the caller's cancel would be
        return Outcome(exception=asyncio.CancelledError())
    exc = task.exception()
    return Outcome(exception=exc) if exc is not None else Outcome(task.result())


class _Timer(Protocol):
    """What a fake clock's ``call_at`` returns."""

    def cancel(self) -> None: ...


def _real(clock: Clock) -> bool:
    return type(clock) is SystemClock and not _standing_in()


async def _wait_async(
    running: set[asyncio.Task[Any]], due: float | None, clock: Clock
) -> set[asyncio.Task[Any]]:
    """The attempts that finished, waiting until one does or until ``due`` (empty then)."""
    if not running:
        return set()
    if due is None:
        done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        return done
    remaining = due - clock.monotonic()
    if remaining <= 0:
        return {t for t in running if t.done()}
    if _real(clock):
        done, _ = await asyncio.wait(
            running, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
        )
        return done
    scope = clock.timeout_async(remaining)
    try:
        async with scope:
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
    except TimeoutError:
        if not scope.expired():
            raise
        return {t for t in running if t.done()}
    return done


class _SyncCall:
    """One call under ``call``: the attempts' reports, and the caller's wait for them.

    Workers `report` under ``cond``; the caller `wait`s on it until an attempt finishes or
    the next hedge is due. On a real clock the wait is ``Condition.wait(timeout)``; on a
    [`FakeClock`][failsafe.testing.FakeClock] (given, or standing in for the system clock
    under ``fake_time``) a timer on the fake clock rings at the due time, so the wait ends
    when some thread moves fake time past it, and never on real time.
    """

    __slots__ = ("args", "cond", "finished", "fn", "kwargs", "race", "rung")

    def __init__(self, race: _Race, fn: Any, args: Any, kwargs: Any) -> None:
        self.race = race
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.cond = threading.Condition(threading.Lock())
        self.finished: list[_Attempt] = []
        self.rung = False

    def report(self, attempt: _Attempt, outcome: Outcome[Any]) -> bool:
        """A worker's attempt ended; return ``False`` when the call is over (a loser)."""
        with self.cond:
            if self.race.over:
                attempt.outcome = outcome
                return False
            attempt.outcome = outcome
            self.finished.append(attempt)
            self.cond.notify()
            return True

    def _ring(self) -> None:
        with self.cond:
            self.rung = True
            self.cond.notify()

    def wait(self, due: float | None, clock: Clock) -> list[_Attempt]:
        """The attempts finished since the last call; empty when ``due`` passed first."""
        with self.cond:
            if not self.finished:
                if due is None:
                    self.cond.wait_for(lambda: bool(self.finished))
                else:
                    self._wait_until(due, clock)
            finished, self.finished = self.finished, []
            return finished

    def _wait_until(self, due: float, clock: Clock) -> None:
        schedule = _fake_schedule(clock)
        if schedule is None:  # real time, measured on the clock
            while not self.finished:
                remaining = due - clock.monotonic()
                if remaining <= 0:
                    return
                self.cond.wait(remaining)
            return
        if due <= clock.monotonic():
            return
        self.rung = False
        timer = schedule(due, self._ring)
        try:
            self.cond.wait_for(lambda: self.rung or bool(self.finished))
        finally:
            timer.cancel()

    def hedge(
        self,
        policy: Hedging,
        race: _Race,
        clock: Clock,
        start: Callable[[_SyncCall, _Race, ThreadPoolExecutor, object], None],
        *,
        timer: bool,
    ) -> _Attempt | None:
        """Start the hedges due now; return the first attempt when the call is lost."""
        started = False
        while race.can_start():
            pool = policy._take_thread()
            if pool is None:
                race.may_hedge = False
                break
            target = policy._may_hedge(race, clock.monotonic(), timer=timer)
            if target is _REFUSED:
                policy._give_thread()
                break
            start(self, race, pool, target)
            started = True
            if race.delay != 0:
                break
            timer = True
        if not started and race.running == 0:
            return race.attempts[0]  # none acceptable, none running: the first's outcome
        return None


def _fake_schedule(clock: Clock) -> Callable[[float, Callable[[], None]], _Timer] | None:
    """A fake clock's ``call_at`` (`FakeClock.call_at`), or ``None`` on real time."""
    if type(clock) is SystemClock:
        if not _standing_in():
            return None
        # under fake_time() the system clock's methods are the fake clock's, bound to it
        clock = getattr(SystemClock.__dict__["monotonic"].__func__, "__self__", clock)
    call_at = getattr(clock, "call_at", None)
    return call_at if callable(call_at) else None
