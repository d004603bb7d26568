"""`Consumer` and `AsyncConsumer`: run a handler on a queue's messages under a `Redelivery`.

Both drivers share one set of decisions: how many attempts a delivery may make, what a
failed round leads to, what is reported for review. Only the I/O differs: threads and a
blocking `Broker`, or tasks and an `AsyncBroker`.

At-least-once: a delivery is settled (acked, deferred to the DLQ, or parked after its report
to the error sink returned) only once its outcome is decided; a consumer that dies before
leaves it reserved, and the broker hands it out again. Handlers should therefore be
idempotent; [`ProcessedMessages`][failsafe.queue.ProcessedMessages] helps.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import warnings
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import attrs

from failsafe import _registry, _tracing
from failsafe import _validators as _v
from failsafe.backoff import Backoff
from failsafe.clock import SYSTEM_CLOCK, Clock
from failsafe.events import Listener, _emit
from failsafe.exceptions import ConfigurationError
from failsafe.queue import _trace
from failsafe.queue.broker import (
    COUNT_LIMIT,
    AsyncBroker,
    Broker,
    DeadLetterCount,
    DeadLetterFilter,
    Delivery,
    Place,
    SettleConflict,
)
from failsafe.queue.envelope import Envelope
from failsafe.queue.events import (
    MessageDeadLettered,
    MessageHandled,
    MessageReceived,
    MessageRetried,
    MessageSentForReview,
    RedeliveryScheduled,
)
from failsafe.queue.memory import check_queue_name
from failsafe.queue.redelivery import (
    ConsumerDied,
    Decision,
    DeliveryLimitWarning,
    Redelivery,
    _random,
)
from failsafe.retry import Retry

__all__ = ["AsyncConsumer", "AsyncReviewSink", "Consumer", "ReviewSink"]

_log = logging.getLogger("failsafe.queue")

_MAX_REPORTED_BODY = 16 * 1024  # body characters copied into a review report
_PARKED = DeadLetterFilter(place=Place.PARKED)  # what dlq_depth counts

# How a delivery ended, as its span's ``failsafe.queue.outcome`` says.
_ACKED = "acked"  # handled, and the ack recorded
_REDELIVERED = "redelivered"  # deferred to the DLQ for a delayed redelivery
_REVIEW = "review"  # reported to the error sink and parked
_PARKED_ONLY = "parked"  # parked without a report (no error sink, or the report failed)
_RELEASED = "released"  # given back unhandled (an AsyncConsumer's handler was cancelled)
_UNSETTLED = "unsettled"  # settling failed: the broker hands the message out again

# What handling one delivery came to: the outcome, the failure (if any) and the attempts.
_Result = tuple[str, BaseException | None, int]


class ReviewSink(Protocol):
    """Where failures go for a person's review: an [`ErrorSink`][failsafe.errors.ErrorSink]."""

    def report(
        self,
        kind: str,
        action: Any,
        *,
        payload: Any = None,
        error: BaseException | None = None,
        dedupe_key: str | None = None,
        correlation_id: str | None = None,
    ) -> str:
        """Record one failure durably; return its id."""
        ...


class AsyncReviewSink(Protocol):
    """The asyncio twin of `ReviewSink`: an [`AsyncErrorSink`][failsafe.errors.AsyncErrorSink]."""

    async def report(
        self,
        kind: str,
        action: Any,
        *,
        payload: Any = None,
        error: BaseException | None = None,
        dedupe_key: str | None = None,
        correlation_id: str | None = None,
    ) -> str:
        """Record one failure durably; return its id."""
        ...


@attrs.define(eq=False)
class _Round:
    """One delivery's round of attempts (the counting wrapper around the handler)."""

    core: _Core
    delivery: Delivery
    message: Envelope
    first: int  # the number of this delivery's first attempt within the round
    attempts: int = 0
    last_error: str = ""

    def starting(self) -> None:
        self.attempts += 1
        if self.attempts > 1:
            _emit(
                self.core.listeners,
                MessageRetried,
                policy=self.core.name,
                queue=self.core.queue,
                message_id=self.message.id,
                attempt=self.first + self.attempts - 1,
                error=self.last_error,
            )

    def failed(self, error: BaseException) -> None:
        self.last_error = type(error).__name__


