"""Events: every decision a policy takes, as frozen data given to listeners.

A listener is any callable that takes an [`Event`][failsafe.events.Event]. Give listeners
to a policy (``Retry(listeners=[...])``) or to every policy at once with
[`add_listener`][failsafe.events.add_listener]. Listeners run synchronously on the thread
(or task) that took the decision; an exception in a listener is logged and never breaks
the call. Successful calls emit nothing, so listeners cost nothing on the success path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs

from failsafe.outcome import Outcome

__all__ = [
    "AttemptFailed",
    "BulkheadRejected",
    "ChaosInjected",
    "CircuitClosed",
    "CircuitHalfOpened",
    "CircuitOpened",
    "CircuitRejected",
    "CircuitStorageRestored",
    "CircuitStorageUnavailable",
    "Enricher",
    "ConcurrencyLimitChanged",
    "ConcurrencyLimitRejected",
    "Event",
    "FailedOver",
    "FallbackUsed",
    "HedgeRefused",
    "HedgeStarted",
    "Listener",
    "RateLimitDelayed",
    "RateLimitRejected",
    "RateLimiterStorageRestored",
    "RateLimiterStorageUnavailable",
    "RetriesExhausted",
    "RetryBudgetExhausted",
    "RetryScheduled",
    "TimedOut",
    "add_listener",
    "remove_listener",
]

_log = logging.getLogger("failsafe.events")


@attrs.frozen(kw_only=True)
class Event:
    """Base of all events.

    Attributes:
        policy: The name of the policy that took the decision (``"retry"`` unless named).
    """

    policy: str


@attrs.frozen(kw_only=True)
class AttemptFailed(Event):
    """An attempt's outcome was classified as a failure (whatever happens next)."""

    attempt: int
    outcome: Outcome[Any]


@attrs.frozen(kw_only=True)
class RetryScheduled(Event):
    """Another attempt will run after ``delay`` seconds."""

    attempt: int
    delay: float
    outcome: Outcome[Any]


@attrs.frozen(kw_only=True)
class RetriesExhausted(Event):
    """The retry policy gave up; ``reason`` is ``"attempts"`` or ``"deadline"``."""

    attempts: int
    reason: str
    outcome: Outcome[Any]


@attrs.frozen(kw_only=True)
class RetryBudgetExhausted(Event):
    """A retry was refused because the shared retry budget is spent."""

    attempt: int
    outcome: Outcome[Any]


@attrs.frozen(kw_only=True)
class CircuitOpened(Event):
    """The breaker opened; calls are rejected for ``reset_timeout`` seconds.

    ``reset_timeout`` is this opening's period: it grows after failed probes when the breaker
    has a ``max_reset_timeout``.
    """

    key: object
    reset_timeout: float
    outcome: Outcome[Any] | None


@attrs.frozen(kw_only=True)
class CircuitHalfOpened(Event):
    """The breaker admits probe calls."""

    key: object


@attrs.frozen(kw_only=True)
class CircuitClosed(Event):
    """The breaker closed: calls flow normally."""

    key: object


@attrs.frozen(kw_only=True)
class CircuitRejected(Event):
    """A call was rejected by an open breaker.

    ``enforced`` is ``False`` when the breaker is metrics-only
    (``CircuitBreaker(metrics_only=True)``): it would have rejected the call, and ran it.
    """

    key: object
    retry_after: float
    enforced: bool = True


@attrs.frozen(kw_only=True)
class CircuitStorageUnavailable(Event):
    """The breaker's shared storage failed; the breaker runs on a local state for now.

    Emitted once per outage, by the call that found the storage failing. Until the storage
    answers again, the breaker keeps its state in process memory (seeded from the last values
    it read) and tries the storage again every ``storage_retry`` seconds.

    Attributes:
        key: The keyed breaker's key (``None`` for a plain breaker).
        error: The type of the storage's exception (``"redis.exceptions.ConnectionError"``).
        message: Its message (cut to 200 characters).
    """

    key: object
    error: str
    message: str


@attrs.frozen(kw_only=True)
class CircuitStorageRestored(Event):
    """The breaker's shared storage answers again; the breaker uses it from now on.

    Attributes:
        key: The keyed breaker's key (``None`` for a plain breaker).
        wrote_back: ``True`` when the circuit opened locally during the outage and is still
            open, so its opening was written to the storage for the other processes; ``False``
            when the breaker adopted the shared state as it found it.
        outage: Seconds (monotonic) from the failure to the restoration.
    """

    key: object
    wrote_back: bool
    outage: float


@attrs.frozen(kw_only=True)
class FailedOver(Event):
    """The failover policy moved from one target to the next after a failure."""

    from_target: object
    to_target: object
    outcome: Outcome[Any]


@attrs.frozen(kw_only=True)
class TimedOut(Event):
    """An operation overran its timeout (``cancelled``: a coroutine was cancelled)."""

    timeout: float
    cancelled: bool


@attrs.frozen(kw_only=True)
class FallbackUsed(Event):
    """The fallback replaced a failed outcome."""

    outcome: Outcome[Any]


@attrs.frozen(kw_only=True)
class BulkheadRejected(Event):
    """A call was rejected because the bulkhead and its queue were full (or the wait timed out)."""

    max_concurrent: int
    max_queued: int


