"""`AdaptiveConcurrency`: a concurrency limit that finds itself from latency and failures.

A [`Bulkhead`][failsafe.Bulkhead] needs its limit chosen up front; set too low it rejects
calls the dependency could serve, set too high it lets a queue build up inside the
dependency until every call is late. `AdaptiveConcurrency` measures the latency and the
failures of the calls it lets through and moves its limit: up while latency holds, down when
latency rises (the dependency is queueing) or calls fail. A call that finds the limit full is
rejected at once with [`ConcurrencyLimited`][failsafe.ConcurrencyLimited] (load shedding):
it never runs, and it never waits.

Two algorithms, in the manner of Netflix's concurrency-limits and Envoy's adaptive
concurrency filter: [`Gradient`][failsafe.adaptive_concurrency.Gradient] (the default:
compares the latency now with a long-term baseline) and
[`AIMD`][failsafe.adaptive_concurrency.AIMD] (additive increase, multiplicative decrease on
failures and on calls slower than a target).

The limit is updated once per *window* of outcomes: ``max(10, limit)`` of them, about one
round trip's worth when the limit is full, as TCP's congestion window moves once per round
trip. Every update is a pure function of the window (its mean latency, its failures, the
peak of calls in flight) and of a few numbers of state; the sync and the async driver share
it, and a lock guards only those numbers.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import attrs

from failsafe import _registry
from failsafe import _validators as _v
from failsafe._policy import AsyncRunner, Policy, SyncRunner
from failsafe._validators import integer, number
from failsafe.clock import SYSTEM_CLOCK, Clock
from failsafe.events import ConcurrencyLimitChanged, ConcurrencyLimitRejected, Listener, _emit
from failsafe.exceptions import ConcurrencyLimited, ConfigurationError
from failsafe.predicates import TRANSIENT, Classifier, Predicate, ResultTest, classify

__all__ = ["AIMD", "MIN_WINDOW", "AdaptiveConcurrency", "Gradient"]

MIN_WINDOW = 10
"""The fewest outcomes in an update window (a window holds ``max(MIN_WINDOW, limit)``)."""

# What a finished call tells the limit (the argument of ``_finish``)
_OK, _FAILED, _IGNORED = 0, 1, 2


@attrs.frozen(kw_only=True)
class AIMD:
    """Additive increase, multiplicative decrease: grow by ``increase`` per window, cut on trouble.

    A window with a failure, or whose mean latency is above ``target_latency``, multiplies
    the limit by ``backoff`` (and lowers it by at least one). Otherwise, when the calls in
    flight reached half the limit during the window, the limit grows by ``increase``; a limit
    that is not used does not grow. Loss-based, as TCP Reno: without ``target_latency`` only
    failures (timeouts included) bring it down, so give it a per-attempt
    [`Timeout`][failsafe.Timeout] or a target.

    Args:
        increase: Added to the limit per window without trouble (>= 1).
        backoff: The factor a troubled window multiplies the limit by (0.5 to 0.99).
        target_latency: Seconds; a window whose mean latency is above it is trouble, as a
            failure is (``None``: failures only).
    """

    increase: int = attrs.field(default=1, validator=integer(1))
    backoff: float = attrs.field(default=0.9, validator=number(at_least=0.5, at_most=0.99))
    target_latency: float | None = attrs.field(
        default=None, validator=number(above=0, optional=True)
    )

    def describe(self) -> str:
        """Say in words how this algorithm moves the limit."""
        trouble = "failures"
        if self.target_latency is not None:
            trouble += f" and mean latency above {self.target_latency:g}s"
        return f"AIMD: +{self.increase} per window, x{self.backoff:g} on {trouble}"

    def _update(self, state: _State, mean: float | None, failed: bool) -> tuple[float, str]:
        limit = state.limit
        if failed:
            return _cut(limit, self.backoff), "failure"
        target = self.target_latency
        if mean is not None and target is not None and mean > target:
            return _cut(limit, self.backoff), "latency"
        if state.peak * 2 >= limit:
            return limit + self.increase, "growth"
        return limit, "growth"

    def _probe_due(self, state: _State) -> bool:
        return False

    def _after_probe(self, state: _State, mean: float | None, failed: bool) -> tuple[float, str]:
        return self._update(state, mean, failed)  # never called: AIMD does not probe


@attrs.frozen(kw_only=True)
class Gradient:
    """Compare the latency now with a long-term baseline; shrink as it rises (Gradient2-like).

    At the end of each window: ``gradient = clamp(tolerance * baseline / latency, 0.5, 1)``,
    then ``limit = limit * (1 - smoothing) + (limit * gradient + queue) * smoothing``. With
    latency at its baseline the limit grows by ``queue * smoothing`` per window; as the
    dependency queues, latency rises above the baseline and the limit shrinks towards what
    the dependency serves without queueing, by at most ``smoothing / 2`` of itself per
    window. A window with a failure multiplies the limit by ``backoff`` instead. When fewer
    than half the limit were in flight, the limit stays (it was not what held calls back).

    The baseline is what latency is without queueing. It is an exponential average over
    about ``baseline_window`` windows of the windows where the limit had room (the latency
    the dependency gives on its own), and it follows every fall. A rise seen while the limit
    was full is not believed: at full load it is mostly the queueing the limit itself lets
    in, and a baseline that followed it would let the limit creep up for as long as an
    overload lasts (the drift of a plain exponential baseline, as in Netflix's Gradient2).
    Instead, after every ``probe_every`` full windows, one window *probes*: it admits at most
    half the limit, and the latency of the calls it admits becomes the baseline. At half the
    concurrency a queueing dependency answers faster (the baseline falls: the limit comes
    down towards what it serves without queueing), and a dependency that really became
    slower does not (the baseline rises to its new latency). A probe sheds about one round
    trip's worth of calls beyond half the limit (1 to 2% of the throughput by default), as
    Envoy's adaptive concurrency filter does when it re-measures its minimum round trip.

    Args:
        tolerance: How far latency may rise above the baseline before the limit shrinks
            (1.0 to 10; 1.0: any rise).
        smoothing: How much of the new estimate each window takes (0 excluded to 1).
        queue: The allowance added to the limit at each update: how many calls may queue
            at the dependency while latency holds (>= 0). Also sets the floor the latency
            signal alone can push the limit to: about ``2 * queue``.
        baseline_window: The windows the baseline averages over (>= 1).
        probe_every: Full windows between two probes (>= 1).
        backoff: The factor a window with a failure multiplies the limit by (0.5 to 0.99).
    """

    tolerance: float = attrs.field(default=1.0, validator=number(at_least=1, at_most=10))
    smoothing: float = attrs.field(default=0.2, validator=number(above=0, at_most=1))
    queue: int = attrs.field(default=4, validator=integer(0))
    baseline_window: int = attrs.field(default=30, validator=integer(1))
    probe_every: int = attrs.field(default=50, validator=integer(1))
    backoff: float = attrs.field(default=0.9, validator=number(at_least=0.5, at_most=0.99))

    def describe(self) -> str:
        """Say in words how this algorithm moves the limit."""
        return (
            f"gradient: latency against a {self.baseline_window}-window baseline "
            f"(tolerance {self.tolerance:g}, queue {self.queue}, a probe every "
            f"{self.probe_every} full windows), x{self.backoff:g} on failures"
        )

    def _update(self, state: _State, mean: float | None, failed: bool) -> tuple[float, str]:
        limit = state.limit
        if state.saturated:
            state.since_probe += 1
        if failed:
            return _cut(limit, self.backoff), "failure"
        if mean is None:  # only ignored outcomes: nothing learnt
            return limit, "growth"
        state.windows += 1
        baseline = state.baseline
        if baseline is None:
            baseline = mean
        elif mean < baseline or not state.saturated:
            # the first few windows make a plain average, then an exponential one
            weight = 1 / state.windows if state.windows <= 3 else 2 / (self.baseline_window + 1)
            baseline += (mean - baseline) * weight
        state.baseline = baseline
        if state.peak * 2 < limit:  # the limit held nothing back: it has nothing to learn
            return limit, "growth"
        gradient = 1.0 if mean <= 0 else min(1.0, max(0.5, self.tolerance * baseline / mean))
        estimate = limit * gradient + self.queue
        new = limit * (1 - self.smoothing) + estimate * self.smoothing
        return new, ("growth" if new >= limit else "latency")

    def _probe_due(self, state: _State) -> bool:
        return state.since_probe >= self.probe_every

    def _after_probe(self, state: _State, mean: float | None, failed: bool) -> tuple[float, str]:
        """The probe window closed: its latency is the baseline; the limit moves only on failure."""
        state.since_probe = 0
        if failed:
            return _cut(state.limit, self.backoff), "failure"
        if mean is not None:
            state.baseline = mean
        return state.limit, "growth"


def _cut(limit: float, backoff: float) -> float:
    """A multiplicative decrease that lowers the limit by at least one (as Netflix's AIMD)."""
    return min(limit * backoff, limit - 1)


class _State:
    """The limit and the current window: the only mutable state, guarded by the policy's lock.

    Bounded: a fixed handful of numbers, whatever the traffic.
    """

    __slots__ = (
        "baseline",
        "count",
        "epoch",
        "failures",
        "latency_sum",
        "limit",
        "peak",
        "probe",
        "samples",
        "saturated",
        "since_probe",
        "windows",
    )

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.baseline: float | None = None
        self.windows = 0  # windows that taught the baseline something
        self.since_probe = 0  # full windows since the last probe
        self.probe: int | None = None  # while probing: the cap on calls in flight
        self.epoch = 0  # bumped when a probe starts, to tell its calls from older ones
        self._new_window(0)

    def _new_window(self, in_flight: int) -> None:
        self.count = 0  # outcomes that count towards closing the window
        self.samples = 0  # latency samples (successes)
        self.latency_sum = 0.0
        self.failures = 0
        self.peak = in_flight
        self.saturated = False


@attrs.define(kw_only=True, eq=False, repr=False)
class AdaptiveConcurrency(Policy):
    """Limit the calls in flight to a limit that adapts to the dependency's latency and failures.

    A call that finds ``limit`` calls in flight is rejected at once with
    [`ConcurrencyLimited`][failsafe.ConcurrencyLimited] and never runs. Each call let
    through is timed on ``clock.monotonic()``; its outcome feeds the limit:

    - a returned value that ``on_result`` does not match: a success, and a latency sample;
    - an exception that ``on`` matches, or a value that ``on_result`` matches: a failure;
    - any other exception (your own errors, a [`UsageError`][failsafe.UsageError], a
      rejection by another policy, a cancellation): neither; it only frees the slot. Such
      an exception may come before the dependency was reached (a validation error) and its
      time says nothing of the dependency's load.

    With no arguments: the [`Gradient`][failsafe.adaptive_concurrency.Gradient] algorithm
    (it needs no target latency: it learns the dependency's own), a first limit of 20 calls
    (Netflix's default: room for a typical service at once, and the first windows move it),
    between 1 and 1000; failures are transient errors
    ([`TRANSIENT`][failsafe.predicates.TRANSIENT], failsafe's own
    [`TimeoutExceeded`][failsafe.TimeoutExceeded] included).

    Args:
        algorithm: How the limit moves: a [`Gradient`][failsafe.adaptive_concurrency.Gradient]
            (default) or an [`AIMD`][failsafe.adaptive_concurrency.AIMD].
        initial_limit: The limit before any window closed (between ``min_limit`` and
            ``max_limit``).
        min_limit: The lowest the limit goes (>= 1): at least this many calls may always run.
        max_limit: The highest the limit goes (>= ``min_limit``): never more calls in flight.
        on: Which exceptions are failures (default
            [`TRANSIENT`][failsafe.predicates.TRANSIENT]); the same vocabulary as `Retry`.
        on_result: A test on returned values; a true result is a failure (an HTTP 503).
        clock: Times each call on ``monotonic()`` (a fake one in tests).
        listeners: Receive [`ConcurrencyLimitChanged`][failsafe.events.ConcurrencyLimitChanged]
            when the whole limit moves and
            [`ConcurrencyLimitRejected`][failsafe.events.ConcurrencyLimitRejected] per shed call.
        name: Names this policy in events, errors and reprs.

    Raises:
        ConfigurationError: At construction, naming the option: a limit below 1,
            ``min_limit > max_limit``, ``initial_limit`` outside them, an unknown algorithm.

    Bounds: ``min_limit <= limit <= max_limit`` at all times, so never more than
    ``max_limit`` calls in flight; the state is a handful of numbers (no history is kept);
    nothing waits.

    Thread-safety: one policy may be shared by threads and asyncio tasks at once. A lock
    guards the counters and the limit's update, never a call; events are emitted after it
    is released.

    Example:
        ```python
        from failsafe import AdaptiveConcurrency, ConcurrencyLimited

        limiter = AdaptiveConcurrency(name="search")

        @limiter
        def search(query: str) -> list[str]:
            return [query]

        assert search("boots") == ["boots"]
        assert (limiter.limit, limiter.in_flight) == (20, 0)
        ```
    """

    algorithm: AIMD | Gradient = attrs.field(factory=Gradient)
    initial_limit: int = attrs.field(default=20, validator=integer(1))
    min_limit: int = attrs.field(default=1, validator=integer(1))
    max_limit: int = attrs.field(default=1000, validator=integer(1))
    on: Classifier = TRANSIENT
    on_result: ResultTest | None = None
    clock: Clock = SYSTEM_CLOCK
    listeners: Sequence[Listener] = attrs.field(default=(), converter=_v.listeners)
    name: str = "adaptive-concurrency"
    _predicate: Predicate = attrs.field(init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _in_flight: int = attrs.field(default=0, init=False)
    _state: _State = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.algorithm, AIMD | Gradient):
            raise ConfigurationError(
                "algorithm", f"must be a Gradient() or an AIMD(), got {self.algorithm!r}"
            )
        if self.max_limit < self.min_limit:
            raise ConfigurationError(
                "max_limit", f"must be >= min_limit ({self.min_limit}), got {self.max_limit}"
            )
        if not self.min_limit <= self.initial_limit <= self.max_limit:
            raise ConfigurationError(
                "initial_limit",
                f"must be between min_limit ({self.min_limit}) and max_limit "
                f"({self.max_limit}), got {self.initial_limit}",
            )
        self._predicate = classify(self.on, self.on_result)
        self._state = _State(float(self.initial_limit))
        _registry.register(self)

    @property
    def limit(self) -> int:
        """The concurrency limit now: calls beyond it are shed.

        During a [`Gradient`][failsafe.adaptive_concurrency.Gradient] probe (one window in
        ``probe_every``), calls are admitted up to half of it.
        """
        return int(self._state.limit)

    @property
    def in_flight(self) -> int:
        """Calls running under this policy now."""
        return self._in_flight

    # -- decisions, shared by both drivers ------------------------------------------------
    def _admit(self) -> tuple[float, int]:
        """Take a slot; return the call's token (its start time, the probe epoch).

        Raises:
            ConcurrencyLimited: When the calls in flight already reach the limit (or, during
                a probe, the probe's cap).
        """
        with self._lock:
            state = self._state
            limit = int(state.limit)
            if state.probe is not None and state.probe < limit:
                limit = state.probe
            in_flight = self._in_flight
            if in_flight < limit:
                in_flight += 1
                self._in_flight = in_flight
                if in_flight > state.peak:
                    state.peak = in_flight
                if in_flight >= limit:
                    state.saturated = True
                epoch = state.epoch
            else:
                state.saturated = True
                epoch = -1
        if epoch < 0:
            _emit(
                self.listeners,
                ConcurrencyLimitRejected,
                policy=self.name,
                limit=limit,
                in_flight=in_flight,
            )
            raise ConcurrencyLimited(self.name, limit, in_flight)
        return self.clock.monotonic(), epoch

    def _finish(self, token: tuple[float, int], verdict: int) -> None:
        """Free the slot of the call ``token`` names and learn from its outcome."""
        started, epoch = token
        latency = self.clock.monotonic() - started if verdict == _OK else 0.0
        if not math.isfinite(latency):  # a clock that cannot be trusted teaches nothing
            verdict = _IGNORED
        with self._lock:
            self._in_flight -= 1
            state = self._state
            # during a probe, only the calls it admitted tell what half the limit gives
            if verdict == _IGNORED or (state.probe is not None and epoch != state.epoch):
                return
            state.count += 1
            if verdict == _OK:
                state.samples += 1
                state.latency_sum += latency if latency > 0 else 0.0
            else:
                state.failures += 1
            size = int(state.limit) if state.probe is None else state.probe
            if state.count < max(MIN_WINDOW, size):
                return
            change = self._close_window(state)
        if change is not None:
            previous, limit, reason = change
            _emit(
                self.listeners,
                ConcurrencyLimitChanged,
                policy=self.name,
                previous=previous,
                limit=limit,
                reason=reason,
            )

    def _close_window(self, state: _State) -> tuple[int, int, str] | None:
        """Update the limit from the window that just filled (under the lock); start the next.

        Returns ``(previous, limit, reason)`` when the whole limit moved.
        """
        mean = state.latency_sum / state.samples if state.samples else None
        failed = state.failures > 0
        previous = state.limit
        algorithm = self.algorithm
        if state.probe is not None:
            new, reason = algorithm._after_probe(state, mean, failed)
            state.probe = None
        else:
            new, reason = algorithm._update(state, mean, failed)
        if not new >= self.min_limit:  # also catches a NaN
            new = float(self.min_limit)
        elif new > self.max_limit:
            new = float(self.max_limit)
        state.limit = new
        if algorithm._probe_due(state):
            cap = max(self.min_limit, int(new) // 2)
            if cap < int(new):
                state.probe = cap
                state.epoch += 1
        state._new_window(self._in_flight)
        if int(new) == int(previous):
            return None
        return int(previous), int(new), reason

    # -- drivers --------------------------------------------------------------------------
    def _bind_sync(self, nxt: SyncRunner) -> SyncRunner:
        matches_exception, matches_result = self._predicate._raw_tests()
        admit, finish = self._admit, self._finish

        def adaptive_sync(fn: Any, args: Any, kwargs: Any) -> Any:
            token = admit()
            try:
                value = nxt(fn, args, kwargs)
            except Exception as exc:
                finish(token, _FAILED if matches_exception(exc) else _IGNORED)
                raise
            except BaseException:
                finish(token, _IGNORED)
                raise
            failed = matches_result is not None and matches_result(value)
            finish(token, _FAILED if failed else _OK)
            return value

        return adaptive_sync

    def _bind_async(self, nxt: AsyncRunner) -> AsyncRunner:
        matches_exception, matches_result = self._predicate._raw_tests()
        admit, finish = self._admit, self._finish

        async def adaptive_async(fn: Any, args: Any, kwargs: Any) -> Any:
            token = admit()
            try:
                value = await nxt(fn, args, kwargs)
            except Exception as exc:
                finish(token, _FAILED if matches_exception(exc) else _IGNORED)
                raise
            except BaseException:  # cancelled: the slot comes back, nothing is learnt
                finish(token, _IGNORED)
                raise
            failed = matches_result is not None and matches_result(value)
            finish(token, _FAILED if failed else _OK)
            return value

        return adaptive_async

    def describe(self) -> str:
        """Say in words what this limiter does."""
        return (
            f"adaptive concurrency {self.name!r}: limit {self.limit} "
            f"(from {self.initial_limit}, within {self.min_limit}..{self.max_limit}), "
            f"{self.algorithm.describe()}, failures: {self._predicate}"
        )