class _Core:
    """Decisions shared by both consumers (internal)."""

    def __init__(
        self,
        queue: str,
        redelivery: Redelivery,
        clock: Clock,
        listeners: Sequence[Listener],
        name: str,
        review_kind: str | None,
    ) -> None:
        self.queue = check_queue_name(queue)
        if not isinstance(redelivery, Redelivery):
            raise ConfigurationError("redelivery", f"must be a Redelivery, got {redelivery!r}")
        self.redelivery = redelivery
        self.clock = clock
        self.listeners = _v.listeners(listeners)
        self.name = name
        self.review_kind = review_kind or f"queue.{queue}"
        self._retries: dict[int, Retry] = {}
        self._limit_checked = False

    def retry(self, attempts: int) -> Retry:
        """The core Retry for a delivery allowed ``attempts`` attempts (built once per count)."""
        found = self._retries.get(attempts)
        if found is None:
            policy = self.redelivery
            found = Retry(
                attempts=attempts,
                backoff=policy.immediate_backoff,
                on=lambda exc: not policy.is_unrecoverable(exc),
                clock=self.clock,
                rng=policy.rng,
                name=f"{self.name}.immediate",
            )
            self._retries[attempts] = found
        return found

    def begin(self, delivery: Delivery) -> tuple[_Round, int]:
        """Start handling a delivery: emit ``MessageReceived``; return its round and budget."""
        message = delivery.message
        _emit(
            self.listeners,
            MessageReceived,
            policy=self.name,
            queue=self.queue,
            message_id=message.id,
            deliveries=delivery.deliveries,
            delayed_attempts=message.delayed_attempts,
        )
        allowed = self.redelivery.attempts_left(message, delivery.deliveries)
        spent = self.redelivery.attempts_per_round - allowed
        return _Round(self, delivery, message, first=spent + 1), allowed

    def died(self, delivery: Delivery) -> ConsumerDied:
        return ConsumerDied(
            f"message {delivery.message.id} was delivered {delivery.deliveries} times and its "
            "consumer died each time before settling it"
        )

    def handled(self, round_: _Round) -> None:
        _emit(
            self.listeners,
            MessageHandled,
            policy=self.name,
            queue=self.queue,
            message_id=round_.message.id,
            attempt=round_.first + round_.attempts - 1,
        )

    def decide(self, round_: _Round, error: BaseException) -> Decision:
        attempts = round_.first - 1 + round_.attempts
        return self.redelivery.after_failure(
            round_.message, error, attempts=attempts, now=self.clock.time()
        )

    def deferred(self, decision: Decision) -> None:
        message = decision.message
        delay = decision.delay or 0.0
        error = message.last_error
        _emit(
            self.listeners,
            RedeliveryScheduled,
            policy=self.name,
            queue=self.queue,
            message_id=message.id,
            round=message.delayed_attempts,
            delay=delay,
            due_at=self.clock.time() + delay,
            error=error.type if error is not None else "",
        )

    def review_report(self, decision: Decision) -> dict[str, Any]:
        """The arguments of the error-sink report for a message sent to review."""
        message = decision.message
        data = message.to_json()
        data.pop("v", None)
        body = data.get("body")
        if isinstance(body, str) and len(body) > _MAX_REPORTED_BODY:
            data["body"] = body[:_MAX_REPORTED_BODY]
            data["body_truncated"] = True
        return {
            "kind": self.review_kind,
            "action": "review",
            "payload": {"queue": self.queue, "reason": decision.reason, "message": data},
            "dedupe_key": f"queue:{self.queue}:{message.id}",
            "correlation_id": message.id,
        }

    def reviewed(self, decision: Decision, report_id: str | None) -> None:
        message = decision.message
        _emit(
            self.listeners,
            MessageSentForReview,
            policy=self.name,
            queue=self.queue,
            message_id=message.id,
            report_id=report_id,
            reason=decision.reason,
        )

    def parked(self, decision: Decision) -> None:
        _emit(
            self.listeners,
            MessageDeadLettered,
            policy=self.name,
            queue=self.queue,
            message_id=decision.message.id,
            reason=decision.reason,
        )

    def check_limit(self, limit: int | None) -> None:
        """Warn once if the broker's delivery limit is below the policy's attempts per round."""
        self._limit_checked = True
        needed = self.redelivery.attempts_per_round
        if limit is not None and limit < needed:
            text = (
                f"queue {self.queue!r}: the broker's delivery limit ({limit}) is lower than the "
                f"redelivery policy's attempts per round ({needed}); a message whose consumer "
                "keeps dying would be dropped or dead-lettered by the broker before failsafe "
                "moves it on. Raise the limit or lower Redelivery.immediate."
            )
            _log.warning(text)
            warnings.warn(text, DeliveryLimitWarning, stacklevel=3)

    @staticmethod
    def settle_failed(action: str, delivery: Delivery, exc: BaseException) -> None:
        if isinstance(exc, SettleConflict):
            _log.warning("%s of message %s skipped: %s", action, delivery.message.id, exc)
        else:
            _log.error(
                "%s of message %s failed; the broker will deliver it again: %s",
                action,
                delivery.message.id,
                exc,
            )