@attrs.frozen(kw_only=True)
class RateLimitRejected(Event):
    """A call was refused by a rate limiter (no permit now, or none within ``max_wait``).

    Attributes:
        key: The limiter's key for the call (``None`` for a limiter without keys).
        retry_after: Seconds until a permit is expected to be free.
    """

    key: object
    retry_after: float


@attrs.frozen(kw_only=True)
class RateLimitDelayed(Event):
    """A call waits ``delay`` seconds for its permit before it runs.

    Attributes:
        key: The limiter's key for the call (``None`` for a limiter without keys).
        delay: Seconds the call waits.
    """

    key: object
    delay: float


@attrs.frozen(kw_only=True)
class RateLimiterStorageUnavailable(Event):
    """A shared rate limiter's storage failed; the limiter counts in process memory for now.

    Emitted once per outage, by the call that found the storage failing.

    Attributes:
        error: The type of the storage's exception (``"redis.exceptions.ConnectionError"``).
        message: Its message (cut to 200 characters).
    """

    error: str
    message: str


@attrs.frozen(kw_only=True)
class RateLimiterStorageRestored(Event):
    """A shared rate limiter's storage answers again; the limiter counts there again.

    Attributes:
        outage: Seconds (monotonic) from the failure to the restoration.
    """

    outage: float


@attrs.frozen(kw_only=True)
class HedgeStarted(Event):
    """A hedged call started another attempt, the first ones being still unfinished.

    Attributes:
        attempt: The attempt started (2 for the first hedge).
        delay: Seconds after the previous attempt's start that this one started.
        target: The failover target it runs against (``None`` without targets).
    """

    attempt: int
    delay: float
    target: object


@attrs.frozen(kw_only=True)
class HedgeRefused(Event):
    """A hedge was due but was not started: the hedging policy's retry budget is spent.

    The call goes on with the attempts already running; it starts no more hedges.

    Attributes:
        attempt: The attempt that was not started (2 for the first hedge).
        reason: Why: ``"budget"`` (the [`RetryBudget`][failsafe.RetryBudget] refused it).
    """

    attempt: int
    reason: str


@attrs.frozen(kw_only=True)
class ConcurrencyLimitChanged(Event):
    """An adaptive concurrency limit moved.

    Attributes:
        previous: The limit before.
        limit: The limit now.
        reason: What moved it (``"latency"``, ``"failure"``, ``"growth"``).
    """

    previous: int
    limit: int
    reason: str


@attrs.frozen(kw_only=True)
class ConcurrencyLimitRejected(Event):
    """A call was shed: the adaptive concurrency limit was full.

    Attributes:
        limit: The limit when the call came.
        in_flight: Calls running then.
    """

    limit: int
    in_flight: int


@attrs.frozen(kw_only=True)
class ChaosInjected(Event):
    """A chaos policy injected its fault, latency or result into a call.

    Attributes:
        kind: ``"fault"``, ``"latency"`` or ``"result"``.
        detail: What was injected, in words (the exception's type, the seconds, the value's
            type).
    """

    kind: str
    detail: str


class Enricher(Protocol):
    """Adds the user's own attributes (a tenant, a region) to failsafe's metrics and spans.

    Telemetry listeners (``failsafe.opentelemetry``, ``failsafe.prometheus``) call each
    enricher with the event being recorded, or with ``None`` for what no event caused (a
    gauge read on collection, a span of the HTTP transport or the queue consumer), and add
    the attributes it returns. An enricher runs on the thread or task that took the decision,
    so it can read the caller's context variables; one that raises is logged and skipped.
    """

    def __call__(self, event: Event | None, /) -> Mapping[str, str | bool | int | float] | None:
        """Return the attributes to add (or ``None`` for none)."""
        ...


class Listener(Protocol):
    """Anything that can be called with an event."""

    def __call__(self, event: Event, /) -> None:
        """Receive one event."""
        ...


_global: tuple[Listener, ...] = ()
_global_lock = threading.Lock()


def add_listener(listener: Listener) -> None:
    """Give every policy's events to ``listener`` (in addition to per-policy listeners)."""
    global _global
    with _global_lock:
        _global = (*_global, listener)


def remove_listener(listener: Listener) -> None:
    """Stop giving events to a listener added with `add_listener`.

    Raises:
        ValueError: If the listener was not added.
    """
    global _global
    with _global_lock:
        items = list(_global)
        items.remove(listener)
        _global = tuple(items)


def _emit(listeners: Sequence[Listener], kind: type[Event], **fields: Any) -> None:
    """Build a ``kind`` event and deliver it, only if anyone listens (internal).

    Events are built lazily: with no listener at all, a decision costs no event object.
    """
    if listeners or _global:
        _deliver(listeners, kind(**fields))


def _listening(listeners: Sequence[Listener]) -> bool:
    """Whether an event would reach anyone (to skip building costly event fields)."""
    return bool(listeners or _global)


def _deliver(listeners: Sequence[Listener], event: Event) -> None:
    """Give a built event to the listeners and the global ones; a failing listener is logged."""
    for listener in (*listeners, *_global) if _global else listeners:
        try:
            listener(event)
        except Exception:
            _log.exception("failsafe listener %r failed on %r", listener, event)
