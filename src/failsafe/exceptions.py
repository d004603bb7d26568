"""Exceptions raised by failsafe's own decisions.

The tree:

```text
FailsafeError
├── ConfigurationError (also ValueError)      bad option at construction
├── UsageError (also TypeError)               failsafe called the wrong way
├── PolicyRejected                            a policy refused to run the call
│   ├── CircuitOpenError                      .retry_after, .breaker
│   ├── BulkheadFull                          .max_concurrent, .max_queued
│   ├── RateLimited                           .retry_after, .limiter, .key
│   └── ConcurrencyLimited                    .limit, .in_flight, .limiter
├── TimeoutExceeded (also TimeoutError)       .timeout
└── AllTargetsFailed                          .failures (one per target)
```

The user's own exceptions are never wrapped: when a retry gives up, the caller gets the last
exception the operation raised, unchanged, with a note added
(`BaseException.add_note`) that says how many attempts were made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from failsafe.outcome import Outcome

__all__ = [
    "AllTargetsFailed",
    "BulkheadFull",
    "CircuitOpenError",
    "ConcurrencyLimited",
    "ConfigurationError",
    "FailsafeError",
    "PolicyRejected",
    "RateLimited",
    "TargetFailure",
    "TimeoutExceeded",
    "UsageError",
]


class FailsafeError(Exception):
    """The root of every exception that failsafe itself raises."""


class ConfigurationError(FailsafeError, ValueError):
    """A policy was built with a bad option; the message names the option."""

    def __init__(self, option: str, problem: str) -> None:
        self.option = option
        self.problem = problem
        super().__init__(f"{option}: {problem}")


class UsageError(FailsafeError, TypeError):
    """failsafe was called the wrong way; the message says how to call it.

    Raised at once for a coroutine function given to ``call`` (use ``call_async``), a plain
    function given to ``call_async``, an ``async`` fallback handler under ``call``, or a
    policy class used as a bare decorator (``@Retry`` instead of ``@Retry()``).

    It is a bug in the calling code, not a failure of the dependency: no predicate matches
    it, so no policy retries it, counts it in a breaker, replaces it with a fallback or
    fails over on it.
    """


class PolicyRejected(FailsafeError):
    """A policy refused to run the call at all (nothing was attempted)."""


class CircuitOpenError(PolicyRejected):
    """The circuit breaker is open (or its half-open probes are all taken).

    Attributes:
        breaker: The breaker's name (with its key, for keyed breakers).
        retry_after: Seconds until the breaker will admit a probe call (0 when half-open).
    """

    def __init__(self, breaker: str, retry_after: float) -> None:
        self.breaker = breaker
        self.retry_after = retry_after
        super().__init__(f"circuit {breaker!r} is open; retry after {retry_after:.3g}s")


class BulkheadFull(PolicyRejected):
    """The bulkhead's concurrency limit and its wait queue are both full.

    Attributes:
        bulkhead: The bulkhead's name.
        max_concurrent: Calls allowed to run at once.
        max_queued: Calls allowed to wait for a slot.
    """

    def __init__(self, bulkhead: str, max_concurrent: int, max_queued: int) -> None:
        self.bulkhead = bulkhead
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        super().__init__(
            f"bulkhead {bulkhead!r} is full: {max_concurrent} running, {max_queued} waiting"
        )


class RateLimited(PolicyRejected):
    """A rate limiter has no permit for the call now (or none within its ``max_wait``).

    Attributes:
        limiter: The limiter's name.
        key: The key whose limit was reached (``None`` for a limiter without keys).
        retry_after: Seconds until a permit is expected to be free (a hint: other callers
            may take it first).
    """

    def __init__(self, limiter: str, retry_after: float, key: object = None) -> None:
        self.limiter = limiter
        self.key = key
        self.retry_after = retry_after
        which = f"{limiter!r}" if key is None else f"{limiter!r} (key {key!r})"
        super().__init__(f"rate limiter {which} is at its limit; retry after {retry_after:.3g}s")


class ConcurrencyLimited(PolicyRejected):
    """An adaptive concurrency limit is full: the call was shed without running.

    Attributes:
        limiter: The limiter's name.
        limit: The concurrency limit when the call came.
        in_flight: Calls running then.
    """

    def __init__(self, limiter: str, limit: int, in_flight: int) -> None:
        self.limiter = limiter
        self.limit = limit
        self.in_flight = in_flight
        super().__init__(
            f"concurrency limit {limiter!r} is full: {in_flight} running, limit {limit}"
        )


class TimeoutExceeded(FailsafeError, TimeoutError):
    """The operation did not finish within its timeout.

    For coroutines the operation was cancelled at the deadline; for plain functions it ran
    to completion and its late result was discarded (see the timeout docs).

    Attributes:
        timeout: The timeout in seconds.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(f"operation did not finish within {timeout:.3g}s")


class TargetFailure:
    """What happened on one failover target: the target and its last outcome."""

    __slots__ = ("outcome", "target")

    def __init__(self, target: object, outcome: Outcome[object]) -> None:
        self.target = target
        self.outcome = outcome

    def __repr__(self) -> str:
        return f"TargetFailure(target={self.target!r}, outcome={self.outcome!r})"


class AllTargetsFailed(FailsafeError):
    """Every failover target failed.

    The last target's exception, if it raised one, is the ``__cause__``.

    Attributes:
        failures: One [`TargetFailure`][failsafe.exceptions.TargetFailure] per target, in order.
    """

    def __init__(self, failures: Sequence[TargetFailure]) -> None:
        self.failures = tuple(failures)
        parts = "; ".join(f"{f.target}: {f.outcome.describe()}" for f in self.failures)
        super().__init__(f"all {len(self.failures)} targets failed ({parts})")