_RECONNECT = Backoff.exponential(0.1, maximum=30.0)  # pauses while the broker is away


class _ConsumerBase:
    """What both consumers hold: the checked options, the decisions (`_Core`), two views."""

    def __init__(
        self,
        queue: str,
        handler: Callable[[Envelope], object],
        redelivery: Redelivery | None,
        concurrency: int,
        poll: float,
        clock: Clock,
        listeners: Sequence[Listener],
        name: str,
        review_kind: str | None,
        dlq_refresh: float | None,
        broker: object,
    ) -> None:
        if not callable(handler):
            raise ConfigurationError("handler", f"must be callable, got {handler!r}")
        _v.check("concurrency", concurrency, _v.integer(1))
        _v.check("poll", poll, _v.number(above=0))
        _v.check("dlq_refresh", dlq_refresh, _v.number(above=0, optional=True))
        if not isinstance(name, str) or not name:
            raise ConfigurationError("name", f"must be a non-empty string, got {name!r}")
        self._core = _Core(queue, redelivery or Redelivery(), clock, listeners, name, review_kind)
        self.concurrency = concurrency
        self.poll = poll
        self.dlq_refresh = None if dlq_refresh is None else float(dlq_refresh)
        self._declared = False
        self._system = _trace.system_of(broker)
        self._running = False
        self._started = False
        self._dlq_depth: int | None = None
        self._dlq_next: float | None = None  # monotonic time of the next count (None: now)
        _registry.register(self)

    @property
    def name(self) -> str:
        """The name given at construction (``failsafe.policy`` in events, spans and gauges)."""
        return self._core.name

    _handling: int  # deliveries inside handle() now (each consumer counts its own)

    @property
    def in_flight(self) -> int:
        """Messages being handled now (inside `handle`, from any thread or task)."""
        return self._handling

    @property
    def queue(self) -> str:
        """The work queue's name."""
        return self._core.queue

    @property
    def running(self) -> bool:
        """Whether `run` is consuming: from its start until it returns."""
        return self._running

    @property
    def started(self) -> bool:
        """Whether `run` was ever called (a consumer that started and no longer runs stopped)."""
        return self._started

    @property
    def dlq_depth(self) -> int | None:
        """Parked messages of the queue, as last counted (``None`` until counted).

        Counted by `run` and `process_available` between receives, at most every
        ``dlq_refresh`` seconds, with the broker's count of its parking queue (stopping at
        1,000,000). Never counted with ``dlq_refresh=None``. A count that fails leaves the
        last value.
        """
        return self._dlq_depth

    def _dlq_due(self) -> bool:
        """Whether the parked messages should be counted now (and, if so, when next)."""
        every = self.dlq_refresh
        if every is None:
            return False
        now = self._core.clock.monotonic()
        if self._dlq_next is not None and now < self._dlq_next:
            return False
        self._dlq_next = now + every
        return True

    def _dlq_counted(self, count: DeadLetterCount | None, error: BaseException | None) -> None:
        if error is not None:
            # the type only: a broker's message may hold its URL or a path
            _log.debug(
                "queue %s: counting its parked messages failed (%s); dlq_depth keeps %s",
                self.queue,
                type(error).__name__,
                self._dlq_depth,
            )
        elif count is not None:
            self._dlq_depth = count.parked

    @property
    def redelivery(self) -> Redelivery:
        """The redelivery policy."""
        return self._core.redelivery


