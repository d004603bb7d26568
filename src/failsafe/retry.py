"""`Retry`: run the operation again after a failure, with backoff, a deadline and a budget."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from inspect import isawaitable
from typing import Any

import attrs

from failsafe import _validators as _v
from failsafe._policy import AsyncRunner, Policy, SyncRunner
from failsafe._validators import integer, number
from failsafe.backoff import Backoff
from failsafe.budget import RetryBudget
from failsafe.clock import SYSTEM_CLOCK, Clock
from failsafe.context import _deadline
from failsafe.events import (
    AttemptFailed,
    Listener,
    RetriesExhausted,
    RetryBudgetExhausted,
    RetryScheduled,
    _emit,
)
from failsafe.exceptions import ConfigurationError, UsageError
from failsafe.outcome import Outcome
from failsafe.predicates import TRANSIENT, Classifier, Predicate, ResultTest, classify

__all__ = ["Retry"]

# The random source of every Retry built without ``rng=``
_RNG = random.Random()


@attrs.frozen(kw_only=True, repr=False)
class Retry(Policy):
    """Run the operation again when an attempt fails, up to ``attempts`` times in all.

    With no arguments: the first try plus three retries on transient errors
    ([`TRANSIENT`][failsafe.predicates.TRANSIENT]: connection errors and timeouts of the
    standard library and of httpx, requests, aiohttp, redis-py, psycopg, aio-pika and grpc),
    exponential backoff from 50 ms with full jitter, capped at 1 s.

    Which outcomes are failures: ``on`` (exceptions; a predicate, exception class(es) or a
    function of the exception) and ``on_result`` (returned values, such as an HTTP 503
    response). Other outcomes return (or raise) at once. When the policy gives up, the
    caller gets the last outcome unchanged: the last result is returned, or the last
    exception is re-raised with a note saying how many attempts were made.

    Args:
        attempts: Attempts in all, including the first (>= 1).
        backoff: The delay between attempts. A zero delay makes no sleep call at all.
        on: Which exceptions are retried (default
            [`TRANSIENT`][failsafe.predicates.TRANSIENT]: connection errors and timeouts of
            the standard library and of common clients).
        on_result: A test on returned values; a true result is retried.
        delay_from: A hook that sets the delay from a failed outcome (for a server's
            ``Retry-After``); return ``None`` to use ``backoff``.
        deadline: Seconds from the first attempt after which no new attempt starts (a retry
            whose delay would end past the deadline is not made). Inside a
            [`Timeout`][failsafe.Timeout], its deadline counts too.
        on_discard: Called with each returned value that is dropped for a new attempt (to
            release it: failsafe's HTTP transport reads and closes discarded responses).
            Under ``call_async`` it may be a coroutine function.
        budget: A [`RetryBudget`][failsafe.RetryBudget] shared with other calls; when it
            is spent, the policy gives up instead of retrying.
        clock: The clock to sleep on (a fake one in tests).
        rng: The random source for jitter; ``None`` (default): one generator shared by
            every `Retry` built without one. Pass a seeded `random.Random` for repeatable
            delays in tests.
        listeners: Receive [`events`][failsafe.events] for every decision.
        name: Names this policy in events and reprs.

    Raises:
        ConfigurationError: At construction, on a bad option (for example ``attempts=0``).

    Thread-safety: a `Retry` is immutable and may be shared by any number of threads and
    tasks; each call keeps its own attempt count.

    Example:
        ```python
        from failsafe import Retry, Backoff

        retry = Retry(attempts=3, backoff=Backoff.constant(0.2), on=ConnectionError)

        @retry
        def fetch() -> bytes: ...
        ```
    """

    attempts: int = attrs.field(default=4, validator=integer(1))
    backoff: Backoff = attrs.field(factory=Backoff.exponential)
    on: Classifier = TRANSIENT
    on_result: ResultTest | None = None
    delay_from: Callable[[Outcome[Any]], float | None] | None = None
    deadline: float | None = attrs.field(default=None, validator=number(above=0, optional=True))
    on_discard: Callable[[Any], object] | None = None
    budget: RetryBudget | None = None
    clock: Clock = SYSTEM_CLOCK
    rng: random.Random | None = attrs.field(default=None, validator=_v.random_source)
    listeners: Sequence[Listener] = attrs.field(default=(), converter=_v.listeners)
    name: str = "retry"
    _predicate: Predicate = attrs.field(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.backoff, Backoff):
            raise ConfigurationError("backoff", f"must be a Backoff, got {self.backoff!r}")
        object.__setattr__(self, "_predicate", classify(self.on, self.on_result))

    # -- decisions, shared by both drivers ------------------------------------------------
    def _after_failure(
        self, attempt: int, outcome: Outcome[Any], previous: float, started: float
    ) -> float | None:
        """Decide what follows failed attempt ``attempt``: a delay, or ``None`` to give up."""
        listeners = self.listeners
        _emit(listeners, AttemptFailed, policy=self.name, attempt=attempt, outcome=outcome)
        if attempt >= self.attempts:
            self._give_up(attempt, "attempts", outcome)
            return None
        delay: float | None = None
        if self.delay_from is not None:
            hinted = self.delay_from(outcome)
            if hinted is not None:  # a date in the past (or NaN) means "now"
                delay = hinted if hinted > 0 else 0.0
        if delay is None:
            rng = self.rng if self.rng is not None else _RNG
            delay = self.backoff.delay(attempt, previous, rng)
        if self.deadline is not None and (self.clock.monotonic() - started + delay > self.deadline):
            self._give_up(attempt, "deadline", outcome)
            return None
        enclosing = _deadline.get()  # an enclosing Timeout's deadline
        # an attempt that would start at the enclosing deadline is already late: not made
        if enclosing is not None and enclosing[1].monotonic() + delay >= enclosing[0]:
            self._give_up(attempt, "deadline", outcome)
            return None
        if self.budget is not None and not self.budget.try_withdraw():
            _emit(
                listeners, RetryBudgetExhausted, policy=self.name, attempt=attempt, outcome=outcome
            )
            self._note(outcome, f"failsafe: retry budget spent after {attempt} attempt(s)")
            return None
        _emit(
            listeners,
            RetryScheduled,
            policy=self.name,
            attempt=attempt,
            delay=delay,
            outcome=outcome,
        )
        return delay

    def _give_up(self, attempt: int, reason: str, outcome: Outcome[Any]) -> None:
        _emit(
            self.listeners,
            RetriesExhausted,
            policy=self.name,
            attempts=attempt,
            reason=reason,
            outcome=outcome,
        )
        why = "attempts exhausted" if reason == "attempts" else "deadline reached"
        self._note(outcome, f"failsafe: gave up after {attempt} attempt(s), {why}")

    @staticmethod
    def _note(outcome: Outcome[Any], text: str) -> None:
        exc = outcome.exception
        # the same exception object may be given up on again (an instance raised by every
        # call, a retry around a retry): one note says it, however often
        if exc is not None and text not in getattr(exc, "__notes__", ()):
            exc.add_note(text)

    # -- drivers --------------------------------------------------------------------------
    def _bind_sync(self, nxt: SyncRunner) -> SyncRunner:
        matches_exception, matches_result = self._predicate._raw_tests()
        after = self._after_failure
        clock = self.clock
        timed = self.deadline is not None
        budget = self.budget
        discard = self.on_discard

        def retry_sync(fn: Any, args: Any, kwargs: Any) -> Any:
            if budget is not None:
                budget.record_call()
            started = clock.monotonic() if timed else 0.0
            attempt = 1
            delay: float | None = 0.0
            while True:
                try:
                    value = nxt(fn, args, kwargs)
                except Exception as exc:
                    if not matches_exception(exc):
                        if budget is not None and isinstance(exc, UsageError):
                            budget._forget_call()  # a misuse is no call of the dependency
                        raise
                    delay = after(attempt, Outcome(exception=exc), delay, started)  # type: ignore[arg-type]
                    if delay is None:
                        raise
                else:
                    if matches_result is None or not matches_result(value):
                        return value
                    delay = after(attempt, Outcome(value), delay, started)  # type: ignore[arg-type]
                    if delay is None:
                        return value
                    if discard is not None:
                        discard(value)
                if delay > 0:
                    clock.sleep(delay)
                attempt += 1

        return retry_sync

    def _bind_async(self, nxt: AsyncRunner) -> AsyncRunner:
        matches_exception, matches_result = self._predicate._raw_tests()
        after = self._after_failure
        clock = self.clock
        timed = self.deadline is not None
        budget = self.budget
        discard = self.on_discard

        async def retry_async(fn: Any, args: Any, kwargs: Any) -> Any:
            if budget is not None:
                budget.record_call()
            started = clock.monotonic() if timed else 0.0
            attempt = 1
            delay: float | None = 0.0
            while True:
                try:
                    value = await nxt(fn, args, kwargs)
                except Exception as exc:
                    if not matches_exception(exc):
                        if budget is not None and isinstance(exc, UsageError):
                            budget._forget_call()  # a misuse is no call of the dependency
                        raise
                    delay = after(attempt, Outcome(exception=exc), delay, started)  # type: ignore[arg-type]
                    if delay is None:
                        raise
                else:
                    if matches_result is None or not matches_result(value):
                        return value
                    delay = after(attempt, Outcome(value), delay, started)  # type: ignore[arg-type]
                    if delay is None:
                        return value
                    if discard is not None:
                        released = discard(value)
                        if isawaitable(released):
                            await released
                if delay > 0:
                    await clock.sleep_async(delay)
                attempt += 1

        return retry_async

    def describe(self) -> str:
        """Say in words what this retry does."""
        parts = [f"retry {self.name!r}: up to {self.attempts} attempts on {self._predicate}"]
        parts.append(self.backoff.describe())
        if self.deadline is not None:
            parts.append(f"deadline {self.deadline:g}s")
        if self.budget is not None:
            parts.append("with a retry budget")
        return ", ".join(parts)