class Consumer(_ConsumerBase):
    """Run ``handler`` on every message of ``queue``, in threads, under a `Redelivery`.

    Args:
        broker: A blocking [`Broker`][failsafe.queue.Broker].
        queue: The work queue's name.
        handler: Called with each [`Envelope`][failsafe.queue.Envelope]; returning means
            handled (the message is acked), raising means failed.
        redelivery: The policy (default: `Redelivery()`, the payment flow's 60 s rounds).
        errors: Where messages sent to review are reported (an
            [`ErrorSink`][failsafe.errors.ErrorSink]); ``None``: parked and logged only.
        concurrency: Messages handled at once (threads); also how many are reserved.
        poll: Seconds one receive waits for a message before looking at ``stop()`` again.
        clock: Time for retries' pauses and stamps (a ``FakeClock`` in tests).
        listeners: Receive the [queue events][failsafe.queue.events].
        name: Names this consumer in events, logs, spans and gauges.
        review_kind: The error records' ``kind`` (default ``queue.<queue>``).
        dlq_refresh: Seconds between two counts of the queue's parked messages for
            `dlq_depth` (at most one count that often, between receives); ``None``: never
            counted.

    Raises:
        ConfigurationError: At construction, naming a bad option.

    With tracing installed (``failsafe.opentelemetry.instrument()``), each delivery is
    handled in a consumer span that continues the publisher's trace (see the queue guide's
    "Tracing and gauges"). `in_flight`, `running` and `dlq_depth` feed the gauges of
    [`failsafe.health`][failsafe.health].
    """

    def __init__(
        self,
        broker: Broker,
        queue: str,
        handler: Callable[[Envelope], object],
        *,
        redelivery: Redelivery | None = None,
        errors: ReviewSink | None = None,
        concurrency: int = 1,
        poll: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
        listeners: Sequence[Listener] = (),
        name: str = "consumer",
        review_kind: str | None = None,
        dlq_refresh: float | None = 30.0,
    ) -> None:
        self.broker = broker
        self.handler = handler
        self.errors = errors
        self._stop = threading.Event()
        self._slots = threading.Condition()
        self._inflight = 0  # deliveries handed to the pool and not finished (run's slots)
        self._handling = 0  # deliveries inside handle(), for in_flight
        self._handling_lock = threading.Lock()
        super().__init__(
            queue,
            handler,
            redelivery,
            concurrency,
            poll,
            clock,
            listeners,
            name,
            review_kind,
            dlq_refresh,
            broker,
        )

    def _prepare(self) -> None:
        if not self._declared:
            self.broker.declare(self.queue)
            self._core.check_limit(self.broker.delivery_limit(self.queue))
            self._declared = True

    def _refresh_dlq(self) -> None:
        """Count the parked messages for `dlq_depth`, if it is time (never raises)."""
        if not self._dlq_due():
            return
        try:
            count = self.broker.count_dead_letters(self.queue, where=_PARKED, at_most=COUNT_LIMIT)
        except Exception as exc:
            self._dlq_counted(None, exc)
        else:
            self._dlq_counted(count, None)

    # -- one delivery ----------------------------------------------------------------------
    def handle(self, delivery: Delivery) -> None:
        """Handle one delivery and settle it (what `run` does for each message).

        With tracing installed, in a consumer span that continues the trace named by the
        message's ``traceparent`` header; the handler runs with that span current.
        """
        with self._handling_lock:
            self._handling += 1
        try:
            tracing = _tracing.installed()
            if tracing is None:
                self._handle(delivery)
                return
            with _trace.consumer_span(tracing, self._system, self.name, delivery) as span:
                _trace.finish(span, *self._handle(delivery))
        finally:
            with self._handling_lock:
                self._handling -= 1

    def _handle(self, delivery: Delivery) -> _Result:
        core = self._core
        round_, allowed = core.begin(delivery)
        if allowed <= 0:
            error: BaseException = core.died(delivery)
        else:
            handler = self.handler

            def attempt(message: Envelope) -> object:
                round_.starting()
                try:
                    return handler(message)
                except Exception as exc:
                    round_.failed(exc)
                    raise

            try:
                core.retry(allowed).call(attempt, delivery.message)
            except Exception as exc:
                error = exc
            else:
                try:
                    self.broker.ack(delivery)
                except Exception as exc:
                    core.settle_failed("ack", delivery, exc)
                    return _UNSETTLED, None, round_.attempts
                core.handled(round_)
                return _ACKED, None, round_.attempts
        outcome = self._settle(delivery, core.decide(round_, error), error)
        return outcome, error, round_.attempts

    def _settle(self, delivery: Delivery, decision: Decision, error: BaseException) -> str:
        core = self._core
        if decision.action == "defer":
            try:
                self.broker.defer(delivery, decision.message, decision.delay or 0.0)
            except Exception as exc:
                core.settle_failed("defer", delivery, exc)
                return _UNSETTLED
            core.deferred(decision)
            return _REDELIVERED
        outcome = _PARKED_ONLY
        if self.errors is not None:
            try:
                report_id = self.errors.report(error=error, **core.review_report(decision))
            except Exception:
                # Parking keeps the message whatever happened to its report.
                _log.exception("report of message %s to the error sink failed", delivery.message.id)
            else:
                core.reviewed(decision, report_id)
                outcome = _REVIEW
        try:
            self.broker.park(delivery, decision.message)
        except Exception as exc:
            core.settle_failed("park", delivery, exc)
            return _UNSETTLED
        core.parked(decision)
        return outcome

    # -- driving -----------------------------------------------------------------------------
    def process_available(self, limit: int | None = None) -> int:
        """Handle, in this thread, the messages that are ready now; return how many.

        Returns when the queue has nothing ready (or after ``limit`` messages). For tests on
        a fake clock, and for consumers run from a scheduler. Counts the parked messages
        first when ``dlq_refresh`` has passed since the last count.
        """
        self._prepare()
        self._refresh_dlq()
        done = 0
        while limit is None or done < limit:
            want = self.concurrency if limit is None else min(self.concurrency, limit - done)
            deliveries = self.broker.receive(self.queue, limit=want, wait=0.0)
            if not deliveries:
                break
            for delivery in deliveries:
                self.handle(delivery)
                done += 1
        return done

    def run(self) -> None:
        """Consume until `stop()` is called; then let in-flight messages finish.

        A broker that cannot be reached is retried with backoff (0.1 s doubling to 30 s).
        Between receives, the parked messages are counted for `dlq_depth` every
        ``dlq_refresh`` seconds.
        """
        self._stop.clear()
        self._running = self._started = True
        try:
            self._run()
        finally:
            self._running = False

    def _run(self) -> None:
        failures = 0
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="failsafe-consumer") as pool:
            while not self._stop.is_set():
                with self._slots:
                    while self._inflight >= self.concurrency and not self._stop.is_set():
                        self._slots.wait(self.poll)
                        if self.dlq_refresh is not None:
                            break  # let the loop count the parked messages if it is time
                    free = self.concurrency - self._inflight
                if self._stop.is_set():
                    break
                try:
                    self._prepare()
                    self._refresh_dlq()
                    if free <= 0:
                        continue
                    deliveries = self.broker.receive(self.queue, limit=free, wait=self.poll)
                except Exception as exc:
                    failures += 1
                    pause = _RECONNECT.delay(failures, 0.0, _random(self.redelivery))
                    _log.warning(
                        "queue %s: broker unavailable (%s); trying again in %.2f s",
                        self.queue,
                        exc,
                        pause,
                    )
                    self._pause(pause)
                    continue
                failures = 0
                if self._stop.is_set():
                    for delivery in deliveries:
                        self._give_back(delivery)
                    break
                for delivery in deliveries:
                    with self._slots:
                        self._inflight += 1
                    pool.submit(self._run_one, delivery)

    def _pause(self, seconds: float) -> None:
        clock = self._core.clock
        end = clock.monotonic() + seconds
        while not self._stop.is_set() and (left := end - clock.monotonic()) > 0:
            clock.sleep(min(left, self.poll))

    def _run_one(self, delivery: Delivery) -> None:
        try:
            self.handle(delivery)
        except BaseException:
            _log.exception("queue %s: handling message %s crashed", self.queue, delivery.message.id)
        finally:
            with self._slots:
                self._inflight -= 1
                self._slots.notify_all()

    def _give_back(self, delivery: Delivery) -> None:
        try:
            self.broker.release(delivery)
        except Exception as exc:
            self._core.settle_failed("release", delivery, exc)

    def stop(self) -> None:
        """Ask `run` to return once the messages in hand are settled (any thread)."""
        self._stop.set()
        with self._slots:
            self._slots.notify_all()

    def __repr__(self) -> str:
        return f"Consumer(queue={self.queue!r}, broker={self.broker!r})"


class AsyncConsumer(_ConsumerBase):
    """The asyncio `Consumer`: handler coroutines as tasks, over an `AsyncBroker`.

    Takes the same options as `Consumer`, with an ``async`` handler, an
    [`AsyncErrorSink`][failsafe.errors.AsyncErrorSink] as ``errors``, and ``grace``: seconds
    `stop()` waits for in-flight messages before cancelling them (a cancelled message is
    released back to its queue).

    Raises:
        ConfigurationError: At construction, naming a bad option.
    """

    def __init__(
        self,
        broker: AsyncBroker,
        queue: str,
        handler: Callable[[Envelope], Awaitable[object]],
        *,
        redelivery: Redelivery | None = None,
        errors: AsyncReviewSink | None = None,
        concurrency: int = 1,
        poll: float = 1.0,
        grace: float = 30.0,
        clock: Clock = SYSTEM_CLOCK,
        listeners: Sequence[Listener] = (),
        name: str = "consumer",
        review_kind: str | None = None,
        dlq_refresh: float | None = 30.0,
    ) -> None:
        _v.check("grace", grace, _v.number(at_least=0))
        self.broker = broker
        self.handler = handler
        self.errors = errors
        self.grace = grace
        self._stopping: asyncio.Event | None = None
        self._wake = asyncio.Event()
        self._free = concurrency
        self._handling = 0  # deliveries inside handle(), for in_flight
        super().__init__(
            queue,
            handler,
            redelivery,
            concurrency,
            poll,
            clock,
            listeners,
            name,
            review_kind,
            dlq_refresh,
            broker,
        )

    async def _prepare(self) -> None:
        if not self._declared:
            await self.broker.declare(self.queue)
            self._core.check_limit(await self.broker.delivery_limit(self.queue))
            self._declared = True

    async def _refresh_dlq(self) -> None:
        """Count the parked messages for `dlq_depth`, if it is time (never raises)."""
        if not self._dlq_due():
            return
        try:
            count = await self.broker.count_dead_letters(
                self.queue, where=_PARKED, at_most=COUNT_LIMIT
            )
        except Exception as exc:
            self._dlq_counted(None, exc)
        else:
            self._dlq_counted(count, None)

    async def handle(self, delivery: Delivery) -> None:
        """Handle one delivery and settle it (what `run` does for each message).

        With tracing installed, in a consumer span that continues the trace named by the
        message's ``traceparent`` header; the handler runs with that span current.
        """
        self._handling += 1
        try:
            tracing = _tracing.installed()
            if tracing is None:
                await self._handle(delivery)
                return
            with _trace.consumer_span(tracing, self._system, self.name, delivery) as span:
                try:
                    result = await self._handle(delivery)
                except asyncio.CancelledError:
                    span.set("failsafe.queue.outcome", _RELEASED)
                    raise
                _trace.finish(span, *result)
        finally:
            self._handling -= 1

    async def _handle(self, delivery: Delivery) -> _Result:
        core = self._core
        round_, allowed = core.begin(delivery)
        if allowed <= 0:
            error: BaseException = core.died(delivery)
        else:
            handler = self.handler

            async def attempt(message: Envelope) -> object:
                round_.starting()
                try:
                    return await handler(message)
                except Exception as exc:
                    round_.failed(exc)
                    raise

            try:
                await core.retry(allowed).call_async(attempt, delivery.message)
            except asyncio.CancelledError:
                await asyncio.shield(self._give_back(delivery))
                raise
            except Exception as exc:
                error = exc
            else:
                try:
                    await self.broker.ack(delivery)
                except Exception as exc:
                    core.settle_failed("ack", delivery, exc)
                    return _UNSETTLED, None, round_.attempts
                core.handled(round_)
                return _ACKED, None, round_.attempts
        outcome = await self._settle(delivery, core.decide(round_, error), error)
        return outcome, error, round_.attempts

    async def _settle(self, delivery: Delivery, decision: Decision, error: BaseException) -> str:
        core = self._core
        if decision.action == "defer":
            try:
                await self.broker.defer(delivery, decision.message, decision.delay or 0.0)
            except Exception as exc:
                core.settle_failed("defer", delivery, exc)
                return _UNSETTLED
            core.deferred(decision)
            return _REDELIVERED
        outcome = _PARKED_ONLY
        if self.errors is not None:
            try:
                report_id = await self.errors.report(error=error, **core.review_report(decision))
            except Exception:
                _log.exception("report of message %s to the error sink failed", delivery.message.id)
            else:
                core.reviewed(decision, report_id)
                outcome = _REVIEW
        try:
            await self.broker.park(delivery, decision.message)
        except Exception as exc:
            core.settle_failed("park", delivery, exc)
            return _UNSETTLED
        core.parked(decision)
        return outcome

    async def _give_back(self, delivery: Delivery) -> None:
        try:
            await self.broker.release(delivery)
        except Exception as exc:
            self._core.settle_failed("release", delivery, exc)

    async def process_available(self, limit: int | None = None) -> int:
        """Handle the messages that are ready now, one at a time; return how many.

        Counts the parked messages first when ``dlq_refresh`` has passed since the last
        count.
        """
        await self._prepare()
        await self._refresh_dlq()
        done = 0
        while limit is None or done < limit:
            want = self.concurrency if limit is None else min(self.concurrency, limit - done)
            deliveries = await self.broker.receive(self.queue, limit=want, wait=0.0)
            if not deliveries:
                break
            for delivery in deliveries:
                await self.handle(delivery)
                done += 1
        return done

    async def run(self) -> None:
        """Consume until `stop()`; in-flight messages get ``grace`` seconds to finish.

        ``concurrency`` worker tasks handle the messages one fetcher receives (no task is
        created per message). Cancelling the task that runs this cancels in-flight handlers
        too; their messages are released back to the queue. The parked messages are counted
        for `dlq_depth` every ``dlq_refresh`` seconds meanwhile.
        """
        self._stopping = stopping = asyncio.Event()
        self._running = self._started = True
        try:
            if getattr(self.broker, "concurrent_receive", False):
                await self._run_pulling(stopping)
            else:
                await self._run_fetching(stopping)
        finally:
            self._running = False

    async def _wait(self, event: asyncio.Event, seconds: float) -> None:
        """Wait for ``event``, or ``seconds`` on the consumer's clock, whichever is first."""
        try:
            async with self._core.clock.timeout_async(seconds):
                await event.wait()
        except TimeoutError:
            pass

    async def _run_fetching(self, stopping: asyncio.Event) -> None:
        """One fetcher receives for ``concurrency`` worker tasks."""
        self._wake = wake = asyncio.Event()  # set by a worker that finished, and by stop()
        self._free = self.concurrency
        inbox: asyncio.Queue[Delivery | None] = asyncio.Queue()
        workers = [asyncio.create_task(self._worker(inbox)) for _ in range(self.concurrency)]
        failures = 0
        try:
            while not stopping.is_set():
                if self._free <= 0:
                    wake.clear()
                    if self.dlq_refresh is None:
                        await wake.wait()
                    else:  # all busy: still count the parked messages when it is time
                        await self._wait(wake, self.poll)
                        if self._declared:
                            await self._refresh_dlq()
                    continue
                try:
                    await self._prepare()
                    await self._refresh_dlq()
                    deliveries = await self.broker.receive(
                        self.queue, limit=self._free, wait=self.poll
                    )
                except Exception as exc:
                    failures += 1
                    await self._broker_failed(exc, failures, stopping)
                    continue
                failures = 0
                self._free -= len(deliveries)
                for delivery in deliveries:
                    inbox.put_nowait(delivery)
        finally:
            for _ in workers:
                inbox.put_nowait(None)
            await self._drain(workers, inbox)

    async def _run_pulling(self, stopping: asyncio.Event) -> None:
        """Each worker receives for itself, waiting in the broker (RabbitMQ: a buffer get).

        One hop less per message than a fetcher feeding workers. On stop, workers waiting
        for a message are cancelled at once (nothing is lost: the message stays in the
        broker's buffer, and goes back to the queue when the broker closes); busy ones get
        ``grace`` seconds.
        """
        busy = [False] * self.concurrency

        async def pull(i: int) -> None:
            failures = 0
            while not stopping.is_set():
                try:
                    await self._prepare()
                    deliveries = await self.broker.receive(self.queue, limit=1, wait=math.inf)
                except Exception as exc:
                    failures += 1
                    await self._broker_failed(exc, failures, stopping)
                    continue
                failures = 0
                busy[i] = True
                try:
                    for delivery in deliveries:
                        await self.handle(delivery)
                except Exception:
                    _log.exception("queue %s: handling a message crashed", self.queue)
                finally:
                    busy[i] = False

        workers = [asyncio.create_task(pull(i)) for i in range(self.concurrency)]
        try:
            every = self.dlq_refresh
            while not stopping.is_set():
                if every is None:
                    await stopping.wait()
                    break
                if self._declared:  # a worker's _prepare() declared the queue
                    await self._refresh_dlq()
                    await self._wait(stopping, every)
                else:
                    await self._wait(stopping, self.poll)
        finally:
            for i, task in enumerate(workers):
                if not busy[i]:
                    task.cancel()
            _, late = await asyncio.wait(workers, timeout=self.grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)

    async def _broker_failed(
        self, exc: BaseException, failures: int, stopping: asyncio.Event
    ) -> None:
        pause = _RECONNECT.delay(failures, 0.0, _random(self.redelivery))
        _log.warning(
            "queue %s: broker unavailable (%s); trying again in %.2f s", self.queue, exc, pause
        )
        clock = self._core.clock
        end = clock.monotonic() + pause
        while not stopping.is_set() and (left := end - clock.monotonic()) > 0:
            await clock.sleep_async(min(left, self.poll))

    async def _worker(self, inbox: asyncio.Queue[Delivery | None]) -> None:
        while (delivery := await inbox.get()) is not None:
            try:
                await self.handle(delivery)
            except asyncio.CancelledError:
                raise
            except Exception:
                _log.exception(
                    "queue %s: handling message %s crashed", self.queue, delivery.message.id
                )
            finally:
                self._free += 1
                self._wake.set()

    async def _drain(
        self, workers: list[asyncio.Task[None]], inbox: asyncio.Queue[Delivery | None]
    ) -> None:
        _, late = await asyncio.wait(workers, timeout=self.grace)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
        while not inbox.empty():  # received, never started: back to the queue
            left = inbox.get_nowait()
            if left is not None:
                await self._give_back(left)

    def stop(self) -> None:
        """Ask `run` to stop taking messages and return once in-flight ones are settled."""
        if self._stopping is not None:
            self._stopping.set()
            self._wake.set()

    def __repr__(self) -> str:
        return f"AsyncConsumer(queue={self.queue!r}, broker={self.broker!r})"
